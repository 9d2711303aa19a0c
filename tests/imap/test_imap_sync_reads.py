"""What a session's commands read of the disk store's index while the selected mailbox does not
change: nothing but SQLite's `PRAGMA data_version` (the memo of sealmail.store.disk.syncing
answers the rights, STORE's would-change-nothing check and the sync after each command), and
one read transaction once another connection changed it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession
from sealmail.proto.imap import ParserLimits, parse_command, render
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskStore]:
    store = open_store("disk", store_config(tmp_path))
    store.create_mailbox("user.fred")
    for flags in ((), ("\\Seen",), ()):
        store.deliver(MESSAGE, [DeliveryTarget("user.fred", flags)])
    yield store
    store.close()


def run(session: ImapSession, line: str) -> bytes:
    out = session.execute(parse_command(line.encode() + b"\r\n", ParserLimits()))
    return b"".join(render(r) for r in out)


def statements_of(store: DiskStore, session: ImapSession, *lines: str) -> tuple[list[str], bytes]:
    seen: list[str] = []
    conn = store._index.connection()
    conn.set_trace_callback(seen.append)
    try:
        out = b"".join(run(session, line) for line in lines)
    finally:
        conn.set_trace_callback(None)
    return seen, out


def test_commands_on_an_unchanged_mailbox_read_no_row(disk: DiskStore) -> None:
    session = ImapSession(disk, SESSION_CONFIG, "fred", "user.fred")
    run(session, "a SELECT INBOX")
    statements, out = statements_of(disk, session, "b NOOP", "c STORE 2 +FLAGS (\\Seen)",
                                    "d UID FETCH 1:* (FLAGS)", "e CHECK")
    assert b"b OK" in out and b"c OK" in out and b"e OK" in out
    assert statements and set(statements) == {"PRAGMA data_version"}, statements


def test_another_connections_change_costs_one_read_transaction(
    disk: DiskStore, tmp_path: Path
) -> None:
    session = ImapSession(disk, SESSION_CONFIG, "fred", "user.fred")
    run(session, "a SELECT INBOX")
    other = open_store("disk", store_config(tmp_path))
    try:
        other.update_flags("user.fred", [1], ["\\Flagged"], "add")
        other.deliver(MESSAGE, [DeliveryTarget("user.fred")])
    finally:
        other.close()
    statements, out = statements_of(disk, session, "b NOOP")
    assert b"* 4 EXISTS\r\n* 4 RECENT\r\n* 1 FETCH (UID 1 FLAGS (\\Flagged \\Recent))" in out
    assert statements.count("BEGIN") == 1  # the sync's read
    # The \Recent claim writes the marks' own file, not the index
    # (sealmail.store.disk.recent): the next commands read no row at all.
    assert statements.count("BEGIN IMMEDIATE") == 0
    assert disk.claim_recent("user.fred", 0, "fred") == 4
    for tag in "cd":
        statements, out = statements_of(disk, session, f"{tag} NOOP")
        assert out == f"{tag} OK NOOP completed\r\n".encode()
        assert set(statements) == {"PRAGMA data_version"}
