"""One timer for a session's reads (`ReadDeadline`): what `read_client` gives with it is what it
gives with an asyncio.timeout per read; reads in a row re-arm the timer only when needed; a
cancel from elsewhere still cancels. Under both loops."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from sealmail.server.read_deadline import ReadDeadline
from sealmail.server.session import Drain, Interruption, read_client

uvloop = pytest.importorskip("uvloop")

Runner = Callable[[Coroutine[Any, Any, Any]], Any]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Runner:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[no-any-return]


async def _read(fed: bytes | None, *, draining: bool, idle: bool | None,
                timeout: float = 5.0) -> bytes | Interruption:
    reader = asyncio.StreamReader()
    if fed is not None:
        reader.feed_data(fed)
    stop = Drain()
    if draining:
        stop.set()
    watch = ReadDeadline()
    try:
        return await read_client(reader, timeout=timeout, draining=stop,
                                 idle=None if idle is None else lambda: idle, watch=watch)
    finally:
        watch.close()


@pytest.mark.parametrize(("fed", "draining", "idle", "timeout", "expected"), [
    (b"NOOP\r\n", False, True, 5.0, b"NOOP\r\n"),
    (b"NOOP\r\n", True, True, 5.0, Interruption.SHUTDOWN),
    (b"DATA\r\n", True, False, 5.0, b"DATA\r\n"),
    (None, True, None, 5.0, Interruption.SHUTDOWN),
    (None, False, True, 0.01, Interruption.IDLE_TIMEOUT),
])
def test_read_client_answers_as_with_a_timeout_per_read(  # type: ignore[no-untyped-def]
        run, fed, draining, idle, timeout, expected) -> None:
    assert run(_read(fed, draining=draining, idle=idle, timeout=timeout)) == expected


async def _drain_during_read(idle: bool) -> tuple[bytes | Interruption, bool]:
    reader, stop, watch = asyncio.StreamReader(), Drain(), ReadDeadline()
    waiting = asyncio.create_task(
        read_client(reader, timeout=60, draining=stop, idle=lambda: idle, watch=watch))
    await asyncio.sleep(0)
    stop.set()
    for _ in range(5):  # the timer fires, then the task takes its cancellation
        await asyncio.sleep(0)
    ended_early = waiting.done()
    reader.feed_data(b".\r\n")
    got = await waiting
    watch.close()
    return got, ended_early


def test_a_drain_ends_an_idle_session_s_wait(run) -> None:  # type: ignore[no-untyped-def]
    assert run(_drain_during_read(idle=True)) == (Interruption.SHUTDOWN, True)


def test_a_drain_lets_a_busy_session_s_wait_go_on(run) -> None:  # type: ignore[no-untyped-def]
    assert run(_drain_during_read(idle=False)) == (b".\r\n", False)


async def _reads_in_a_row() -> list[bytes | None]:
    loop = asyncio.get_running_loop()
    reader, watch = asyncio.StreamReader(), ReadDeadline()
    got: list[bytes | None] = []
    reader.feed_data(b"a")
    got.append(await watch.read(reader, loop.time() + 0.05))  # arms the timer at +0.05
    # A later deadline: the timer fires early, finds this read's deadline ahead, re-arms.
    loop.call_later(0.15, reader.feed_data, b"b")
    got.append(await watch.read(reader, loop.time() + 30))
    # An earlier deadline than the timer's (+30): armed again, sooner.
    got.append(await watch.read(reader, loop.time() + 0.02))
    reader.feed_data(b"c")  # kept for the next read: the timed-out one lost nothing
    got.append(await watch.read(reader, loop.time() + 30))
    watch.close()
    return got


def test_reads_in_a_row_share_the_timer(run) -> None:  # type: ignore[no-untyped-def]
    assert run(_reads_in_a_row()) == [b"a", b"b", None, b"c"]


async def _cancelled_from_elsewhere() -> bool:
    reader, watch = asyncio.StreamReader(), ReadDeadline()
    task = asyncio.create_task(watch.read(reader, asyncio.get_running_loop().time() + 30))
    await asyncio.sleep(0)
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        return True
    finally:
        watch.close()
    return False


def test_a_cancel_from_elsewhere_still_cancels(run) -> None:  # type: ignore[no-untyped-def]
    assert run(_cancelled_from_elsewhere())
