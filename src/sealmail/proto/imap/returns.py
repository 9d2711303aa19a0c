"""SEARCH and SORT return options: RFC 4731 (MIN MAX ALL COUNT), RFC 5182 (SAVE), RFC 5267
(ESORT: SORT RETURN; CONTEXT=SEARCH / CONTEXT=SORT: PARTIAL, UPDATE, CONTEXT).

    search-return-opts = SP "RETURN" SP "(" [search-return-opt *(SP search-return-opt)] ")"
    search-return-opt  =/ "PARTIAL" SP partial-range / "UPDATE" / "CONTEXT"   ; RFC 5267 4.4
    partial-range      = nz-number ":" nz-number

Options are kept as upper-case words, PARTIAL with its range ("PARTIAL 2:4" as sent), so a
command renders back as it came. `partial_range` reads the range back, low end first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from sealmail.proto.imap.errors import BadCommand
from sealmail.proto.imap.syntax import Reader

__all__ = ["SEARCH_RETURN", "ordered_set", "parse_return_options", "partial_range"]

SEARCH_RETURN = frozenset({"MIN", "MAX", "ALL", "COUNT", "SAVE", "PARTIAL", "UPDATE", "CONTEXT"})
_RANGE = re.compile(rb"([1-9][0-9]{0,9}):([1-9][0-9]{0,9})")
_RANGE_TEXT = re.compile(r"PARTIAL ([0-9]+):([0-9]+)")


def parse_return_options(reader: Reader) -> tuple[str, ...]:
    """The parenthesized list after RETURN (the reader stands on its "(")."""

    def option(r: Reader) -> str:
        value = r.atom().upper()
        if value not in SEARCH_RETURN:
            raise BadCommand(f"Unknown SEARCH return option {value[:32]}")
        if value != "PARTIAL":
            return value
        r.sp()
        match = _RANGE.match(r.data, r.pos)
        end = match.end() if match else r.pos
        if match is None or (end < len(r.data) and r.data[end] not in b" )"):
            raise r.fail("a PARTIAL range n:m")
        r.pos = end
        return "PARTIAL " + match.group(0).decode()

    options = tuple(reader.paren_list(option))
    if sum(o.startswith("PARTIAL") for o in options) > 1:
        raise BadCommand("PARTIAL is given twice")
    return options


def partial_range(options: Sequence[str]) -> tuple[int, int] | None:
    """The (low, high) of a PARTIAL option (RFC 5267 4.4: either order means the same)."""
    for option in options:
        match = _RANGE_TEXT.fullmatch(option)
        if match:
            low, high = int(match.group(1)), int(match.group(2))
            return min(low, high), max(low, high)
    return None


def ordered_set(numbers: Sequence[int]) -> str:
    """A sequence-set keeping the order given (ESORT's ALL and PARTIAL, RFC 5267 3.2): runs of
    consecutive ascending numbers become n:m, e.g. [5, 3, 4, 2, 1] -> "5,3:4,2,1"."""
    parts: list[str] = []
    i = 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        parts.append(str(numbers[i]) if i == j else f"{numbers[i]}:{numbers[j]}")
        i = j + 1
    return ",".join(parts)
