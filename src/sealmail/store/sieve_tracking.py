"""What Sieve remembers between deliveries: RFC 7352 duplicate marks, RFC 5230 vacation replies
and redirects already sent, each until its own expiry.

One SQLite file (`configdirectory/sieve.db`, WAL) shared by every process that delivers.
synchronous=NORMAL: a mark lost in a power failure only lets one more reply or redirect through.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sealmail.store.errors import StoreError
from sealmail.store.wal import switch_to_wal

_BUSY_TIMEOUT = 30.0


class SieveTracking:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._local = threading.local()
        self._connection()

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT, isolation_level=None,
                                       check_same_thread=False)
                switch_to_wal(conn, _BUSY_TIMEOUT)
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(
                    "CREATE TABLE IF NOT EXISTS marks (scope TEXT NOT NULL, key TEXT NOT NULL,"
                    " expires REAL NOT NULL, PRIMARY KEY (scope, key))"
                )
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: {exc}") from exc
            self._local.conn = conn
        return conn

    def seen(self, scope: str, key: str) -> bool:
        """Is (scope, key) marked and not yet expired?"""
        try:
            row = self._connection().execute(
                "SELECT 1 FROM marks WHERE scope = ? AND key = ? AND expires > ?",
                (scope, key, self._clock()),
            ).fetchone()
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return row is not None

    def mark(self, scope: str, key: str, seconds: float) -> None:
        try:
            self._connection().execute(
                "INSERT OR REPLACE INTO marks (scope, key, expires) VALUES (?, ?, ?)",
                (scope, key, self._clock() + seconds),
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc

    def expire(self) -> int:
        """Drop expired marks; the number dropped."""
        try:
            cursor = self._connection().execute(
                "DELETE FROM marks WHERE expires <= ?", (self._clock(),)
            )
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: {exc}") from exc
        return cursor.rowcount

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None
