"""Group commit of IMAP changes (sealmail.store.disk.changes): many sessions' STOREs, EXPUNGEs,
COPYs and APPENDs in one process are all applied, each with modseqs of its own; a batch shares
one transaction, a change that fails fails alone, a COMMIT that fails fails them all."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from tests.store.conftest import make_config

from sealmail.store.api import AppendedMessage, DeliveryTarget, FlagUpdate
from sealmail.store.disk import DiskStore
from sealmail.store.errors import MailboxNotFound, StoreError

pytestmark = pytest.mark.disk_only("the disk store's group commit of index changes")

MESSAGE = b"From: a@example.com\r\nSubject: group\r\n\r\nbody\r\n"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[DiskStore]:
    with DiskStore.from_config(make_config(tmp_path)) as store:
        store.create_mailbox("user.a")
        store.create_mailbox("user.a.copies")
        for _ in range(40):
            store.deliver(MESSAGE, [DeliveryTarget("user.a")])
        yield store


def _highest(store: DiskStore, name: str) -> int:
    info = store.mailbox(name)
    assert info is not None
    return info.highestmodseq


def _run_together(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run each call in its own thread; the results (or exceptions) in order."""
    results: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            results[i] = calls[i]()
        except Exception as exc:  # the test looks at it
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def test_concurrent_stores_expunges_copies_and_appends_are_all_applied(disk: DiskStore) -> None:
    before = _highest(disk, "user.a")
    calls: list[Callable[[], Any]] = []
    for i in range(1, 21):  # 20 sessions each flag one message with a keyword of their own
        calls.append(partial(disk.update_flags, "user.a", [i], [f"$k{i}"], "add"))
    for i in range(21, 31):  # 10 expunge one each
        calls.append(partial(disk.expunge, "user.a", [i]))
    for i in range(31, 36):  # 5 copy one each
        calls.append(partial(disk.copy_messages, "user.a", [i], "user.a.copies"))
    for _ in range(5):  # 5 APPEND (the delivery group commit, beside ours)
        calls.append(partial(disk.deliver, MESSAGE, [DeliveryTarget("user.a")]))
    results = _run_together(calls)
    assert not [r for r in results if isinstance(r, BaseException)]

    modseqs = []
    for result in results[:20]:
        assert isinstance(result, FlagUpdate)
        modseqs.append(result.records[0].modseq)
    for result in results[35:]:
        assert isinstance(result[0], AppendedMessage)
        modseqs.append(result[0].modseq)
    assert len(set(modseqs)) == len(modseqs) == 25  # no modseq given out twice
    # Every change took its own modseq: 20 flag changes, 10 expunges, 5 appends.
    assert _highest(disk, "user.a") == before + 35

    records = {r.uid: r for r in disk.messages("user.a")}
    for i in range(1, 21):
        assert f"$k{i}" in records[i].flags
    assert not set(range(21, 31)) & set(records)
    assert len(records) == 40 - 10 + 5
    assert len(disk.messages("user.a.copies")) == 5
    assert len({r.modseq for r in records.values()}) == len(records)


@pytest.fixture
def held(disk: DiskStore) -> Iterator[Callable[[int], None]]:
    """Hold the next group's COMMIT until `n` more changes wait behind it, so they form one
    batch; `wait_queued(n)` is what the test calls."""
    group = disk._changes
    gate = threading.Event()
    original = disk.spool._fault_hook

    def hook(point: str) -> None:
        if point == "changes":
            gate.wait(30)

    disk.spool._fault_hook = hook

    def wait_queued(n: int) -> None:
        deadline = time.monotonic() + 30
        while len(group._batches._queue) < n:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        gate.set()

    yield wait_queued
    disk.spool._fault_hook = original


def _lead(disk: DiskStore) -> threading.Thread:
    """A STORE that becomes the committer (held at its COMMIT by `held`), once it has taken
    its batch: it takes the commit turn first, and a change joining before would come along
    in its batch instead of waiting behind it."""
    first = threading.Thread(target=disk.update_flags, args=("user.a", [1], ["\\Seen"], "add"))
    first.start()
    deadline = time.monotonic() + 30
    while disk._changes._batches._batch is None:
        assert time.monotonic() < deadline
        time.sleep(0.001)
    return first


def test_changes_waiting_behind_a_commit_share_the_next_one(
    disk: DiskStore, held: Callable[[int], None]
) -> None:
    commits = []
    writing = disk.spool.index.writing

    def counted() -> Any:
        commits.append(1)
        return writing()

    disk.spool.index.writing = counted  # type: ignore[method-assign]
    first = _lead(disk)
    calls: list[Callable[[], Any]] = [
        partial(disk.update_flags, "user.a", [i], ["\\Flagged"], "add") for i in range(2, 10)
    ]
    runner = threading.Thread(target=lambda: results.extend(_run_together(calls)))
    results: list[Any] = []
    runner.start()
    held(8)
    first.join(30)
    runner.join(30)
    assert all(isinstance(r, FlagUpdate) for r in results)
    assert len(commits) == 2  # the first alone, then the eight together


def test_a_failing_change_fails_alone_in_its_batch(
    disk: DiskStore, held: Callable[[int], None]
) -> None:
    first = _lead(disk)
    calls: list[Callable[[], Any]] = [
        lambda: disk.update_flags("user.a", [2], ["\\Flagged"], "add"),
        lambda: disk.update_flags("user.nobody", [2], ["\\Flagged"], "add"),
        lambda: disk.expunge("user.a", [3]),
        lambda: disk.copy_messages("user.a", [4], "user.gone"),
    ]
    results: list[Any] = []
    runner = threading.Thread(target=lambda: results.extend(_run_together(calls)))
    runner.start()
    held(len(calls))
    first.join(30)
    runner.join(30)
    assert isinstance(results[0], FlagUpdate)
    assert isinstance(results[1], MailboxNotFound)
    assert results[2] == [3]
    assert isinstance(results[3], MailboxNotFound)
    records = {r.uid: r for r in disk.messages("user.a")}
    assert "\\Flagged" in records[2].flags and 3 not in records


def test_a_failed_commit_fails_every_change_and_leaves_no_copy(disk: DiskStore) -> None:
    def fail(point: str) -> None:
        if point == "changes":
            raise OSError(5, "injected")

    disk.spool._fault_hook = fail
    before = _highest(disk, "user.a")
    with pytest.raises(StoreError):
        disk.update_flags("user.a", [1], ["\\Seen"], "add")
    with pytest.raises(StoreError):
        disk.copy_messages("user.a", [1, 2], "user.a.copies")
    with pytest.raises(StoreError):
        disk.expunge("user.a", [5])
    disk.spool._fault_hook = None
    assert _highest(disk, "user.a") == before
    assert len(disk.messages("user.a")) == 40
    assert disk.messages("user.a.copies") == []
    assert os.listdir(disk.mailbox_path("user.a.copies")) == ["sealmail.header"]
    assert disk.update_flags("user.a", [1], ["\\Seen"], "add").records[0].modseq == before + 1


def test_a_copy_that_fails_after_linking_leaves_no_debris_for_the_next_one(
    disk: DiskStore, held: Callable[[int], None]
) -> None:
    """COPY A links UID 1 into the target, then fails (its second source file is gone) and is
    rolled back; COPY B in the same batch draws the same UID. A's clean-up must not take B's
    file: it is done by the committer before B runs, not by A's caller after the COMMIT."""
    (disk.mailbox_path("user.a") / "8.").unlink()
    first = _lead(disk)
    results: dict[str, Any] = {}

    def copy(key: str, uids: list[int]) -> None:
        try:
            results[key] = disk.copy_messages("user.a", uids, "user.a.copies")
        except StoreError as exc:
            results[key] = exc

    a = threading.Thread(target=copy, args=("a", [7, 8]))
    a.start()
    deadline = time.monotonic() + 30
    while len(disk._changes._batches._queue) < 1:  # A first in the batch, then B
        assert time.monotonic() < deadline
        time.sleep(0.001)
    b = threading.Thread(target=copy, args=("b", [9]))
    b.start()
    held(2)
    for thread in (first, a, b):
        thread.join(30)
    assert isinstance(results["a"], StoreError), results
    assert results["b"].pairs == [(9, 1)]  # the UID A had taken and given back
    assert disk.message_bytes("user.a.copies", 1) == MESSAGE
    assert sorted(os.listdir(disk.mailbox_path("user.a.copies"))) == ["1.", "sealmail.header"]
    # Alone, the failed COPY's link (UID 2) is removed by the committer all the same.
    with pytest.raises(StoreError):
        disk.copy_messages("user.a", [7, 8], "user.a.copies")
    assert sorted(os.listdir(disk.mailbox_path("user.a.copies"))) == ["1.", "sealmail.header"]


def test_a_change_alone_in_its_batch_runs_without_a_savepoint(disk: DiskStore) -> None:
    """Alone in its batch, a change runs in the transaction as it is (no SAVEPOINT and
    RELEASE: two statements fewer per STORE on a quiet mailbox); should it fail after
    writing, the transaction is rolled back, not committed, and its caller gets its own
    error; the next change commits as usual."""
    statements: list[str] = []
    conn = disk.spool.index.connection()  # this thread's: it leads its own batch
    conn.set_trace_callback(statements.append)
    before = _highest(disk, "user.a")

    def failing(conn: Any, effects: Any) -> None:
        conn.execute("UPDATE mailboxes SET highestmodseq = highestmodseq + 100"
                     " WHERE name = 'user.a'")
        raise MailboxNotFound("injected")

    try:
        with pytest.raises(MailboxNotFound, match="injected"):
            disk._changes.apply(failing)
        assert _highest(disk, "user.a") == before
        assert "COMMIT" not in statements and "ROLLBACK" in statements
        statements.clear()
        update = disk.update_flags("user.a", [1], ["\\Seen"], "add")
        assert update.records[0].modseq == before + 1 == _highest(disk, "user.a")
        assert "COMMIT" in statements
        assert not any(s.startswith(("SAVEPOINT", "RELEASE")) for s in statements)
    finally:
        conn.set_trace_callback(None)


def test_a_change_waits_for_the_commit_turn_instead_of_napping(
    disk: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process (here a second open file description of lock/commit) holds the commit
    turn and SQLite's write lock, as a delivery does: a STORE sleeps on the turn in the kernel,
    never retrying BEGIN IMMEDIATE in naps, and commits once the turn is free."""
    import sqlite3

    from sealmail.store import index, locks
    from sealmail.store.locks import CommitTurn

    naps: list[float] = []
    sleep = time.sleep

    def counted(seconds: float) -> None:
        if threading.current_thread().name == "store":
            naps.append(seconds)
        sleep(seconds)

    monkeypatch.setattr(index.time, "sleep", counted)
    asleep = threading.Event()  # the STORE's committer about to wait on the turn

    def flock(fd: int, operation: int) -> None:
        if operation == fcntl.LOCK_EX and threading.current_thread().name == "store":
            asleep.set()
        fcntl.flock(fd, operation)

    monkeypatch.setattr(locks, "fcntl", SimpleNamespace(
        flock=flock, LOCK_EX=fcntl.LOCK_EX, LOCK_UN=fcntl.LOCK_UN, LOCK_NB=fcntl.LOCK_NB))
    path = disk.spool.lock_directory / "commit"
    other = CommitTurn(path)  # its own descriptor: excluded from ours as another process is
    writer = sqlite3.connect(disk.spool.index.path, isolation_level=None)
    result: list[Any] = []
    thread = threading.Thread(
        target=lambda: result.append(disk.update_flags("user.a", [1], ["\\Flagged"], "add")),
        name="store")
    try:
        with other.taken():
            writer.execute("BEGIN IMMEDIATE")
            thread.start()
            deadline = time.monotonic() + 60
            while not asleep.is_set() and not naps:  # (naps: it retried BEGIN instead)
                assert thread.is_alive() and time.monotonic() < deadline
                sleep(0.01)
            sleep(0.05)  # most likely asleep in flock by now; the assertions hold either way
            writer.execute("COMMIT")
        thread.join(60)
    finally:
        writer.close()
        other.close()
    assert [update.records[0].flags for update in result] == [("\\Flagged",)]
    assert naps == []


def test_a_turn_that_cannot_be_taken_fails_the_change_and_changes_nothing(
    disk: DiskStore,
) -> None:
    """lock/commit unusable (a directory): the STORE gets a StoreError naming it, the message
    keeps its flags, and STOREs work again once it is fixed."""
    before = _highest(disk, "user.a")
    path = disk.spool.lock_directory / "commit"
    if path.exists():
        path.unlink()
    path.mkdir(parents=True)
    with pytest.raises(StoreError, match="lock/commit"):  # its first change opens the file
        disk.update_flags("user.a", [1], ["\\Flagged"], "add")
    assert _highest(disk, "user.a") == before
    path.rmdir()
    assert disk.update_flags("user.a", [1], ["\\Flagged"], "add").records[0].modseq == before + 1
