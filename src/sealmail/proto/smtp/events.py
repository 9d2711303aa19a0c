"""Events the SMTP/LMTP server core hands to its host.

An event with `needs_reply = True` stops the core until the host answers it (with
`ServerConnection.answer`, or `auth_challenge` / `auth_succeeded` for AUTH). The others were
already answered by the core and are for logging and bookkeeping.

`StartTLS`, `AuthStart`, `AuthResponse` and `ConnectionClosed` are the ones every line-protocol
core shares (sealmail.proto.core). Here StartTLS (RFC 3207) is answered 220 to go on, then
`tls_started()` after the handshake; AuthStart (RFC 4954 4) and AuthResponse by `auth_challenge`,
`auth_succeeded` or a 4xx/5xx `answer`. A cancel ("*") comes as `AuthResponse(None)`, which the
host answers itself, normally `Reply(501, "5.0.0", "AUTH aborted")` (RFC 4954 4: "the server
MUST reject the AUTH command by sending a 501 reply").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sealmail.proto.core import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Event,
    NeedData,
    StartTLS,
)
from sealmail.proto.smtp.address import Address
from sealmail.proto.smtp.replies import Reply

__all__ = [
    "NEED_DATA",
    "AuthResponse",
    "AuthStart",
    "ConnectionClosed",
    "DataCommand",
    "Event",
    "Hello",
    "HelloCommand",
    "MailFrom",
    "MessageData",
    "NeedData",
    "NonSmtpCommand",
    "ProtocolError",
    "Quit",
    "RcptTo",
    "Reset",
    "StartTLS",
]


@dataclass(frozen=True, slots=True)
class Hello(Event):
    """LHLO, EHLO or HELO, already answered; any transaction was reset (RFC 5321 4.1.4)."""

    command: str
    hostname: str


@dataclass(frozen=True, slots=True)
class HelloCommand(Hello):
    """EHLO or HELO for the host to answer (the core's `answer_hello`): a 2xx answer makes the
    core send its own 250 (with the EHLO keywords) and take the name; a 4xx/5xx refuses it."""

    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class DataCommand(Event):
    """DATA for the host to answer (the core's `answer_data`): 354 goes on to the message, a
    4xx/5xx refuses it and the transaction stays."""

    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class MailFrom(Event):
    """MAIL FROM. `reverse_path` is "" for the null path <>; `params` keys are upper case."""

    needs_reply: ClassVar[bool] = True
    reverse_path: str
    params: dict[str, str | None] = field(default_factory=dict)
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class RcptTo(Event):
    """RCPT TO. A 2xx answer accepts the recipient: LMTP then owes it a reply after the data."""

    needs_reply: ClassVar[bool] = True
    forward_path: str
    params: dict[str, str | None] = field(default_factory=dict)
    address: Address | None = None


@dataclass(frozen=True, slots=True)
class MessageData(Event):
    """The whole message (dot-stuffing undone, line ends as sent, no end marker).

    LMTP: answer exactly once per entry of `recipients`, in that order (RFC 2033 4.2).
    SMTP: answer once.
    """

    needs_reply: ClassVar[bool] = True
    content: bytes
    recipients: tuple[str, ...]
    reverse_path: str = ""
    mail_params: dict[str, str | None] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reset(Event):
    """RSET, already answered 250; the transaction is gone."""


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT, already answered 221; the core is closed."""


@dataclass(frozen=True, slots=True)
class NonSmtpCommand(Event):
    """A forbidden command (an HTTP request, a mail header as a command: Postfix's
    smtpd_forbidden_commands), answered 221 2.7.0; the core is closed."""

    line: bytes


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """Bad input the core answered by itself with `reply` (syntax, order, limits)."""

    reply: Reply
    line: bytes = b""
