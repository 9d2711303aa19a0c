"""The \\Recent marks of the disk store (RFC 3501 2.3.2), apart from the index: `recent.db`.

A session that is told of new mail claims it (`claim_recent`): the mark is read and raised
atomically (one compare-and-set statement, or a write transaction when another claim came in
between) so that, of two sessions claiming at once, each gets only what the other did not.
In the index that write queued in the process's one SQLite write queue, behind group commits
each holding the lock through a WAL fsync (docs/benchmarks.md: 85% of a claiming session's
samples waited there). Cyrus keeps the marks apart from the index too (the seen
database's `lastuid`, the index header's `recentuid` written without an fsync of its own).

So the marks live in a small SQLite file of their own beside the index, one row per
(mailbox uniqueid, userid): the uniqueid, because a rename keeps it and a mailbox made again
under the same name (or a rebuilt index) never inherits old marks; userid '' for the mark the
index keeps (the owner's, or the mailbox's own: sealmail.store.seen.index_keeps_seen), so a
rename to another owner hands the mark on as the index's `recentuid` column did. Writers take
their turn on `lock/recent.db` (a flock, sealmail.store.locks.CommitTurn) and then SQLite's
write lock, which nobody else holds for more than a few microseconds: no fsync ever happens
inside (WAL with synchronous=NORMAL; only a checkpoint, every thousand pages, syncs).

Crash cases: a process killed mid-claim leaves its transaction uncommitted (SQLite rolls it
back, the kernel drops the flock); a power failure may take back claims made since the last
checkpoint, which only shows those messages \\Recent once more (RFC 3501 calls the flag
advisory; docs/imapd.md). The index's `recentuid` columns stay as a floor: the mark is the
higher of the two, so marks set before this file existed (schema upgrades, reconstruct's
adopted mailboxes) still count, and a lost or removed `recent.db` shows no more than the mail
since then as \\Recent again. An IMAP APPEND to its session's selected mailbox raises the
index's floor in its own commit when nothing older is unclaimed, instead of a claim here
(sealmail.store.disk.index_writes.IndexWrites.claim_recent).
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from sealmail.store.duplicates import database_error
from sealmail.store.errors import StoreError
from sealmail.store.forks import FORKS
from sealmail.store.locks import CommitTurn
from sealmail.store.wal import switch_to_wal

RECENT_NAME = "recent.db"
_SCHEMA_VERSION = 1
OWNER = ""  # the userid of the mark the index keeps (sealmail.store.seen.index_keeps_seen)


@contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """A write transaction: committed at the end, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
        conn.execute("COMMIT")
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class RecentMarks:
    """Read, raise, lower and drop \\Recent marks; safe across threads and processes."""

    def __init__(self, path: Path, busy_timeout: float = 30.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._turn = CommitTurn(path.parent / "lock" / path.name)
        self._closed = False

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.forks != FORKS.count:
            conn = self._local.conn = self._open()
            self._local.forks = FORKS.count
        return conn

    def _open(self) -> sqlite3.Connection:
        if self._closed:
            raise StoreError("the store is closed")
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
            os.close(fd)
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout,
                                   isolation_level=None, check_same_thread=False)
            switch_to_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")  # see the top: never an fsync per claim
            (version,) = conn.execute("PRAGMA user_version").fetchone()
            if version != _SCHEMA_VERSION:
                with self._turn.taken(), _transaction(conn):
                    self._create(conn)
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror}") from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _create(self, conn: sqlite3.Connection) -> None:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version == 0:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS marks (mailbox TEXT NOT NULL, userid TEXT NOT NULL,"
                " uid INTEGER NOT NULL, PRIMARY KEY (mailbox, userid)) WITHOUT ROWID"
            )
            conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
        elif version != _SCHEMA_VERSION:
            raise StoreError(f"{self.path}: unknown schema version {version}")

    def mark(self, uniqueid: str, userid: str) -> int:
        """The stored mark (0: none); one read, no transaction of its own."""
        return self.stored(uniqueid, userid) or 0

    def stored(self, uniqueid: str, userid: str) -> int | None:
        """The stored mark, None without one (for `claim_seen`); one read."""
        try:
            row = self._connection().execute(
                "SELECT uid FROM marks WHERE mailbox = ? AND userid = ?", (uniqueid, userid)
            ).fetchone()
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return None if row is None else int(row[0])

    def claim_seen(self, uniqueid: str, userid: str, floor: int, upto: int,
                   seen: int | None) -> int:
        """`claim`, for a caller that has just read the stored mark (`seen`, from `stored`): ONE
        statement that raises it only if it is still `seen` (a compare-and-set, atomic as
        every SQLite statement is), instead of a transaction of four (BEGIN IMMEDIATE, the
        read, the write, COMMIT: ~25 us of each new message's claim, docs/benchmarks.md,
        append17). If another session's claim came in between, the full `claim`."""
        conn = self._connection()
        try:
            with self._turn.taken():
                if seen is None:
                    raised = conn.execute(
                        "INSERT INTO marks (mailbox, userid, uid) VALUES (?, ?, ?)"
                        " ON CONFLICT (mailbox, userid) DO NOTHING",
                        (uniqueid, userid, upto),
                    ).rowcount
                else:
                    raised = conn.execute(
                        "UPDATE marks SET uid = ? WHERE mailbox = ? AND userid = ? AND uid = ?",
                        (upto, uniqueid, userid, seen),
                    ).rowcount
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        if raised == 1:
            return max(floor, seen or 0)
        return self.claim(uniqueid, userid, floor, upto)

    def claim(self, uniqueid: str, userid: str, floor: int, upto: int) -> int:
        """Raise the mark to `upto` and return it as it was (at least `floor`, the index's),
        read and written in one write transaction: two claims never get the same UID."""
        conn = self._connection()
        try:
            with self._turn.taken(), _transaction(conn):
                row = conn.execute(
                    "SELECT uid FROM marks WHERE mailbox = ? AND userid = ?",
                    (uniqueid, userid),
                ).fetchone()
                mark = max(floor, 0 if row is None else int(row[0]))
                if upto > mark:
                    conn.execute(
                        "INSERT INTO marks (mailbox, userid, uid) VALUES (?, ?, ?)"
                        " ON CONFLICT (mailbox, userid) DO UPDATE SET uid = excluded.uid",
                        (uniqueid, userid, upto),
                    )
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return mark

    def lower(self, uniqueid: str, most: int) -> int:
        """No mark of the mailbox above `most` (reconstruct, after the last UID went down);
        how many marks were lowered."""
        return self._write("UPDATE marks SET uid = ? WHERE mailbox = ? AND uid > ?",
                           [(most, uniqueid, most)])

    def drop(self, uniqueids: Iterable[str] = (), userid: str | None = None) -> None:
        """Forget the marks of deleted mailboxes, and every mark of a deleted user."""
        self._write("DELETE FROM marks WHERE mailbox = ?", [(u,) for u in uniqueids])
        if userid is not None:
            self._write("DELETE FROM marks WHERE userid = ?", [(userid,)])

    def _write(self, statement: str, rows: list[tuple[object, ...]]) -> int:
        if not rows:
            return 0
        conn = self._connection()
        try:
            with self._turn.taken(), _transaction(conn):
                changed = conn.executemany(statement, rows).rowcount
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return int(changed)

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._turn.close()
