"""Log record set-up shared by every sealmail program: the CLI's and the daemons' workers (the
MTA's smtpd worker is started by the master, not through the CLI)."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass
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
    Cyrus's `Delivered:`), and a write and a flush each were a tenth of its CPU at 50 recipients
    (issue 18). Every line stays a line of its own; other threads' lines go out as they log."""

    def emit(self, record: logging.LogRecord) -> None:
        held: list[_Held] | None = getattr(_holding, "lines", None)
        if held is None:
            super().emit(record)
            return
        try:
            held.append(_Held(self, record, self.format(record) + self.terminator))
        except Exception:
            self.handleError(record)


@dataclass(slots=True)
class _Held:
    handler: BatchingStreamHandler
    record: logging.LogRecord
    line: str


_holding = threading.local()


@contextlib.contextmanager
def batched_lines() -> Iterator[None]:
    """Hold this thread's lines to every BatchingStreamHandler until the block ends, then write
    each handler's in one call. Callers end the block before they answer a client, so a reply
    still follows its log lines."""
    if getattr(_holding, "lines", None) is not None:
        yield  # the outer block writes them
        return
    held: list[_Held] = []
    _holding.lines = held
    try:
        yield
    finally:
        _holding.lines = None
        _write_held(held)


def _write_held(held: list[_Held]) -> None:
    by_handler: dict[BatchingStreamHandler, list[_Held]] = {}
    for item in held:
        by_handler.setdefault(item.handler, []).append(item)
    for handler, items in by_handler.items():
        handler.acquire()
        try:
            handler.stream.write("".join(item.line for item in items))
            handler.flush()
        except Exception:
            handler.handleError(items[0].record)
        finally:
            handler.release()
