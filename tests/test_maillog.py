"""sealmail.maillog's held lines: one write per block, each line its own, other threads not held."""

from __future__ import annotations

import io
import logging
import threading

from sealmail.maillog import BatchingStreamHandler, SecondsFormatter, batched_lines


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
