"""The per-command sync of an IMAP view against the disk store (sealmail.store.api
MailboxChanges): what changed since a modseq, in one read, and nothing read at all when nothing
was committed since the last look; and the mailbox row (`mailbox`) from the same memo.

Every IMAP command reads its mailbox's row (the rights of the session, the STORE that would
change nothing) and ends with a sync, and IDLE asks several times a second whether the mailbox
moved; most of the time nothing did. SQLite's `PRAGMA data_version` changes on a connection
whenever another connection (of any process) commits, and the connection's own `total_changes`
when it writes itself, so each thread keeps the rows of the mailboxes it looked at under that
pair: while both are as they were, the rows are what the index holds, and the answer costs one
PRAGMA. (A write of the thread's own, committed or rolled back, counts in `total_changes`.)
The pragma is read before the row, so a commit between the two makes the memo stale in the
safe direction only (a fresh read next time).

When the mailbox did change, the counters, the changed records, the expunged UIDs and the
index's \\Recent mark come from one read transaction (one snapshot: the view takes the
highestmodseq it is given, and must not skip a change made meanwhile), made once per process
for all its sessions: the process's window of the mailbox's latest changes
(sealmail.store.disk.windows) is brought up to the row by the first session that sees it move,
and answers every session syncing from a modseq it covers. A reader with a \\Seen of their own
reads alone, in one transaction with their seen state. The marks file's mark
(sealmail.store.disk.recent) is read just after.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from sealmail.store.api import MailboxChanges, MailboxInfo, MessageRecord
from sealmail.store.disk.layout import MAILBOX_COLUMNS, Spool, mailbox_info
from sealmail.store.disk.reading import EXPUNGED_SINCE, changed_since, records_of
from sealmail.store.disk.recent import OWNER
from sealmail.store.disk.windows import ChangeWindow, ChangeWindows, same_mailbox
from sealmail.store.seen import UidSet, index_keeps_seen

# MAILBOX_COLUMNS (id 0, uidvalidity 4, uidnext 5, highestmodseq 6, exists 8) and recentuid 9
_ROW = f"SELECT {MAILBOX_COLUMNS}, recentuid FROM mailboxes WHERE name = ?"
EXPUNGED_MODSEQS_SINCE = "SELECT uid, modseq FROM expunged WHERE mailbox_id = ? AND modseq > ?"
_MEMO_SIZE = 256  # mailboxes a thread remembers (a thread serves many sessions in turn)
_UNREAD = ()  # a memo's answer for a mailbox it has no row of (None: the mailbox is not there)


class _Memo:
    """One thread's rows of the mailboxes it read (None: not there) and the MailboxInfo made
    of each, valid while `key` is."""

    __slots__ = ("conn", "infos", "key", "rows")

    def __init__(self, conn: sqlite3.Connection, key: tuple[int, int]) -> None:
        self.conn = conn
        self.key = key
        self.rows: dict[str, tuple[Any, ...] | None] = {}
        self.infos: dict[str, MailboxInfo | None] = {}


class Syncing:
    """`mailbox`, `mailbox_changes` and `mailbox_changed` (IDLE's check) of the disk store."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._local = threading.local()
        self._windows = ChangeWindows()

    def _memo(self, conn: sqlite3.Connection) -> _Memo:
        """This thread's memo, emptied when anything was committed since it was filled."""
        key = (conn.execute("PRAGMA data_version").fetchone()[0], conn.total_changes)
        memo: _Memo | None = getattr(self._local, "memo", None)
        if memo is None or memo.conn is not conn or memo.key != key:
            memo = self._local.memo = _Memo(conn, key)
        elif len(memo.rows) >= _MEMO_SIZE:
            memo.rows.clear()
            memo.infos.clear()
        return memo

    def _row(self, conn: sqlite3.Connection, name: str, memo: _Memo | None = None
             ) -> tuple[Any, ...] | None:
        """The mailbox's row (_ROW), or None when it is not there, from the memo if it can."""
        rows = (memo or self._memo(conn)).rows
        if name in rows:
            return rows[name]
        row: tuple[Any, ...] | None = conn.execute(_ROW, (name,)).fetchone()
        rows[name] = row
        return row

    def mailbox(self, name: str) -> MailboxInfo | None:
        """The mailbox's row as MailboxInfo; the same object while nothing was committed."""
        with self._spool.reading() as conn:
            memo = self._memo(conn)
            if name in memo.infos:
                return memo.infos[name]
            row = self._row(conn, name, memo)
            info = memo.infos[name] = None if row is None else mailbox_info(row[:9])
        return info

    def mailbox_changed(self, name: str, highestmodseq: int) -> bool:
        """Whether `name` moved past `highestmodseq` (or went): one PRAGMA when nothing was
        committed since this thread last looked."""
        with self._spool.reading() as conn:
            row = self._row(conn, name)
        return row is None or row[6] != highestmodseq

    def mailbox_changes(
        self, name: str, modseq: int, reader: str | None = None
    ) -> MailboxChanges | None:
        if not index_keeps_seen(name, reader):
            return self._reader_changes(name, modseq, str(reader))
        with self._spool.reading() as conn:
            memo = self._memo(conn)
            row = memo.rows.get(name, _UNREAD)
            if row is not _UNREAD and (row is None or row[6] == modseq):
                return None if row is None else MailboxChanges(row[4], row[5], row[6], row[8])
            window = self._windows.get(name)
            if row is not _UNREAD or not window.lock.acquire(blocking=False):
                if row is _UNREAD:
                    # Another session of this process is bringing the window up: read the
                    # row meanwhile, and most often find the window at it once it is free.
                    row = self._row(conn, name, memo)
                window.lock.acquire()
            try:
                found = _from_window(conn, window, name, row, modseq)
            finally:
                window.lock.release()
            # Read after this thread's data_version, or newer than the row that was: the memo
            # stays stale in the safe direction only.
            memo.rows[name] = None if found is None else found[0]
        if found is None:
            return None
        top, changed, expunged = found
        if top[6] == modseq:
            return MailboxChanges(top[4], top[5], top[6], top[8])
        # The marks file's (the index's is its floor): read after the snapshot, so at worst
        # higher than at that moment, which only spares the view a claim that would find
        # nothing (sealmail.imap.selected). Not read when the index's mark is at the last UID
        # (an APPEND claimed in its commit, sealmail.store.disk.index_writes): the file's is
        # never past it.
        mark = int(top[9])
        if mark < top[5] - 1:
            mark = max(mark, self._spool.recent.mark(top[2], OWNER))
        return MailboxChanges(top[4], top[5], top[6], top[8], changed, expunged, mark)

    def _reader_changes(self, name: str, modseq: int, reader: str) -> MailboxChanges | None:
        """mailbox_changes for a reader with a \\Seen of their own: read for them alone."""
        with self._spool.reading() as conn:
            memo = self._memo(conn)
            row = memo.rows.get(name, _UNREAD)
            if row is not _UNREAD and (row is None or row[6] == modseq):
                return None if row is None else MailboxChanges(row[4], row[5], row[6], row[8])
            conn.execute("BEGIN")  # the counters, records, seen state and expunges of one moment
            try:
                # Read once, in the transaction: a memo without the row (anything committed
                # since this thread last looked) is most often a mailbox that moved.
                row = memo.rows[name] = conn.execute(_ROW, (name,)).fetchone()
                if row is None:
                    return None
                if row[6] == modseq:
                    return MailboxChanges(row[4], row[5], row[6], row[8])
                mailbox_id = row[0]
                rows = changed_since(conn, mailbox_id, modseq)
                expunged = sorted(uid for (uid,) in conn.execute(
                    EXPUNGED_SINCE, (mailbox_id, modseq)
                ).fetchall())
                found = conn.execute(
                    "SELECT uids, recentuid FROM seen WHERE mailbox_id = ? AND userid = ?",
                    (mailbox_id, reader),
                ).fetchone()
            finally:
                conn.execute("COMMIT")
        seen = UidSet() if found is None else UidSet.parse(found[0])
        mark = max(0 if found is None else int(found[1]), self._spool.recent.mark(row[2], reader))
        return MailboxChanges(row[4], row[5], row[6], row[8], records_of(rows, seen), expunged,
                              mark)


def _from_window(
    conn: sqlite3.Connection, window: ChangeWindow, name: str, row: Any, modseq: int
) -> tuple[tuple[Any, ...], list[MessageRecord], list[int]] | None:
    """The mailbox row and the changes after `modseq` from the mailbox's window (its lock held),
    or None when the mailbox is gone. `row`: this thread's read of it (None: not there), or
    _UNREAD when it has none since the last commit. A row that did not move needs nothing
    from the window; one the window is behind (or no row) brings it up in one read
    transaction from its top; a window that cannot answer (empty, above `modseq`, another
    mailbox or UIDVALIDITY) starts again from a read from `modseq`. The sessions syncing
    meanwhile wait for that read instead of making it too."""
    if row is None or (row is not _UNREAD and row[6] == modseq):
        return None if row is None else (row, [], [])
    top = window.top
    if top is not None and window.floor <= modseq and (
        row is _UNREAD or (same_mailbox(top, row) and top[6] < row[6])
    ):
        found = _read_since(conn, name, top[6])
        if found is None:
            window.top = None
            return None
        row = found[0]
        if same_mailbox(row, top):
            window.extend(*found)
        else:
            window.top = None  # deleted and made again: read it whole
    if row is _UNREAD or not window.covers(row, modseq):
        found = _read_since(conn, name, modseq)
        if found is None:
            window.top = None
            return None
        row, records, gone = found
        if len(records) + len(gone) > window.limit:
            # Far behind (a kept SELECT snapshot, sealmail.imap.snapshots): answered from this
            # read alone, the window left to the sessions it serves.
            return row, records, sorted(uid for uid, _ in gone)
        window.reset(row, records, gone, floor=modseq)
    top = window.top
    assert top is not None
    changed, expunged = window.since(modseq)
    window.bound()
    # The thread's own row when the window is at its modseq: it may be the later read (the
    # \Recent mark and the rights change without a modseq).
    return (row if same_mailbox(row, top) and row[6] == top[6] else top), changed, expunged


def _read_since(
    conn: sqlite3.Connection, name: str, modseq: int
) -> tuple[tuple[Any, ...], list[MessageRecord], list[tuple[int, int]]] | None:
    """The mailbox row, the records changed after `modseq` and the (uid, modseq) of the
    messages expunged after it, in one read transaction (one snapshot: the view takes the
    highestmodseq it is given, and must not skip a change made meanwhile); None: no mailbox."""
    conn.execute("BEGIN")
    try:
        row: tuple[Any, ...] | None = conn.execute(_ROW, (name,)).fetchone()
        if row is None:
            return None
        if row[6] == modseq:
            return row, [], []
        rows = changed_since(conn, row[0], modseq)
        expunged = conn.execute(EXPUNGED_MODSEQS_SINCE, (row[0], modseq)).fetchall()
    finally:
        conn.execute("COMMIT")
    return row, records_of(rows, None), expunged
