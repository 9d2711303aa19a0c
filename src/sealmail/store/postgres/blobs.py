"""Message bytes by SHA-256: written once for the whole site, before any mailbox names them.

The store asks a `BlobStore` for bytes by digest and nothing else, so an object store can take
the place of the database's own tables later. `DatabaseBlobs` keeps them in PostgreSQL as bytea
chunks (a row per CHUNK_SIZE bytes: a large message never needs one huge value in memory on the
server, and a read can stop after the first chunks). Blobs are immutable: a second write of the
same digest changes nothing. A blob no message names any more is garbage for a sweeper (after a
grace period, since a delivery writes its blob before the transactions that name it).
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
        created = conn.execute(
            "INSERT INTO blobs (sha256, size) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            (digest, len(content)),
        ).rowcount
        if created:
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
