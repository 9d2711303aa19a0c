"""The lmtp delivery agent (Postfix's lmtp(8)): LMTP to a store, as CYRUS_README sets it up.

Next hops: `unix:/abs/path`, `unix:relative/path` (under queue_directory, seed 2.1.1),
`inet:host:port`, `inet:[addr]:port`, `inet:host:service`, or `inet:host` on `lmtp_tcp_port`.
Parameters are the `lmtp_*` family; the shared machinery is in session.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sealmail.mta.agents.session import ClientAgent
from sealmail.mta.config.parameters import LMTP_CLIENT
from sealmail.proto.smtp import Mode

__all__ = ["LmtpAgent"]

# Postfix's lmtp_tcp_port default; an `inet:host` next hop without a port uses it.
_LMTP_PORT = 24


class LmtpAgent(ClientAgent):
    """LMTP (RFC 2033): one reply per accepted recipient after the data."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(LMTP_CLIENT, Mode.LMTP, _LMTP_PORT, clock)
