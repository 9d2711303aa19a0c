"""Several processes opening a new database at once: each one's switch to WAL must succeed
(sealmail.store.wal), as two master workers opening recent.db or deliver.db first do."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from sealmail.store.wal import switch_to_wal

_PROCESSES = 4
_ROUNDS = 12  # without the retry, about half the rounds failed (four processes, one file)


def _switch(path: Path, start: Any, out: Any) -> None:
    start.wait(30)
    try:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        switch_to_wal(conn, 10)
        out.put(conn.execute("PRAGMA journal_mode").fetchone()[0])
        conn.close()
    except Exception as exc:  # reported to the test, which shows it
        out.put(repr(exc))


def test_processes_switching_one_new_file_at_once_all_succeed(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    for round_ in range(_ROUNDS):
        path = tmp_path / f"new{round_}.db"
        start = context.Barrier(_PROCESSES)
        out = context.Queue()
        workers = [context.Process(target=_switch, args=(path, start, out))
                   for _ in range(_PROCESSES)]
        for worker in workers:
            worker.start()
        modes = [out.get(timeout=60) for _ in workers]
        for worker in workers:
            worker.join(60)
        assert modes == ["wal"] * _PROCESSES, f"round {round_}: {modes}"


def test_other_errors_are_not_retried(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    conn.close()
    with pytest.raises(sqlite3.ProgrammingError):
        switch_to_wal(conn, 10)
