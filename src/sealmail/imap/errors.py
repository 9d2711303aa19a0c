"""The one place where store errors become IMAP replies (RFC 5530 response codes).

Handlers raise `CommandFailed` (or let a `StoreError` through); the session turns either into the
tagged reply. Dovecot's idea: the store says what went wrong, each protocol maps it once.
"""

from __future__ import annotations

from sealmail.proto.imap import Atom, ResponseCode, StatusResponse, Value
from sealmail.store.errors import (
    DiskFull,
    InvalidMailboxName,
    InvalidMessage,
    InvalidQuota,
    InvalidRights,
    MailboxBusy,
    MailboxCorrupt,
    MailboxExists,
    MailboxNotFound,
    MessageTooLarge,
    NoSuchMessage,
    OverQuota,
    PermissionDenied,
    StoreError,
)

__all__ = ["CommandFailed", "store_failure"]


class CommandFailed(Exception):
    """A command that ends with a tagged NO (or BAD) instead of OK."""

    def __init__(self, text: str, code: str | None = None, status: str = "NO") -> None:
        super().__init__(text)
        self.text = text
        self.code = code
        self.status = status

    def response(self, tag: str) -> StatusResponse:
        code = None
        if self.code:
            name, _, rest = self.code.partition(" ")
            code = ResponseCode(name, tuple(_atoms(rest)))
        return StatusResponse(self.status, self.text, tag=tag, code=code)


def _atoms(text: str) -> list[Value]:
    return [Atom(text)] if text else []


# RFC 5530 codes; BAD for what the client got wrong in the request itself.
_CODES: tuple[tuple[type[StoreError], str, str], ...] = (
    (MailboxNotFound, "NONEXISTENT", "NO"),
    (MailboxExists, "ALREADYEXISTS", "NO"),
    (InvalidMailboxName, "CANNOT", "NO"),
    (PermissionDenied, "NOPERM", "NO"),
    (OverQuota, "OVERQUOTA", "NO"),
    (MessageTooLarge, "TOOBIG", "NO"),
    (InvalidMessage, "PARSE", "NO"),
    (DiskFull, "LIMIT", "NO"),
    (MailboxBusy, "INUSE", "NO"),
    (MailboxCorrupt, "CORRUPTION", "NO"),
    (NoSuchMessage, "NONEXISTENT", "NO"),
    (InvalidRights, "", "BAD"),
    (InvalidQuota, "", "BAD"),
)


def store_failure(error: StoreError) -> CommandFailed:
    """The reply to a store failure; anything unforeseen is a server bug (RFC 5530 SERVERBUG)."""
    for kind, code, status in _CODES:
        if isinstance(error, kind):
            return CommandFailed(str(error), code or None, status)
    return CommandFailed(str(error) or "Internal error", "SERVERBUG")
