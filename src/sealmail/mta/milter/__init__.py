"""Milters (the Sendmail milter protocol) for the MTA: smtpd_milters and non_smtpd_milters.

The protocol is sealmail.proto.milter's; here are the sockets (client), several milters in
order (chain), the message as milters edit it (message), main.cf (settings), and the glue
smtpd and pickup call at each stage (stages).
"""

from sealmail.mta.milter.chain import MessageOutcome, MilterChain
from sealmail.mta.milter.client import MilterClient, MilterFailure
from sealmail.mta.milter.message import MilterMessage
from sealmail.mta.milter.settings import Endpoint, MilterSettings, parse_endpoint

__all__ = [
    "Endpoint", "MessageOutcome", "MilterChain", "MilterClient", "MilterFailure",
    "MilterMessage", "MilterSettings", "parse_endpoint",
]
