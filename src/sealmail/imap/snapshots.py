"""The flag snapshot SELECT starts a view from, kept by the process and brought up to date.

Why: a SELECT (or EXAMINE) read every message's UID, modseq and flags from the store (at
10,000 messages a scan of the index, 3 ms of SQLite, and 2-3 ms of splitting it into lists)
each time, and clients select the same folders again and again. Dovecot answers a SELECT from
its index file, kept mapped, and reads only the transaction log written since.

What keeps this exact: a snapshot is the state of the mailbox at its highestmodseq (the store
reads it in one transaction), and the store's `mailbox_changes(name, modseq, reader)` is exactly
what moved after a modseq, read at one moment: the messages added or changed (flags as the
reader sees them; a change of the reader's own \\Seen gives the message a new modseq too) and
the UIDs expunged. It is what every selected view catches up with after each command
(SelectedMailbox.sync), so a kept snapshot brought up to date the same way is the snapshot the
store would read now. Kept per (mailbox, reader), since \\Seen is per reader on shared
mailboxes, and per UIDVALIDITY: another one (the mailbox deleted and made again), a message not
where the snapshot has it or a count that disagrees, and the snapshot is read afresh.

A session that selects its mailbox again hands its view over first (`offer`: the view after
its sync is the store at the view's highestmodseq, less \\Recent and the messages it noted as
gone), so after a STORE of thousands of messages that session catches up from its own view
rather than reading every change since the snapshot.

It is handed out as the store's would be: the same lists (copies: the view changes its own),
and flag sets numbered in the order of their first message, only the sets some message has
(the FLAGS response lists keywords in that order). \\Recent is not part of it: the view claims
it afresh (sealmail.imap.selected). A snapshot holds three arrays of 8-byte integers (about
240 KB at 10,000 messages); a small LRU bounds them, and mailboxes below `SMALLEST` messages
are read afresh (a few hundred rows cost less than the bookkeeping).
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from array import array
from collections import OrderedDict
from collections.abc import Sequence

from sealmail.imap.per_store import PerStore
from sealmail.store.api import FlagSnapshot, MailboxChanges, MailboxInfo, MailboxView

__all__ = ["MAILBOXES", "MESSAGES", "SMALLEST", "KeptSnapshots", "snapshots_for"]

SMALLEST = 1000  # messages: smaller mailboxes are read afresh at every SELECT
MAILBOXES = 32  # snapshots kept per process
MESSAGES = 500_000  # messages in all the kept snapshots of a process, at most


class _Kept:
    """One mailbox as `reader` saw it at `info.highestmodseq`; never changed once kept (a newer
    one replaces it), so sessions read it without a lock."""

    __slots__ = ("flag_ids", "flag_sets", "info", "modseqs", "uids")

    def __init__(self, info: MailboxInfo, uids: array[int], modseqs: array[int],
                 flag_ids: array[int], flag_sets: list[tuple[str, ...]]) -> None:
        self.info = info
        self.uids = uids
        self.modseqs = modseqs
        self.flag_ids = flag_ids
        self.flag_sets = flag_sets

    @classmethod
    def of(cls, snapshot: FlagSnapshot) -> _Kept:
        return cls(snapshot.mailbox, array("q", snapshot.uids), array("q", snapshot.modseqs),
                   array("q", snapshot.flag_ids), list(snapshot.flag_sets))

    def snapshot(self) -> FlagSnapshot:
        return FlagSnapshot(self.info, self.uids.tolist(), self.modseqs.tolist(),
                            self.flag_ids.tolist(), list(self.flag_sets))


class KeptSnapshots:
    """The kept flag snapshots of a store's mailboxes (`snapshots_for`)."""

    def __init__(self, mailboxes: int = MAILBOXES, messages: int = MESSAGES) -> None:
        self._mailboxes = mailboxes
        self._messages = messages
        self._kept: OrderedDict[tuple[str, str | None], _Kept] = OrderedDict()
        self._lock = threading.Lock()  # sessions of one process run commands in threads

    def snapshot(self, store: MailboxView, name: str, reader: str | None) -> FlagSnapshot:
        """What `store.flag_snapshot(name, reader)` would return now."""
        key = (name, reader)
        with self._lock:
            kept = self._kept.get(key)
        if kept is not None:
            changes = store.mailbox_changes(name, kept.info.highestmodseq, reader)
            caught_up = None if changes is None else _caught_up(kept, changes)
            if caught_up is not None:
                if caught_up is not kept:
                    self._keep(key, caught_up)
                return caught_up.snapshot()
        snapshot = store.flag_snapshot(name, reader)
        if len(snapshot.uids) >= SMALLEST:
            self._keep(key, _Kept.of(snapshot))
        else:
            with self._lock:
                self._kept.pop(key, None)
        return snapshot

    def wants(self, name: str, reader: str | None, uidvalidity: int, highestmodseq: int
              ) -> bool:
        """Whether `offer` of a view of `name` at `highestmodseq` would be taken: a snapshot
        of it is kept, and is older."""
        with self._lock:
            kept = self._kept.get((name, reader))
        return kept is not None and kept.info.uidvalidity == uidvalidity and \
            kept.info.highestmodseq < highestmodseq

    def offer(self, name: str, reader: str | None, highestmodseq: int, uids: Sequence[int],
              modseqs: Sequence[int], flag_ids: Sequence[int],
              flag_sets: Sequence[tuple[str, ...]]) -> None:
        """A session's view of `name` as the store had it at `highestmodseq` (what a view is
        after its sync: sealmail.imap.selected), kept instead of an older snapshot when
        `wants` says so. A session that changed many messages (STORE 1:*) and selects the
        mailbox again then catches up from its own view, not from the thousands of changes
        since the snapshot."""
        key = (name, reader)
        with self._lock:
            kept = self._kept.get(key)
        if kept is None or kept.info.highestmodseq >= highestmodseq:
            return
        ids, sets = _numbered(array("q", flag_ids), flag_sets)
        info = dataclasses.replace(kept.info, highestmodseq=highestmodseq, exists=len(uids))
        self._keep(key, _Kept(info, array("q", uids), array("q", modseqs), ids, sets))

    def _keep(self, key: tuple[str, str | None], kept: _Kept) -> None:
        with self._lock:
            self._kept[key] = kept
            self._kept.move_to_end(key)
            total = sum(len(k.uids) for k in self._kept.values())
            while len(self._kept) > 1 and (len(self._kept) > self._mailboxes
                                           or total > self._messages):
                total -= len(self._kept.popitem(last=False)[1].uids)


def _caught_up(kept: _Kept, changes: MailboxChanges) -> _Kept | None:
    """`kept` with `changes` applied (itself when nothing changed); None when it cannot be
    (another UIDVALIDITY, more changes than a fresh read costs, or what the changes say does
    not fit what is kept): then the store is read afresh."""
    info = kept.info
    if changes.uidvalidity != info.uidvalidity:
        return None
    if changes.highestmodseq == info.highestmodseq:
        if (info.uidnext, info.exists) == (changes.uidnext, changes.exists):
            return kept
        if changes.exists != len(kept.uids):
            return None
        info = dataclasses.replace(info, uidnext=changes.uidnext)  # an offered one's guess
        return _Kept(info, kept.uids, kept.modseqs, kept.flag_ids, kept.flag_sets)
    uids = kept.uids
    if len(changes.changed) + len(changes.expunged) > max(64, len(uids) // 4):
        return None
    new_uids, modseqs, flag_ids = array("q", uids), array("q", kept.modseqs), \
        array("q", kept.flag_ids)
    flag_sets = list(kept.flag_sets)
    set_ids = {flags: i for i, flags in enumerate(flag_sets)}

    def set_id(flags: tuple[str, ...]) -> int:
        known = set_ids.get(flags)
        if known is None:
            known = set_ids[flags] = len(flag_sets)
            flag_sets.append(flags)
        return known

    last = uids[-1] if uids else 0
    for record in changes.changed:  # UID order: the new ones come last
        if record.uid > last:
            new_uids.append(record.uid)
            modseqs.append(record.modseq)
            flag_ids.append(set_id(record.flags))
            continue
        index = bisect.bisect_left(uids, record.uid)
        if index == len(uids) or uids[index] != record.uid:
            return None  # a message below the last one that the snapshot never had
        modseqs[index] = record.modseq
        flag_ids[index] = set_id(record.flags)
    if changes.expunged:
        gone = set(changes.expunged)
        keep = [i for i, uid in enumerate(new_uids) if uid not in gone]
        if len(keep) != len(new_uids):
            new_uids = array("q", map(new_uids.__getitem__, keep))
            modseqs = array("q", map(modseqs.__getitem__, keep))
            flag_ids = array("q", map(flag_ids.__getitem__, keep))
    if len(new_uids) != changes.exists:
        return None
    flag_ids, flag_sets = _numbered(flag_ids, flag_sets)
    info = dataclasses.replace(info, uidnext=changes.uidnext, highestmodseq=changes.highestmodseq,
                               exists=changes.exists)
    return _Kept(info, new_uids, modseqs, flag_ids, flag_sets)


def _numbered(flag_ids: array[int], flag_sets: Sequence[tuple[str, ...]]
              ) -> tuple[array[int], list[tuple[str, ...]]]:
    """The flag sets some message has, numbered in the order of their first message (as the
    store numbers a snapshot's), and the ids renumbered to match."""
    order = list(dict.fromkeys(flag_ids))  # distinct ids, first seen first (in C)
    if order == list(range(len(flag_sets))):
        return flag_ids, list(flag_sets)
    renumber = [0] * len(flag_sets)
    for new, old in enumerate(order):
        renumber[old] = new
    return array("q", map(renumber.__getitem__, flag_ids)), [flag_sets[old] for old in order]


# The kept snapshots of a store's mailboxes.
snapshots_for = PerStore(KeptSnapshots)
