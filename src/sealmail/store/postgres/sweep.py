"""Sweeping: message rows no mailbox names and blobs no message names, removed once they are
older than a grace period (store_blob_grace), by one node at a time (a leader lease).

Why a grace period: a delivery writes its blob and its `messages` row in one transaction, and
names them from mailboxes in the recipients' transactions after it; in between, they are named
by nothing. Nothing is lost even if a sweep takes them anyway: `mailbox_message` refers to
`messages` by a foreign key, so a recipient transaction that comes too late fails (a temporary
error, 4xx to the LMTP client, who tries again) and a sweep that would remove a row a
transaction has just named fails on that row and leaves it. A blob written again while unnamed
(the same bytes delivered anew) gets a new `created` time under its row lock
(DatabaseBlobs.put), so a sweep either removed it before (and the delivery writes it again) or
sees it young.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from psycopg import errors as pg_errors

from sealmail.store.postgres.database import Connection, Database
from sealmail.store.postgres.leases import Leases

log = logging.getLogger(__name__)

LEADER = "sweeper"
LEADER_SECONDS = 3600  # longer than a sweep; a node that dies mid-sweep frees it after this
_BATCH = 500


@dataclass(frozen=True, slots=True)
class SweepResult:
    messages: int  # message rows removed
    blobs: int  # blobs removed
    blob_bytes: int


class Sweeper:
    def __init__(self, db: Database, leases: Leases) -> None:
        self._db = db
        self._leases = leases

    def sweep(self, grace: float) -> SweepResult | None:
        """One sweep; None when another node is sweeping (it holds the leader lease)."""
        holder = self._leases.take(LEADER, LEADER_SECONDS)
        if holder is None:
            return None
        try:
            messages = 0
            while True:
                removed, looked_at = self._db.write(lambda conn: self._messages(conn, grace))
                messages += removed
                if looked_at < _BATCH:
                    break
            blobs, size = 0, 0
            while True:
                count, removed = self._db.write(lambda conn: self._blobs(conn, grace))
                blobs, size = blobs + count, size + removed
                if count < _BATCH:
                    break
        finally:
            self._leases.release(LEADER, holder)
        result = SweepResult(messages, blobs, size)
        log.info("sweep: removed %d unnamed messages, %d blobs (%d bytes)", *(
            result.messages, result.blobs, result.blob_bytes))
        return result

    @staticmethod
    def _messages(conn: Connection, grace: float) -> tuple[int, int]:
        """Remove up to _BATCH message rows no mailbox names, each under a savepoint: a row a
        concurrent transaction has just named (the foreign key refuses) is left. How many
        went, and how many were looked at."""
        candidates = conn.execute(
            "SELECT id FROM messages m WHERE m.created < now() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM mailbox_message mm WHERE mm.message_id = m.id)"
            " ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED",
            (grace, _BATCH),
        ).fetchall()
        removed = 0
        for (message_id,) in candidates:
            try:
                with conn.transaction():
                    removed += conn.execute("DELETE FROM messages WHERE id = %s",
                                            (message_id,)).rowcount
            except pg_errors.ForeignKeyViolation:
                continue  # named meanwhile: not garbage
        return removed, len(candidates)

    @staticmethod
    def _blobs(conn: Connection, grace: float) -> tuple[int, int]:
        """Remove up to _BATCH blobs no message names and older than the grace period; the
        row lock (FOR UPDATE) orders this against a delivery that writes the same bytes again."""
        rows = conn.execute(
            "DELETE FROM blobs b WHERE b.sha256 IN ("
            " SELECT sha256 FROM blobs c WHERE c.created < now() - make_interval(secs => %s)"
            " AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.blob = c.sha256)"
            " LIMIT %s FOR UPDATE SKIP LOCKED)"
            " AND b.created < now() - make_interval(secs => %s)"
            " RETURNING sha256, size",
            (grace, _BATCH, grace),
        ).fetchall()
        if rows:
            conn.execute("DELETE FROM blob_chunks WHERE sha256 = ANY(%s)",
                         ([row[0] for row in rows],))
        return len(rows), sum(int(str(row[1])) for row in rows)
