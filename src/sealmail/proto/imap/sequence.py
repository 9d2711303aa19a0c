"""Sequence sets (RFC 9051 9: sequence-set, seq-range, seq-number; RFC 5182 "$").

    sequence-set = (seq-number / seq-range) ["," sequence-set]
    seq-range    = seq-number ":" seq-number
    seq-number   = nz-number / "*"
    search-res   = "$"                          ; RFC 5182 (SEARCHRES)

A `SequenceSet` keeps the ranges as sent (so it renders back exactly) and answers questions once the
largest value in use is known: "*" stands for the largest message sequence number or UID of the
mailbox. RFC 9051 9: "a seq-range ... 559:* ... includes the UID of the last message in the mailbox,
even if that value is less than 559"; a range "n:m" with n > m is the same as "m:n".

Membership and iteration work on merged, sorted ranges with bisect, so `UID FETCH 1:*` over 100,000
UIDs costs one pass over the UIDs, and testing one number costs O(log ranges).
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Final, cast

from sealmail.proto.imap.errors import BadCommand

__all__ = ["STAR", "SequenceSet"]

STAR: Final = 0  # "*" inside a range: 0 is never a valid seq-number (nz-number starts at 1)
_NUMBER_MAX = 0xFFFFFFFF  # RFC 9051 4.2: nz-number is a 32-bit unsigned value
_NUMBER = r"(?:\*|[1-9][0-9]*)"


class _Ranges(dict[str, tuple[int, int] | None]):
    """One piece of a set between commas -> its range (start, end), `_INVALID` or `_TOO_LARGE`,
    each worked out once: a set is then split and looked up in C (`map`), not read piece by
    piece in Python (imaptest's FETCH sets of ~12 ranges: ~4.8 us to parse, ~2.4 us so). A set
    is valid when each of its pieces is (the grammar above). Valid ranges are kept, bounded
    (cleared when full); anything else is worked out each time."""

    __slots__ = ()
    MAX = 2048

    def __missing__(self, piece: str) -> tuple[int, int] | None:
        if not _RANGE_RE.fullmatch(piece):
            return _INVALID
        first, _, last = piece.replace("*", "0").partition(":")
        pair = (int(first), int(last or first))
        if max(pair) > _NUMBER_MAX:
            return _TOO_LARGE
        if len(self) >= self.MAX:
            self.clear()
        self[piece] = pair
        return pair


_INVALID = None
_TOO_LARGE = (-1, -1)
_RANGE_RE = re.compile(rf"{_NUMBER}(?::{_NUMBER})?")
_RANGES = _Ranges()


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A sequence set as sent; `saved` is RFC 5182's "$" (the last SEARCH result)."""

    ranges: tuple[tuple[int, int], ...] = ()
    saved: bool = False

    def __post_init__(self) -> None:
        if self.saved and self.ranges:
            raise ValueError("'$' stands alone: it takes no ranges")
        if not self.saved and not self.ranges:
            raise ValueError("a sequence set needs at least one number")
        values = list(chain.from_iterable(self.ranges))  # one pass in C, not two per range
        if values and (min(values) < 0 or max(values) > _NUMBER_MAX):
            bad = next(v for v in values if not 0 <= v <= _NUMBER_MAX)
            raise ValueError(f"sequence number {bad} out of range")

    # -- construction -------------------------------------------------------------------------

    @classmethod
    def parse(cls, text: str) -> SequenceSet:
        """Parse the wire form; raises BadCommand on anything that is not a sequence set.

        Each piece between commas is a range by `_RANGES` (the grammar, once per piece), "*"
        read as STAR ("0", which the grammar never lets through as a number).
        """
        if text == "$":
            return cls(saved=True)
        ranges = tuple(map(_RANGES.__getitem__, text.split(",")))
        if _INVALID in ranges:
            raise BadCommand(f"Invalid sequence set: {text[:40]!r}")
        if _TOO_LARGE in ranges:
            raise BadCommand(f"Sequence number too large in {text[:40]!r}")
        return cls._checked(cast(tuple[tuple[int, int], ...], ranges))

    @classmethod
    def _checked(cls, ranges: tuple[tuple[int, int], ...]) -> SequenceSet:
        """A set of ranges already known valid (`parse` checked them): no second pass over
        every number in `__post_init__`."""
        new = object.__new__(cls)
        object.__setattr__(new, "ranges", ranges)
        object.__setattr__(new, "saved", False)
        return new

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """The most compact set holding exactly `numbers` (for COPYUID, ESEARCH ALL, VANISHED)."""
        values = sorted(set(numbers))
        if not values:
            raise ValueError("a sequence set needs at least one number")
        ranges: list[tuple[int, int]] = []
        start = prev = values[0]
        for value in values[1:]:
            if value != prev + 1:
                ranges.append((start, prev))
                start = value
            prev = value
        ranges.append((start, prev))
        return cls(tuple(ranges))

    @classmethod
    def all(cls) -> SequenceSet:
        """1:* (every message)."""
        return cls(((1, STAR),))

    # -- rendering ----------------------------------------------------------------------------

    def __str__(self) -> str:
        if self.saved:
            return "$"
        parts = []
        for start, end in self.ranges:
            first = "*" if start == STAR else str(start)
            if start == end:
                parts.append(first)
            else:
                parts.append(f"{first}:{'*' if end == STAR else end}")
        return ",".join(parts)

    # -- questions ----------------------------------------------------------------------------

    @property
    def uses_star(self) -> bool:
        return any(STAR in pair for pair in self.ranges)

    def normalized(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, inclusive (low, high) ranges with "*" read as `largest`.

        Raises ValueError for "$" (the caller substitutes the saved result first).
        """
        if self.saved:
            raise ValueError("'$' must be replaced by the saved search result first")
        spans = []
        for start, end in self.ranges:
            low = largest if start == STAR else start
            high = largest if end == STAR else end
            if low > high:
                low, high = high, low
            spans.append((low, high))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for low, high in spans:
            if merged and low <= merged[-1][1] + 1:
                if high > merged[-1][1]:
                    merged[-1] = (merged[-1][0], high)
            else:
                merged.append((low, high))
        return merged

    def contains(self, value: int, largest: int) -> bool:
        """Whether `value` is in the set when "*" means `largest`."""
        spans = self.normalized(largest)
        index = bisect.bisect_right(spans, (value, _NUMBER_MAX + 1)) - 1
        return index >= 0 and spans[index][0] <= value <= spans[index][1]

    def max_number(self, largest: int) -> int:
        """The highest number the set names (to check against EXISTS)."""
        spans = self.normalized(largest)
        return spans[-1][1] if spans else 0

    def iter_numbers(self, exists: int) -> Iterator[int]:
        """Message sequence numbers 1..exists in the set, ascending (past `exists`: skipped)."""
        for low, high in self.normalized(exists):
            yield from range(max(low, 1), min(high, exists) + 1)

    def iter_members(self, sorted_values: Sequence[int]) -> Iterator[int]:
        """The values of `sorted_values` (ascending UIDs) in the set; "*" is the last of them."""
        if not sorted_values:
            return
        for low, high in self.normalized(sorted_values[-1]):
            start = bisect.bisect_left(sorted_values, low)
            stop = bisect.bisect_right(sorted_values, high, lo=start)
            yield from sorted_values[start:stop]

    def iter_indexes(self, sorted_values: Sequence[int]) -> Iterator[int]:
        """Like `iter_members` but yields 0-based positions (UID set -> sequence numbers - 1)."""
        if not sorted_values:
            return
        for low, high in self.normalized(sorted_values[-1]):
            start = bisect.bisect_left(sorted_values, low)
            stop = bisect.bisect_right(sorted_values, high, lo=start)
            yield from range(start, stop)

    def number_spans(self, exists: int) -> list[tuple[int, int]]:
        """Like `iter_numbers` as 0-based [start, stop) position ranges: `1:*` of 100,000
        messages is one range, not 100,000 numbers."""
        spans = []
        for low, high in self.normalized(exists):
            start, stop = max(low, 1) - 1, min(high, exists)
            if start < stop:
                spans.append((start, stop))
        return spans

    def index_spans(self, sorted_values: Sequence[int]) -> list[tuple[int, int]]:
        """Like `iter_indexes` as [start, stop) position ranges (a UID set over ascending UIDs)."""
        if not sorted_values:
            return []
        spans = []
        for low, high in self.normalized(sorted_values[-1]):
            start = bisect.bisect_left(sorted_values, low)
            stop = bisect.bisect_right(sorted_values, high, lo=start)
            if start < stop:
                spans.append((start, stop))
        return spans
