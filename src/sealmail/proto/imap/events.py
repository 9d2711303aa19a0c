"""Events the IMAP server connection hands to its host.

`CommandReceived` is the only one that needs an answer: the host sends untagged data as it likes
and then exactly one tagged response (`StatusResponse` with the command's tag). Until then the
connection gives no further command (commands are carried out one at a time, in order). The other
events were already answered by the core and are for bookkeeping and logs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from sealmail.proto.imap.commands import Command
from sealmail.proto.imap.errors import ImapError

__all__ = [
    "NEED_DATA",
    "AuthenticateAborted",
    "AuthenticateData",
    "CommandReceived",
    "ConnectionClosed",
    "Event",
    "IdleDone",
    "NeedData",
    "ProtocolError",
]


class NeedData(enum.Enum):
    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Event:
    pass


@dataclass(frozen=True, slots=True)
class CommandReceived(Event):
    """A parsed command, legal in the current state; answer it with a tagged response."""

    command: Command


@dataclass(frozen=True, slots=True)
class AuthenticateData(Event):
    """The client's (base64-decoded) answer to an AUTHENTICATE challenge (RFC 9051 6.2.2).

    Answer with another `ContinuationRequest(challenge=...)` or the tagged OK / NO.
    """

    data: bytes


@dataclass(frozen=True, slots=True)
class AuthenticateAborted(Event):
    """The client sent "*" or bad base64: the core already sent the tagged BAD (RFC 9051 6.2.2
    "it MUST reject the AUTHENTICATE command by sending a tagged BAD response")."""

    reason: str


@dataclass(frozen=True, slots=True)
class IdleDone(Event):
    """The client ended IDLE with DONE (RFC 2177): answer with the tagged OK."""


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """Bad input the core answered itself (BAD / NO, or BYE when it closed the connection)."""

    error: ImapError


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """No more events: the client closed, logged out, or the core ended the session."""

    reason: str
