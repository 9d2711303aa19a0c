"""The one mapping of store errors and SASL failures to POP3 replies."""

from __future__ import annotations

import pytest

from sealmail.proto.pop3 import (
    ResponseCode,
    maildrop_error,
    message_error,
    sasl_failure,
    update_error,
)
from sealmail.proto.sasl import FailureReason
from sealmail.store.errors import (
    DiskFull,
    MailboxBusy,
    MailboxCorrupt,
    MailboxNotFound,
    NoSuchMessage,
    PermissionDenied,
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
def test_maildrop_errors(error: Exception, code: ResponseCode) -> None:
    reply = maildrop_error(error)  # type: ignore[arg-type]
    assert not reply.ok and reply.code is code


def test_message_and_update_errors() -> None:
    assert message_error(NoSuchMessage("gone")).code is ResponseCode.SYS_PERM
    assert message_error(DiskFull("io")).code is ResponseCode.SYS_TEMP
    reply = update_error(DiskFull("x" * 1000))
    assert reply.render().startswith(b"-ERR [SYS/TEMP] some deleted messages not removed")
    assert len(reply.render()) <= 512  # RFC 1939 3: a response line is at most 512 octets


def test_every_sasl_failure_has_a_reply() -> None:
    for reason in FailureReason:
        reply = sasl_failure(reason)
        assert not reply.ok
        expected = ResponseCode.SYS_TEMP if reason is FailureReason.TEMPORARY else ResponseCode.AUTH
        assert reply.code is expected
    # An unknown user and a wrong password must read the same (no user probing).
    assert (
        sasl_failure(FailureReason.BAD_CREDENTIALS).text == "authenticating: authentication failure"
    )
