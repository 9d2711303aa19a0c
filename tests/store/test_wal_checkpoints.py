"""The group commit's WAL checkpoints (sealmail.store.checkpoints): off the COMMIT, in a thread
of their own, the WAL still bounded, and the committer's backstop when that thread cannot run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.store.conftest import make_config

from sealmail.store import checkpoints
from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.checkpoints import Checkpointer
from sealmail.store.disk import DiskStore
from sealmail.store.duplicates import DuplicateDatabase

pytestmark = pytest.mark.disk_only("the SQLite index's write-ahead log")

MESSAGE = b"From: a@example.com\r\nSubject: wal\r\n\r\n" + b"body\r\n" * 20


def _deliver(disk: DiskStore, count: int) -> None:
    for _ in range(count):
        [result] = disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
        assert isinstance(result, AppendedMessage)


def _wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 30  # the thread runs when the scheduler lets it
    while not condition():
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _wal_size(tmp_path: Path) -> int:
    return (tmp_path / "config" / "mailboxes.db-wal").stat().st_size


def test_the_writer_does_not_checkpoint_in_its_commit_and_the_thread_does(
    tmp_path: Path,
) -> None:
    disk = DiskStore.from_config(make_config(tmp_path))
    try:
        disk.create_mailbox("user.a")
        commit = disk._commit
        commit.checkpoints = Checkpointer(disk._index.path, disk._index.open_connection, every=8)
        _deliver(disk, 1)
        writer = disk._index.writer()
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)  # SQLite's, yet
        # A delivery counts 2 (checkpoints.committed: one commit, one message), so with every=8
        # the thread is asked at every fourth: three more now, and then at each round's last
        # commit. Asked at its third, the checkpoint raced the round's fourth commit, and lost
        # on a busy machine: frames left behind keep the next write from restarting the WAL.
        _deliver(disk, 3)
        _wait_for(lambda: commit.checkpoints.done > 0)
        for _ in range(30):  # each round of 4 commits asks the thread once, at its last
            before = commit.checkpoints.done
            _deliver(disk, 4)
            assert commit.checkpoints._commits == 0  # asked at the round's last commit
            # Waiting for it keeps a busy machine's scheduler out of the WAL's size.
            _wait_for(lambda: commit.checkpoints.done > before)  # noqa: B023
        assert writer.execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)  # the thread's
        assert disk._index.connection().execute("PRAGMA wal_autocheckpoint").fetchone() == (1000,)
        # Restarted after the checkpoints: a few intervals' frames, not 120 commits' (~3 MB).
        assert _wal_size(tmp_path) < 1_000_000
    finally:
        disk.close()  # joins the checkpoint thread
    with DiskStore.from_config(make_config(tmp_path)) as again:
        assert again.mailbox("user.a") is not None
        assert again.mailbox("user.a").exists == 124  # type: ignore[union-attr]


def test_without_the_thread_the_committer_checkpoints_and_no_delivery_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)  # SQLite's checkpoints stay on
    monkeypatch.setattr(checkpoints, "_BEHIND", 4)
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        index = disk._index
        disk._commit.checkpoints = Checkpointer(index.path, index.open_connection, every=4)
        _deliver(disk, 40)  # every result AppendedMessage: a failed start fails no commit
        assert disk._commit.checkpoints.done >= 2  # inline, once 4 asks went unanswered
        assert _wal_size(tmp_path) < 1_000_000


def test_duplicate_marks_share_one_writer_and_are_checkpointed_off_the_mark(
    tmp_path: Path,
) -> None:
    db = DuplicateDatabase(tmp_path / "deliver.db")
    db.checkpoints = Checkpointer(db.path, db._open, every=4)
    try:
        for i in range(20):
            db.mark_all(f"<{i}@x>", ["user.a", "user.b"])
            db.mark(f"<{i}@y>", "user.a")
        assert db._writer().execute("PRAGMA wal_autocheckpoint").fetchone() == (0,)
        assert db.seen_among("<19@x>", ["user.a", "user.b", "user.c"]) == {"user.a", "user.b"}
        _wait_for(lambda: db.checkpoints.done >= 1)
    finally:
        db.close()


def test_a_forked_child_writes_through_its_own_writer_connection(tmp_path: Path) -> None:
    """The parent's writer connection (and its checkpoint thread) stay the parent's: a child
    forked after deliveries opens its own, and both go on drawing unique uids."""
    import os

    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk._commit.checkpoints = Checkpointer(
            disk._index.path, disk._index.open_connection, every=4
        )
        _deliver(disk, 6)  # the parent's writer open, its checkpoint thread started
        parent_writer = disk._index.writer()
        # Fork only once the thread is out of SQLite: a mutex SQLite held in it at fork time
        # stays held in the child for ever (the child's first query hung once in a suite).
        checkpoints = disk._commit.checkpoints
        _wait_for(lambda: not checkpoints._asked and checkpoints._unanswered == 0)
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            code = 1
            try:
                _deliver(disk, 6)
                code = 0 if disk._index.writer() is not parent_writer else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        _deliver(disk, 6)
        assert disk._index.writer() is parent_writer
        uids = [m.uid for m in disk.messages("user.a")]
        assert uids == list(range(1, 19))


def test_one_large_commit_asks_the_thread_and_never_checkpoints_inline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 recipients in one transaction: the checkpoint waits for the thread, not the
    250s of that transaction."""
    def no_thread(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", no_thread)
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        index = disk._index
        checkpointer = Checkpointer(index.path, index.open_connection)
        with index.turn():
            checkpointer.committed(index.writer(), rows=10_000)
        assert checkpointer.done == 0
