"""imapd.conf auditlog through the IMAP session logic (memory store, no sockets): which commands
write which of Cyrus's auditlog lines (the lines' shapes: tests/store/test_auditlog.py; the
daemons end to end: tests/integration/test_auditlog_live.py)."""

from __future__ import annotations

import logging

import pytest
from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession
from sealmail.proto.imap import NEED_DATA, CommandReceived, ServerConnection, StatusResponse
from sealmail.store.api import DeliveryTarget, MessageStore
from sealmail.store.auditlog import AuditLog

MESSAGE = b"From: f@example.com\r\nMessage-ID: <m1@example.com>\r\n\r\nHello\r\n"


def run(session: ImapSession, *lines: bytes) -> list[str]:
    """Send each command line; the tagged results, for checking that each command worked."""
    conn = ServerConnection()
    conn.send(StatusResponse("PREAUTH", "ready"))
    conn.data_to_send()
    for line in lines:
        conn.receive_data(line + b"\r\n")
        while (event := conn.next_event()) is not NEED_DATA:
            assert isinstance(event, CommandReceived), event
            for response in session.execute(event.command):
                conn.send(response)
    return [ln for ln in conn.data_to_send().decode().splitlines() if ln.startswith("a")]


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"]


@pytest.mark.parametrize("on", [True, False])
def test_each_change_writes_its_line(
    store: MessageStore, caplog: pytest.LogCaptureFixture, on: bool
) -> None:
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    store.deliver(MESSAGE, [DeliveryTarget("user.fred", ("\\Seen",))] * 2)
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred",
                          audit=AuditLog("S9") if on else None)
    results = run(
        session,
        b"a1 CREATE INBOX.Lists",
        b"a2 CREATE INBOX.Lists.Sub",
        b"a3 RENAME INBOX.Lists INBOX.Old",
        b"a4 SETACL INBOX.Old bob lrs",
        b"a5 SETACL INBOX.Old bob lrs",  # no change: no line
        b"a6 DELETEACL INBOX.Old bob",
        b"a7 APPEND INBOX.Old (\\Flagged) {%d}" % len(MESSAGE) + b"\r\n" + MESSAGE,
        b"a8 SELECT INBOX",
        b"a9 COPY 1 INBOX.Old",
        b"a10 MOVE 2 INBOX.Old",
        b"a11 SELECT INBOX.Old",
        b"a12 STORE 1 +FLAGS (\\Deleted)",
        b"a13 EXPUNGE",
        b"a14 STORE 1 +FLAGS (\\Deleted)",
        b"a15 CLOSE",
        b"a16 DELETE INBOX.Old.Sub",
    )
    assert all(" OK " in result for result in results), results
    lines = audit_lines(caplog)
    if not on:
        assert lines == []
        return
    kinds = [" ".join(line.split()[1:2]) for line in lines]
    assert kinds == [
        "create", "acl:", "create", "acl:",  # a1, a2: Cyrus logs the new entry's ACL too
        "rename", "rename",  # a3: the mailbox and the one below it
        "acl:", "acl:",  # a4, a6
        "append",  # a7
        "append",  # a9
        "append", "expunge",  # a10
        "expunge",  # a13
        "expunge",  # a15
        "delete",  # a16
    ]
    assert all("sessionid=<S9>" in line for line in lines)
    old = store.mailbox("user.fred.Old")
    assert old is not None
    assert lines[4] == ("auditlog: rename sessionid=<S9> oldmailbox=<user.fred.Lists>"
                        f" newmailbox=<user.fred.Old> uniqueid=<{old.uniqueid}>")
    assert "oldmailbox=<user.fred.Lists.Sub> newmailbox=<user.fred.Old.Sub>" in lines[5]
    assert "oldacl=<fred\tlrswipkxtecda\t> acl=<fred\tlrswipkxtecda\tbob\tlrs\t>" in lines[6]
    assert "sysflags=<FL> " in lines[8] and "messageid=<m1@example.com>" in lines[8]
    assert "mailbox=<user.fred.Old>" in lines[9] and "sysflags=<SE> " in lines[9]
    assert "mailbox=<user.fred> " in lines[11] and "uid=<2>" in lines[11]
    assert "mailbox=<user.fred.Old> " in lines[12] and "sysflags=<FL|DE|EX>" in lines[12]
