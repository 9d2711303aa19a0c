"""Mail the store itself sends (Sieve redirects and vacation replies), handed to an MTA.

As Cyrus 3 does it: `smtp_backend: sendmail` runs the `sendmail` program (Postfix's, or
`sealmail sendmail`), `smtp_backend: host` speaks SMTP to `smtp_host`.
"""

from __future__ import annotations

import shlex
import smtplib
import subprocess
from collections.abc import Sequence
from typing import Protocol

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD

SEND_TIMEOUT = 120.0


class OutboundError(Exception):
    """The MTA did not take the message; the text says why."""


class Outbound(Protocol):
    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None: ...


class SendmailOutbound:
    def __init__(self, command: str) -> None:
        self.argv = shlex.split(command)

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        argv = [*self.argv, "-i", "-f", sender or "<>", "--", *recipients]
        try:
            done = subprocess.run(
                argv, input=message, capture_output=True, timeout=SEND_TIMEOUT, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise OutboundError(f"{self.argv[0]}: {exc}") from exc
        if done.returncode != 0:
            reason = done.stderr.decode("utf-8", "replace").strip().splitlines()
            raise OutboundError(
                f"{self.argv[0]} exited with {done.returncode}: {reason[0] if reason else ''}"
            )


class SmtpOutbound:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        try:
            with smtplib.SMTP(self.host, self.port, timeout=SEND_TIMEOUT) as client:
                refused = client.sendmail(sender, list(recipients), message)
        except (OSError, smtplib.SMTPException) as exc:
            raise OutboundError(f"{self.host}:{self.port}: {exc}") from exc
        if refused:
            raise OutboundError(f"{self.host}:{self.port} refused {sorted(refused)}")


def outbound_from_config(config: ImapdConfig) -> Outbound:
    if config.get(IMAPD.smtp_backend) == "host":
        host, _, port = (config.get(IMAPD.smtp_host) or "localhost:587").rpartition(":")
        return SmtpOutbound(host.strip("[]") or "localhost", int(port) if port.isdigit() else 25)
    return SendmailOutbound(config.get(IMAPD.sendmail) or "/usr/sbin/sendmail")
