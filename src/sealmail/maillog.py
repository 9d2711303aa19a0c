"""Log record set-up shared by every sealmail program: the CLI's and the daemons' workers (the
MTA's smtpd worker is started by the master, not through the CLI)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TextIO

# A master.cf service's own syslog_name (`-o syslog_name=postfix/submission`): set in the
# context of that service's sessions, so their lines read `postfix/submission/smtpd[pid]` as
# Postfix writes them; None: main.cf's syslog_name.
SERVICE_SYSLOG_NAME: ContextVar[str | None] = ContextVar("service_syslog_name", default=None)


def lean_log_records() -> None:
    """Log records without what sealmail's lines never show: the calling frame, thread and
    multiprocessing names (the logging HOWTO's optimizations; a busy smtpd logs four lines a
    message)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


class BatchingStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler whose lines, inside `batched_lines()` on the calling thread, go out in one
    write when the block ends: lmtpd's delivery thread logs two lines per stored copy (ours and
    Cyrus's `Delivered:`), each a write and a flush of its own before (issue 18). Every line
    stays a line of its own; other threads' lines go out as they log. Only the formatted text
    is held, not the records: hundreds of records kept alive through a batch made every garbage
    collection in it walk them (more CPU than the writes saved)."""

    def emit(self, record: logging.LogRecord) -> None:
        held: _Held | None = getattr(_holding, "held", None)
        if held is None:
            super().emit(record)
            return
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        lines = held.lines.get(self)
        if lines is None:
            lines = held.lines[self] = []
            held.first[self] = record  # what handleError reports if the write fails
        lines.append(line)


@dataclass(slots=True)
class _Held:
    lines: dict[BatchingStreamHandler, list[str]] = field(default_factory=dict)
    first: dict[BatchingStreamHandler, logging.LogRecord] = field(default_factory=dict)


_holding = threading.local()


@contextlib.contextmanager
def batched_lines() -> Iterator[None]:
    """Hold this thread's lines to every BatchingStreamHandler until the block ends, then write
    each handler's in one call. Callers end the block before they answer a client, so a reply
    still follows its log lines."""
    if getattr(_holding, "held", None) is not None:
        yield  # the outer block writes them
        return
    held = _holding.held = _Held()
    try:
        yield
    finally:
        _holding.held = None
        _write_held(held)


def _write_held(held: _Held) -> None:
    for handler, lines in held.lines.items():
        handler.acquire()
        try:
            handler.stream.write("".join(lines))
            handler.flush()
        except Exception:
            handler.handleError(held.first[handler])
        finally:
            handler.release()


class SecondsFormatter(logging.Formatter):
    """A Formatter whose date, to the second as every sealmail format writes it, is made once a
    second rather than once a line: time.localtime and strftime were a third of formatting a
    line, and lmtpd's delivery thread formats two per stored copy (issue 18). Without a date
    format (the default one has milliseconds) it formats as logging does."""

    # (second, date format, its text): one attribute, so that threads agree
    _made: tuple[int, str, str] = (-1, "", "")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        made_second, made_format, text = self._made
        if made_second != second or made_format != datefmt:
            text = super().formatTime(record, datefmt)
            self._made = (second, datefmt, text)
        return text
