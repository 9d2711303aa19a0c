"""The \\Recent marks' own file (sealmail.store.disk.recent): a claim never joins the index's
write queue, concurrent claims (threads, processes) never hand a UID out twice, a process killed
mid-claim leaves the marks usable, and rename/delete/reconstruct carry or drop the marks; on
every backend where the contract allows it."""

from __future__ import annotations

import multiprocessing
import os
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import make_config

from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.disk.recent import RECENT_NAME, RecentMarks

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def deliver(store: Any, mailbox: str, count: int) -> None:
    for _ in range(count):
        store.deliver(MESSAGE, [DeliveryTarget(mailbox)])


@pytest.fixture
def alice(store: Any) -> Any:
    for name in ("user.alice", "user.bob"):
        store.create_mailbox(name)
    store.set_acl("user.alice", "bob", "lrswi")
    deliver(store, "user.alice", 3)
    return store


def test_rename_carries_the_marks_and_delete_drops_them(alice: Any) -> None:
    store = alice
    store.create_mailbox("user.alice.Work")
    deliver(store, "user.alice.Work", 2)
    assert store.claim_recent("user.alice.Work", 2) == 0
    assert store.claim_recent("user.alice.Work", 1, "bob") == 0
    store.rename_mailbox("user.alice.Work", "user.alice.Done")
    assert store.claim_recent("user.alice.Done", 0) == 2
    assert store.claim_recent("user.alice.Done", 0, "bob") == 1
    # Made again under the old name: a new mailbox, nothing claimed in it.
    store.create_mailbox("user.alice.Work")
    deliver(store, "user.alice.Work", 2)
    assert store.claim_recent("user.alice.Work", 0) == 0
    store.delete_mailbox("user.alice.Done")
    store.rename_mailbox("user.alice.Work", "user.alice.Done")
    assert store.claim_recent("user.alice.Done", 0) == 0
    # A user deleted takes their marks on everyone's mailboxes along.
    assert store.claim_recent("user.alice", 3, "bob") == 0
    store.delete_mailbox("user.bob")
    store.create_mailbox("user.bob")
    assert store.claim_recent("user.alice", 0, "bob") == 0


@pytest.mark.disk_only("the marks file beside the index")
def test_a_claim_does_not_wait_for_the_index_write_lock(alice: DiskStore) -> None:
    """Another process's group commit holds the index's write lock (here: an open BEGIN
    IMMEDIATE); claims go on regardless, and the index is never written by one."""
    store = alice
    other = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        result: list[int] = []
        claimer = threading.Thread(target=lambda: result.extend(
            [store.claim_recent("user.alice", 2), store.claim_recent("user.alice", 3, "bob")]))
        claimer.start()
        claimer.join(30)
        assert not claimer.is_alive() and result == [0, 0]
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert store.claim_recent("user.alice", 0) == 2
    assert (store.configdirectory / RECENT_NAME).exists()


@pytest.mark.disk_only("the marks file's SQLite write lock")
def test_threads_claiming_at_once_never_overlap(alice: DiskStore) -> None:
    store = alice
    deliver(store, "user.alice", 37)  # 40 in all
    other = DiskStore(store.settings)  # a second store in this process: its own lock fd
    barrier = threading.Barrier(6)
    claimed: list[list[int]] = []

    def claim(who: DiskStore) -> None:
        mine: list[int] = []
        barrier.wait(30)
        for upto in range(1, 41):
            mark = who.claim_recent("user.alice", upto)
            mine.extend(range(mark + 1, upto + 1))
        claimed.append(mine)

    try:
        threads = [threading.Thread(target=claim, args=(store if i % 2 else other,))
                   for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        other.close()
    assert len(claimed) == 6
    assert sorted(uid for mine in claimed for uid in mine) == list(range(1, 41))


@pytest.mark.disk_only("the index's mark, raised by a delivery's commit")
def test_an_append_claims_its_recent_in_its_commit_when_nothing_older_is_unclaimed(
    alice: DiskStore,
) -> None:
    """DeliveryTarget.claims_recent: the commit raises the index's mark to the copy when every
    older UID is claimed (by the index's mark or the marks file's), and no later claim gets
    it; with an older UID unclaimed, or for a reader with a mark of their own, it claims
    nothing (the appender's sync claims as before)."""
    store = alice  # UIDs 1-3, none claimed

    def append(reader: str = "alice") -> Any:
        [appended] = store.deliver(
            MESSAGE, [DeliveryTarget("user.alice", reader=reader, claims_recent=True)])
        return appended

    assert not append().recent  # UID 4: 1-3 unclaimed
    assert store.claim_recent("user.alice", 4) == 0
    fifth = append()
    assert fifth.recent and fifth.uid == 5
    assert store.claim_recent("user.alice", 5) == 5  # nobody claims it again
    uniqueid = store.mailbox("user.alice").uniqueid  # type: ignore[union-attr]
    assert store.spool.recent.stored(uniqueid, "") == 4  # the index's mark, not the file's
    assert not append("bob").recent  # UID 6: bob's \Recent is his own (and 6 is alice's)
    assert store.claim_recent("user.alice", 6) == 5  # claimed in the marks file
    assert append().recent  # UID 7: 6 claimed in the file, not in the index
    assert store.claim_recent("user.alice", 0) == 7
    assert store.claim_recent("user.alice", 7, "bob") == 0


def _claim_then_die(root: Path, ready: Any) -> None:
    """In a process of its own: claim UIDs 1..2, then die inside a claim of 3 that holds the
    marks' turn and SQLite's write lock with the new mark written but not committed."""
    store = DiskStore.from_config(make_config(root))
    store.claim_recent("user.alice", 2)
    marks = store.spool.recent
    conn = marks._connection()
    with marks._turn.taken():
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE marks SET uid = 3")
        ready.set()
        os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.disk_only("a process killed mid-claim")
def test_a_process_killed_mid_claim_leaves_the_marks_usable(tmp_path: Path) -> None:
    store = DiskStore.from_config(make_config(tmp_path))
    try:
        store.create_mailbox("user.alice")
        deliver(store, "user.alice", 3)
        context = multiprocessing.get_context("spawn")
        ready = context.Event()
        child = context.Process(target=_claim_then_die, args=(tmp_path, ready))
        child.start()
        child.join(60)
        assert ready.is_set() and child.exitcode == -signal.SIGKILL
        # The committed claim stays; the one in flight was never made, and nothing is locked.
        assert store.claim_recent("user.alice", 0) == 2
        assert store.claim_recent("user.alice", 3) == 2
        assert store.claim_recent("user.alice", 3) == 3
    finally:
        store.close()


@pytest.mark.disk_only("the marks file's connections")
def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    """A forked child (a preforked imapd) never uses the parent's connection to the marks,
    and claims through its own."""
    store = DiskStore.from_config(make_config(tmp_path))
    try:
        store.create_mailbox("user.alice")
        deliver(store, "user.alice", 3)
        assert store.claim_recent("user.alice", 1) == 0
        parents = store.spool.recent._connection()
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: exits at once, whatever happens
            code = 1
            try:
                own = store.spool.recent._connection()
                mark = store.claim_recent("user.alice", 2)
                code = 0 if own is not parents and mark == 1 else 2
            finally:
                os.write(write, bytes([code]))
                os._exit(0)
        os.close(write)
        assert os.read(read, 1) == b"\0"
        os.waitpid(pid, 0)
        assert store.spool.recent._connection() is parents
        assert store.claim_recent("user.alice", 0) == 2  # the child's claim counts here
    finally:
        store.close()


@pytest.mark.disk_only("the marks file and the index's floor")
def test_a_lost_marks_file_falls_back_to_the_index(tmp_path: Path) -> None:
    """recent.db removed (or lost): the index's old marks still count, so only mail claimed
    since the file was made shows \\Recent again; reconstruct lowers a mark past the last
    UID."""
    config = make_config(tmp_path)
    store = DiskStore.from_config(config)
    store.create_mailbox("user.alice")
    deliver(store, "user.alice", 4)
    index = store._index.connection()
    index.execute("UPDATE mailboxes SET recentuid = 1")
    assert store.claim_recent("user.alice", 0) == 1  # the floor
    assert store.claim_recent("user.alice", 3) == 1
    store.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{config.configdirectory / RECENT_NAME}{suffix}").unlink(missing_ok=True)
    store = DiskStore.from_config(config)
    try:
        assert store.claim_recent("user.alice", 0) == 1
        assert store.claim_recent("user.alice", 4) == 1
        store.spool.recent.claim(store.mailbox("user.alice").uniqueid, "", 0, 9)  # type: ignore[union-attr]
        fixes = store.reconstruct("user.alice")
        assert any(RECENT_NAME in fix for fix in fixes), fixes
        assert store.claim_recent("user.alice", 0) == 4
    finally:
        store.close()


def test_a_claim_from_a_read_overtaken_by_another_claim_takes_the_full_transaction(
    tmp_path: Path,
) -> None:
    """`claim_seen` raises the mark in one statement only if it is still what the caller read;
    when another claim came in between, it answers as `claim` would (never a UID twice)."""
    (tmp_path / "lock").mkdir()
    marks = RecentMarks(tmp_path / RECENT_NAME)
    try:
        assert marks.claim_seen("box", "", 0, 5, None) == 0  # no mark yet: made at 5
        assert marks.stored("box", "") == 5
        assert marks.claim_seen("box", "", 0, 7, 5) == 5  # still 5: raised in one statement
        assert marks.claim("box", "", 0, 9) == 7  # another session's claim, after our read
        assert marks.claim_seen("box", "", 0, 12, 7) == 9  # overtaken: the transaction
        assert marks.stored("box", "") == 12
        assert marks.claim_seen("box", "", 20, 30, 12) == 20  # the index's floor counts
        assert marks.claim("new", "bob", 0, 2) == 0  # made after our read of no mark
        assert marks.claim_seen("new", "bob", 0, 6, None) == 2
        assert marks.stored("new", "bob") == 6
    finally:
        marks.close()
