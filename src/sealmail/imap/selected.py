"""The selected mailbox as one session sees it: sequence numbers, flags, and what to announce.

RFC 9051 7.5.1: message sequence numbers change only through EXPUNGE responses the client has
seen, and the server MUST NOT send EXPUNGE while a FETCH, STORE or SEARCH (not their UID forms)
is in progress. So the view keeps its own list of UIDs in sequence order; a sync with the store
(the store's `mailbox_changes`: one cheap read, or none, unless its highestmodseq moved)
appends new messages (EXISTS), notes flag changes made by others (FETCH FLAGS), and keeps
expunged messages in place until a command may announce them (EXPUNGE, or VANISHED once QRESYNC
is enabled, RFC 7162 3.2.10).

Layout, chosen for mailboxes of tens of thousands of messages: three parallel lists in sequence
order (`uids`, `flag_ids`, `modseqs`), no object per message. `flag_ids` index `flag_sets`, the
distinct flag sets of the mailbox (usually a handful), so questions about flags ("would this
STORE change anything?", "which messages are \\Seen?") are asked once per distinct set, and a
FETCH FLAGS renders each set once. Sizes and dates are not kept: they never change, and the few
commands that need them read them from the index.

The flag sets are the flags as this session shows them: \\Seen as the session's user sees it
(their own seen state on a mailbox they do not own: the store applies it, given the `reader`),
and \\Recent on the messages this session is the first to be told about (RFC 3501 2.3.2). Those
are claimed from the store (`claim_recent`) when the mailbox is selected read-write and when new
messages are announced; a read-only session (EXAMINE) shows the messages nobody has claimed yet
as \\Recent without claiming them. \\Recent being one more flag of a set, every fast path (FETCH
FLAGS rendered per set, SEARCH RECENT per set) costs what it did. IMAP4rev2 has no \\Recent
(RFC 9051 Appendix E): such a session neither claims nor shows it, and sends no RECENT.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sealmail.imap import snapshots
from sealmail.imap.snapshots import snapshots_for
from sealmail.proto.imap import (
    Atom,
    DataResponse,
    RenderedResponses,
    Response,
    ResponseCode,
    SequenceSet,
    StatusResponse,
    Value,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MailboxView, MessageRecord

__all__ = ["RECENT", "ExpungeLines", "MailboxGone", "SelectedMailbox", "SyncOptions", "flag_atoms"]

SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")
RECENT = "\\Recent"


class ExpungeLines(RenderedResponses):
    """`* n EXPUNGE` lines already written: RenderedResponses that RFC 5267's contexts
    (sealmail.imap.contexts) can tell from other untagged data, to put REMOVEFROM before."""

    __slots__ = ()


class MailboxGone(Exception):
    """The selected mailbox was deleted or renamed away by someone else."""


@dataclass(frozen=True, slots=True)
class SyncOptions:
    condstore: bool = False  # FETCH responses carry MODSEQ (RFC 7162 3.2.4)
    qresync: bool = False  # VANISHED instead of EXPUNGE (RFC 7162 3.2.10)


def flag_atoms(flags: Iterable[str]) -> list[Value]:
    return [Atom(flag) for flag in flags]


class SelectedMailbox:
    """One session's view of its selected mailbox."""

    def __init__(self, name: str, readonly: bool, uidvalidity: int, highestmodseq: int,
                 reader: str | None = None, shows_recent: bool = False) -> None:
        self.name = name
        self.readonly = readonly
        self.uidvalidity = uidvalidity
        self.highestmodseq = highestmodseq
        self.reader = reader  # whose \Seen the flags show (sealmail.store.seen)
        self.shows_recent = shows_recent  # IMAP4rev1: \Recent and RECENT responses
        self.recent: set[int] = set()  # UIDs that are \Recent in this session
        # UIDs this session's APPEND claimed in their commit (sealmail.imap.appending): \Recent
        # here once the sync shows them, though the mark it reads is past them already.
        self.claimed: set[int] = set()
        self.told_recent = 0  # the RECENT count the client last heard
        self.uids: list[int] = []  # ascending: position i is sequence number i + 1
        self.flag_ids: list[int] = []  # per position: an index into flag_sets
        self.modseqs: list[int] = []  # per position
        self.flag_sets: list[tuple[str, ...]] = []
        self._set_ids: dict[tuple[str, ...], int] = {}
        # ids_where's answers and how many flag sets each had looked at (sets are only added)
        self._where: dict[tuple[str, bool], tuple[int, frozenset[int]]] = {}
        self._rendered: list[bytes] = []  # flag sets as FETCH writes them (rendered_flag_sets)
        self.vanished: set[int] = set()  # gone from the store, not yet announced
        self.keywords: list[str] = []
        self._known_keywords: set[str] = set()  # = set(keywords), kept, not rebuilt per sync
        self._numbers: dict[int, int] = {}  # UID -> sequence number (`numbers`), of _numbered
        self._numbered: list[int] | None = None

    @classmethod
    def open(cls, store: MailboxView, name: str, readonly: bool, reader: str | None = None,
             shows_recent: bool = False) -> SelectedMailbox:
        """The view of `name` now, as `reader` sees it: one consistent read of the mailbox and
        its flags; with `shows_recent`, the \\Recent messages claimed (read-write) or seen
        unclaimed (read-only)."""
        snapshot = snapshots_for(store).snapshot(store, name, reader)
        info = snapshot.mailbox
        view = cls(name, readonly, info.uidvalidity, info.highestmodseq, reader, shows_recent)
        view.uids = snapshot.uids
        view.modseqs = snapshot.modseqs
        view.flag_ids = snapshot.flag_ids
        for flags in snapshot.flag_sets:  # the same numbering: flag set i gets id i
            view.flag_id(flags)
        view._note_keywords(view.flag_sets)
        if shows_recent:
            mark = view._claim(store, view.uids[-1] if view.uids else 0)
            start = bisect.bisect_right(view.uids, mark)
            if start < len(view.uids):
                view.recent.update(view.uids[start:])
                flag_ids, sets = view.flag_ids, view.flag_sets
                recent_id: dict[int, int] = {}
                for i in range(start, len(flag_ids)):
                    plain = flag_ids[i]
                    marked = recent_id.get(plain)
                    if marked is None:
                        marked = recent_id[plain] = view.flag_id((*sets[plain], RECENT))
                    flag_ids[i] = marked
        return view

    def offer_snapshot(self, store: MailboxView) -> None:
        """Hand this view, as the store had it at the view's highestmodseq, to the kept
        snapshots (sealmail.imap.snapshots) when they hold an older one: \\Recent left out,
        the messages known to be gone removed. Called when the session selects the same
        mailbox again; the view is as its last sync left it."""
        if len(self.uids) < snapshots.SMALLEST or not snapshots_for(store).wants(
                self.name, self.reader, self.uidvalidity, self.highestmodseq):
            return
        plain: dict[tuple[str, ...], int] = {}
        renumber = [plain.setdefault(tuple(f for f in flags if f != RECENT), len(plain))
                    for flags in self.flag_sets]
        uids, modseqs, flag_ids = self.uids, self.modseqs, self.flag_ids
        if self.vanished:
            keep = [i for i, uid in enumerate(uids) if uid not in self.vanished]
            uids, modseqs, flag_ids = ([column[i] for i in keep]
                                       for column in (uids, modseqs, flag_ids))
        snapshots_for(store).offer(self.name, self.reader, self.highestmodseq, uids, modseqs,
                                   list(map(renumber.__getitem__, flag_ids)), list(plain))

    def _claim(self, store: MailboxView, upto: int) -> int:
        """The recent mark below which nothing is \\Recent here: a read-write session raises it
        to `upto` (RFC 3501 2.3.2: later sessions will not see \\Recent on what it was told
        of), a read-only one only reads it (RFC 3501 6.3.2: EXAMINE MUST NOT cause messages to
        lose \\Recent)."""
        return store.claim_recent(self.name, 0 if self.readonly else upto, self.reader)

    # -- numbering ------------------------------------------------------------------------------

    @property
    def exists(self) -> int:
        return len(self.uids)

    def index_of(self, uid: int) -> int | None:
        """The 0-based position of `uid` (its sequence number - 1), or None."""
        index = bisect.bisect_left(self.uids, uid)
        if index < len(self.uids) and self.uids[index] == uid:
            return index
        return None

    def seq_of(self, uid: int) -> int | None:
        index = self.index_of(uid)
        return None if index is None else index + 1

    def numbers(self) -> dict[int, int]:
        """UID -> sequence number of every message of the view: made once and extended as mail
        comes (`uids` is appended to; an announced expunge, which deletes from it in place,
        starts the map afresh), so a SORT or THREAD answered in sequence numbers does not map
        the whole mailbox again."""
        uids, known = self.uids, self._numbers
        if self._numbered is not uids or len(known) > len(uids):
            known = self._numbers = {}
            self._numbered = uids
        if len(known) < len(uids):
            known.update(zip(uids[len(known):], range(len(known) + 1, len(uids) + 1),
                             strict=True))
        return known

    def spans(self, numbers: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """The messages a set names as ascending, disjoint [start, stop) position ranges.

        RFC 9051 6.4.8: in a UID set, "*" is the highest UID in the mailbox and numbers that
        are not UIDs are ignored; sequence numbers past EXISTS name nothing here (the session
        refuses them before).
        """
        if by_uid:
            return numbers.index_spans(self.uids)
        return numbers.number_spans(self.exists)

    def positions(self, spans: Iterable[tuple[int, int]]) -> list[int]:
        """The positions of `spans` without messages already gone from the store."""
        out: list[int] = []
        for start, stop in spans:
            out.extend(range(start, stop))
        if self.vanished:
            uids = self.uids
            gone = self.vanished
            out = [i for i in out if uids[i] not in gone]
        return out

    def live(self, pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
        """Drop messages that are already gone from the store."""
        return [(n, uid) for n, uid in pairs if uid not in self.vanished]

    # -- flags ----------------------------------------------------------------------------------

    def flag_id(self, flags: tuple[str, ...]) -> int:
        """The id of a flag set (flags in the store's order), registering a new one."""
        known = self._set_ids.get(flags)
        if known is None:
            known = self._set_ids[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
        return known

    def flags_at(self, index: int) -> tuple[str, ...]:
        return self.flag_sets[self.flag_ids[index]]

    def session_flags(self, record: MessageRecord) -> tuple[str, ...]:
        """A store record's flags as this session shows them (with \\Recent if it is)."""
        if record.uid in self.recent:
            return (*record.flags, RECENT)
        return record.flags

    def rendered_flag_sets(self, render: Callable[[tuple[str, ...]], bytes]) -> list[bytes]:
        """Each flag set as `render` writes it, by id; only sets added since the last call are
        rendered (FETCH rendered every set each time: hundreds with imaptest's keywords)."""
        rendered, sets = self._rendered, self.flag_sets
        if len(rendered) < len(sets):
            rendered.extend(map(render, sets[len(rendered):]))
        return rendered

    def ids_where(self, flag: str, present: bool = True) -> frozenset[int]:
        """The flag set ids that contain (or lack) `flag`, compared exactly; looks only at the
        sets added since it was last asked (with random keywords a session meets hundreds)."""
        sets = self.flag_sets
        known, ids = self._where.get((flag, present), (0, frozenset()))
        if known < len(sets):
            ids = ids.union(i for i in range(known, len(sets)) if (flag in sets[i]) == present)
            self._where[(flag, present)] = (len(sets), ids)
        return ids

    def uids_where(self, positions: Iterable[int], flag: str, present: bool = True) -> list[int]:
        """The UIDs at `positions` whose flags contain (or lack) `flag`."""
        wanted = self.ids_where(flag, present)
        flag_ids, uids = self.flag_ids, self.uids
        return [uids[i] for i in positions if flag_ids[i] in wanted]

    def first_unseen(self) -> int | None:
        """The sequence number of the first message without \\Seen (the UNSEEN code)."""
        unseen = self.ids_where("\\Seen", present=False)
        if not unseen:
            return None
        first = len(self.flag_ids)
        for flag_id in unseen:  # a few distinct sets, each looked for by list.index (in C)
            try:
                first = self.flag_ids.index(flag_id, 0, first)
            except ValueError:
                continue
        return first + 1 if first < len(self.flag_ids) else None

    def _note_keywords(self, flag_sets: Iterable[tuple[str, ...]]) -> bool:
        known = self._known_keywords
        added = False
        for flags in flag_sets:
            for flag in flags:
                if not flag.startswith("\\") and flag not in known:
                    known.add(flag)
                    self.keywords.append(flag)
                    added = True
        return added

    def flags_response(self) -> DataResponse:
        return replies.flags([*SYSTEM_FLAGS, *self.keywords])

    def keyword_news(self) -> list[Response]:
        """FLAGS (and PERMANENTFLAGS, read-write) again, now that a keyword is new here.

        A client knows the keywords of a mailbox from FLAGS (RFC 9051 7.3.5); a FETCH FLAGS
        showing one it never heard of is what imaptest reports as "Keyword used without being
        in FLAGS". Untagged data may come at any time (RFC 9051 7), and Dovecot sends these
        two whenever a keyword is first used, by this session (STORE) or another one.
        """
        out: list[Response] = [self.flags_response()]
        if not self.readonly:
            out.append(StatusResponse("OK", "Flags permitted", code=ResponseCode(
                "PERMANENTFLAGS", (self.permanent_flags(),))))
        return out

    def permanent_flags(self) -> list[Value]:
        if self.readonly:
            return []
        return flag_atoms([*SYSTEM_FLAGS, *self.keywords, "\\*"])

    # -- changes --------------------------------------------------------------------------------

    def _set(self, index: int, record: MessageRecord) -> None:
        self.flag_ids[index] = self.flag_id(self.session_flags(record))
        self.modseqs[index] = record.modseq

    def remember(self, records: Iterable[MessageRecord]) -> list[Response]:
        """This session changed these (its own FETCH replies tell the client); what to send
        before those replies (`keyword_news`, should a keyword be new)."""
        records = list(records)
        for record in records:
            index = self.index_of(record.uid)
            if index is not None:
                self._set(index, record)
        return self.keyword_news() if self._note_keywords(r.flags for r in records) else []

    def sync(
        self, store: MailboxView, options: SyncOptions, allow_expunge: bool
    ) -> list[Response]:
        """Catch up with the store; the untagged responses to send now, in the order RFC 9051
        7.4.1 needs (expunges first: later responses use the new numbers)."""
        news = store.mailbox_changes(self.name, self.highestmodseq, self.reader)
        if news is None or news.uidvalidity != self.uidvalidity:
            raise MailboxGone(f"mailbox {self.name} is gone")
        out: list[Response] = []
        if news.highestmodseq != self.highestmodseq:
            changed, gone = news.changed, news.expunged
            last = self.uids[-1] if self.uids else 0
            gone_now = set(gone)
            new = [r for r in changed if r.uid > last and r.uid not in gone_now]
            if new and self.shows_recent:
                # Before the view changes: should the claim fail, the next sync does it all.
                # Nothing to claim (the mark the sync read is at or past them: another session
                # of the reader was told first, or this one is read-only): no write at all.
                mark = news.recent_mark or 0
                if not self.readonly and new[-1].uid > mark:
                    mark = self._claim(store, new[-1].uid)
                claimed = self.claimed
                self.recent.update(r.uid for r in new if r.uid > mark or r.uid in claimed)
            self.claimed.clear()
            self.highestmodseq = news.highestmodseq
            for uid in gone:
                if self.index_of(uid) is not None:
                    self.vanished.add(uid)
            flag_changes: list[tuple[int, MessageRecord]] = []
            flag_ids, modseqs, sets = self.flag_ids, self.modseqs, self.flag_sets
            for record in changed:
                uid = record.uid
                if uid > last or uid in self.vanished:
                    continue
                index = self.index_of(uid)
                if index is None:
                    continue
                flags = self.session_flags(record)
                new_id, old_id = self.flag_id(flags), flag_ids[index]
                # The same set (by id, or in another order) is no news, unless its modseq is.
                if (new_id != old_id and set(sets[old_id]) != set(flags)) or (
                    options.condstore and modseqs[index] != record.modseq
                ):
                    flag_changes.append((uid, record))
                flag_ids[index], modseqs[index] = new_id, record.modseq
            if self._note_keywords(r.flags for r in changed):
                out.extend(self.keyword_news())
            if allow_expunge:
                out.extend(self._announce_expunges(options))
            if new:
                for record in new:
                    self.uids.append(record.uid)
                    self.flag_ids.append(self.flag_id(self.session_flags(record)))
                    self.modseqs.append(record.modseq)
                out.append(replies.exists(self.exists))
            out.extend(self.recent_news())
            if flag_changes:
                out.extend(self._flag_news(flag_changes, options))
        elif allow_expunge:
            out.extend(self._announce_expunges(options))
            out.extend(self.recent_news())
        return out

    def recent_news(self) -> list[DataResponse]:
        """`* n RECENT` when the count differs from what the client last heard (RFC 3501
        7.3.2: sent "if the size of the mailbox changes"; after the EXISTS it goes with, and
        after expunges of \\Recent messages). Never in IMAP4rev2 (RFC 9051 Appendix E)."""
        if not self.shows_recent or len(self.recent) == self.told_recent:
            return []
        self.told_recent = len(self.recent)
        return [replies.recent(self.told_recent)]

    def _announce_expunges(self, options: SyncOptions) -> list[Response]:
        """`* n EXPUNGE` (or VANISHED) for what left the store, and those messages out of the
        view. The lines are written as octets at once (`ExpungeLines`: several per command
        with many sessions on a mailbox); each message leaves the view in place, highest
        position first, a memmove each instead of three lists rebuilt message by message."""
        if not self.vanished:
            return []
        gone = sorted(self.vanished)
        self.vanished.clear()
        self.recent.difference_update(gone)
        uids, flag_ids, modseqs = self.uids, self.flag_ids, self.modseqs
        lines: list[bytes] = []
        # Highest number first: each EXPUNGE then names a number the client still has.
        for uid in reversed(gone):
            index = self.index_of(uid)
            if index is not None:
                lines.append(b"* %d EXPUNGE\r\n" % (index + 1))
                del uids[index], flag_ids[index], modseqs[index]
        if lines:
            self._numbered = None  # the numbers after the first gone have all moved
        if options.qresync:
            return [replies.vanished(SequenceSet.of(gone))]
        return [ExpungeLines(b"".join(lines))] if lines else []

    def _flag_news(self, changes: list[tuple[int, MessageRecord]], options: SyncOptions
                   ) -> list[Response]:
        """`* n FETCH (UID u FLAGS (...) [MODSEQ (m)])` for other sessions' flag changes, made
        as octets at once from the view's rendered flag sets: with many sessions on a mailbox
        each command carries several, and a response tree each, rendered value by value, cost
        more than the command's own work (imaptest, 50 clients)."""
        from sealmail.imap.fetching import render_flags  # fetching imports this module

        rendered = self.rendered_flag_sets(render_flags)
        lines: list[bytes] = []
        for uid, record in changes:
            index = self.index_of(uid)
            if index is None:
                continue
            flags = rendered[self.flag_ids[index]]  # set by _set from this record
            if options.condstore:
                lines.append(b"* %d FETCH (UID %d FLAGS %s MODSEQ (%d))\r\n"
                             % (index + 1, uid, flags, record.modseq))
            else:
                lines.append(b"* %d FETCH (UID %d FLAGS %s)\r\n" % (index + 1, uid, flags))
        return [RenderedResponses(b"".join(lines))] if lines else []

    def fetch_flags(self, seq: int, record: MessageRecord, options: SyncOptions,
                    with_uid: bool) -> DataResponse:
        items: list[tuple[str, Value]] = []
        if with_uid:
            items.append(("UID", record.uid))
        items.append(("FLAGS", flag_atoms(self.session_flags(record))))
        if options.condstore:
            items.append(("MODSEQ", [record.modseq]))
        return replies.fetch(seq, items)
