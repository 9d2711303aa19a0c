"""Log record set-up shared by every sealmail program: the CLI's and the daemons' workers (the
MTA's smtpd worker is started by the master, not through the CLI)."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
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

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        # (logger name, level) -> ((second, forks), text before the message, text after)
        self._frames: dict[tuple[str, int], tuple[tuple[int, int], str, str]] = {}
        self._steady: tuple[logging.Formatter | None, bool] = (None, False)  # `steady`

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

    def steady(self) -> bool:
        """Whether this handler's line is the same around the message for one logger and level
        within a second (`log_line`): no filters, a %-style format of steady fields only, the
        date (if shown) to the second. Decided once per formatter."""
        formatter = self.formatter
        if self.filters or formatter is None:
            return False
        if self._steady[0] is not formatter:
            self._steady = (formatter, _steady_format(formatter))
        return self._steady[1]

    def frame(self, name: str, level: int) -> tuple[str, str]:
        """The text before and after the message of a line of logger `name` at `level` now."""
        now = (int(time.time()), _forks)  # a forked child shows its own pid
        made = self._frames.get((name, level))
        if made is not None and made[0] == now:
            return made[1], made[2]
        text = self.format(logging.LogRecord(name, level, "", 0, _MESSAGE_MARK, None, None))
        prefix, _, suffix = text.partition(_MESSAGE_MARK)
        suffix += self.terminator
        self._frames[(name, level)] = (now, prefix, suffix)
        return prefix, suffix


def _steady_format(formatter: logging.Formatter) -> bool:
    if type(formatter._style) is not logging.PercentStyle:
        return False  # {} and $ styles subclass it
    fmt = formatter._fmt or logging.BASIC_FORMAT
    fields = set(_FIELD.findall(fmt))
    if fmt.count("%(message)") != 1 or not fields <= _STEADY_FIELDS:
        return False
    return "asctime" not in fields or (
        isinstance(formatter, SecondsFormatter) and formatter.datefmt is not None)


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


# Fields whose value is the same for every line of one logger at one level within one second:
# a held line's text around its message can then be made once a second (`log_line`).
_STEADY_FIELDS = frozenset({"asctime", "name", "levelname", "levelno", "process", "message"})
_FIELD = re.compile(r"%\((\w+)\)")
_MESSAGE_MARK = "\x00"
_forks = 0  # forks into this process's line: frames made before it show the parent's pid


def _forked() -> None:
    global _forks
    _forks += 1


os.register_at_fork(after_in_child=_forked)


def log_line(logger: logging.Logger, level: int, msg: str, *args: object) -> None:
    """`logger.log(level, msg, *args)`, without a LogRecord when this thread's lines are held
    (`batched_lines`) and every handler the line reaches is a BatchingStreamHandler without
    filters whose format shows only fields that stay the same within a second: then the text
    around the message is made once a second per logger and level, and the line is that text
    with `msg % args` inside. lmtpd's delivery thread logs two lines per stored copy; a record
    each was ~5-9 us, a sixth of a copy's CPU at 50 recipients (issue 18). Anything else, or
    a message that does not format, goes the usual way."""
    held: _Held | None = getattr(_holding, "held", None)
    if held is not None and logger.isEnabledFor(level):
        handlers = _steady_handlers(logger, level)
        if handlers:
            try:
                message = msg % args if args else msg
            except Exception:  # logging reports it, with the record
                logger.log(level, msg, *args, stacklevel=2)
                return
            for handler in handlers:
                prefix, suffix = handler.frame(logger.name, level)
                lines = held.lines.get(handler)
                if lines is None:
                    lines = held.lines[handler] = []
                    held.first[handler] = logging.LogRecord(
                        logger.name, level, "", 0, message, None, None)
                lines.append(prefix + message + suffix)
            return
    logger.log(level, msg, *args, stacklevel=2)


def line_writer(logger: logging.Logger, level: int) -> Callable[..., None]:
    """`log_line` of `logger` at `level` for a run of lines on this thread, as `write(msg,
    *args)`: when it holds lines (`batched_lines`), the handlers and the text around the
    message are found once for the run, not once a line (a third of log_line's ~1.4-1.9 us;
    lmtpd's delivery thread writes two lines a stored copy). Every line is what `log_line`
    writes, its date to the second of its own call."""
    held: _Held | None = getattr(_holding, "held", None)
    if held is not None and logger.isEnabledFor(level):
        handlers = _steady_handlers(logger, level)
        if handlers:
            return _HeldLines(logger, level, held, handlers)
    return functools.partial(log_line, logger, level)


class _HeldLines:
    """`line_writer`'s writer for held lines of steady handlers."""

    __slots__ = ("handlers", "held", "level", "logger", "parts", "second")

    def __init__(self, logger: logging.Logger, level: int, held: _Held,
                 handlers: list[BatchingStreamHandler]) -> None:
        self.logger, self.level, self.held, self.handlers = logger, level, held, handlers
        self.second = -1  # of `parts`: each handler's lines, text before and after the message
        self.parts: list[tuple[list[str], str, str]] = []

    def __call__(self, msg: str, *args: object) -> None:
        if getattr(_holding, "held", None) is not self.held:  # used past its block: as usual
            log_line(self.logger, self.level, msg, *args)
            return
        try:
            message = msg % args if args else msg
        except Exception:  # logging reports it, with the record
            self.logger.log(self.level, msg, *args)
            return
        now = int(time.time())
        if now != self.second:
            self._frame(now, message)
        for lines, prefix, suffix in self.parts:
            lines.append(prefix + message + suffix)

    def _frame(self, now: int, message: str) -> None:
        held, name, level = self.held, self.logger.name, self.level
        self.parts = []
        for handler in self.handlers:
            lines = held.lines.get(handler)
            if lines is None:
                lines = held.lines[handler] = []
                held.first[handler] = logging.LogRecord(name, level, "", 0, message, None, None)
            self.parts.append((lines, *handler.frame(name, level)))
        self.second = now


def _steady_handlers(logger: logging.Logger, level: int) -> list[BatchingStreamHandler]:
    """Every handler a line of `logger` at `level` reaches, when all are steady
    BatchingStreamHandlers and no logger on the way filters; else []."""
    found: list[BatchingStreamHandler] = []
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters:
            return []
        for handler in current.handlers:
            if level < handler.level:
                continue
            if not isinstance(handler, BatchingStreamHandler) or not handler.steady():
                return []
            found.append(handler)
        current = current.parent if current.propagate else None
    return found


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
