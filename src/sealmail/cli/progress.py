"""Progress of long admin work on a terminal, and silence when there is none.

A tool run by cron or from a script must not fill its mail or log with carriage returns, so the
line is drawn only when the stream is a terminal; it is rewritten in place (CR, erase to end of
line) and erased when the work ends, leaving the tool's real output alone.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

ERASE_LINE = "\r\x1b[K"


class Progress:
    """`with Progress("quota -f", total) as progress: ... progress.step(what)`."""

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO | None = None,
        *,
        interval: float = 0.1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label = label
        self.total = total
        self.stream = sys.stderr if stream is None else stream
        self.interval = interval  # redraw at most this often: a terminal is slow too
        self.clock = clock
        self.done = 0
        self.shown = _is_terminal(self.stream)
        self._last = -interval

    def step(self, what: str = "", amount: int = 1) -> None:
        self.done += amount
        if not self.shown:
            return
        now = self.clock()
        if now - self._last < self.interval and self.done < self.total:
            return
        self._last = now
        self.stream.write(f"{ERASE_LINE}{self.label}: {self.done}/{self.total} {what}"[:200])
        self.stream.flush()

    def write(self, line: str) -> None:
        """A line of real output on the same stream, not mixed into the progress line."""
        if self.shown:
            self.stream.write(ERASE_LINE)
            self._last = -self.interval  # redraw at the next step
        self.stream.write(line + "\n")
        self.stream.flush()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.shown:
            self.stream.write(ERASE_LINE)
            self.stream.flush()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False
