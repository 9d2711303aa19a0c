"""Events the POP3 server core hands to its host.

An event whose `needs_reply` is set stops the core until the host answers it with the method its
docstring names. The others were answered by the core already; they are for logs and cleanup.
Events never hold a password in their repr, so logging an event is always safe.

`StartTLS`, `AuthStart`, `AuthResponse`, `AuthAborted` and `ConnectionClosed` are the ones every
line-protocol core shares (sealmail.proto.core). Here StartTLS is STLS (RFC 2595 4), answered by
`start_tls` or `refuse`; AuthStart is AUTH (RFC 5034 4) and AuthResponse the client's answer to a
challenge, both answered by `auth_challenge`, `open_maildrop` (the exchange succeeded) or
`refuse`; AuthAborted comes after the -ERR the core sent itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from sealmail.proto.core import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Event,
    NeedData,
    StartTLS,
)
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


@dataclass(frozen=True, slots=True)
class Login(Event):
    """USER then PASS (RFC 1939 7). Answer: `open_maildrop` or `refuse`."""

    needs_reply: ClassVar[bool] = True
    user: str
    password: str = field(repr=False)


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
