"""The MTA master's watch over smtpd processes (sealmail.mta.worker_watch): a dead one is
replaced at once and cleared up after; a crash loop is throttled, logged, and not forever."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from sealmail.mta import worker_watch
from sealmail.mta.worker_watch import exit_text, replace_dead_workers

SLEEPER = [sys.executable, "-c", "import time; time.sleep(60)"]


def test_exit_text_in_master_words() -> None:
    assert exit_text(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_text(1) == "exit status 1"


def test_a_killed_worker_is_replaced_and_its_leftovers_cleared(
    caplog: pytest.LogCaptureFixture,
) -> None:
    workers = [subprocess.Popen(SLEEPER) for _ in range(2)]
    spawned: list[int] = []
    reaped: list[int] = []

    def spawn(index: int) -> subprocess.Popen[bytes]:
        spawned.append(index)
        return subprocess.Popen(SLEEPER)

    async def scenario() -> None:
        stop = asyncio.Event()
        watch = asyncio.create_task(
            replace_dead_workers(workers, spawn, stop, reaped=reaped.append, interval=0.05))
        first = workers[1].pid
        workers[1].kill()
        for _ in range(200):
            if spawned:
                break
            await asyncio.sleep(0.05)
        stop.set()
        await watch
        assert spawned == [1] and reaped == [first] and workers[1].pid != first

    caplog.set_level(logging.WARNING, "sealmail.mta.master")
    try:
        asyncio.run(scenario())
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    assert "killed by signal 9 (SIGKILL)" in caplog.text


def test_a_crash_loop_is_throttled_then_replaced_again(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_watch, "THROTTLE", 0.01)
    quitter = [sys.executable, "-c", "pass"]
    workers = [subprocess.Popen(quitter)]
    count = 0

    def spawn(index: int) -> subprocess.Popen[bytes]:
        nonlocal count
        count += 1
        return subprocess.Popen(quitter if count < 8 else SLEEPER)

    async def scenario() -> None:
        stop = asyncio.Event()
        watch = asyncio.create_task(replace_dead_workers(workers, spawn, stop, interval=0.02))
        for _ in range(500):
            if count >= 8:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await watch

    caplog.set_level(logging.WARNING, "sealmail.mta.master")
    try:
        asyncio.run(scenario())
    finally:
        workers[0].kill()
        workers[0].wait()
    assert count >= 8  # never given up on
    assert "throttling" in caplog.text


def test_remove_temporary_takes_only_that_process_files(tmp_path: Path) -> None:
    from sealmail.mta.queue import Queue, QueueName

    queue = Queue(tmp_path)
    queue.create_directories()
    writer = queue.new_message()  # this process's, half-written
    incoming = queue.queue_directory(QueueName.INCOMING)
    (incoming / ".999999.abcd.tmp").write_bytes(b"another process")
    assert queue.remove_temporary(999999) == 1
    assert [p.name for p in incoming.iterdir()] == [writer._temporary.name]
    writer.abort()
