"""imapd's hop to a worker thread (`threads.in_thread`): the value or the exception comes back,
a waiter that went away is skipped, and a failure leaves no reference cycle, so a failed
command's frames (and the files they hold) go as soon as the exception is handled, without
waiting for the garbage collector. Under both loops, on `CommandThreads` and on a
ThreadPoolExecutor (which tests put in its place). And `CommandThreads` itself."""

from __future__ import annotations

import asyncio
import gc
import os
import threading
import weakref
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import pytest

from sealmail.server.imapd.threads import CommandThreads, in_thread

uvloop = pytest.importorskip("uvloop")


class _Held:
    """Stands for a message file a command's frame holds."""


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Coroutine[Any, Any, None]], None]:
    return asyncio.run if request.param == "asyncio" else uvloop.run  # type: ignore[no-any-return]


@pytest.fixture(params=["CommandThreads", "ThreadPoolExecutor"])
def executor(request: pytest.FixtureRequest) -> Iterator[Executor]:
    pool: Executor = (CommandThreads(1, "test") if request.param == "CommandThreads"
                      else ThreadPoolExecutor(max_workers=1))
    with pool:
        yield pool


def test_the_value_comes_back_from_the_thread(run, executor) -> None:  # type: ignore[no-untyped-def]
    threads: list[str] = []

    def work(a: int, b: int) -> int:
        threads.append(threading.current_thread().name)
        return a + b

    async def main() -> None:
        assert await in_thread(executor, work, 2, 3) == 5

    run(main())
    assert threads and threads[0] != threading.main_thread().name


def test_a_failure_is_raised_and_leaves_no_cycle(run, executor) -> None:  # type: ignore[no-untyped-def]
    held: list[weakref.ref[_Held]] = []

    def fail() -> None:
        thing = _Held()
        held.append(weakref.ref(thing))
        raise ValueError("the command failed")

    async def main() -> None:
        try:
            await in_thread(executor, fail)
        except ValueError as exc:
            assert str(exc) == "the command failed"
            assert exc.__traceback__ is not None  # the command's own frames stay in it
        else:
            raise AssertionError("no exception")

    gc.disable()
    try:
        run(main())
        executor.shutdown(wait=True)  # the worker is out of its frames too
        assert held and held[0]() is None  # freed by reference counting alone
    finally:
        gc.enable()


def test_a_waiter_gone_is_skipped(run, executor) -> None:  # type: ignore[no-untyped-def]
    release = threading.Event()

    async def main() -> None:
        outcome = in_thread(executor, release.wait, 10)
        outcome.cancel()
        release.set()
        await asyncio.get_running_loop().run_in_executor(executor, lambda: None)  # after it
        await asyncio.sleep(0)  # the outcome's hand-over runs, and finds it cancelled
        assert outcome.cancelled()

    run(main())


def test_command_threads_reuse_an_idle_thread_and_start_more_when_busy() -> None:
    pool = CommandThreads(3, "test")
    names: list[str] = []
    for _ in range(5):  # one after the other: one thread
        pool.submit(lambda: names.append(threading.current_thread().name)).result(10)
    assert set(names) == {"test_0"}
    both = threading.Barrier(2, timeout=10)
    first, second = pool.submit(both.wait), pool.submit(both.wait)  # both at once: two threads
    first.result(10)
    second.result(10)
    pool.shutdown(wait=True)
    assert all(not thread.is_alive() for thread in pool._threads)
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)


def test_command_threads_hand_back_failures_and_outlive_them() -> None:
    with CommandThreads(1, "test") as pool:
        failed = pool.submit(lambda: 1 // 0)
        with pytest.raises(ZeroDivisionError):
            failed.result(10)
        pool.call_soon(lambda: 1 // 0, ())  # logged; the thread goes on
        assert pool.submit(lambda: 42).result(10) == 42


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="Linux's scheduling policies")
def test_command_threads_run_under_sched_batch_and_leave_the_caller_alone() -> None:
    """Woken, a command thread does not preempt the GIL's holder (threads._no_wake_preemption);
    the thread that submits (the event loop's) keeps its own policy."""
    before = os.sched_getscheduler(0)
    with CommandThreads(1, "test") as pool:
        assert pool.submit(os.sched_getscheduler, 0).result(10) == os.SCHED_BATCH
    assert os.sched_getscheduler(0) == before
