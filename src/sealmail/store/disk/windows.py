"""One window per mailbox and process of the mailbox's latest changes, that every session of the
process syncs from (sealmail.store.disk.syncing).

Several sessions of one imapd process often have the same mailbox selected (imaptest; a
Thunderbird-like client with several connections per account). After any commit each one's sync
read the same changes again, in a transaction of its own on its own thread's connection, whose
page cache the commit had just emptied. A window holds what such a read gives: for every UID
changed or expunged after the window's `floor`, its latest state (its record, or its expunge)
with the modseq at which it reached it, up to the `top` (the mailbox row of the one read
transaction the window was last brought up to). A sync from a modseq at or above the floor is
answered from it: the entries above that modseq are exactly the rows a read at the top would
find with `modseq > M` (a message changed and then expunged is in `messages` no more, so its
expunge replaces its record here), because modseqs are given in the commit that makes a change
visible, in ascending order. This module is only the data; the reads are syncing's.

Bounded: at most WINDOW_ENTRIES entries a window (beyond that the floor rises: a session that
far behind reads for itself, as before) and WINDOWS windows a process (least recently used go).
Only records with the flags the index keeps (\\Seen as the index has it): a reader with a \\Seen of
their own reads for itself.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from typing import Any

from sealmail.store.api import MessageRecord
from sealmail.store.forks import FORKS

WINDOW_ENTRIES = 1024  # changed or expunged UIDs a window holds (records of ~200 bytes)
WINDOWS = 64  # mailboxes a process keeps a window of


def same_mailbox(row: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Whether two mailbox rows (syncing._ROW) are of one mailbox: the same id and UIDVALIDITY
    (one deleted and made again has another id)."""
    return bool(row[0] == other[0] and row[4] == other[4])


class ChangeWindow:
    """A mailbox's changes above `floor` up to `top` (None: empty, nothing read yet), each UID
    once, in the order of its modseq; `lock` held by whoever reads or changes it."""

    __slots__ = ("entries", "floor", "limit", "lock", "modseqs", "top", "where")

    def __init__(self, limit: int = WINDOW_ENTRIES) -> None:
        self.limit = limit
        self.lock = threading.Lock()
        self.top: tuple[Any, ...] | None = None  # the mailbox row (syncing._ROW) read last
        self.floor = 0
        self.modseqs: list[int] = []  # ascending, for bisect
        self.entries: list[tuple[int, MessageRecord | None]] = []  # (uid, record or expunged)
        self.where: dict[int, int] = {}  # uid -> the index of its latest entry

    def covers(self, row: tuple[Any, ...], modseq: int) -> bool:
        """Whether the window can answer a sync from `modseq` of the mailbox `row` is of (the
        same mailbox and UIDVALIDITY: one deleted and made again is another)."""
        top = self.top
        return top is not None and same_mailbox(top, row) and self.floor <= modseq

    def reset(self, top: tuple[Any, ...], changed: list[MessageRecord],
              expunged: list[tuple[int, int]], floor: int) -> None:
        """Start again from a read of everything above `floor` at `top`."""
        self.top, self.floor = None, floor
        self.modseqs, self.entries, self.where = [], [], {}
        self.extend(top, changed, expunged)

    def extend(self, top: tuple[Any, ...], changed: list[MessageRecord],
               expunged: list[tuple[int, int]]) -> None:
        """Add a read of everything above the old top, made at `top` (one snapshot: `changed`
        the messages' rows, `expunged` (uid, modseq) pairs)."""
        news: list[tuple[int, int, MessageRecord | None]] = [
            (r.modseq, r.uid, r) for r in changed]
        news.extend((modseq, uid, None) for uid, modseq in expunged)
        news.sort(key=_by_modseq)
        modseqs, entries, where = self.modseqs, self.entries, self.where
        for modseq, uid, record in news:
            where[uid] = len(entries)
            modseqs.append(modseq)
            entries.append((uid, record))
        self.top = top

    def since(self, modseq: int) -> tuple[list[MessageRecord], list[int]]:
        """The records changed after `modseq` (UID order) and the UIDs expunged after it
        (ascending), as a read at the top gives them; `modseq` at or above the floor."""
        changed: list[MessageRecord] = []
        expunged: list[int] = []
        where, entries = self.where, self.entries
        for index in range(bisect_right(self.modseqs, modseq), len(entries)):
            uid, record = entries[index]
            if where[uid] != index:
                continue
            if record is None:
                expunged.append(uid)
            else:
                changed.append(record)
        changed.sort(key=_by_uid)
        expunged.sort()
        return changed, expunged

    def bound(self) -> None:
        """Keep at most `limit` entries: the replaced ones go first, then the oldest, the floor
        rising to the modseq of the last one dropped."""
        limit = self.limit
        if len(self.entries) <= limit:
            return
        keep = [(m, e) for i, (m, e) in enumerate(zip(self.modseqs, self.entries, strict=True))
                if self.where[e[0]] == i]
        if len(keep) > limit // 2:
            cut = len(keep) - limit // 2
            self.floor = keep[cut - 1][0]
            while cut < len(keep) and keep[cut][0] == self.floor:
                cut += 1  # a modseq is dropped with all its entries or not at all
            keep = keep[cut:]
        self.modseqs = [m for m, _ in keep]
        self.entries = [e for _, e in keep]
        self.where = {uid: i for i, (uid, _) in enumerate(self.entries)}


def _by_modseq(entry: tuple[int, int, MessageRecord | None]) -> int:
    return entry[0]


def _by_uid(record: MessageRecord) -> int:
    return record.uid


class ChangeWindows:
    """This process's windows by mailbox name, least recently used dropped past `size`; a
    forked child starts with none (a lock held at the fork would never be let go there)."""

    def __init__(self, size: int = WINDOWS, entries: int = WINDOW_ENTRIES) -> None:
        self._size, self._entries = size, entries
        self._forks = FORKS.count
        self._lock = threading.Lock()
        self._windows: OrderedDict[str, ChangeWindow] = OrderedDict()

    def get(self, name: str) -> ChangeWindow:
        """The mailbox's window, a new empty one if it had none."""
        if self._forks != FORKS.count:
            self._forks, self._lock, self._windows = FORKS.count, threading.Lock(), OrderedDict()
        with self._lock:
            window = self._windows.get(name)
            if window is None:
                window = self._windows[name] = ChangeWindow(self._entries)
                if len(self._windows) > self._size:
                    self._windows.popitem(last=False)
            else:
                self._windows.move_to_end(name)
        return window
