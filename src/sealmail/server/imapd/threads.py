"""The hop of a command to a worker thread and back: `in_thread`, and the threads themselves.

Every command that may wait on the store runs in a worker thread; the hop there and back is part
of each such command's CPU on the event loop. `loop.run_in_executor` with a ThreadPoolExecutor
pays for a concurrent future (a Condition and its lock), a work item, two module-wide locks and a
semaphore on the way in, and on the way out done-callbacks copying that future's state into an
asyncio one: about a tenth of the loop's CPU per command under imaptest. Here a job is a plain
call on a queue, and the thread settles the loop's future itself.

The threads run under Linux's SCHED_BATCH (`_no_wake_preemption`): a thread woken by a job, or
by another thread dropping the GIL, waits for a free core or the end of the running thread's
slice instead of preempting the thread that woke it, which holds the GIL the woken one needs at
once (docs/benchmarks.md, gil17: about a fifth fewer context switches per command).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["CommandThreads", "in_thread"]

log = logging.getLogger("sealmail.imapd")
_T = TypeVar("_T")
_Job = tuple[Callable[..., object], tuple[object, ...]] | None


class CommandThreads(Executor):
    """Up to `max_workers` threads, started as jobs find none idle (as ThreadPoolExecutor does),
    each taking plain calls off one queue. `submit` (the Executor interface, with its Future)
    is there for other callers; `in_thread` puts its job on the queue directly."""

    def __init__(self, max_workers: int, name: str) -> None:
        self._max = max_workers
        self._name = name
        self._jobs: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0  # threads that finished a job and have not been promised another
        self._shut = False

    def call_soon(self, function: Callable[..., object], args: tuple[object, ...]) -> None:
        """Run `function(*args)` in a worker thread; it must handle its own exceptions."""
        with self._lock:
            if self._shut:
                raise RuntimeError("cannot run a job after shutdown")
            if self._idle:
                self._idle -= 1
            elif len(self._threads) < self._max:
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self._name}_{len(self._threads)}")
                self._threads.append(thread)
                thread.start()
            self._jobs.put((function, args))

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()

        def job() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        self.call_soon(job, ())
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._lock:
            self._shut = True
            self._jobs.put(None)
        if wait:
            for thread in list(self._threads):
                if thread is not threading.current_thread():
                    thread.join()

    def _work(self) -> None:
        _no_wake_preemption()
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                jobs.put(None)  # for the next thread
                return
            function, args = job
            del job
            try:
                function(*args)
            except BaseException:  # a job's own failure must not end the thread
                log.exception("uncaught failure in a command thread")
            del function, args  # nothing of the job outlives it (its frames, its files)
            with self._lock:
                self._idle += 1


def _no_wake_preemption() -> None:
    """The calling thread under SCHED_BATCH (Linux; nothing elsewhere): the kernel then lets
    it not preempt the running thread when it is woken. Without it, a job put on the queue woke
    a thread that, on the loop's core, preempted the loop, found the GIL held, and slept again
    (two switches for nothing); threads of one process dropping the GIL to SQLite did the same
    to each other. Its share of the CPU is unchanged (the same weight as SCHED_OTHER at nice
    0); the loop's thread keeps the default policy, so a client's bytes still wake it at once.
    Threads a command thread starts (the store's fsync and checkpoint threads) inherit it."""
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:  # a sandbox's seccomp filter: the threads work as before
        log.debug("command threads keep the default scheduling policy: %s", exc)


def in_thread(executor: Executor, function: Callable[..., _T], *args: object
              ) -> asyncio.Future[_T]:
    """`function(*args)` in one of `executor`'s threads, its outcome in an asyncio future.

    What `loop.run_in_executor` does without chaining a concurrent future into an asyncio one:
    the thread hands the outcome to the loop itself (`CommandThreads`; any other Executor's
    `submit` works too). A waiter that went away (its session ended) left a cancelled future,
    which the outcome then skips.

    A failure leaves no reference cycle. A first try kept one (the exception's traceback holds
    the command's frames, each frame its caller, up to the thread's frames that held the
    future, which holds the exception), and with it a failed command's frames and the message
    file they had open, until the garbage collector ran: under the stdlib loop
    test_a_client_gone_mid_fetch_leaves_no_descriptor saw the descriptor. So the future goes
    to the thread in a box that the thread empties, and no frame of the thread keeps it.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[_T] = loop.create_future()
    if isinstance(executor, CommandThreads):
        executor.call_soon(_run, (loop, [outcome], function, args))
    else:
        executor.submit(_run, loop, [outcome], function, args)
    return outcome


def _run(loop: asyncio.AbstractEventLoop, box: list[asyncio.Future[_T]],
         function: Callable[..., _T], args: tuple[object, ...]) -> None:
    """`in_thread`'s half in the worker thread."""
    try:
        value = function(*args)
    except BaseException as exc:  # handed to the waiter, which raises it
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nobody waits
            loop.call_soon_threadsafe(_settle, box.pop(), None, exc)
        return
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(_settle, box.pop(), value, None)


def _settle(outcome: asyncio.Future[_T], value: _T | None, failure: BaseException | None
            ) -> None:
    """`in_thread`'s outcome, on the loop."""
    if outcome.cancelled():
        return
    if failure is not None:
        outcome.set_exception(failure)
    else:
        outcome.set_result(value)  # type: ignore[arg-type]
