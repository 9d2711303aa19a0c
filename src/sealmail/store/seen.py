"""Per-user `\\Seen` and `\\Recent` state, as Cyrus keeps it.

Whose `\\Seen` is the index's own flags column? Cyrus's rule (`mailbox_internal_seen`): the
owner's, on the owner's personal mailboxes. Every other reader of a mailbox (a user with ACL
rights on someone else's folder, anyone on a shared folder, an admin) has their own seen state,
which Cyrus keeps in `user/<name>/<name>.seen` keyed by the mailbox's uniqueid: the UIDs the
user has seen as a UID sequence set ("1:40,42") and `lastuid`, the user's `\\Recent` mark. Here
the same two values live in the index, in the `seen` table (one row per mailbox and user, keyed
by the mailbox id so a rename keeps it and a delete drops it). So one reader marking a message
read does not mark it read for the others, and a reader opening the owner's INBOX does not take
`\\Recent` away from the owner. Cyrus's per-mailbox `sharedseen` option (one seen state for all)
is not supported.

`\\Recent` (RFC 3501 2.3.2): one mark per mailbox for the owner (Cyrus's `recentuid` in the
index header) and one per other reader (Cyrus's `lastuid`), kept by the disk store in a file of
their own (sealmail.store.disk.recent; `mailboxes.recentuid` and `seen.recentuid` are their
floor). A message above the mark has not yet been announced to a read-write session of that
reader; the first such session raises the mark (`DiskStore.claim_recent`) and is the only one
to show the message as `\\Recent`.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterable, Sequence

from sealmail.store.errors import MailboxCorrupt
from sealmail.store.names import owner_of

__all__ = ["SEEN", "UidSet", "index_keeps_seen", "with_seen"]

SEEN = "\\Seen"

# RFC 3501 9 sequence-set, restricted to what is stored: numbers and ranges, no "*".
_RANGE = re.compile(r"([1-9][0-9]*)(?::([1-9][0-9]*))?\Z")


def index_keeps_seen(name: str, reader: str | None) -> bool:
    """Whether `reader`'s `\\Seen` is the index's flags column of mailbox `name`: with no
    reader (delivery, POP, admin tools: the mailbox's own state) or when the reader owns the
    personal mailbox. Anyone else, on any mailbox (shared ones included), has their own."""
    if reader is None:
        return True
    owner = owner_of(name)
    return owner is not None and owner.userid == reader


def with_seen(flags: Sequence[str], seen: bool) -> tuple[str, ...]:
    """`flags` (from the index) as a reader with their own seen state sees them: the index's
    `\\Seen` (the owner's) left out, the reader's own put last."""
    kept = tuple(flag for flag in flags if flag != SEEN)
    return (*kept, SEEN) if seen else kept


class UidSet:
    """A set of UIDs as ascending, disjoint, non-adjacent inclusive ranges; the stored form is
    a sequence set ("1:3,5,9:12", empty for none)."""

    __slots__ = ("_starts", "_stops")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[tuple[int, int]] = []
        for start, stop in sorted(ranges):
            if start < 1 or stop < start:
                raise ValueError(f"bad UID range {start}:{stop}")
            if merged and start <= merged[-1][1] + 1:
                if stop > merged[-1][1]:
                    merged[-1] = (merged[-1][0], stop)
            else:
                merged.append((start, stop))
        self._starts = [start for start, _ in merged]
        self._stops = [stop for _, stop in merged]

    @classmethod
    def of(cls, uids: Iterable[int]) -> UidSet:
        return cls((uid, uid) for uid in uids)

    @classmethod
    def parse(cls, text: str) -> UidSet:
        """The stored form back; MailboxCorrupt when it is not one."""
        if not text:
            return cls()
        ranges = []
        for part in text.split(","):
            match = _RANGE.match(part)
            if match is None:
                raise MailboxCorrupt(f"bad seen state {text!r}")
            first = int(match.group(1))
            last = int(match.group(2) or first)
            ranges.append((min(first, last), max(first, last)))
        return cls(ranges)

    def render(self) -> str:
        return ",".join(
            str(start) if start == stop else f"{start}:{stop}"
            for start, stop in zip(self._starts, self._stops, strict=True)
        )

    @property
    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._starts, self._stops, strict=True))

    def __contains__(self, uid: object) -> bool:
        if not isinstance(uid, int):
            return False
        i = bisect.bisect_right(self._starts, uid) - 1
        return i >= 0 and uid <= self._stops[i]

    def __bool__(self) -> bool:
        return bool(self._starts)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, UidSet):
            return NotImplemented
        return self._starts == other._starts and self._stops == other._stops

    def __hash__(self) -> int:
        return hash((tuple(self._starts), tuple(self._stops)))

    def __repr__(self) -> str:
        return f"UidSet({self.render()!r})"

    def members(self, uids: Sequence[int]) -> list[bool]:
        """Membership of each of `uids` (ascending), in one merge pass: what a whole mailbox's
        flags need, without a bisection per message."""
        out: list[bool] = []
        starts, stops = self._starts, self._stops
        k, count = 0, len(starts)
        for uid in uids:
            while k < count and stops[k] < uid:
                k += 1
            out.append(k < count and starts[k] <= uid)
        return out

    def union(self, uids: Iterable[int]) -> UidSet:
        return UidSet([*self.ranges, *((uid, uid) for uid in uids)])

    def difference(self, uids: Iterable[int]) -> UidSet:
        gone = sorted(set(uids))
        if not gone:
            return self
        out: list[tuple[int, int]] = []
        for start, stop in self.ranges:
            i = bisect.bisect_left(gone, start)
            while i < len(gone) and gone[i] <= stop:
                if gone[i] > start:
                    out.append((start, gone[i] - 1))
                start = gone[i] + 1
                i += 1
            if start <= stop:
                out.append((start, stop))
        return UidSet(out)

    def restricted_to(self, uids: Sequence[int]) -> UidSet:
        """Only the members that are among `uids` (ascending)."""
        return UidSet.of(uid for uid, present in zip(uids, self.members(uids), strict=True)
                         if present)
