"""One leader at a time for callers of many threads: the queue both group commits share
(deliveries in sealmail.store.disk.commit, IMAP changes in sealmail.store.disk.changes).

A caller joins the queue; if no one leads, it leads: it takes the whole queue as its batch (its
own entry is in it), runs it, wakes every caller of the batch, and hands the role to the first
caller that queued meanwhile. A follower sleeps until its batch is done or the role is handed
to it.

A follower sleeps on a gate of its own, a lock created held that the leader releases: one
futex wake-up per follower. A threading.Event there (a Condition, its lock and a waiter lock
per wait) made the leader and each woken follower meet on the Condition's lock as well, and
every such meeting is a GIL hand-off and two context switches more (docs/benchmarks.md, gil17).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar


def _closed_gate() -> threading.Lock:
    gate = threading.Lock()
    gate.acquire()
    return gate


@dataclass(eq=False)
class Waiter:
    """A caller's place in the queue. `gate` is held until the leader opens it, once: for the
    batch's end or for the role (a caller is woken at most once per `join`)."""

    gate: threading.Lock = field(default_factory=_closed_gate)
    finished: bool = False


W = TypeVar("W", bound=Waiter)


class Batches(Generic[W]):
    def __init__(self) -> None:
        self._queue: list[W] = []
        self._lock = threading.Lock()
        self._leading = False
        self._batch: list[W] | None = None  # what the leader took (one leader at a time)

    def join(self, waiter: W, lead: Callable[[], None], more: Sequence[W] = ()) -> None:
        """Queue `waiter` (and `more`, a caller's other entries, which go in the same batch);
        return once the batch it was in has run. Leading, `lead` runs the batch it takes with
        `batch()` (it may wait for a turn first, so that what arrives meanwhile comes
        along)."""
        with self._lock:
            self._queue.append(waiter)
            self._queue.extend(more)
            leads = not self._leading
            self._leading = True
        if not leads:
            waiter.gate.acquire()
            if waiter.finished:
                return
        try:
            lead()
        finally:
            batch, self._batch = self._batch or [], None
            for other in batch:
                other.finished = True
                if other is not waiter:
                    other.gate.release()
            with self._lock:
                if self._queue:
                    self._queue[0].gate.release()  # hand the role on
                else:
                    self._leading = False

    def batch(self) -> list[W]:
        """For the leader: the queue as it is now, taken once per lead."""
        if self._batch is None:
            with self._lock:
                self._batch, self._queue = self._queue, []
        return self._batch
