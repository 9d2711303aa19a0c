"""URLAUTH access keys of the disk store (RFC 4467 3: one secret per mailbox, which RESETKEY
replaces): a small SQLite file beside the index, `urlauth.db` (0600), keyed by the mailbox's
uniqueid, so a mailbox deleted and made again (or renamed over) never inherits old URLs' key.
Apart from the index because only URLAUTH reads it: no schema change for everyone else."""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from pathlib import Path

from sealmail.store.errors import MailboxNotFound, StoreError

ACCESS_KEYS_NAME = "urlauth.db"
KEY_OCTETS = 32


class AccessKeyDatabase:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._ready = False

    def _connect(self) -> sqlite3.Connection:
        if not self._ready:
            with self._lock:
                fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
                os.close(fd)
                self._ready = True
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("CREATE TABLE IF NOT EXISTS access_keys (mailbox TEXT PRIMARY KEY,"
                     " key BLOB NOT NULL) WITHOUT ROWID")
        return conn

    def key(self, uniqueid: str) -> bytes:
        """The mailbox's key, made on first use."""
        try:
            conn = self._connect()
            try:
                conn.execute("INSERT OR IGNORE INTO access_keys VALUES (?, ?)",
                             (uniqueid, secrets.token_bytes(KEY_OCTETS)))
                row = conn.execute("SELECT key FROM access_keys WHERE mailbox = ?",
                                   (uniqueid,)).fetchone()
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"access keys: {exc}") from exc
        if row is None:
            raise MailboxNotFound("no access key")
        return bytes(row[0])

    def reset(self, uniqueid: str) -> None:
        """Forget the key: URLs made with it stop working; the next use makes a new one."""
        try:
            conn = self._connect()
            try:
                conn.execute("DELETE FROM access_keys WHERE mailbox = ?", (uniqueid,))
            finally:
                conn.close()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"access keys: {exc}") from exc
