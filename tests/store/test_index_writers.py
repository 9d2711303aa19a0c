"""Index writers: one at a time within a process (a thread lock), and across processes SQLite's
write lock taken by BEGIN IMMEDIATE retried in short naps (sealmail.store.index).

Two Index objects on one file stand for two processes: each has its own thread lock, so they
meet only at SQLite's lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from sealmail.store.errors import MailboxBusy
from sealmail.store.index import Index


def _count(index: Index) -> int:
    return int(index.connection().execute("SELECT COUNT(*) FROM settings").fetchone()[0])


def test_a_writer_of_another_process_waits_for_the_lock_and_then_commits(tmp_path: Path) -> None:
    first, second = Index(tmp_path / "i.db"), Index(tmp_path / "i.db")
    holding, done = threading.Event(), threading.Event()
    release = threading.Event()

    def hold() -> None:
        with first.transaction() as conn:
            conn.execute("INSERT INTO settings VALUES ('a', 1)")
            holding.set()
            release.wait(30)

    def write() -> None:
        with second.transaction() as conn:
            conn.execute("INSERT INTO settings VALUES ('b', 2)")
        done.set()

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(30)
    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.05)  # queued behind the other "process"
    release.set()
    holder.join(30)
    writer.join(30)
    assert done.is_set()
    assert _count(second) == 2
    first.close()
    second.close()


def test_a_writer_gives_up_busy_after_the_busy_timeout(tmp_path: Path) -> None:
    first = Index(tmp_path / "i.db")
    second = Index(tmp_path / "i.db", busy_timeout=0.05)
    with first.transaction(), pytest.raises(MailboxBusy), second.transaction():
        pass
    # The lock and the connection are usable again, with the long timeout restored for reads.
    with second.transaction() as conn:
        conn.execute("INSERT INTO settings VALUES ('c', 3)")
    assert second.connection().execute("PRAGMA busy_timeout").fetchone()[0] == 50
    first.close()
    second.close()


def test_threads_of_one_process_write_one_at_a_time(tmp_path: Path) -> None:
    index = Index(tmp_path / "i.db")

    def write(n: int) -> None:
        for i in range(10):
            with index.transaction(durable=i % 2 == 0) as conn:
                conn.execute("INSERT INTO settings VALUES (?, ?)", (f"{n}-{i}", i))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert _count(index) == 80
    index.close()


def test_a_failed_transaction_rolls_back_and_releases_the_lock(tmp_path: Path) -> None:
    index = Index(tmp_path / "i.db")
    with pytest.raises(RuntimeError), index.transaction() as conn:
        conn.execute("INSERT INTO settings VALUES ('x', 1)")
        raise RuntimeError("boom")
    with index.transaction() as conn:
        conn.execute("INSERT INTO settings VALUES ('y', 1)")
    assert _count(index) == 1
    index.close()
