"""The one place where store errors become POP3 replies (RFC 2449 8, RFC 3206 response codes).

sealmail.store.errors asks each protocol to map them once; SASL failures are the core's own
(sealmail.proto.pop3.sasl_failure), since they need nothing of the store.
"""

from __future__ import annotations

from sealmail.proto.pop3 import Reply, ResponseCode
from sealmail.store.errors import MailboxBusy, MailboxNotFound, StoreError

__all__ = ["maildrop_error", "message_error", "update_error"]


def _detail(exc: BaseException, limit: int = 200) -> str:
    """The error's text on one line, clipped: RFC 1939 3 keeps a response to 512 octets."""
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _system(exc: StoreError) -> ResponseCode:
    """RFC 3206 5: SYS/TEMP when trying later may help, SYS/PERM when an administrator must."""
    return ResponseCode.SYS_TEMP if exc.temporary else ResponseCode.SYS_PERM


def maildrop_error(exc: StoreError) -> Reply:
    """Why the maildrop cannot be opened after a successful login (Cyrus's openinbox)."""
    if isinstance(exc, MailboxBusy):
        return Reply(False, f"Unable to lock maildrop: {_detail(exc)}", ResponseCode.IN_USE)
    if isinstance(exc, MailboxNotFound):
        return Reply(
            False, "Unable to open maildrop: Mailbox does not exist", ResponseCode.SYS_PERM
        )
    return Reply(False, f"Unable to open maildrop: {_detail(exc)}", _system(exc))


def message_error(exc: StoreError) -> Reply:
    """RETR or TOP could not read the message."""
    return Reply(False, f"Could not read message: {_detail(exc)}", _system(exc))


def update_error(exc: StoreError) -> Reply:
    """RFC 1939 6: QUIT in the UPDATE state answers "-ERR some deleted messages not removed"."""
    return Reply(False, f"some deleted messages not removed: {_detail(exc)}", _system(exc))
