"""Cyrus's auditlog lines (sealmail.store.auditlog): each line's shape as Cyrus 3.6 writes it
(imap/mailbox.c, imap/mboxlist.c), and the helpers that read around the store's calls (on
every backend)."""

from __future__ import annotations

import logging

import pytest

from sealmail.store import auditlog
from sealmail.store.api import (
    AppendedMessage,
    DeliveryTarget,
    MailboxInfo,
    MessageRecord,
    MessageStore,
)

BOX = MailboxInfo("user.bob", "f00d", "default", 1700000000, 6, 12, 5,
                  {"bob": "lrswipkxtecda", "anyone": "lrs"})
MESSAGE = b"From: a@example.com\r\nMessage-ID:\r\n <id@host>\r\n\r\nbody\r\n"


def test_append_line() -> None:
    appended = AppendedMessage("user.bob", 1700000000, 5, 12, "ab" * 20, 1234,
                               uniqueid="f00d", flags=("\\Seen", "\\Answered", "$Label"))
    assert auditlog.append_line("S1", appended, "<id@host>") == (
        "auditlog: append sessionid=<S1> mailbox=<user.bob> uniqueid=<f00d> uid=<5>"
        f" modseq=<12> sysflags=<AN|SE> guid=<{'ab' * 20}> messageid=<id@host> size=<1234>"
    )


def test_expunge_line_marks_the_record_expunged() -> None:
    record = MessageRecord(5, 13, 0.0, 1234, "cd" * 20, ("\\Deleted", "\\Flagged"))
    assert auditlog.expunge_line("S1", BOX, record) == (
        "auditlog: expunge sessionid=<S1> mailbox=<user.bob> uniqueid=<f00d> uid=<5>"
        f" modseq=<13> sysflags=<FL|DE|EX> guid=<{'cd' * 20}> size=<1234>"
    )


def test_mailbox_lines() -> None:
    renamed = MailboxInfo("user.bob.new", "f00d", "default", 1, 1, 1, 0)
    assert auditlog.create_line("S1", BOX) == (
        "auditlog: create sessionid=<S1> mailbox=<user.bob> uniqueid=<f00d>"
        " uidvalidity=<1700000000>"
    )
    assert auditlog.delete_line("S1", BOX) == (
        "auditlog: delete sessionid=<S1> mailbox=<user.bob> uniqueid=<f00d>"
    )
    assert auditlog.rename_line("S1", "user.bob.old", renamed) == (
        "auditlog: rename sessionid=<S1> oldmailbox=<user.bob.old> newmailbox=<user.bob.new>"
        " uniqueid=<f00d>"
    )


def test_acl_line_in_cyrus_acl_form() -> None:
    before = MailboxInfo("user.bob", "f00d", "default", 1, 1, 12, 0, {"bob": "lrs"})
    assert auditlog.acl_line("S1", before, BOX) == (
        "auditlog: acl: sessionid=<S1> mailbox=<user.bob> uniqueid=<f00d> mbtype=<e>"
        " oldacl=<bob\tlrs\t> acl=<bob\tlrswipkxtecda\tanyone\tlrs\t> foldermodseq=<12>"
    )
    assert "oldacl=<NONE>" in auditlog.acl_line("S1", None, BOX)


@pytest.mark.parametrize(("header", "expected"), [
    (MESSAGE, "<id@host>"),
    (b"Subject: none\r\n\r\nbody", "unknown"),
    (b"message-id: <a b@c>\r\n\r\n", "<a b@c>"),
    (b"Message-ID: <x@y>", "<x@y>"),  # truncated: no empty line, no CRLF
    (b"", "unknown"),
    (b"Message-ID: <\xff@y>\r\n\r\n", "<\ufffd@y>"),
    (b"Message-ID: <one@y>\r\nSubject: s\r\nMessage-ID: <two@y>\r\n\r\n", "<one@y>"),
])
def test_message_id_as_cyrus_shows_it(header: bytes, expected: str) -> None:
    assert auditlog.message_id_of(header) == expected


def test_off_is_none() -> None:
    assert auditlog.audit_for(False, "S1") is None
    audit = auditlog.audit_for(True, "S1")
    assert audit is not None and audit.session_id == "S1"


def test_acl_changed_logs_only_a_change(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    audit = auditlog.AuditLog("S1")
    audit.acl_changed(BOX, BOX)
    assert caplog.messages == []
    audit.created(BOX)
    assert [m.split(" sessionid")[0] for m in caplog.messages] == [
        "auditlog: create", "auditlog: acl:"]


def test_expunge_and_copies_read_around_the_store(
    store: MessageStore, caplog: pytest.LogCaptureFixture
) -> None:
    """On every backend (tests/store/conftest.py)."""
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    store.create_mailbox("user.bob")
    store.create_mailbox("user.bob.copies")
    store.deliver(MESSAGE, [DeliveryTarget("user.bob", flags=("\\Deleted",))] * 2)
    audit = auditlog.AuditLog("S1")
    copied = store.copy_messages("user.bob", [1, 2], "user.bob.copies")
    auditlog.log_copies(store, "user.bob", "user.bob.copies", copied, audit)
    target = store.mailbox("user.bob.copies")
    assert target is not None
    assert auditlog.expunge(store, "user.bob.copies", [2, 1, 9], audit) == [1, 2]
    assert auditlog.expunge(store, "user.bob", [1], None) == [1]  # off: the plain call
    lines = caplog.messages
    assert [line.split()[1] for line in lines] == ["append", "append", "expunge", "expunge"]
    assert f"mailbox=<user.bob.copies> uniqueid=<{target.uniqueid}> uid=<1>" in lines[0]
    assert "sysflags=<DE>" in lines[0] and "messageid=<id@host> " in lines[0]
    # Each expunge with its own modseq, as expunged_since orders them.
    for uid, line in enumerate(lines[2:], start=1):
        assert f"uid=<{uid}> modseq=<{target.highestmodseq + uid}>" in line
        assert "sysflags=<DE|EX>" in line
        assert store.expunged_since("user.bob.copies", target.highestmodseq + uid - 1)[0] == uid
