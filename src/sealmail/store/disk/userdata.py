"""User data of the disk store: subscriptions, each reader's own seen state and \\Recent
mark (sealmail.store.seen).
"""

from __future__ import annotations

import sqlite3

from sealmail.store.disk.layout import Spool
from sealmail.store.disk.recent import OWNER
from sealmail.store.errors import MailboxNotFound
from sealmail.store.names import validate_internal
from sealmail.store.seen import UidSet, index_keeps_seen


def seen_of(
    conn: sqlite3.Connection, mailbox_id: int, name: str, reader: str | None
) -> UidSet | None:
    """`reader`'s own seen set of a mailbox, or None when their \\Seen is the index's
    (sealmail.store.seen)."""
    if index_keeps_seen(name, reader):
        return None
    row = conn.execute(
        "SELECT uids FROM seen WHERE mailbox_id = ? AND userid = ?", (mailbox_id, reader)
    ).fetchone()
    return UidSet() if row is None else UidSet.parse(row[0])


def save_seen(
    conn: sqlite3.Connection, mailbox_id: int, reader: str | None, seen: UidSet
) -> None:
    conn.execute(
        "INSERT INTO seen (mailbox_id, userid, uids) VALUES (?, ?, ?)"
        " ON CONFLICT (mailbox_id, userid) DO UPDATE SET uids = excluded.uids",
        (mailbox_id, reader, seen.render()),
    )


class UserData:
    """What belongs to a user rather than to a mailbox's messages: subscriptions and the
    \\Recent mark (the seen state itself is read and written with the messages: `seen_of`)."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int:
        """Raise `reader`'s \\Recent mark of `name` to `upto`; the mark as it was.

        RFC 3501 2.3.2: a message is \\Recent in "the first session to have been notified
        about" it; "if the session is read-write, subsequent sessions will not see \\Recent
        set". The mark is the highest UID some read-write session of `reader` has been told
        about (sealmail.store.seen), so the caller's \\Recent messages are the UIDs above the
        returned mark up to `upto`. Read and raised in one write transaction of the marks'
        own file (sealmail.store.disk.recent), never the index's: of two sessions claiming at
        once, each gets only what the other did not, and neither waits behind a group
        commit's fsync. The mark never goes down nor past the last UID given out; with `upto`
        at or below it nothing is written (how a read-only session or STATUS reads the mark).
        """
        keeps = index_keeps_seen(name, reader)
        with self._spool.reading() as conn:
            uniqueid, uidnext, floor = self._mark_row(conn, name, reader, keeps)
        if floor >= uidnext - 1:
            return floor  # the index's mark is at the last UID: the file's is no higher
        userid = OWNER if keeps else str(reader)
        recent = self._spool.recent
        seen = recent.stored(uniqueid, userid)
        mark = max(floor, seen or 0)
        upto = min(upto, uidnext - 1)
        if upto <= mark:
            return mark
        # Not fsynced: a mark a power failure takes back only shows those messages \Recent
        # once more (RFC 3501 calls the flag advisory); every session claimed them anyway.
        return recent.claim_seen(uniqueid, userid, floor, upto, seen)

    @staticmethod
    def _mark_row(
        conn: sqlite3.Connection, name: str, reader: str | None, index_keeps: bool
    ) -> tuple[str, int, int]:
        """(mailbox uniqueid, uidnext, the index's \\Recent mark of `reader`: the floor of
        the marks file's, sealmail.store.disk.recent) in one statement."""
        if index_keeps:
            row = conn.execute(
                "SELECT uniqueid, uidnext, recentuid FROM mailboxes WHERE name = ?", (name,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT m.uniqueid, m.uidnext, coalesce(s.recentuid, 0) FROM mailboxes m"
                " LEFT JOIN seen s ON s.mailbox_id = m.id AND s.userid = ? WHERE m.name = ?",
                (reader, name),
            ).fetchone()
        if row is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return str(row[0]), int(row[1]), int(row[2])

    def subscriptions(self, userid: str) -> list[str]:
        with self._spool.reading() as conn:
            rows = conn.execute(
                "SELECT mailbox FROM subscriptions WHERE userid = ? ORDER BY mailbox", (userid,)
            ).fetchall()
        return [name for (name,) in rows]

    def subscribe(self, userid: str, name: str) -> None:
        validate_internal(name)
        with self._spool.index.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions (userid, mailbox) VALUES (?, ?)",
                (userid, name),
            )

    def unsubscribe(self, userid: str, name: str) -> bool:
        """True when the subscription existed."""
        with self._spool.index.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM subscriptions WHERE userid = ? AND mailbox = ?", (userid, name)
            )
            return cursor.rowcount > 0
