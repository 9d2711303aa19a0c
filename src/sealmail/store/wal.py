"""Switching a new SQLite file to WAL mode while other processes open it too.

Every database of the store (the index, deliver.db, recent.db, the Sieve marks) is created by
whichever process needs it first, and under `sealmail master` two workers often need it at the
same moment. SQLite answers `PRAGMA journal_mode=WAL` on a file still in rollback mode with
SQLITE_BUSY at once, without calling the busy handler, when another connection holds the file
(measured here: half of the rounds of four processes switching one new file at once failed with
"database is locked"). Once the file is in WAL mode the pragma only reads it, and waits as any
read does, so only that first switch is retried here.
"""

from __future__ import annotations

import sqlite3
import time

_FIRST_PAUSE = 0.001
_LONGEST_PAUSE = 0.05


def switch_to_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """`PRAGMA journal_mode=WAL`, tried again on SQLITE_BUSY until `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    pause = _FIRST_PAUSE
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or time.monotonic() >= deadline:
                raise
        time.sleep(pause)
        pause = min(pause * 2, _LONGEST_PAUSE)
