"""One timer for all the reads of a session, instead of an `asyncio.timeout` per read.

A session waits for its client's next bytes once per command; an `asyncio.timeout_at` around
each wait creates a timeout object and a timer handle and cancels them again, ~4 us (uvloop) to
~6 us (the stdlib loop) of the event loop's CPU per read, some 5% of a short IMAP command. A
`ReadDeadline` lives as long as its session: each read only notes its deadline; the one timer,
re-armed only when it fires early (at most once per autologout period while the client keeps
talking) or when a read's deadline comes before it, cancels a read past its deadline, and that
read ends as a timed-out one. A read cut short keeps what StreamReader had buffered (as with
asyncio.timeout), so nothing the client sent is lost.

`reschedule(when)` is what `Drain.set` calls on every read under way (as on an asyncio.Timeout):
a daemon's stop ends the wait at once.
"""

from __future__ import annotations

import asyncio

__all__ = ["ReadDeadline"]

# What one read may return: all that uvloop took in one recv (up to 256,000 octets), so a
# 100 KiB message reaches the core in one piece, not 64 KiB and then the rest (one loop
# iteration, one copy of the piece and one pass of the DATA reader fewer; issue 18).
READ_SIZE = 262144


class ReadDeadline:
    """The deadline of a session's reads, kept by one timer."""

    __slots__ = ("_armed", "_deadline", "_expired", "_handle", "_task")

    def __init__(self) -> None:
        self._deadline = 0.0  # loop time the read under way must end by
        self._task: asyncio.Task[object] | None = None  # the task waiting on a read, if any
        self._handle: asyncio.TimerHandle | None = None
        self._armed = 0.0  # when `_handle` fires
        self._expired = False  # `_fire` cancelled the read

    async def read(self, reader: asyncio.StreamReader, deadline: float) -> bytes | None:
        """`reader.read()`, or None once the loop's clock passes `deadline` first."""
        task = asyncio.current_task()
        assert task is not None
        self._deadline = deadline
        if self._handle is None or deadline < self._armed:
            self._arm(deadline)
        self._task = task
        cancelling = task.cancelling()
        try:
            return await reader.read(READ_SIZE)
        except asyncio.CancelledError:
            if not self._expired:
                raise
            self._expired = False
            if task.uncancel() > cancelling:
                raise  # cancelled by someone else too: that one wins
            return None
        finally:
            self._task = None

    def reschedule(self, when: float) -> None:
        """Move the deadline of the read under way (a daemon's stop: to now)."""
        if self._task is None:
            return
        self._deadline = when
        if self._handle is None or when < self._armed:
            self._arm(when)

    def close(self) -> None:
        """The session is over: the timer goes."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _arm(self, when: float) -> None:
        if self._handle is not None:
            self._handle.cancel()
        self._armed = when
        self._handle = asyncio.get_running_loop().call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        task = self._task
        if task is None:
            return  # no read waiting: the next read arms the timer again
        if asyncio.get_running_loop().time() >= self._deadline:
            self._expired = True
            task.cancel()
        else:
            self._arm(self._deadline)
