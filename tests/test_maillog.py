"""sealmail.maillog's held lines: one write per block, each line its own, other threads not held."""

from __future__ import annotations

import io
import itertools
import logging
import os
import threading

import pytest

from sealmail.maillog import (
    BatchingStreamHandler,
    SecondsFormatter,
    batched_lines,
    line_writer,
    log_line,
)


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def logger_to(stream: CountingStream, name: str) -> logging.Logger:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
    logger = logging.getLogger(name)
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_in_a_block_go_out_in_one_write_at_its_end_each_a_line() -> None:
    stream = CountingStream()
    log = logger_to(stream, "test.maillog.block")
    with batched_lines():
        for i in range(3):
            log.info("copy %d", i)
        with batched_lines():  # nested: the outer block writes
            log.info("inner")
        assert stream.getvalue() == ""
    assert stream.getvalue().splitlines() == [
        "test.maillog.block: copy 0", "test.maillog.block: copy 1",
        "test.maillog.block: copy 2", "test.maillog.block: inner",
    ]
    assert stream.writes == 1
    log.info("after")
    assert stream.getvalue().endswith("test.maillog.block: after\n")


def test_another_thread_logs_at_once_while_a_block_holds() -> None:
    stream = CountingStream()
    log = logger_to(stream, "test.maillog.threads")
    with batched_lines():
        log.info("held")
        thread = threading.Thread(target=log.info, args=("other thread",))
        thread.start()
        thread.join()
        assert stream.getvalue() == "test.maillog.threads: other thread\n"
    assert stream.getvalue().splitlines()[-1] == "test.maillog.threads: held"


def test_lines_are_written_when_the_block_raises() -> None:
    stream = CountingStream()
    log = logger_to(stream, "test.maillog.raises")
    try:
        with batched_lines():
            log.info("before the failure")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert stream.getvalue() == "test.maillog.raises: before the failure\n"


def test_seconds_formatter_writes_what_logging_formatter_writes() -> None:
    fmt, datefmt = "%(asctime)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%S"
    ours, theirs = SecondsFormatter(fmt, datefmt), logging.Formatter(fmt, datefmt)
    for created in (1_000_000_000.1, 1_000_000_000.9, 1_000_000_001.0, 1_000_000_000.5):
        record = logging.LogRecord("test", logging.INFO, "", 0, "line", (), None)
        record.created = created
        assert ours.format(record) == theirs.format(record)
    record = logging.LogRecord("test", logging.INFO, "", 0, "line", (), None)
    assert SecondsFormatter(fmt).format(record) == logging.Formatter(fmt).format(record)


# -- log_line: held lines without a LogRecord each ----------------------------------------------

_LOGGERS = itertools.count()  # a logger of its own per test: filters stay on a logger
WORKER_FORMAT = "%(asctime)s %(name)s/lmtp[%(process)d]: %(levelname)s %(message)s"


def _pair(fmt: str, formatter: type[logging.Formatter] = SecondsFormatter
          ) -> tuple[CountingStream, logging.Logger]:
    stream = CountingStream()
    log = logger_to(stream, f"test.maillog.line.{next(_LOGGERS)}")
    log.handlers[0].setFormatter(formatter(fmt, "%Y-%m-%dT%H:%M:%S"))
    return stream, log


@pytest.mark.parametrize("fmt", [
    WORKER_FORMAT, "%(name)s: %(message)s", "%(message)s", "[%(levelno)d] %(message)s!",
    "%(asctime)s %(msecs)03d %(message)s",  # not steady: the usual way
    "%(asctime)s %(funcName)s %(message)s",  # not steady either
])
@pytest.mark.parametrize("level", [logging.INFO, logging.WARNING])
def test_log_line_writes_what_logger_log_writes(fmt: str, level: int) -> None:
    """Held or not, steady format or not: the same line as `logger.log`, date aside."""
    stream, log = _pair(fmt)
    args = ("<id@example>", "user.fred", 4064, "100%", "")
    template = "%s: to=%s size=%d %s%s"
    with batched_lines():
        log.log(level, template, *args)
        log_line(log, level, template, *args)
        log.log(level, "no args: 100%")
        log_line(log, level, "no args: 100%")
    log_line(log, level, template, *args)  # not held
    first, second, third, fourth, fifth = stream.getvalue().splitlines()
    assert stream.writes == 2

    def dateless(line: str) -> str:
        """The time fields aside: a millisecond may pass between two lines."""
        fields = fmt.count("%(asctime)s") + fmt.count("%(msecs)")
        return line.split(" ", fields)[fields]

    assert dateless(first) == dateless(second) == dateless(fifth)
    assert dateless(third) == dateless(fourth)


def test_held_log_lines_of_a_steady_format_make_no_record_each(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """What the fast way is for: the worker's format, held (lmtpd's delivery thread)."""
    stream, log = _pair(WORKER_FORMAT)

    def no_record(*args: object, **kwargs: object) -> logging.LogRecord:
        raise AssertionError("a LogRecord made per line")

    monkeypatch.setattr(log, "makeRecord", no_record)
    with batched_lines():
        for copy in range(3):
            log_line(log, logging.INFO, "copy %d", copy)
    assert [line.split(": ", 1)[1] for line in stream.getvalue().splitlines()] == [
        "INFO copy 0", "INFO copy 1", "INFO copy 2"]
    assert f"/lmtp[{os.getpid()}]" in stream.getvalue()


def test_log_line_goes_the_usual_way_past_a_filter_or_another_handler() -> None:
    stream, log = _pair(WORKER_FORMAT)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    log.addHandler(Keep())
    with batched_lines():
        log_line(log, logging.INFO, "to %s", "fred")
    assert [r.getMessage() for r in records] == ["to fred"]
    assert stream.getvalue().endswith(": INFO to fred\n")
    log.handlers.pop()
    log.addFilter(lambda record: "secret" not in record.getMessage())
    with batched_lines():
        log_line(log, logging.INFO, "a %s line", "secret")
        log_line(log, logging.INFO, "a %s line", "plain")
    assert "secret" not in stream.getvalue() and stream.getvalue().endswith("a plain line\n")


def test_log_line_below_the_level_writes_nothing_and_a_bad_format_is_reported(
        capsys: pytest.CaptureFixture[str]) -> None:
    stream, log = _pair(WORKER_FORMAT)
    with batched_lines():
        log_line(log, logging.DEBUG, "debug %s", "x")
        log_line(log, logging.INFO, "%d copies", "not a number")
        log_line(log, logging.INFO, "after")
    assert stream.getvalue().splitlines()[-1].endswith(": INFO after")
    assert "debug" not in stream.getvalue()
    assert "not a number" in capsys.readouterr().err  # logging's own report of the bad line


def test_log_line_after_a_fork_shows_the_childs_pid() -> None:
    """The text around the message is made once a second: a child forked within that second
    must not write its parent's pid."""
    stream, log = _pair(WORKER_FORMAT)
    with batched_lines():
        log_line(log, logging.INFO, "parent")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its line, through the pipe
        try:
            child = CountingStream()
            log.handlers[0].setStream(child)  # type: ignore[attr-defined]
            with batched_lines():
                log_line(log, logging.INFO, "child")
            os.write(write, child.getvalue().encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child_line = pipe.read()
    assert f"[{os.getpid()}]" in stream.getvalue()
    assert f"[{pid}]" in child_line and "child" in child_line


@pytest.mark.parametrize("fmt", [WORKER_FORMAT, "%(asctime)s %(msecs)03d %(message)s"])
def test_a_line_writer_writes_what_log_line_writes(fmt: str) -> None:
    """Held (a steady format or not), not held, and used past its block: log_line's lines."""
    stream, log = _pair(fmt)
    template, args = "%s: to=%s size=%d %s", ("<id@example>", "user.fred", 4064, "100%")
    with batched_lines():
        write = line_writer(log, logging.INFO)
        for _ in range(2):
            log_line(log, logging.INFO, template, *args)
            write(template, *args)
        write("%d copies", "not a number")  # reported by logging, as log_line's
        assert stream.getvalue() == ""
    write(template, *args)  # past its block: written at once
    line_writer(log, logging.INFO)(template, *args)  # not held
    lines = stream.getvalue().splitlines()
    assert stream.writes == 3 and len(lines) == 6
    fields = fmt.count("%(asctime)s") + fmt.count("%(msecs)")
    assert len({line.split(" ", fields)[fields] for line in lines}) == 1
