"""Loaded by every Python process started with this directory on PYTHONPATH (bench/lmtp_turn.py
puts it there for the lmtpds the bench starts): times each group commit's turn in the disk
store (sealmail.store.disk.commit.GroupCommit._lead) and writes per-process totals to
$SEALMAIL_TURN_TRACE.<pid> every 50 batches and at exit. Nothing is patched unless that
variable is set; the source tree is not touched."""

from __future__ import annotations

import atexit
import importlib.abc
import importlib.util
import os
import sys
import threading
import time
from typing import Any

_TRACE = os.environ.get("SEALMAIL_TURN_TRACE")
_MODULE = "sealmail.store.disk.commit"


class _Totals:
    def __init__(self) -> None:
        self.batches = 0
        self.copies = 0
        self.wait = 0.0  # seconds from asking for the turn to holding it
        self.held = 0.0  # seconds holding it (the batch taken, the commit run)
        self.held_cpu = 0.0  # the committing thread's CPU seconds meanwhile
        self.first = 0.0
        self.last = 0.0
        self.lock = threading.Lock()

    def write(self) -> None:
        with self.lock:
            line = (f"batches={self.batches} copies={self.copies} wait={self.wait:.6f}"
                    f" held={self.held:.6f} held_cpu={self.held_cpu:.6f}"
                    f" span={self.last - self.first:.6f}\n")
        with open(f"{_TRACE}.{os.getpid()}", "w") as out:
            out.write(line)


_TOTALS = _Totals()


def _patch(module: Any) -> None:
    group_commit = module.GroupCommit

    def _lead(self: Any) -> None:
        asked = time.perf_counter()
        taken_at = cpu_at = 0.0
        batch: list[Any] = []
        real_batch = self._batches.batch

        def batch_taken() -> list[Any]:
            nonlocal taken_at, cpu_at, batch
            if not taken_at:
                taken_at, cpu_at = time.perf_counter(), time.thread_time()
                batch = real_batch()
            return real_batch()

        self._batches.batch = batch_taken
        try:
            original(self)
        finally:
            del self._batches.batch
            done, cpu = time.perf_counter(), time.thread_time()
            if taken_at:
                with _TOTALS.lock:
                    _TOTALS.batches += 1
                    _TOTALS.copies += sum(len(d.targets) for d in batch)
                    _TOTALS.wait += taken_at - asked
                    _TOTALS.held += done - taken_at
                    _TOTALS.held_cpu += cpu - cpu_at
                    _TOTALS.first = _TOTALS.first or asked
                    _TOTALS.last = done
                if _TOTALS.batches % 50 == 0:
                    _TOTALS.write()

    original = group_commit._lead
    group_commit._lead = _lead
    atexit.register(_TOTALS.write)


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != _MODULE:
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        real_exec = loader.exec_module  # type: ignore[union-attr]

        def exec_module(module: Any) -> None:
            real_exec(module)
            _patch(module)

        loader.exec_module = exec_module  # type: ignore[union-attr]
        return spec


if _TRACE:
    sys.meta_path.insert(0, _Finder())
