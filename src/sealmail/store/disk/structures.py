"""FETCH's kept parses (the IMAP layer's `structure` blobs, sealmail.imap.fetching.kept) on
their way to the index, without making a FETCH wait for the write lock.

Under imaptest's stress profile sessions keep appending, so most FETCHes meet a message whose
parse is not kept yet and save it; as a transaction of its own that save queued for the write
lock behind group commits, each held through a WAL fsync (9% of imapd's samples,
docs/benchmarks.md). A blob is a cache (lost, the message is parsed again) and no client is
told anything about it, so nothing needs to be durable or even written before the FETCH
answers. Saved blobs wait here, per process, keyed by the mailbox's index id (never reused,
kept by a rename: a blob never lands on another mailbox's message of the same UID), and are
written by whichever comes first:

- the next group commit of IMAP changes (STORE, EXPUNGE, COPY: sealmail.store.disk.changes),
  inside its transaction, whose fsync then covers them too;
- the save itself, when the process's writer turn and SQLite's write lock are free at that
  moment (`Index.writing_now`, relaxed: no fsync); otherwise it returns at once.

Reads of kept parses (`Reading.message_structures`) see the waiting ones too. At most
`MOST_WAITING` blobs wait: past that a save is dropped, the parse made again by a later FETCH.
A blob whose message was expunged meanwhile updates no row.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence

MOST_WAITING = 4096

# Only for a message still there: a row of one expunged meanwhile would stay (the trigger
# that removes a message's parse has run already).
_UPDATE = ("INSERT OR REPLACE INTO structures (id, structure) SELECT (?2 << 32) | ?3, ?1"
           " WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox_id = ?2 AND uid = ?3)")


class WaitingStructures:
    """The blobs saved and not yet written, per mailbox id; safe across threads."""

    def __init__(self, most: int = MOST_WAITING) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, dict[int, bytes]] = {}
        self._count = 0
        self._most = most

    def __bool__(self) -> bool:
        return self._count > 0

    def add(self, mailbox_id: int, structures: Mapping[int, bytes]) -> None:
        """Keep these blobs until the next write; dropped when too many wait already."""
        with self._lock:
            if self._count + len(structures) > self._most:
                return
            mine = self._waiting.setdefault(mailbox_id, {})
            before = len(mine)
            mine.update(structures)
            self._count += len(mine) - before

    def get(self, mailbox_id: int, uids: Sequence[int]) -> dict[int, bytes]:
        """The waiting blobs of those messages."""
        with self._lock:
            mine = self._waiting.get(mailbox_id)
            if not mine:
                return {}
            if len(mine) < len(uids):
                wanted = set(uids)
                return {uid: blob for uid, blob in mine.items() if uid in wanted}
            return {uid: mine[uid] for uid in uids if uid in mine}

    def take(self) -> list[tuple[bytes, int, int]]:
        """Every waiting blob as rows of the UPDATE, no longer waiting."""
        with self._lock:
            waiting, self._waiting, self._count = self._waiting, {}, 0
        return [(blob, mailbox_id, uid)
                for mailbox_id, mine in waiting.items() for uid, blob in mine.items()]

    def write_into(self, conn: sqlite3.Connection, alone: bool = False) -> None:
        """Write every waiting blob in the caller's write transaction, in a savepoint of its
        own: should it fail, the blobs are dropped (a cache) and the transaction goes on. When
        the transaction is the blobs' `alone` (`Index.writing_now`), no savepoint (two
        statements fewer): a failure raises, and the caller's transaction is rolled back."""
        rows = self.take()
        if not rows:
            return
        if alone:
            conn.executemany(_UPDATE, rows)
            return
        conn.execute("SAVEPOINT structures")
        try:
            conn.executemany(_UPDATE, rows)
        except sqlite3.Error:
            if not conn.in_transaction:
                raise  # SQLite rolled the whole transaction back: the caller's to handle
            conn.execute("ROLLBACK TO structures")
        conn.execute("RELEASE structures")
