"""Leases: a name one holder has until it lets go or the lease runs out, across every node.

PostgreSQL's advisory locks would need a connection held for as long as the lock; a lease is a
row instead (name, holder, expires), taken with one INSERT ... ON CONFLICT that succeeds only on
a free or expired name, and released by its holder. A node that dies holding one blocks the name
only until it expires, which is why every lease has a time to live longer than the work it
guards.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
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

    @contextmanager
    def waited(self, name: str, seconds: float, patience: float) -> Iterator[None]:
        """Hold `name` for the block, waiting up to `patience` seconds while another node holds
        it (polling, as a lease has no wake-up); MailboxBusy after that."""
        deadline = time.monotonic() + patience
        pause = 0.005
        while (holder := self.take(name, seconds)) is None:
            if time.monotonic() >= deadline:
                raise MailboxBusy(f"{name} held by another node for {patience:.0f}s")
            time.sleep(pause)
            pause = min(pause * 2, 0.1)
        try:
            yield
        finally:
            self.release(name, holder)


# A POP session renews its lease as it works (LockedMaildrop.message); pop3d's poptimeout ends
# an idle one before this runs out, and a crashed node's maildrop is free again after it.
POP_LOCK_SECONDS = 900


class LeasedPopLock:
    """The POP lock of a maildrop as a lease, so a second POP session on any node gets
    [IN-USE]; the last login (popminpoll) is a row of pop_logins."""

    def __init__(self, leases: Leases, mailbox: str, clock: Callable[[], float] = time.monotonic
                 ) -> None:
        self._leases = leases
        self._db = leases._db
        self._mailbox = mailbox
        self._name = f"pop/{mailbox}"
        self._holder: str | None = None
        self._renewed = 0.0
        self._clock = clock

    def acquire(self) -> None:
        holder = self._leases.take(self._name, POP_LOCK_SECONDS)
        if holder is None:
            raise MailboxBusy("Mailbox is locked by another POP session")
        self._holder, self._renewed = holder, self._clock()

    def last_login(self) -> float:
        row = self._db.read(lambda conn: conn.execute(
            "SELECT last_login FROM pop_logins WHERE mailbox = %s", (self._mailbox,)).fetchone())
        return 0.0 if row is None else float(str(row[0]))

    def record_login(self, when: float) -> None:
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO pop_logins (mailbox, last_login) VALUES (%s, %s) ON CONFLICT (mailbox)"
            " DO UPDATE SET last_login = excluded.last_login", (self._mailbox, when)))

    def renew(self) -> None:
        """Extend the lease once a third of it has passed."""
        if self._holder is None or self._clock() - self._renewed < POP_LOCK_SECONDS / 3:
            return
        holder = self._holder
        self._db.write(lambda conn: conn.execute(
            "UPDATE leases SET expires = now() + make_interval(secs => %s)"
            " WHERE name = %s AND holder = %s", (POP_LOCK_SECONDS, self._name, holder)))
        self._renewed = self._clock()

    def release(self) -> None:
        if self._holder is not None:
            holder, self._holder = self._holder, None
            self._leases.release(self._name, holder)
