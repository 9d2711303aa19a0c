"""The one mapping of store errors to POP3 replies (RFC 2449 8, RFC 3206 response codes)."""

from __future__ import annotations

import pytest

from sealmail.pop3 import maildrop_error, message_error, update_error
from sealmail.proto.pop3 import ResponseCode
from sealmail.store.errors import (
    DiskFull,
    MailboxBusy,
    MailboxCorrupt,
    MailboxNotFound,
    NoSuchMessage,
    PermissionDenied,
    StoreError,
)


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (MailboxBusy("locked"), ResponseCode.IN_USE),
        (MailboxNotFound("none"), ResponseCode.SYS_PERM),
        (DiskFull("full"), ResponseCode.SYS_TEMP),
        (MailboxCorrupt("bad"), ResponseCode.SYS_TEMP),
        (PermissionDenied("no"), ResponseCode.SYS_PERM),
    ],
)
def test_maildrop_errors(error: StoreError, code: ResponseCode) -> None:
    reply = maildrop_error(error)
    assert not reply.ok and reply.code is code


def test_message_and_update_errors() -> None:
    assert message_error(NoSuchMessage("gone")).code is ResponseCode.SYS_PERM
    assert message_error(DiskFull("io")).code is ResponseCode.SYS_TEMP
    reply = update_error(DiskFull("x" * 1000))
    assert reply.render().startswith(b"-ERR [SYS/TEMP] some deleted messages not removed")
    assert len(reply.render()) <= 512  # RFC 1939 3: a response line is at most 512 octets


def test_a_line_end_in_the_detail_cannot_forge_a_reply() -> None:
    reply = message_error(StoreError("bad\r\n+OK forged"))
    assert reply.render().count(b"\r\n") == 1
