"""FETCH's kept parses on their way to the index (sealmail.store.disk.structures): a save never
waits for the write lock; what waits is read back, written by the next group commit of IMAP
changes or the next save that finds the lock free, never onto another mailbox's message, and
bounded."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.store.conftest import make_config
from tests.support.stores import index_of_version_11

from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.disk.structures import WaitingStructures

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskStore]:
    store = DiskStore.from_config(make_config(tmp_path))
    store.create_mailbox("user.a")
    for _ in range(3):
        store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    yield store
    store.close()


def _kept(store: DiskStore, name: str) -> dict[int, bytes]:
    """What the index itself holds (not the waiting blobs)."""
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db")
    try:
        return {uid: blob for uid, blob in conn.execute(
            "SELECT s.id & 0xffffffff, structure FROM structures s JOIN mailboxes m"
            " ON s.id >> 32 = m.id WHERE name = ?", (name,))}
    finally:
        conn.close()


class _LockHeld:
    """Another process's writer (a connection of its own in BEGIN IMMEDIATE)."""

    def __init__(self, store: DiskStore) -> None:
        self.conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, *exc: object) -> None:
        self.conn.execute("ROLLBACK")
        self.conn.close()


def test_a_save_with_the_lock_free_is_written_at_once(disk: DiskStore) -> None:
    disk.save_message_structures("user.a", {1: b"one", 2: b"two"})
    assert _kept(disk, "user.a") == {1: b"one", 2: b"two"}
    assert not disk.spool.structures


def test_a_save_written_alone_takes_no_savepoint(disk: DiskStore) -> None:
    """In a transaction of their own the blobs need no SAVEPOINT and RELEASE (two statements
    fewer per kept parse of an APPEND); in a group commit they keep theirs."""
    statements: list[str] = []
    disk.spool.index.connection().set_trace_callback(statements.append)
    disk.save_message_structures("user.a", {1: b"one"})
    assert _kept(disk, "user.a") == {1: b"one"}
    assert "COMMIT" in statements
    assert not any(s.startswith(("SAVEPOINT", "RELEASE")) for s in statements)


def test_a_save_never_waits_and_the_next_group_commit_writes_it(disk: DiskStore) -> None:
    with _LockHeld(disk):
        saver = threading.Thread(target=disk.save_message_structures,
                                 args=("user.a", {1: b"one", 3: b"three"}))
        saver.start()
        saver.join(30)
        assert not saver.is_alive()  # returned while the lock was held
        assert _kept(disk, "user.a") == {}
        assert disk.message_structures("user.a", [1, 2, 3]) == {1: b"one", 3: b"three"}
        assert disk.message_structures("user.a", [2]) == {}
    disk.update_flags("user.a", [2], ["\\Flagged"], "add")  # a group commit of IMAP changes
    assert _kept(disk, "user.a") == {1: b"one", 3: b"three"}
    assert not disk.spool.structures
    assert disk.message_structures("user.a", [1, 2, 3]) == {1: b"one", 3: b"three"}


def test_a_later_save_with_the_lock_free_takes_the_waiting_ones(disk: DiskStore) -> None:
    with _LockHeld(disk):
        disk.save_message_structures("user.a", {1: b"one"})
    disk.save_message_structures("user.a", {2: b"two"})
    assert _kept(disk, "user.a") == {1: b"one", 2: b"two"}


def test_waiting_blobs_never_land_on_another_mailbox(disk: DiskStore) -> None:
    """Saved for a mailbox then deleted and made again under its name (or expunged): the
    blobs update nothing; the new mailbox's messages have none."""
    with _LockHeld(disk):
        disk.save_message_structures("user.a", {1: b"old", 2: b"old"})
    assert disk.spool.structures
    disk.delete_mailbox("user.a")
    disk.create_mailbox("user.a")
    disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
    assert disk.message_structures("user.a", [1, 2]) == {}
    disk.update_flags("user.a", [1], ["\\Flagged"], "add")
    assert _kept(disk, "user.a") == {} and not disk.spool.structures


def test_closing_writes_what_waits(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    store = DiskStore.from_config(config)
    store.create_mailbox("user.a")
    store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    with _LockHeld(store):
        store.save_message_structures("user.a", {1: b"one"})
    store.close()
    with DiskStore.from_config(config) as again:
        assert again.message_structures("user.a", [1]) == {1: b"one"}


def test_at_most_so_many_wait() -> None:
    waiting = WaitingStructures(most=3)
    waiting.add(1, {1: b"a", 2: b"b"})
    waiting.add(1, {2: b"B"})  # the same message again: still two
    waiting.add(2, {1: b"c", 2: b"d"})  # too many: dropped
    assert waiting.get(1, [1, 2, 3]) == {1: b"a", 2: b"B"} and waiting.get(2, [1]) == {}
    waiting.add(2, {5: b"e"})
    assert sorted(waiting.take()) == [(b"B", 1, 2), (b"a", 1, 1), (b"e", 2, 5)]
    assert not waiting and waiting.take() == []


def test_kept_parses_go_with_their_messages_and_follow_copies(disk: DiskStore) -> None:
    """The parses live in `structures` (store.index, version 12), keyed by mailbox and UID: a
    copy takes its original's along, an expunge (and a mailbox's delete) removes them, and a
    save for a message expunged meanwhile writes nothing."""
    disk.save_message_structures("user.a", {1: b"one", 2: b"two", 3: b"three"})
    disk.create_mailbox("user.b")
    disk.copy_messages("user.a", [1, 2], "user.b")
    assert disk.message_structures("user.b", [1, 2]) == {1: b"one", 2: b"two"}
    disk.expunge("user.a", [1])
    assert _kept(disk, "user.a") == {2: b"two", 3: b"three"}
    disk.delete_mailbox("user.b")
    disk.expunge("user.a", [3])
    disk.save_message_structures("user.a", {3: b"late"})
    conn = disk.spool.index.connection()
    assert conn.execute("SELECT structure FROM structures").fetchall() == [(b"two",)]


def test_an_index_of_version_11_moves_its_parses(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with DiskStore.from_config(config) as store:
        store.create_mailbox("user.a")
        for _ in range(3):
            store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    conn = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    index_of_version_11(conn)
    conn.execute("UPDATE messages SET structure = CAST(uid AS BLOB) WHERE uid != 2")
    conn.execute("PRAGMA user_version=11")
    conn.close()
    with DiskStore.from_config(config) as store:
        assert store.message_structures("user.a", [1, 2, 3]) == {1: b"1", 3: b"3"}
        columns = [row[1] for row in store.spool.index.connection().execute(
            "PRAGMA table_info(messages)")]
        assert "structure" not in columns
