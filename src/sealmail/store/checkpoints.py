"""WAL checkpoints of the index, off the path to a delivery's 250.

SQLite checkpoints automatically inside the COMMIT that takes the WAL past 1,000 pages: that
commit copies the pages into the database file and fsyncs it before returning, so every few
hundred deliveries one batch waited for it (the p99 of end-of-data, docs/benchmarks.md). The
group commit counts what it commits here instead (on its one connection, `Index.writer`): once
that reaches `every` (a commit counts 1 and each message row 1 more), a thread of its own runs a
PASSIVE checkpoint (the kind SQLite's automatic one is: it never blocks a writer or a reader),
and once that thread runs, the writer's automatic checkpoint is turned off.

Durability does not change: a COMMIT is durable once its WAL frames are fsynced
(synchronous=FULL), whether or not they were checkpointed. Nor does the bound on the WAL: it is
checkpointed about as often as SQLite would (a commit of one copy writes about 4 WAL pages and
counts 2, one of 50 copies about 150 pages and counts 51: every 256 is some 500 or 750 pages,
against SQLite's 1,000), and when 16 checkpoints asked for have not run (the thread cannot start,
or fails) the committer runs one itself.
Every other connection (imapd's, the tools') keeps SQLite's automatic checkpoint. The duplicate
delivery database's marks (sealmail.store.duplicates) are written and checkpointed the same way.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("sealmail.store")

EVERY = 256  # counted between checkpoints: 1 per commit + 1 per row it adds
_BEHIND = 16  # checkpoints asked for and not run before the committer runs one itself


class Checkpointer:
    """Runs PASSIVE checkpoints of the database at `path` in a thread, each time its writer's
    commits count `every`; `connect` opens the thread's own connection."""

    def __init__(
        self, path: Path, connect: Callable[[], sqlite3.Connection], every: int = EVERY
    ) -> None:
        self._path = path
        self._connect = connect
        self._every = every
        self._commits = 0  # counted since the last checkpoint asked for
        self._unanswered = 0  # checkpoints asked for since the last one that ran
        self._wake = threading.Condition()
        self._asked = False
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._quiet: sqlite3.Connection | None = None  # the writer whose automatic one is off
        self.done = 0  # checkpoints run (tests and the bench read it)

    def committed(self, conn: sqlite3.Connection, rows: int = 1) -> None:
        """After a commit of `rows` messages (or marks) on `conn` (the writer, turn held): ask
        for a checkpoint when due. Never raises: the commit stands whatever happens here."""
        try:
            self._count(conn, 1 + rows)
        except Exception as exc:
            log.warning("%s: WAL checkpoint not run: %s", self._path, exc)

    def _count(self, conn: sqlite3.Connection, weight: int) -> None:
        self._commits += weight
        if self._unanswered >= _BEHIND:
            # The thread is stuck (or cannot start): keep the WAL bounded ourselves.
            self._checkpoint(conn)
            return
        if self._commits < self._every:
            return
        self._commits = 0
        self._unanswered += 1
        with self._wake:
            if self._stopping:
                return
            if self._thread is None or self._pid != os.getpid():
                # Started on first need, and again in a forked child (threads do not fork).
                thread = threading.Thread(target=self._run, name="wal-checkpoint", daemon=True)
                thread.start()
                self._thread, self._pid = thread, os.getpid()
            self._asked = True
            self._wake.notify()
        if conn is not self._quiet:
            # From now on the thread's job. Until a process has committed `every` (the
            # short-lived `sealmail deliver`, a forked child's first), SQLite's own goes on.
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._quiet = conn

    def close(self) -> None:
        """Stop the thread (before the index closes its connections)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        conn: sqlite3.Connection | None = None
        while True:
            with self._wake:
                while not self._asked and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    if conn is not None:
                        conn.close()
                    return
                self._asked = False
            try:
                if conn is None:
                    conn = self._connect()
                self._checkpoint(conn)
            except Exception as exc:  # the next interval tries again; the committer is the backstop
                log.warning("%s: WAL checkpoint failed: %s", self._path, exc)

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        self._unanswered = 0
        self.done += 1
