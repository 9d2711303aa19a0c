"""The selected mailbox as one session sees it: sequence numbers, flags, and what to announce.

RFC 9051 7.5.1: message sequence numbers change only through EXPUNGE responses the client has
seen, and the server MUST NOT send EXPUNGE while a FETCH, STORE or SEARCH (not their UID forms)
is in progress. So the view keeps its own list of UIDs in sequence order; a sync with the store
(cheap: one mailbox row unless its highestmodseq moved) appends new messages (EXISTS), notes
flag changes made by others (FETCH FLAGS), and keeps expunged messages in place until a command
may announce them (EXPUNGE, or VANISHED once QRESYNC is enabled, RFC 7162 3.2.10).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field

from sealmail.proto.imap import Atom, DataResponse, SequenceSet, Value
from sealmail.proto.imap import response as replies
from sealmail.store.api import MessageRecord, MessageStore
from sealmail.store.errors import MailboxNotFound

__all__ = ["MailboxGone", "SelectedMailbox", "SyncOptions", "flag_atoms"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


class MailboxGone(Exception):
    """The selected mailbox was deleted or renamed away by someone else."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    condstore: bool = False  # FETCH responses carry MODSEQ (RFC 7162 3.2.4)
    qresync: bool = False  # VANISHED instead of EXPUNGE (RFC 7162 3.2.10)


def flag_atoms(flags: Iterable[str]) -> list[Value]:
    return [Atom(flag) for flag in flags]


@dataclass
class SelectedMailbox:
    """One session's view of its selected mailbox."""

    name: str
    readonly: bool
    uidvalidity: int
    highestmodseq: int
    uids: list[int] = field(default_factory=list)
    records: dict[int, MessageRecord] = field(default_factory=dict)
    vanished: set[int] = field(default_factory=set)  # gone from the store, not yet announced
    keywords: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, store: MessageStore, name: str, readonly: bool) -> SelectedMailbox:
        info = store.mailbox(name)
        if info is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        records = store.messages(name)
        view = cls(name, readonly, info.uidvalidity, info.highestmodseq)
        view.uids = [r.uid for r in records]
        view.records = {r.uid: r for r in records}
        view._note_keywords(records)
        return view

    # -- numbering ------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def seq_of(self, uid: int) -> int | None:
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index + 1
        return None

    def select(self, numbers: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """(sequence number, uid) pairs of the messages a set names, ascending.

        RFC 9051 6.4.8: in a UID set, "*" is the highest UID in the mailbox and numbers that
        are not UIDs are ignored.
        """
        if by_uid:
            return [(i + 1, self.uids[i]) for i in numbers.iter_indexes(self.uids)]
        return [(n, self.uids[n - 1]) for n in numbers.iter_numbers(self.exists)]

    def live(self, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """Drop messages that are already gone from the store."""
        return [(n, uid) for n, uid in pairs if uid not in self.vanished]

    def _note_keywords(self, records: Iterable[MessageRecord]) -> bool:
        known = set(self.keywords)
        added = False
        for record in records:
            for flag in record.flags:
                if not flag.startswith("\\") and flag not in known:
                    known.add(flag)
                    self.keywords.append(flag)
                    added = True
        return added

    def flags_response(self) -> DataResponse:
        return replies.flags([*SYSTEM_FLAGS, *self.keywords])

    def permanent_flags(self) -> list[Value]:
        if self.readonly:
            return []
        return flag_atoms([*SYSTEM_FLAGS, *self.keywords, "\\*"])

    # -- changes --------------------------------------------------------------------------------

    def remember(self, records: Iterable[MessageRecord]) -> None:
        """This session changed these (its own FETCH replies already told the client)."""
        records = list(records)
        for record in records:
            if record.uid in self.records:
                self.records[record.uid] = record
        self._note_keywords(records)

    def sync(
        self, store: MessageStore, options: SyncOptions, allow_expunge: bool
    ) -> list[DataResponse]:
        """Catch up with the store; the untagged responses to send now, in the order RFC 9051
        7.4.1 needs (expunges first: later responses use the new numbers)."""
        info = store.mailbox(self.name)
        if info is None or info.uidvalidity != self.uidvalidity:
            raise MailboxGone(f"mailbox {self.name} is gone")
        out: list[DataResponse] = []
        if info.highestmodseq != self.highestmodseq:
            changed = store.messages_since(self.name, self.highestmodseq)
            gone = store.expunged_since(self.name, self.highestmodseq)
            self.highestmodseq = info.highestmodseq
            for uid in gone:
                if uid in self.records:
                    self.vanished.add(uid)
            last = self.uids[-1] if self.uids else 0
            new = [r for r in changed if r.uid > last and r.uid not in self.vanished]
            flag_changes = []
            for record in changed:
                old = self.records.get(record.uid)
                if old is None or record.uid in self.vanished:
                    continue
                if set(old.flags) != set(record.flags) or (
                    options.condstore and old.modseq != record.modseq
                ):
                    flag_changes.append(record)
                self.records[record.uid] = record
            if self._note_keywords(changed):
                out.append(self.flags_response())
            if allow_expunge:
                out.extend(self._announce_expunges(options))
            if new:
                for record in new:
                    self.uids.append(record.uid)
                    self.records[record.uid] = record
                out.append(replies.exists(self.exists))
            for record in flag_changes:
                seq = self.seq_of(record.uid)
                if seq is not None:
                    out.append(self.fetch_flags(seq, record, options, with_uid=True))
        elif allow_expunge:
            out.extend(self._announce_expunges(options))
        return out

    def _announce_expunges(self, options: SyncOptions) -> list[DataResponse]:
        if not self.vanished:
            return []
        gone = sorted(self.vanished)
        self.vanished.clear()
        out: list[DataResponse] = []
        if options.qresync:
            out.append(replies.vanished(SequenceSet.of(gone)))
        else:
            # Highest number first: each EXPUNGE then names a number the client still has.
            for uid in reversed(gone):
                seq = self.seq_of(uid)
                if seq is not None:
                    out.append(replies.expunge(seq))
        gone_set = set(gone)
        self.uids = [uid for uid in self.uids if uid not in gone_set]
        for uid in gone:
            self.records.pop(uid, None)
        if options.qresync:
            return out
        return out

    def fetch_flags(self, seq: int, record: MessageRecord, options: SyncOptions,
                    with_uid: bool) -> DataResponse:
        items: list[tuple[str, Value]] = []
        if with_uid:
            items.append(("UID", record.uid))
        items.append(("FLAGS", flag_atoms(record.flags)))
        if options.condstore:
            items.append(("MODSEQ", [record.modseq]))
        return replies.fetch(seq, items)
