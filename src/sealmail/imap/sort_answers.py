"""A kept `* SORT` answer as rendered pieces, which new mail's numbers are put into.

Why: after new mail, a kept order takes the new messages at their places
(sealmail.imap.orders.merged), but writing the answer again meant formatting every number of
the mailbox (about 1.5 ms at 10,000) and, for sequence numbers, a UID -> number map of the
whole view (1 ms). New mail leaves every number the client knows as it was (no expunge: the
sequence numbers stay; UIDs never change), so the answer is the old one with the new numbers
put in: only the pieces they land in are written again, as imap.threads keeps rendered roots.

The pieces are runs of about `PIECE` numbers, each written as `b" n1 n2 ..."`; the answer is
`b"* SORT" + pieces + b"\\r\\n"`, byte for byte what sealmail.proto.imap.response.sort writes.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterable, Sequence
from itertools import accumulate

from sealmail.imap.decimals import written
from sealmail.proto.imap import RenderedResponses

__all__ = ["PIECE", "SortAnswer"]

PIECE = 128  # numbers per rendered piece (a piece grown to twice that is split)


def _written(numbers: Sequence[int]) -> bytes:
    return written(numbers)


class SortAnswer:
    """The numbers of a SORT answer in order (`numbers`), and the same as rendered pieces;
    never changed once kept (`inserted` makes a new one)."""

    __slots__ = ("numbers", "pieces", "sizes")

    def __init__(self, numbers: array[int], pieces: list[bytes], sizes: list[int]) -> None:
        self.numbers = numbers  # 8 octets a number: kept answers of several mailboxes add up
        self.pieces = pieces
        self.sizes = sizes  # how many numbers each piece holds

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SortAnswer:
        listed = array("q", numbers)
        starts = range(0, len(listed), PIECE)
        return cls(listed, [_written(listed[s:s + PIECE]) for s in starts],
                   [len(listed[s:s + PIECE]) for s in starts])

    def response(self) -> RenderedResponses:
        return RenderedResponses(b"* SORT" + b"".join(self.pieces) + b"\r\n")

    def inserted(self, placed: Sequence[tuple[int, int]]) -> SortAnswer:
        """This answer with each (place, number) of `placed` put in before what is at `place`
        now (at the end for len(numbers)); numbers of one place go in the order given."""
        numbers, pieces, sizes = array("q", self.numbers), list(self.pieces), list(self.sizes)
        starts = [0, *accumulate(sizes)][:-1] or [0]
        if not pieces:
            pieces, sizes = [b""], [0]
        touched: set[int] = set()
        # From the last place back: the places before stay where they were, and so do the
        # starts of the pieces before (a later piece's start is never needed again).
        for place, _, number in sorted(((p, i, n) for i, (p, n) in enumerate(placed)),
                                       reverse=True):  # of one place: the last given first
            at = max(0, min(bisect.bisect_right(starts, place) - 1, len(pieces) - 1))
            numbers.insert(place, number)
            sizes[at] += 1
            touched.add(at)
        out_pieces: list[bytes] = []
        out_sizes: list[int] = []
        start = 0
        for i, (piece, size) in enumerate(zip(pieces, sizes, strict=True)):
            if i not in touched:
                out_pieces.append(piece)
                out_sizes.append(size)
            else:
                run = numbers[start:start + size]
                step = PIECE if size >= 2 * PIECE else max(size, 1)
                for cut in range(0, size, step):
                    out_pieces.append(_written(run[cut:cut + step]))
                    out_sizes.append(len(run[cut:cut + step]))
            start += size
        return SortAnswer(numbers, out_pieces, out_sizes)
