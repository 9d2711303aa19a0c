"""duplicatesuppression on PostgreSQL: one table of (Message-ID, mailbox) deliveries that every
node shares, so a message delivered through node A is a duplicate when it comes again through B
(on disk each node would keep its own file and deliver it twice)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from sealmail.store.duplicates import EXPIRE_BATCH, ExpireProgress, delivery_lock
from sealmail.store.postgres.database import Connection, Database

_DAY = 86400.0


class SharedDuplicates:
    """seen/mark/expire as sealmail.store.duplicates.DuplicateDatabase, in the database."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    def exclusive(self, message_id: str) -> AbstractContextManager[None]:
        """One delivery of `message_id` at a time on this node (as on disk); two nodes taking
        the same message at the same moment can still both deliver it (docs/scale-out.md)."""
        return delivery_lock(self._db.settings.configdirectory, message_id)

    def seen(self, message_id: str, mailbox: str) -> bool:
        row = self._db.read(lambda conn: conn.execute(
            "SELECT 1 FROM duplicate_deliveries WHERE message_id = %s AND mailbox = %s",
            (message_id, mailbox)).fetchone())
        return row is not None

    def seen_among(self, message_id: str, mailboxes: Sequence[str]) -> set[str]:
        """Those of `mailboxes` the message was delivered to, in one query."""
        wanted = list(dict.fromkeys(mailboxes))
        if not wanted:
            return set()
        rows = self._db.read(lambda conn: conn.execute(
            "SELECT mailbox FROM duplicate_deliveries WHERE message_id = %s"
            " AND mailbox = ANY(%s)", (message_id, wanted)).fetchall())
        return {row[0] for row in rows}

    def mark(self, message_id: str, mailbox: str, when: float | None = None) -> None:
        marked = self._clock() if when is None else when
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO duplicate_deliveries (message_id, mailbox, marked) VALUES (%s, %s, %s)"
            " ON CONFLICT (message_id, mailbox) DO UPDATE SET marked = excluded.marked",
            (message_id, mailbox, marked)))

    def mark_all(self, message_id: str, mailboxes: Sequence[str]) -> None:
        """`mark` of each mailbox in one transaction."""
        if not mailboxes:
            return
        marked = self._clock()

        def work(conn: Connection) -> None:
            for mailbox in mailboxes:
                conn.execute(
                    "INSERT INTO duplicate_deliveries (message_id, mailbox, marked)"
                    " VALUES (%s, %s, %s) ON CONFLICT (message_id, mailbox)"
                    " DO UPDATE SET marked = excluded.marked",
                    (message_id, mailbox, marked))

        self._db.write(work)

    def expire(self, days: float, progress: ExpireProgress | None = None) -> int:
        """Remove entries marked more than `days` days ago; how many went. In batches, as on
        disk, so the nodes' marks never wait for a whole purge."""
        if days < 0:
            raise ValueError("days must not be negative")
        cutoff = self._clock() - days * _DAY

        def count(conn: Connection) -> int:
            row = conn.execute("SELECT count(*) FROM duplicate_deliveries WHERE marked < %s",
                               (cutoff,)).fetchone()
            return 0 if row is None else int(row[0])

        total = self._db.read(count)

        def batch(conn: Connection) -> int:
            return conn.execute(
                "DELETE FROM duplicate_deliveries WHERE ctid = ANY(ARRAY(SELECT ctid FROM"
                " duplicate_deliveries WHERE marked < %s LIMIT %s))",
                (cutoff, EXPIRE_BATCH)).rowcount

        removed = 0
        while removed < total:
            gone = self._db.write(batch)
            if gone <= 0:
                break  # another node's expire took them meanwhile
            removed += gone
            if progress is not None:
                progress(removed, total)
        return removed

    def close(self) -> None:
        """Nothing of its own: it uses the store's pool."""
