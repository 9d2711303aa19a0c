"""Events the ManageSieve server core hands to its host.

An event whose `needs_reply` is set stops the core until the host answers it (the docstring
names how). The others were answered by the core already; they are for logs and cleanup.
Events never show a SASL response or a script in their repr, so logging one is safe.

`StartTLS`, `AuthStart`, `AuthResponse`, `AuthAborted` and `ConnectionClosed` are the ones every
line-protocol core shares (sealmail.proto.core). Here StartTLS is answered by `start_tls()`, the
handshake, then `tls_started(...)`, or by `answer(NO)`; AuthStart (AUTHENTICATE, RFC 5804 2.1)
and AuthResponse by `auth_challenge`, `authenticated` or `answer(NO)`; AuthAborted comes after
the NO the core sent itself.
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
from sealmail.proto.managesieve._responses import Response

__all__ = [
    "NEED_DATA",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "CheckScript",
    "ConnectionClosed",
    "DeleteScript",
    "Event",
    "GetScript",
    "HaveSpace",
    "ListScripts",
    "Logout",
    "NeedData",
    "ProtocolError",
    "PutScript",
    "RenameScript",
    "SetActive",
    "StartTLS",
    "Unauthenticated",
]


@dataclass(frozen=True, slots=True)
class HaveSpace(Event):
    """HAVESPACE name size (RFC 5804 2.5). Answer: `answer(OK)` or `answer(NO (QUOTA...))`."""

    needs_reply: ClassVar[bool] = True
    name: str
    size: int


@dataclass(frozen=True, slots=True)
class PutScript(Event):
    """PUTSCRIPT name content (RFC 5804 2.6): validate, check quota, store. Answer: `answer`."""

    needs_reply: ClassVar[bool] = True
    name: str
    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CheckScript(Event):
    """CHECKSCRIPT content (RFC 5804 2.12): validate only. Answer: `answer`."""

    needs_reply: ClassVar[bool] = True
    content: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class ListScripts(Event):
    """LISTSCRIPTS (RFC 5804 2.7). Answer: `send_listing(entries)` or `answer(NO)`."""

    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SetActive(Event):
    """SETACTIVE name (RFC 5804 2.8); `name` None is the empty name: deactivate. `answer`."""

    needs_reply: ClassVar[bool] = True
    name: str | None


@dataclass(frozen=True, slots=True)
class GetScript(Event):
    """GETSCRIPT name (RFC 5804 2.9). Answer: `send_script(content)` or `answer(NO)`."""

    needs_reply: ClassVar[bool] = True
    name: str


@dataclass(frozen=True, slots=True)
class DeleteScript(Event):
    """DELETESCRIPT name (RFC 5804 2.10). Answer: `answer`."""

    needs_reply: ClassVar[bool] = True
    name: str


@dataclass(frozen=True, slots=True)
class RenameScript(Event):
    """RENAMESCRIPT old new (RFC 5804 2.11.1). Answer: `answer`."""

    needs_reply: ClassVar[bool] = True
    old: str
    new: str


@dataclass(frozen=True, slots=True)
class Unauthenticated(Event):
    """UNAUTHENTICATE (RFC 5804 2.14) was answered; the host forgets the user."""

    user: str


@dataclass(frozen=True, slots=True)
class Logout(Event):
    """LOGOUT was answered with OK; the session is closed (RFC 5804 2.3)."""


@dataclass(frozen=True, slots=True)
class ProtocolError(Event):
    """A command was refused by the core; `response` was sent. For the log."""

    response: Response
    command: str
