"""duplicatesuppression on PostgreSQL: one table of (Message-ID, mailbox) deliveries that every
node shares, so a message delivered through node A is a duplicate when it comes again through B
(on disk each node would keep its own file and deliver it twice)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

from sealmail.store.duplicates import EXPIRE_BATCH, ExpireProgress, delivery_lock
from sealmail.store.postgres.database import Connection, Database
from sealmail.store.postgres.leases import Leases

_DAY = 86400.0
# A delivery holds its Message-ID's lease from the duplicate check to the mark: far longer than
# that takes, so only a crashed node's lease ever runs out.
EXCLUSIVE_SECONDS = 300.0
# How long a delivery waits for another node's delivery of the same message before it gives up
# with a temporary failure (451 4.4.5): the sender retries, and then it is a duplicate.
EXCLUSIVE_PATIENCE = 30.0


class SharedDuplicates:
    """seen/mark/expire as sealmail.store.duplicates.DuplicateDatabase, in the database."""

    def __init__(self, db: Database, clock: Callable[[], float],
                 patience: float = EXCLUSIVE_PATIENCE) -> None:
        self._db = db
        self._clock = clock
        self._leases = Leases(db)
        self._patience = patience

    @contextmanager
    def exclusive(self, message_id: str) -> Iterator[None]:
        """One delivery of `message_id` at a time on every node: this node's flock first (so
        its own sessions queue in the kernel, not on the database), then a lease named by the
        Message-ID's digest, which a delivery of it on another node holds meanwhile."""
        digest = hashlib.sha256(message_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]
        with delivery_lock(self._db.settings.configdirectory, message_id), \
                self._leases.waited(f"duplicate/{digest}", EXCLUSIVE_SECONDS, self._patience):
            yield

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
        self.mark_pairs([(message_id, mailbox) for mailbox in mailboxes])

    def mark_pairs(self, pairs: Sequence[tuple[str, str]]) -> None:
        """`mark` of each (Message-ID, mailbox) in one transaction."""
        if not pairs:
            return
        marked = self._clock()

        def work(conn: Connection) -> None:
            for message_id, mailbox in pairs:
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
