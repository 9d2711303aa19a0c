"""Message bytes by SHA-256: written once for the whole site, before any mailbox names them.

The store asks a `BlobStore` for bytes by digest and nothing else, so an object store can take
the place of the database's own tables later. `DatabaseBlobs` keeps them in PostgreSQL as bytea
chunks (a row per CHUNK_SIZE bytes: a large message never needs one huge value in memory on the
server, and a read can stop after the first chunks). Blobs are immutable: a second write of the
same digest changes nothing but its age. A blob no message names any more is garbage for the
sweeper (sealmail.store.postgres.sweep), after a grace period.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import psycopg

CHUNK_SIZE = 1 << 20

Connection = psycopg.Connection[tuple[object, ...]]


class BlobStore(Protocol):
    """Where message bytes live. `put` is durable once the caller's transaction commits."""

    def put(self, conn: Connection, digest: bytes, content: bytes) -> None: ...
    def get(self, conn: Connection, digest: bytes, limit: int | None = None) -> bytes | None: ...


class DatabaseBlobs:
    """Blobs in the database's own tables (blobs, blob_chunks)."""

    def put(self, conn: Connection, digest: bytes, content: bytes) -> None:
        # A blob already there is made young again under its row lock: a sweep that has not
        # removed it yet will not (sealmail.store.postgres.sweep); one that has, committed
        # before this insert went ahead, and the chunks are written anew.
        row = conn.execute(
            "INSERT INTO blobs (sha256, size) VALUES (%s, %s) ON CONFLICT (sha256)"
            " DO UPDATE SET created = now() RETURNING (xmax = 0)",
            (digest, len(content)),
        ).fetchone()
        if row is not None and row[0]:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "INSERT INTO blob_chunks (sha256, seq, data) VALUES (%s, %s, %s)",
                    [(digest, seq, content[start:start + CHUNK_SIZE])
                     for seq, start in enumerate(range(0, max(len(content), 1), CHUNK_SIZE))],
                )

    def get(self, conn: Connection, digest: bytes, limit: int | None = None) -> bytes | None:
        """The bytes of `digest` (the first `limit` of them), None when no such blob."""
        if limit is None:
            rows = conn.execute(
                "SELECT data FROM blob_chunks WHERE sha256 = %s ORDER BY seq", (digest,)
            ).fetchall()
        else:
            chunks = max(1, -(-limit // CHUNK_SIZE))
            rows = conn.execute(
                "SELECT data FROM blob_chunks WHERE sha256 = %s AND seq < %s ORDER BY seq",
                (digest, chunks),
            ).fetchall()
        if not rows:
            return None
        content = b"".join(_bytes(row) for row in rows)
        return content if limit is None else content[:limit]


def _bytes(row: Sequence[object]) -> bytes:
    value = row[0]
    assert isinstance(value, bytes)
    return value
