"""The duplicate delivery database (Cyrus's deliver.db): which Message-ID went to which mailbox.

Used by delivery when `duplicatesuppression` is on, so a message that reaches a mailbox twice
(a retried LMTP transaction, the same list post through two aliases) is stored once. SQLite in
WAL mode so lmtpd processes and `sealmail deliver` share it; one connection per thread.
synchronous=NORMAL: losing the last marks in a power failure only lets a duplicate through, which
is the safe direction, and spares a second fsync per delivery. Marks take their turn on
`lock/deliver.db` (sealmail.store.locks.CommitTurn) rather than poll SQLite's write lock.

A check and its mark are minutes apart for a big message, so two sessions delivering the same
message at once (an MTA retrying what it never saw acknowledged, while the first try is still
running) would both find it unseen and both store it: `exclusive` holds a flock on one of
LOCK_STRIPES files by Message-ID from the check to the mark. The kernel drops it when a process
dies, so a crash never leaves a message that can't be delivered.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from sealmail.store.checkpoints import Checkpointer
from sealmail.store.errors import DiskFull, MailboxBusy, StoreError
from sealmail.store.forks import FORKS
from sealmail.store.locks import CommitTurn, _open_lock_file
from sealmail.store.wal import switch_to_wal

LOCK_STRIPES = 256

_SCHEMA_VERSION = 1
_DAY = 86400.0


def database_error(exc: sqlite3.Error, path: Path) -> StoreError:
    """The StoreError for an SQLite failure on one of the small databases beside the index."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return MailboxBusy(f"{path}: {text}")
    if "full" in text:
        return DiskFull(f"{path}: {text}")
    return StoreError(f"{path}: {text}")


DUPLICATES_NAME = "deliver.db"  # in the configdirectory, as Cyrus's deliver.db
EXPIRE_BATCH = 10_000
# expire's report after each batch: (entries removed so far, entries it found to remove)
ExpireProgress = Callable[[int, int], None]


def lock_stripe(message_id: str) -> int:
    """Which of the LOCK_STRIPES locks `delivery_lock` takes for `message_id`: one thread that
    holds several (lmtpd's delivery batches) must not ask for one twice, and takes them in this
    order, so two processes' batches never wait on each other in a cycle."""
    digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:4], "big") % LOCK_STRIPES


@contextmanager
def delivery_lock(configdirectory: Path, message_id: str) -> Iterator[None]:
    """One delivery of `message_id` at a time on this machine (a flock on one of LOCK_STRIPES
    files under configdirectory/lock/duplicates): two sessions carrying the same message would
    otherwise both pass the duplicate check."""
    # A string, not three pathlib joins (~4 us a message, in lmtpd's delivery thread)
    fd = _open_lock_file(f"{configdirectory}/lock/duplicates/{lock_stripe(message_id):03d}")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


class DuplicateDatabase:
    """seen/mark/expire over (message_id, mailbox) pairs; safe across threads and processes."""

    def __init__(
        self,
        path: str | Path,
        clock: Callable[[], float] = time.time,
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        # Marks wait their turn in the kernel, not in SQLite's sleeping busy handler.
        self._turn = CommitTurn(self.path.parent / "lock" / self.path.name)
        # Marks go through one connection per process, its page cache warm and its checkpoints
        # off the path to the 250, as the index's group commit (sealmail.store.checkpoints).
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_forks = 0
        self.checkpoints = Checkpointer(self.path, self._open)
        self._connection()  # create the schema now, so errors show at open

    def _connection(self) -> sqlite3.Connection:
        """This thread's connection (a forked child opens its own: store.forks)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None or self._local.forks != FORKS.count:
            conn = self._local.conn = self._open()
            self._local.forks = FORKS.count
        return conn

    def _writer(self) -> sqlite3.Connection:
        """The marks' connection, used with the turn held (a forked child opens its own)."""
        if self._writer_conn is None or self._writer_forks != FORKS.count:
            self._writer_conn, self._writer_forks = self._open(), FORKS.count
        return self._writer_conn

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            switch_to_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("BEGIN IMMEDIATE")
            try:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version == 0:
                    conn.execute(
                        "CREATE TABLE IF NOT EXISTS deliveries ("
                        " message_id TEXT NOT NULL, mailbox TEXT NOT NULL, marked REAL NOT NULL,"
                        " PRIMARY KEY (message_id, mailbox)) WITHOUT ROWID"
                    )
                    conn.execute(
                        "CREATE INDEX IF NOT EXISTS deliveries_marked ON deliveries(marked)"
                    )
                    conn.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
                elif version != _SCHEMA_VERSION:
                    raise StoreError(f"{self.path}: unknown schema version {version}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        except OSError as exc:
            raise StoreError(f"{self.path}: {exc.strerror}") from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    def exclusive(self, message_id: str) -> AbstractContextManager[None]:
        """No other delivery of `message_id` (in any thread or process) until the block ends."""
        return delivery_lock(self.path.parent, message_id)

    def seen(self, message_id: str, mailbox: str) -> bool:
        try:
            row = (
                self._connection()
                .execute(
                    "SELECT 1 FROM deliveries WHERE message_id = ? AND mailbox = ?",
                    (message_id, mailbox),
                )
                .fetchone()
            )
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return row is not None

    def seen_among(self, message_id: str, mailboxes: Sequence[str]) -> set[str]:
        """Those of `mailboxes` the message was delivered to: one query, not one per name."""
        wanted = list(dict.fromkeys(mailboxes))
        found: set[str] = set()
        try:
            conn = self._connection()
            for start in range(0, len(wanted), 500):  # SQLite's bound on parameters
                chunk = wanted[start : start + 500]
                rows = conn.execute(
                    "SELECT mailbox FROM deliveries WHERE message_id = ? AND mailbox IN"
                    f" ({','.join('?' * len(chunk))})",
                    (message_id, *chunk),
                ).fetchall()
                found.update(mailbox for (mailbox,) in rows)
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return found

    def mark(self, message_id: str, mailbox: str, when: float | None = None) -> None:
        marked = self._clock() if when is None else when
        try:
            with self._turn.taken():
                conn = self._writer()
                conn.execute(
                    "INSERT OR REPLACE INTO deliveries (message_id, mailbox, marked)"
                    " VALUES (?, ?, ?)",
                    (message_id, mailbox, marked),
                )
                self.checkpoints.committed(conn)
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc

    def mark_all(self, message_id: str, mailboxes: Sequence[str]) -> None:
        """`mark` of each mailbox in one transaction (one WAL append, not one per recipient)."""
        self.mark_pairs([(message_id, mailbox) for mailbox in mailboxes])

    def mark_pairs(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`mark` of each (Message-ID, mailbox) in one transaction: a batch of lmtpd's
        delivery thread, many messages, one write."""
        if len(pairs) <= 1:
            for message_id, mailbox in pairs:
                self.mark(message_id, mailbox)
            return
        marked = self._clock()
        try:
            with self._turn.taken():
                conn = self._writer()
                conn.execute("BEGIN IMMEDIATE")
                try:
                    conn.executemany(
                        "INSERT OR REPLACE INTO deliveries (message_id, mailbox, marked)"
                        " VALUES (?, ?, ?)",
                        [(message_id, mailbox, marked) for message_id, mailbox in pairs],
                    )
                    conn.execute("COMMIT")
                    self.checkpoints.committed(conn, len(pairs))
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc

    def expire(self, days: float, progress: ExpireProgress | None = None) -> int:
        """Remove entries marked more than `days` days ago; returns how many went.

        In batches of EXPIRE_BATCH, each its own transaction: lmtpd's marks wait for one batch,
        not for the whole purge of a large database."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = self._clock() - days * _DAY
        conn = self._connection()
        try:
            (total,) = conn.execute(
                "SELECT count(*) FROM deliveries WHERE marked < ?", (cutoff,)
            ).fetchone()
            removed = 0
            while removed < total:
                gone = conn.execute(
                    "DELETE FROM deliveries WHERE (message_id, mailbox) IN (SELECT message_id,"
                    " mailbox FROM deliveries WHERE marked < ? LIMIT ?)",
                    (cutoff, EXPIRE_BATCH),
                ).rowcount
                if gone <= 0:
                    break  # another expire took them meanwhile
                removed += gone
                if progress is not None:
                    progress(removed, total)
        except sqlite3.Error as exc:
            raise database_error(exc, self.path) from exc
        return removed

    def close(self) -> None:
        self.checkpoints.close()
        self._turn.close()
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._writer_conn = None
