"""Numbers as IMAP writes them (`b"%d"`), many at once, and lines interleaved a column at a time.

Why: a FETCH of a large mailbox, or a SORT answer, writes tens of thousands of sequence numbers
and UIDs. `%d` costs a format call per number (about 0.1 us each, most of a `FETCH 1:* (FLAGS
UID)` at 10,000 messages); the digits of the numbers below `TABLE` are made once per process
and looked up, and a line of several items is put together by slice assignment into one list
joined once, rather than a %-format per line.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable, Sequence

__all__ = ["TABLE", "decimals", "interleaved", "pieces_of"]

TABLE = 1 << 16  # numbers below this are written from the table (about 3 MB once all made)

_table: list[bytes] = []
_lock = threading.Lock()


def decimals(numbers: Sequence[int], ascending: bool = False) -> list[bytes]:
    """`[b"%d" % n for n in numbers]` (non-negative numbers), from the table when they are all
    in it: a slice of it for a run without gaps (a range, or with `ascending`, the caller's
    word that each number is above the one before, a list from its first to its last)."""
    if not numbers:
        return []
    first, last = numbers[0], numbers[-1]
    run = (isinstance(numbers, range) and numbers.step == 1) or (
        ascending and last - first + 1 == len(numbers))
    highest = last if run else max(numbers)
    if highest >= TABLE:
        return list(map(b"%d".__mod__, numbers))
    table = _table
    if highest >= len(table):
        with _lock:  # grown by one thread at a time: a number's place is its value
            table.extend(b"%d" % n for n in range(len(table), highest + 1))
    if run:
        return table[first:last + 1]
    return list(map(table.__getitem__, numbers))


_PLACES = re.compile(rb"%%|%[db]|[^%]+")


def pieces_of(line: bytes) -> list[bytes]:
    """The text around the k `%d` / `%b` places of a %-format line: k + 1 pieces (`%%` read as
    `%`)."""
    pieces = [b""]
    for token in _PLACES.findall(line):
        if token in (b"%d", b"%b"):
            pieces.append(b"")
        else:
            pieces[-1] += b"%" if token == b"%%" else token
    return pieces


def interleaved(pieces: Sequence[bytes], columns: Sequence[Sequence[bytes]]) -> bytes:
    """Lines of `pieces[0] col0[i] pieces[1] col1[i] ... pieces[k]`, for each i, as one string:
    what `b"".join(line % row for row in zip(*columns))` gives, with bytes columns."""
    # Per line: the last piece and the next line's first as one, then a value and a piece
    # for each column but the last, then its value; the first line's start and the last
    # line's end added around.
    width = 2 * len(columns)
    count = len(columns[0]) if columns else 0
    if not count:
        return b""
    glue = pieces[-1] + pieces[0]
    parts: list[bytes] = [glue] * (count * width)
    for j, column in enumerate(columns):
        parts[2 * j + 1::width] = column
        if j + 1 < len(columns):
            parts[2 * j + 2::width] = [pieces[j + 1]] * count
    parts[0] = pieces[0]
    parts.append(pieces[-1])
    return b"".join(parts)


def written(numbers: Iterable[int], before: bytes = b" ") -> bytes:
    """`before` and each number: `b" 1 4 7"` (a SORT or SEARCH answer's numbers)."""
    listed = list(numbers)
    return interleaved([before, b""], [decimals(listed)])
