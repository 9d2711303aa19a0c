"""Login cost under attack: password hashing bounded per process, failures remembered across
sessions.

A scrypt check takes ~32 MiB; run in whatever thread asked, 32 parallel failed logins grew a
daemon by a gigabyte (each thread's malloc arena keeps what scrypt freed). So every check runs on
`HashingPool`'s few threads, at most `workers` at once; past `queue` checks waiting, the answer is
a temporary failure ("try again later"), not counted against the client. An unknown user costs the
time of a real check, measured once, without its memory or CPU: timing still does not tell who
exists, except while the pool is saturated (a known user's check then waits in the queue too).

`FailurePenalty` remembers failed logins per client and per claimed user for a while, so the
failure delay grows across sessions (a client that reconnects after each refusal no longer starts
at one delay), as Dovecot's authentication penalty does; it is per process (master's workers each
keep their own), bounded in keys.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from sealmail.proto.sasl import CredentialsUnavailable

T = TypeVar("T")

HASHING_WORKERS = 2  # concurrent scrypt checks per process: 2 x 32 MiB at most
HASHING_QUEUE = 64  # checks waiting beyond those before 'try again later'


class HashingBusy(CredentialsUnavailable):
    """Too many password checks are waiting in this process: a temporary failure."""


class HashingPool:
    def __init__(self, workers: int = HASHING_WORKERS, queue: int = HASHING_QUEUE) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="password-hash")
        self._admitted = threading.BoundedSemaphore(workers + queue)
        self._unknown_user_seconds: float | None = None

    def run(self, hashing: Callable[[], T]) -> T:
        """`hashing()` on the pool's threads; HashingBusy when the queue is full."""
        if not self._admitted.acquire(blocking=False):
            raise HashingBusy("too many password checks waiting in this process; try again later")
        try:
            return self._executor.submit(hashing).result()
        finally:
            self._admitted.release()

    def spend_as_for(self, hash_function: Callable[[], bytes]) -> None:
        """An unknown user's check: as long as a real one (timed on the first call), no hash."""
        seconds = self._unknown_user_seconds
        if seconds is None:
            self._unknown_user_seconds = self._timed(hash_function)
        else:
            time.sleep(seconds)

    def _timed(self, hash_function: Callable[[], bytes]) -> float:
        def timed() -> float:
            start = time.monotonic()
            hash_function()
            return time.monotonic() - start

        return self.run(timed)


HASHING = HashingPool()  # one per process, shared by every sasldb the process opens


class FailurePenalty:
    """Failed logins per key (a client, a claimed user) in the last `window` seconds."""

    def __init__(
        self,
        window: float = 900.0,
        capacity: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.capacity = capacity
        self.clock = clock
        self._failures: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, *keys: str) -> int:
        """Count one failure for each key; the most recent failures any of them has now."""
        now = self.clock()
        most = 0
        with self._lock:
            for key in keys:
                times = self._recent(key, now)
                times.append(now)
                self._failures[key] = times
                self._failures.move_to_end(key)
                most = max(most, len(times))
            while len(self._failures) > self.capacity:
                self._failures.popitem(last=False)
        return most

    def _recent(self, key: str, now: float) -> list[float]:
        return [t for t in self._failures.get(key, ()) if now - t < self.window]
