"""Events the POP3 server core hands to its host.

An event whose `needs_reply` is set stops the core until the host answers it with the method its
docstring names. The others were answered by the core already; they are for logs and cleanup.
Events never hold a password in their repr, so logging an event is always safe.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final

from sealmail.proto.pop3._replies import Reply

__all__ = [
    "NEED_DATA",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "ConnectionClosed",
    "Event",
    "Login",
    "MessageRequest",
    "NeedData",
    "ProtocolError",
    "Quit",
    "StartTLS",
    "Update",
]


class NeedData(enum.Enum):
    """The sentinel type of NEED_DATA: the core needs more bytes before the next event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


@dataclass(frozen=True, slots=True)
class Event:
    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class Login(Event):
    """USER then PASS (RFC 1939 7). Answer: `open_maildrop` or `refuse`."""

    needs_reply: ClassVar[bool] = True
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthStart(Event):
    """AUTH mechanism [initial-response] (RFC 5034 4); `initial_response` None: none was sent.

    Answer: `auth_challenge`, `open_maildrop` (the exchange succeeded) or `refuse`.
    """

    needs_reply: ClassVar[bool] = True
    mechanism: str
    initial_response: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """The client's base64-decoded answer to a challenge. Answered like AuthStart."""

    needs_reply: ClassVar[bool] = True
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthAborted(Event):
    """The SASL exchange ended without the host (a "*" cancel, bad base64): drop the mechanism."""

    reason: str


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """STLS (RFC 2595 4). Answer: `start_tls` (then do the handshake) or `refuse`."""

    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class MessageRequest(Event):
    """RETR (`lines` None) or TOP msg n. Answer: `send_message(content)` or `refuse`."""

    needs_reply: ClassVar[bool] = True
    number: int
    uid: int
    lines: int | None = None


@dataclass(frozen=True, slots=True)
class Update(Event):
    """QUIT in TRANSACTION: remove `deleted` (UIDs), then answer `update_done` or `refuse`.

    `retrieved` are the UIDs sent whole by RETR and not deleted, for hosts that mark them seen.
    Either answer ends the session (RFC 1939 6).
    """

    needs_reply: ClassVar[bool] = True
    deleted: tuple[int, ...]
    retrieved: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Quit(Event):
    """QUIT in AUTHORIZATION, already answered: nothing to remove."""


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """The core refused a command with `reply`; `command` is its verb only (never a password)."""

    reply: Reply
    command: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The session is over (QUIT done, or the peer closed its side)."""
