"""lmtpd's one delivery thread: whole deliveries from the event loop, run in batches.

Why one thread: with one executor thread per session, each of the ~40 GIL-releasing calls of a
delivery (every SQLite step, write, fsync, flock, link) handed the GIL among five runnable
threads, and the group commit woke its followers: 110-150 futex calls and 1.5-2 ms of CPU per
one-recipient message (docs/benchmarks.md, issue 18). Here a session queues its envelope and
awaits a future; the thread takes everything queued, runs it through the engine's
`deliver_batch` (every stage file written, their fsyncs issued together, one group commit,
Sieve, duplicate locks and delivery slots per envelope as before), and resolves the batch's
futures with one call into the loop. Every reply still follows the file, directory and index
being durable: `deliver_batch` returns only then.

A batch is whatever queued while the previous one ran, so at one session it is one delivery
(no waiting to fill it) and under load as many as the sessions have in flight, up to MAX_COPIES
recipients' copies (always at least one envelope, whatever its size). A batch's cost grows with
its copies (~60-100 us of CPU each: the index rows, the link, the log lines) and every reply of
the batch waits for the last of them: the bound keeps one batch's wait, and the first replies of
a burst, to tens of milliseconds. It is not lower because sessions that each wait for their
reply (lmtpd's clients, the bench) gain nothing from it: each smaller batch is one more fsync
round and COMMIT for the same copies, and a message's wait is the work of every message ahead
of it either way (docs/benchmarks.md, issue 18).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass

from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.delivery.replies import INTERNAL_ERROR
from sealmail.maillog import batched_lines
from sealmail.proto.smtp import Reply

log = logging.getLogger("sealmail.lmtpd")

MAX_BATCH = 64  # envelopes per batch: a bound on one commit's size and on its first reply's wait
MAX_COPIES = 250  # recipients per batch (above): five 50-recipient messages
MAX_LINGER = 0.002  # seconds a batch may wait for the sessions the last one answered


@dataclass(slots=True, eq=False)
class _Queued:
    envelope: Envelope
    content: bytes
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[Reply]]


class DeliveryQueue:
    """Deliveries of one process's sessions, run by one thread, in batches."""

    def __init__(
        self, engine: DeliveryEngine, max_batch: int = MAX_BATCH, max_copies: int = MAX_COPIES
    ) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.max_copies = max_copies
        self._queued: deque[_Queued] = deque()
        self._copies = 0  # recipients of what is queued
        self._wake = threading.Condition()
        self._wanted = 0  # how many queued envelopes end the thread's wait (0: not waiting)
        self._thread: threading.Thread | None = None
        self._pid = 0
        self._closing = False
        self.batches = 0  # batches run (tests read it)

    async def deliver(self, envelope: Envelope, content: bytes) -> list[Reply]:
        """One reply per recipient, in order, once the delivery is durable (engine.deliver)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Reply]] = loop.create_future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the delivery queue is closed")
            if self._thread is None or self._pid != os.getpid():
                # Started on first use, and again in a forked child (threads do not fork).
                self._queued.clear()
                self._copies = self._wanted = 0
                self._thread = threading.Thread(target=self._run, name="deliver", daemon=True)
                self._thread.start()
                self._pid = os.getpid()
            self._queued.append(_Queued(envelope, content, loop, future))
            self._copies += len(envelope.recipients)
            if self._wanted and (len(self._queued) >= self._wanted or self._full()):
                self._wake.notify()  # only a wake-up that ends the wait (see _take)
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the thread."""
        with self._wake:
            self._closing = True
            self._wake.notify()
            thread = self._thread if self._pid == os.getpid() else None
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        expected, linger = 1, 0.0
        while (batch := self._take(expected, linger)) is not None:
            started = time.monotonic()
            replies = self._deliver(batch)
            with self._wake:
                # The sessions just answered come back with their next message within a round
                # trip, those queued meanwhile are here: together the next batch, if it waits
                # a little for the first (a fraction of a batch, under MAX_LINGER).
                expected = min(self.max_batch, len(batch) + len(self._queued))
            linger = min(MAX_LINGER, (time.monotonic() - started) / 2)
            self._resolve(batch, replies)

    def _take(self, expected: int, linger: float) -> list[_Queued] | None:
        """The next batch: what is queued, once `expected` are or `linger` seconds have passed
        since the first came; None once closed and empty.

        A session wakes the thread only when its envelope ends the wait (`_wanted`): woken by
        every arrival while lingering, the thread took the GIL, found the batch short and went
        back to sleep, ~0.75 times per message at 4 sessions (a futex wake, a GIL hand-off and
        a new waiter lock each)."""
        with self._wake:
            self._wanted = 1
            while not self._queued and not self._closing:
                self._wake.wait()
            if not self._queued:
                return None
            deadline = time.monotonic() + linger
            self._wanted = expected
            while len(self._queued) < expected and not self._closing and not self._full():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(left)
            self._wanted = 0
            return self._first_of_queue()

    def _full(self) -> bool:
        """Whether what is queued makes a batch of `max_copies` already: no more lingering."""
        return self._copies >= self.max_copies

    def _first_of_queue(self) -> list[_Queued]:
        """The queue's first envelopes, up to `max_batch` of them and `max_copies` recipients
        (at least one envelope)."""
        queued = self._queued
        batch = [queued.popleft()]
        copies = len(batch[0].envelope.recipients)
        while queued and len(batch) < self.max_batch:
            more = len(queued[0].envelope.recipients)
            if copies + more > self.max_copies:
                break
            copies += more
            batch.append(queued.popleft())
        self._copies -= copies
        return batch

    def _deliver(self, batch: Sequence[_Queued]) -> list[list[Reply]]:
        """The batch's replies; its log lines (one or two per copy) written in one go before
        any reply goes out (sealmail.maillog.batched_lines)."""
        self.batches += 1
        with batched_lines():
            try:
                return self.engine.deliver_batch([(item.envelope, item.content) for item in batch])
            except Exception:  # the engine fails envelopes alone; this is a bug's last line
                log.exception("delivery batch failed")
                return [[INTERNAL_ERROR] * len(item.envelope.recipients) for item in batch]

    @staticmethod
    def _resolve(batch: Sequence[_Queued], replies: Sequence[Sequence[Reply]]) -> None:
        """One call into each loop for the whole batch, not one wake-up per delivery."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[list[Reply]],
                                                            list[Reply]]]] = {}
        for item, answer in zip(batch, replies, strict=True):
            by_loop.setdefault(item.loop, []).append((item.future, list(answer)))
        for loop, results in by_loop.items():
            with suppress(RuntimeError):  # the loop has closed: no one is waiting any more
                loop.call_soon_threadsafe(_set_results, results)


def _set_results(results: Sequence[tuple[asyncio.Future[list[Reply]], list[Reply]]]) -> None:
    for future, replies in results:
        if not future.done():  # a session cancelled meanwhile (its client went away)
            future.set_result(replies)
