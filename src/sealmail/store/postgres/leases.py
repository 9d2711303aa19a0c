"""Leases: a name one holder has until it lets go or the lease runs out, across every node.

PostgreSQL's advisory locks would need a connection held for as long as the lock; a lease is a
row instead (name, holder, expires), taken with one INSERT ... ON CONFLICT that succeeds only on
a free or expired name, and released by its holder. A node that dies holding one blocks the name
only until it expires, which is why every lease has a time to live longer than the work it
guards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sealmail.store.errors import MailboxBusy
from sealmail.store.postgres.database import Connection, Database

# A delivery holds a slot for as long as it takes; a crashed node's slot is free after this.
DELIVERY_SLOT_SECONDS = 900


class Leases:
    def __init__(self, db: Database) -> None:
        self._db = db

    def take(self, name: str, seconds: float) -> str | None:
        """The holder token of a new lease on `name`, or None while someone else holds it."""
        holder = uuid.uuid4().hex

        def work(conn: Connection) -> bool:
            return conn.execute(
                "INSERT INTO leases (name, holder, expires)"
                " VALUES (%s, %s, now() + make_interval(secs => %s))"
                " ON CONFLICT (name) DO UPDATE"
                " SET holder = excluded.holder, expires = excluded.expires"
                " WHERE leases.expires < now() RETURNING holder",
                (name, holder, seconds),
            ).fetchone() is not None

        return holder if self._db.write(work) else None

    def release(self, name: str, holder: str) -> None:
        self._db.write(lambda conn: conn.execute(
            "DELETE FROM leases WHERE name = %s AND holder = %s", (name, holder)))

    @contextmanager
    def delivery_slot(self, user: str, limit: int) -> Iterator[None]:
        """One of `limit` delivery slots of `user` on every node together (0: unlimited);
        MailboxBusy at once when all are taken (lmtpd: 451 4.4.5)."""
        if limit <= 0:
            yield
            return
        for slot in range(limit):
            name = f"deliver/{user}/{slot}"
            holder = self.take(name, DELIVERY_SLOT_SECONDS)
            if holder is None:
                continue
            try:
                yield
            finally:
                self.release(name, holder)
            return
        raise MailboxBusy(f"{limit} deliveries to {user!r} already in progress")
