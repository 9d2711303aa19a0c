"""What belongs to a reader rather than to a mailbox, on PostgreSQL: other readers' seen states
and \\Recent marks (sealmail.store.seen tells whose is whose), and subscriptions."""

from __future__ import annotations

from sealmail.store.names import validate_internal
from sealmail.store.postgres.database import Connection, Database, MailboxRow
from sealmail.store.seen import UidSet, index_keeps_seen


def seen_of(conn: Connection, row: MailboxRow, reader: str | None) -> UidSet | None:
    """`reader`'s own seen set of the mailbox, or None when their \\Seen is the index's."""
    if index_keeps_seen(row.name, reader):
        return None
    found = conn.execute("SELECT uids FROM seen_states WHERE mailbox_id = %s AND userid = %s",
                         (row.id, reader)).fetchone()
    return UidSet() if found is None else UidSet.parse(str(found[0]))


def save_seen(conn: Connection, mailbox_id: int, reader: str, seen: UidSet) -> None:
    conn.execute(
        "INSERT INTO seen_states (mailbox_id, userid, uids) VALUES (%s, %s, %s)"
        " ON CONFLICT (mailbox_id, userid) DO UPDATE SET uids = excluded.uids",
        (mailbox_id, reader, seen.render()),
    )


def recent_mark(conn: Connection, row: MailboxRow, reader: str | None) -> int:
    """`reader`'s \\Recent mark of the mailbox: the row's own for the index's reader, else
    their row in recent_marks (0 when they have none)."""
    if index_keeps_seen(row.name, reader):
        return row.recentuid
    found = conn.execute("SELECT uid FROM recent_marks WHERE mailbox_id = %s AND userid = %s",
                         (row.id, reader)).fetchone()
    return 0 if found is None else int(found[0])


class UserData:
    def __init__(self, db: Database) -> None:
        self._db = db

    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int:
        """Raise `reader`'s \\Recent mark of `name` to `upto` (never past the last UID given
        out); the mark as it was. Read first, in a read-only transaction: with nothing to claim
        (another session did, or a read-only one asks) no row lock is taken. Else the mailbox
        row lock makes each UID recent to one session."""
        mark = self._db.read(lambda conn: recent_mark(conn, self._db.require(conn, name), reader))
        if upto <= mark:
            return mark

        def work(conn: Connection) -> int:
            row = self._db.require(conn, name, lock=True)
            new = min(upto, row.uidnext - 1)
            mark = recent_mark(conn, row, reader)
            if new <= mark:
                return mark
            if index_keeps_seen(name, reader):
                conn.execute("UPDATE mailboxes SET recentuid = %s WHERE id = %s", (new, row.id))
            else:
                conn.execute(
                    "INSERT INTO recent_marks (mailbox_id, userid, uid) VALUES (%s, %s, %s)"
                    " ON CONFLICT (mailbox_id, userid) DO UPDATE SET uid = excluded.uid",
                    (row.id, reader, new),
                )
            return mark

        return self._db.write(work)

    def subscriptions(self, userid: str) -> list[str]:
        rows = self._db.read(lambda conn: conn.execute(
            "SELECT name FROM subscriptions WHERE userid = %s ORDER BY name", (userid,)
        ).fetchall())
        return [str(r[0]) for r in rows]

    def subscribe(self, userid: str, name: str) -> None:
        validate_internal(name)
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO subscriptions (userid, name) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (userid, name),
        ))

    def unsubscribe(self, userid: str, name: str) -> bool:
        """True when the subscription existed."""
        removed = self._db.write(lambda conn: conn.execute(
            "DELETE FROM subscriptions WHERE userid = %s AND name = %s", (userid, name)
        ).rowcount)
        return removed > 0
