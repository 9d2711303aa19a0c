"""The shared receive buffer: lines, counted octets, dot-terminated data, limits."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.buffer import (
    DotDataReader,
    LineTooLong,
    ReceiveBuffer,
    dot_stuff,
    dot_unstuff,
)


def lines_of(data: bytes, pieces: list[bytes], limit: int = 100) -> list[bytes | str]:
    """Feed `pieces`, pull every line; LineTooLong shows as the string "too long"."""
    buffer = ReceiveBuffer()
    got: list[bytes | str] = []
    for piece in pieces:
        buffer.feed(piece)
        while True:
            try:
                line = buffer.next_line(limit)
            except LineTooLong:
                got.append("too long")
                continue
            if line is None:
                break
            got.append(line)
    return got


def ways(data: bytes) -> list[list[bytes]]:
    return [[data], [data[i : i + 1] for i in range(len(data))], [data[:3], data[3:]]]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"NOOP\r\nQUIT\r\n", [b"NOOP", b"QUIT"]),
        (b"NOOP\nQUIT\n", [b"NOOP", b"QUIT"]),
        (b"a\r\rb\r\n", [b"a\r\rb"]),
        (b"\r\n\n", [b"", b""]),
        (b"tail without end", []),
    ],
)
def test_lines_whole_byte_by_byte_and_split(data: bytes, expected: list[bytes]) -> None:
    for pieces in ways(data):
        assert lines_of(data, pieces) == expected


def test_trailing_bytes_stay_for_the_next_reader() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"BDAT 3\r\nabcNOOP\r\n")
    assert buffer.next_line(100) == b"BDAT 3"
    assert buffer.take_exact(4) == b"abcN"
    assert buffer.take_exact(10) is None
    assert buffer.next_line(100) == b"OOP"
    assert len(buffer) == 0


def test_line_limit_counts_octets_before_the_line_end() -> None:
    exact = b"x" * 10 + b"\r\n"
    over = b"y" * 11 + b"\r\n"
    for pieces in ways(exact + over + b"ok\n"):
        assert lines_of(b"", pieces, limit=10) == [b"x" * 10, "too long", b"ok"]


def test_over_long_line_is_not_kept_in_memory() -> None:
    buffer = ReceiveBuffer()
    for _ in range(100):
        buffer.feed(b"z" * 1000)
        assert buffer.next_line(100) is None
        assert len(buffer) <= 101
    buffer.feed(b"\r\nNOOP\r\n")
    with pytest.raises(LineTooLong) as info:
        buffer.next_line(100)
    assert info.value.length == 100_000
    assert buffer.next_line(100) == b"NOOP"


def test_eof_and_clear() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"partial")
    buffer.feed(b"")
    assert buffer.at_eof
    assert buffer.clear() == b"partial"
    assert len(buffer) == 0


def test_take_streams_counted_octets() -> None:
    buffer = ReceiveBuffer()
    buffer.feed(b"abcdef")
    assert buffer.take(4) == b"abcd"
    assert buffer.take(4) == b"ef"
    assert buffer.take(0) == b""


def read_data(pieces: list[bytes], max_size: int = 0) -> tuple[DotDataReader, bytes]:
    buffer = ReceiveBuffer()
    reader = DotDataReader(max_size)
    for piece in pieces:
        buffer.feed(piece)
        if reader.read_from(buffer):
            break
    return reader, buffer.take_all()


@pytest.mark.parametrize(
    ("wire", "content", "rest"),
    [
        (b".\r\n", b"", b""),
        (b"a\r\n.\r\n", b"a\r\n", b"NOOP\r\n"),
        (b"..\r\n.\r\n", b".\r\n", b""),
        (b"..a\r\n.b\r\n.\r\n", b".a\r\nb\r\n", b""),
        (b"a\n.\nb\r\n.\r\n", b"a\n.\nb\r\n", b""),  # bare LF: content, no end, no unstuffing
        (b"a\r\n.\r\r\n.\r\n", b"a\r\n\r\r\n", b""),
        (b"x\r.\r\n.\r\n", b"x\r.\r\n", b""),
    ],
)
def test_dot_data(wire: bytes, content: bytes, rest: bytes) -> None:
    for pieces in ways(wire + rest):
        reader, _left = read_data(pieces)
        assert reader.done
        assert reader.content() == content
        assert reader.size == len(content)
    assert dot_unstuff(wire + rest) == (content, rest)


def test_dot_data_without_end_is_not_done() -> None:
    reader, _ = read_data([b"a\r\n.", b"x\r\n"])
    assert not reader.done
    with pytest.raises(ValueError, match="end marker"):
        dot_unstuff(b"a\r\n")


def test_dot_data_over_the_limit_is_read_to_its_end_and_dropped() -> None:
    reader, rest = read_data([b"0123456789\r\n", b"abc\r\n.\r\nNOOP\r\n"], max_size=10)
    assert reader.done and reader.oversized
    assert reader.content() == b""
    assert reader.size == 17
    assert rest == b"NOOP\r\n"


def test_dot_data_at_the_limit_is_kept() -> None:
    reader, _ = read_data([b"12345678\r\n.\r\n"], max_size=10)
    assert not reader.oversized
    assert reader.content() == b"12345678\r\n"


def test_dot_stuff() -> None:
    assert dot_stuff(b".a\r\nb\r\n.\r\n") == b"..a\r\nb\r\n..\r\n.\r\n"
    assert dot_stuff(b"no end") == b"no end\r\n.\r\n"
    assert dot_stuff(b"") == b".\r\n"


crlf_text = st.lists(
    st.binary(max_size=20).map(lambda b: b.replace(b"\r\n", b"\n")), max_size=10
).map(lambda lines: b"".join(line + b"\r\n" for line in lines))


@given(crlf_text, st.binary(max_size=20))
def test_dot_stuff_round_trip(content: bytes, rest: bytes) -> None:
    assert dot_unstuff(dot_stuff(content) + rest) == (content, rest)


@given(crlf_text, st.lists(st.integers(min_value=1, max_value=7), max_size=30))
def test_dot_data_any_split(content: bytes, cuts: list[int]) -> None:
    wire = dot_stuff(content)
    pieces, pos = [], 0
    for cut in cuts:
        pieces.append(wire[pos : pos + cut])
        pos += cut
    pieces.append(wire[pos:])
    reader, rest = read_data(pieces)
    assert reader.done and reader.content() == content and rest == b""


@given(st.binary(max_size=300), st.integers(min_value=1, max_value=50))
def test_lines_never_crash_and_never_exceed_the_limit(data: bytes, limit: int) -> None:
    for line in lines_of(data, [data[i : i + 7] for i in range(0, len(data), 7)], limit):
        assert line == "too long" or (isinstance(line, bytes) and len(line) <= limit)
