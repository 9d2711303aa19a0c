"""What the PostgreSQL store's parts share: the connection pool, transactions with the error
mapping done once, and the mailbox rows every operation starts from.

Every write runs in `Database.write`: one transaction at READ COMMITTED that takes its row locks
with SELECT ... FOR UPDATE in ascending mailbox id, so two writers never wait on each other in a
cycle; a deadlock or serialization failure the server reports anyway (a foreign key check, a
concurrent create) is retried from the start. Reads that must see one moment (a mailbox row and
its messages) run in `Database.read`: REPEATABLE READ, READ ONLY. psycopg's own errors never
leave this module: a database that is down or refuses becomes StoreUnavailable (temporary).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
import psycopg_pool
from psycopg import errors as pg_errors
from psycopg.rows import TupleRow

from sealmail.store import quota
from sealmail.store.api import MailboxInfo, QuotaUsage
from sealmail.store.errors import MailboxNotFound, StoreError, StoreUnavailable
from sealmail.store.postgres.blobs import BlobStore
from sealmail.store.postgres.notify import CHANNEL, ChangeFeed
from sealmail.store.postgres.schema import migrate
from sealmail.store.settings import StoreSettings

Connection = psycopg.Connection[TupleRow]
T = TypeVar("T")

_RETRIES = 5
_POOL_TIMEOUT = 30.0  # seconds a caller waits for a free connection before StoreUnavailable
_MAILBOX_COLUMNS = ("id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq,"
                    " recentuid, exists_count, size_bytes")


@dataclass(frozen=True, slots=True)
class MailboxRow:
    id: int
    name: str
    uniqueid: str
    partition: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    recentuid: int
    exists: int
    size_bytes: int

    @classmethod
    def of(cls, row: TupleRow) -> MailboxRow:
        return cls(int(row[0]), str(row[1]), str(row[2]), str(row[3]), *(int(v) for v in row[4:]))


class Database:
    """The pool and the shared helpers of one PostgresStore."""

    def __init__(
        self, settings: StoreSettings, blobs: BlobStore, clock: Callable[[], float]
    ) -> None:
        if not settings.dsn:
            raise StoreUnavailable("store_backend postgresql needs a store_dsn")
        self.settings = settings
        self.blobs = blobs
        self.clock = clock
        self._closed = threading.Event()
        self._changes = threading.local()  # what the running write() changed: name -> modseq
        self.feed = ChangeFeed(settings.dsn, self._notify, settings.poll_interval)
        try:
            with psycopg.connect(settings.dsn) as conn:
                migrate(conn)
            # Each connection is checked as it leaves the pool (one empty round trip): after a
            # restart of PostgreSQL or a dropped connection the next call gets a live one
            # instead of failing once per pooled connection.
            self.pool = psycopg_pool.ConnectionPool(
                settings.dsn, min_size=1, max_size=max(1, settings.pool_size),
                timeout=_POOL_TIMEOUT, open=True, name="sealmail-store",
                check=psycopg_pool.ConnectionPool.check_connection,
            )
        except psycopg.Error as exc:
            raise StoreUnavailable(f"cannot open the store's database: {exc}") from exc

    def close(self) -> None:
        if not self._closed.is_set():
            self._closed.set()
            self.feed.close()
            self.pool.close()

    # ------------------------------------------------------------------ transactions

    def write(self, work: Callable[[Connection], T]) -> T:
        """`work` in one read-write transaction, retried when the server says to. The
        mailboxes it reported `changed` are published to other nodes after the commit."""
        for attempt in range(_RETRIES):
            changes: dict[str, int] = {}
            self._changes.pending = changes
            try:
                with self._connection() as conn:
                    conn.isolation_level, conn.read_only = None, False  # the server's default
                    with conn.transaction():
                        result = work(conn)
                self.feed.publish(changes)
                return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
                if attempt == _RETRIES - 1:
                    raise StoreUnavailable("the database kept refusing a transaction") from None
            finally:
                self._changes.pending = None
        raise AssertionError("unreachable")

    def changed(self, name: str, modseq: int) -> None:
        """Inside write(): mailbox `name` is at `modseq` once this transaction commits
        (notify.GONE: deleted)."""
        pending: dict[str, int] | None = getattr(self._changes, "pending", None)
        assert pending is not None, "changed() outside a write transaction"
        pending[name] = max(modseq, pending.get(name, 0))

    def _notify(self, payloads: list[str]) -> None:
        """Send change notifications in a short transaction of their own."""
        with self._connection() as conn:
            conn.isolation_level, conn.read_only = None, False
            with conn.transaction():
                for payload in payloads:
                    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))

    def read(self, work: Callable[[Connection], T]) -> T:
        """`work` in one read-only transaction that sees a single moment."""
        with self._connection() as conn:
            # One BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY: no extra round trip.
            conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            conn.read_only = True
            with conn.transaction():
                return work(conn)

    @contextmanager
    def _connection(self) -> Iterator[Connection]:
        try:
            with self.pool.connection() as conn:
                yield conn
        except StoreError:
            raise
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure):
            raise
        except psycopg_pool.PoolTimeout as exc:
            raise StoreUnavailable("no database connection free in time") from exc
        except psycopg.Error as exc:
            raise StoreUnavailable(f"database error: {exc}") from exc

    # ------------------------------------------------------------------ mailbox rows

    def row(self, conn: Connection, name: str, *, lock: bool = False) -> MailboxRow | None:
        query = f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE name = %s"
        found = conn.execute((query + (" FOR UPDATE" if lock else "")).encode(),
                             (name,)).fetchone()
        return None if found is None else MailboxRow.of(found)

    def require(self, conn: Connection, name: str, *, lock: bool = False) -> MailboxRow:
        row = self.row(conn, name, lock=lock)
        if row is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return row

    def lock(self, conn: Connection, ids: Iterable[int]) -> dict[int, MailboxRow]:
        """Lock mailbox rows in ascending id (the one order every writer uses); those that
        still exist, by id."""
        query = (f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE id = ANY(%s)"
                 " ORDER BY id FOR UPDATE")
        rows = conn.execute(query.encode(), (sorted(set(ids)),)).fetchall()
        return {int(r[0]): MailboxRow.of(r) for r in rows}

    def acl(self, conn: Connection, mailbox_id: int) -> dict[str, str]:
        rows = conn.execute(
            "SELECT identifier, rights FROM mailbox_acl WHERE mailbox_id = %s ORDER BY position",
            (mailbox_id,),
        ).fetchall()
        return {str(identifier): str(rights) for identifier, rights in rows}

    def write_acl(self, conn: Connection, mailbox_id: int, acl: dict[str, str]) -> None:
        conn.execute("DELETE FROM mailbox_acl WHERE mailbox_id = %s", (mailbox_id,))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO mailbox_acl (mailbox_id, position, identifier, rights)"
                " VALUES (%s, %s, %s, %s)",
                [(mailbox_id, i, who, rights) for i, (who, rights) in enumerate(acl.items())],
            )

    def info(self, conn: Connection, row: MailboxRow) -> MailboxInfo:
        return MailboxInfo(row.name, row.uniqueid, row.partition, row.uidvalidity, row.uidnext,
                           row.highestmodseq, row.exists, self.acl(conn, row.id))

    # ------------------------------------------------------------------ quota

    def quota_root(self, conn: Connection, name: str) -> tuple[int, str] | None:
        """The id and name of the nearest ancestor-or-self of `name` with a quota."""
        rows = conn.execute(
            "SELECT m.id, m.name FROM mailboxes m JOIN quota_roots q ON q.mailbox_id = m.id"
            " WHERE m.name = ANY(%s)",
            (quota.ancestors_or_self(name),),
        ).fetchall()
        if not rows:
            return None
        mailbox_id, root = max(rows, key=lambda r: len(str(r[1])))
        return int(mailbox_id), str(root)

    def usage(self, conn: Connection, name: str) -> QuotaUsage | None:
        """The usage of the quota root governing `name`, or None without one."""
        root = self.quota_root(conn, name)
        if root is None:
            return None
        return self.usage_of_root(conn, *root)

    def usage_of_root(self, conn: Connection, root_id: int, root: str) -> QuotaUsage:
        low, high = quota.subtree_bounds(root)
        limits = conn.execute(
            "SELECT storage_kb, messages FROM quota_roots WHERE mailbox_id = %s", (root_id,)
        ).fetchone()
        used = conn.execute(
            "SELECT coalesce(sum(size_bytes), 0), coalesce(sum(exists_count), 0) FROM mailboxes"
            " WHERE name = %s OR (name >= %s AND name < %s)",
            (root, low, high),
        ).fetchone()
        assert limits is not None and used is not None
        return QuotaUsage(root, int(used[0]), _optional_int(limits[0]), int(used[1]),
                          _optional_int(limits[1]))


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
