"""SEARCH, ESEARCH, SORT and THREAD over a selected mailbox (RFC 9051 6.4.4, RFC 4731,
RFC 5032 WITHIN, RFC 7162 MODSEQ, RFC 5256 SORT/THREAD).

A key tree is evaluated a key at a time over every candidate message (`_Search`), cheapest keys
of an AND first so the costly ones see few candidates: flags, sequence sets and modseqs from the
session's view; sizes and dates from the index in one query; FROM / TO / CC / BCC / SUBJECT /
HEADER from the header index in one query (sealmail.store.headers), no file opened. The other
keys (SENT*, BODY, TEXT), and messages whose header the index could not keep, are evaluated per
message (`_Evaluator`), reading the message once. String matching is case-insensitive substring
matching on decoded text (RFC 9051 6.4.4: "a substring match", RFC 2047 words decoded, transfer
encodings of text parts undone); both ways use the same decoding, so they always agree.
"""

from __future__ import annotations

import dataclasses
import email.utils
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from sealmail.imap import contexts, threads
from sealmail.imap.errors import CommandFailed
from sealmail.imap.fetching import StructureCache
from sealmail.imap.fetching.kept import LoadedMessage
from sealmail.imap.orders import orders_for
from sealmail.imap.selected import RECENT, SelectedMailbox
from sealmail.proto.imap import (
    BodyStructure,
    Response,
    Search,
    SearchKey,
    SequenceSet,
    Sort,
    Thread,
    decode_part,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MessageRecord
from sealmail.store.errors import NoSuchMessage
from sealmail.store.headers import header_block, header_fields, searchable_fields
from sealmail.store.sorting import SortValue

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["context_result", "search", "sort", "thread"]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}




class _Candidate(LoadedMessage):
    """One message under evaluation; bytes, parse and headers loaded on first use."""

    def __init__(self, seq: int, record: MessageRecord, structures: StructureCache) -> None:
        super().__init__(record, structures)
        self.seq = seq
        self._headers: list[tuple[str, str]] | None = None
        self._searchable: list[tuple[str, str]] | None = None

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, unfolded decoded value) of the top-level header."""
        if self._headers is None:
            self._headers = header_fields(header_block(self.raw))
        return self._headers

    def header(self, name: str) -> list[str]:
        """The texts SEARCH matches field `name` with (sealmail.store.headers: as the index
        keeps them)."""
        if self._searchable is None:
            self._searchable = searchable_fields(header_block(self.raw))
        wanted = name.lower()
        return [value for field, value in self._searchable if field == wanted]

    def body_text(self) -> str:
        """Decoded text of every TEXT/* leaf, in the part's charset."""
        chunks: list[str] = []

        def walk(part: BodyStructure) -> None:
            if part.children:
                for child in part.children:
                    walk(child)
            elif part.message is not None:
                walk(part.message.body)
            elif part.type == "TEXT":
                data = decode_part(self.raw, part)
                if data is None:
                    data = self.raw[part.body_offset : part.end_offset]
                charset = part.param("CHARSET") or "us-ascii"
                try:
                    chunks.append(data.decode(charset, "replace"))
                except LookupError:
                    chunks.append(data.decode("utf-8", "replace"))

        walk(self.parsed.body)
        return "\n".join(chunks)

    def sent_date(self) -> date | None:
        values = self.header("date")
        if not values:
            return None
        try:
            parsed = email.utils.parsedate_to_datetime(values[0])
        except (TypeError, ValueError, IndexError):
            return None
        return parsed.date()  # RFC 9051 6.4.4: "disregarding time and timezone"

    def internal_date(self) -> date:
        return datetime.fromtimestamp(self.record.internaldate, UTC).date()


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


class _Evaluator:
    def __init__(self, session: ImapSession, saved: list[int]) -> None:
        self.session = session
        view = session.require_selected()
        self.uids = view.uids
        self.largest_uid = view.uids[-1] if view.uids else 0
        self.exists = view.exists
        self.saved = saved
        self.now = session.clock()
        self.used_modseq = False

    def _in_set(self, numbers: SequenceSet, value: int, largest: int, by_uid: bool) -> bool:
        if numbers.saved:  # RFC 5182 "$": the saved result (UIDs)
            if by_uid:
                return value in self.saved
            return self.uids[value - 1] in self.saved if 0 < value <= len(self.uids) else False
        return bool(largest) and numbers.contains(value, largest)

    def match(self, key: SearchKey, m: _Candidate) -> bool:
        name = key.name
        args = key.args
        flags = m.record.flags
        if name == "AND":
            return all(self.match(child, m) for child in key.keys)
        if name == "OR":
            return self.match(key.keys[0], m) or self.match(key.keys[1], m)
        if name == "NOT":
            return not self.match(key.keys[0], m)
        if name == "ALL":
            return True
        if name in ("RECENT", "NEW", "OLD"):
            # RFC 3501 6.4.4: NEW is "RECENT UNSEEN", OLD is "NOT RECENT"; \Recent is among
            # the session's flags (never in IMAP4rev2).
            if name == "OLD":
                return RECENT not in flags
            return RECENT in flags and (name == "RECENT" or "\\Seen" not in flags)
        if name in _FLAG_KEYS:
            flag, wanted = _FLAG_KEYS[name]
            return (flag in flags) == wanted
        if name in ("KEYWORD", "UNKEYWORD"):
            present = any(f.lower() == str(args[0]).lower() for f in flags)
            return present == (name == "KEYWORD")
        if name == "SEQSET":
            assert isinstance(args[0], SequenceSet)
            return self._in_set(args[0], m.seq, self.exists, False)
        if name == "UID":
            assert isinstance(args[0], SequenceSet)
            return self._in_set(args[0], m.record.uid, self.largest_uid, True)
        if name == "LARGER":
            return m.record.size > int(str(args[0]))
        if name == "SMALLER":
            return m.record.size < int(str(args[0]))
        if name in ("BEFORE", "ON", "SINCE"):
            assert isinstance(args[0], date)
            return _compare_date(name, m.internal_date(), args[0])
        if name in ("SENTBEFORE", "SENTON", "SENTSINCE"):
            assert isinstance(args[0], date)
            sent = m.sent_date()
            return sent is not None and _compare_date(name[4:], sent, args[0])
        if name == "OLDER":  # RFC 5032: internal date at least n seconds ago
            return m.record.internaldate <= self.now - int(str(args[0]))
        if name == "YOUNGER":
            return m.record.internaldate >= self.now - int(str(args[0]))
        if name == "MODSEQ":
            self.used_modseq = True
            return m.record.modseq >= int(str(args[-1]))
        if name in ("FROM", "TO", "CC", "BCC", "SUBJECT"):
            return any(_contains(value, str(args[0])) for value in m.header(name))
        if name == "HEADER":
            values = m.header(str(args[0]))
            return bool(values) and any(_contains(v, str(args[1])) for v in values)
        if name == "BODY":
            return _contains(m.body_text(), str(args[0]))
        if name == "TEXT":
            needle = str(args[0])
            header_text = "\n".join(f"{n}: {v}" for n, v in m.headers)
            return _contains(header_text, needle) or _contains(m.body_text(), needle)
        raise CommandFailed(f"Unsupported search key {name}", status="BAD")


def _compare_date(how: str, value: date, wanted: date) -> bool:
    if how == "BEFORE":
        return value < wanted
    if how == "ON":
        return value == wanted
    return value >= wanted


# Cost of a key, to evaluate the cheap keys of an AND first: from the view; from the index
# (one query); from the header index (one query); from every message's file.
_VIEW_KEYS = frozenset({"ALL", "OLD", "RECENT", "NEW", "KEYWORD", "UNKEYWORD", "SEQSET", "UID",
                        "MODSEQ", *_FLAG_KEYS})
_RECORD_KEYS = frozenset({"LARGER", "SMALLER", "BEFORE", "ON", "SINCE", "OLDER", "YOUNGER"})
_HEADER_KEYS = frozenset({"FROM", "TO", "CC", "BCC", "SUBJECT", "HEADER"})


def _cost(key: SearchKey) -> int:
    if key.name in ("AND", "OR", "NOT"):
        return max((_cost(child) for child in key.keys), default=0)
    if key.name in _VIEW_KEYS:
        return 0
    if key.name in _RECORD_KEYS:
        return 1
    if key.name in _HEADER_KEYS:
        return 2
    return 3


def _uses_modseq(key: SearchKey) -> bool:
    if key.name in ("AND", "OR", "NOT"):
        return any(_uses_modseq(child) for child in key.keys)
    return key.name == "MODSEQ"


def _in_spans(positions: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """The positions (ascending) inside the [start, stop) spans (ascending, disjoint)."""
    out = []
    k = 0
    for position in positions:
        while k < len(spans) and spans[k][1] <= position:
            k += 1
        if k == len(spans):
            break
        if spans[k][0] <= position:
            out.append(position)
    return out


class _Search:
    """One SEARCH (or the key part of SORT / THREAD) over positions of the selected view."""

    def __init__(self, session: ImapSession) -> None:
        self.session = session
        self.view = view = session.require_selected()
        self.store = session.store
        self.saved = set(session.saved_search)
        self.now = session.clock()
        self.reference = _Evaluator(session, session.saved_search)
        self.records: dict[int, MessageRecord] = {}
        self._loaded: set[int] = set()
        self.structures = StructureCache(self.store, view.name, list(view.uids))
        self._candidates: dict[int, _Candidate] = {}

    # -- what keys need ---------------------------------------------------------------------

    def _load_records(self, positions: list[int]) -> None:
        uids = self.view.uids
        missing = [uids[p] for p in positions if uids[p] not in self._loaded]
        if missing:
            self._loaded.update(missing)
            for record in self.store.message_records(self.view.name, missing):
                self.records[record.uid] = record

    def candidate(self, position: int) -> _Candidate | None:
        """The per-message evaluation object (None: the message left the store meanwhile)."""
        found = self._candidates.get(position)
        if found is None:
            view = self.view
            self._load_records([position])
            stored = self.records.get(view.uids[position])
            if stored is None:
                return None
            record = MessageRecord(stored.uid, view.modseqs[position], stored.internaldate,
                                   stored.size, stored.guid, view.flags_at(position))
            found = _Candidate(position + 1, record, self.structures)
            self._candidates[position] = found
        return found

    def _per_message(self, key: SearchKey, positions: list[int]) -> list[int]:
        self._load_records(positions)
        out = []
        for position in positions:
            if self._matches(key, position):
                out.append(position)
        return out

    def _matches(self, key: SearchKey, position: int) -> bool:
        """`key` evaluated on the message itself; a message expunged by another session
        before its file was read matches nothing (RFC 2180 4.1.3: SEARCH may leave it out)."""
        m = self.candidate(position)
        try:
            return m is not None and self.reference.match(key, m)
        except NoSuchMessage:
            return False

    # -- evaluation -------------------------------------------------------------------------

    def run(self, key: SearchKey, positions: list[int]) -> list[int]:
        """The positions (ascending) among `positions` (ascending) that match `key`."""
        name = key.name
        view = self.view
        if not positions:
            return []
        if name == "AND":
            for child in sorted(key.keys, key=_cost):
                positions = self.run(child, positions)
                if not positions:
                    break
            return positions
        if name == "OR":
            first = self.run(key.keys[0], positions)
            taken = set(first)
            second = self.run(key.keys[1], [p for p in positions if p not in taken])
            return sorted(first + second)
        if name == "NOT":
            matched = set(self.run(key.keys[0], positions))
            return [p for p in positions if p not in matched]
        if name == "ALL":
            return positions
        if name in ("RECENT", "NEW", "OLD"):  # RFC 3501 6.4.4, as in _Evaluator.match
            ids = view.ids_where(RECENT, name != "OLD")
            if name == "NEW":
                ids &= view.ids_where("\\Seen", present=False)
            flag_ids = view.flag_ids
            return [p for p in positions if flag_ids[p] in ids]
        if name in _FLAG_KEYS or name in ("KEYWORD", "UNKEYWORD"):
            if name in _FLAG_KEYS:
                flag, wanted = _FLAG_KEYS[name]
                ids = view.ids_where(flag, wanted)
            else:
                keyword = str(key.args[0]).lower()
                ids = frozenset(i for i, flags in enumerate(view.flag_sets)
                                if any(f.lower() == keyword for f in flags) == (name == "KEYWORD"))
            flag_ids = view.flag_ids
            return [p for p in positions if flag_ids[p] in ids]
        if name in ("SEQSET", "UID"):
            numbers = key.args[0]
            assert isinstance(numbers, SequenceSet)
            if numbers.saved:  # RFC 5182 "$": the saved result (UIDs)
                uids = view.uids
                return [p for p in positions if uids[p] in self.saved]
            by_uid = name == "UID"
            return _in_spans(positions, view.spans(numbers, by_uid))
        if name == "MODSEQ":
            modseq = int(str(key.args[-1]))
            modseqs = view.modseqs
            return [p for p in positions if modseqs[p] >= modseq]
        if name in _RECORD_KEYS:
            return self._by_record(key, positions)
        if name in _HEADER_KEYS:
            return self._by_header(key, positions)
        return self._per_message(key, positions)

    def _by_record(self, key: SearchKey, positions: list[int]) -> list[int]:
        self._load_records(positions)
        uids, records = self.view.uids, self.records
        name, arg = key.name, key.args[0]
        out = []
        for position in positions:
            record = records.get(uids[position])
            if record is None:
                continue  # expunged by another session meanwhile
            if name == "LARGER":
                hit = record.size > int(str(arg))
            elif name == "SMALLER":
                hit = record.size < int(str(arg))
            elif name == "OLDER":  # RFC 5032: internal date at least n seconds ago
                hit = record.internaldate <= self.now - int(str(arg))
            elif name == "YOUNGER":
                hit = record.internaldate >= self.now - int(str(arg))
            else:
                assert isinstance(arg, date)
                day = datetime.fromtimestamp(record.internaldate, UTC).date()
                hit = _compare_date(name, day, arg)
            if hit:
                out.append(position)
        return out

    def _by_header(self, key: SearchKey, positions: list[int]) -> list[int]:
        if key.name == "HEADER":
            field, needle = str(key.args[0]), str(key.args[1])
        else:
            field, needle = key.name.lower(), str(key.args[0])
        answer = self.store.search_header(self.view.name, field, needle)
        view = self.view
        if not answer.unanswered:  # the usual case: no loop over the candidates
            hits = [i for i in map(view.index_of, answer.matched) if i is not None]
            if len(positions) == len(view.uids):
                return hits  # every message was a candidate
            candidates = set(positions)
            return [i for i in hits if i in candidates]
        matched = set(answer.matched)
        unanswered = set(answer.unanswered)
        uids = view.uids
        self._load_records([p for p in positions if uids[p] in unanswered])
        out = []
        for position in positions:
            uid = uids[position]
            if uid in matched or (uid in unanswered and self._matches(key, position)):
                out.append(position)
        return out


def _search(session: ImapSession, criteria: SearchKey) -> tuple[list[int], bool]:
    """The positions in the view of the messages that match, and whether MODSEQ was searched."""
    evaluation = _Search(session)
    view = evaluation.view
    try:
        found = evaluation.run(criteria, view.positions([(0, view.exists)]))
    finally:
        evaluation.structures.flush()
    return found, _uses_modseq(criteria)


def search(session: ImapSession, command: Search) -> list[Response]:
    found, used_modseq = _search(session, command.criteria)
    if used_modseq:
        session.enable_condstore()
    view = session.require_selected()
    uids = [view.uids[p] for p in found]
    numbers = uids if command.uid else [p + 1 for p in found]
    modseq = max((view.modseqs[p] for p in found), default=None) if used_modseq else None
    options = command.return_options
    if options is None:
        return [replies.search(numbers, modseq if numbers else None)]
    # RFC 4731 3.1: RETURN () is RETURN (ALL); RFC 5267 4: UPDATE and CONTEXT return nothing.
    wanted = {o.split()[0] for o in options} or {"ALL"}
    if "UPDATE" in wanted:
        contexts.register(session, contexts.UpdateContext(
            session.pending_tag or "", command.uid, command.criteria, None, uids))
    wanted -= {"UPDATE", "CONTEXT"}
    if "SAVE" in wanted:  # RFC 5182: remember the result as UIDs for "$"
        session.saved_search = uids
        wanted.discard("SAVE")
        if not wanted:
            return []
    if used_modseq and found and not wanted & {"ALL", "COUNT"}:
        # RFC 4731 3.2 / RFC 7162 3.1.5: with only MIN and/or MAX returned, MODSEQ is the
        # highest mod-sequence of the message(s) returned, not of every match.
        returned = [found[0]] * ("MIN" in wanted) + [found[-1]] * ("MAX" in wanted)
        modseq = max((view.modseqs[p] for p in returned), default=modseq)
    response = replies.esearch(
        session.pending_tag,
        command.uid,
        minimum=min(numbers) if numbers and "MIN" in wanted else None,
        maximum=max(numbers) if numbers and "MAX" in wanted else None,
        all_numbers=SequenceSet.of(numbers) if numbers and "ALL" in wanted else None,
        count=len(numbers) if "COUNT" in wanted else None,
        modseq=modseq if numbers else None,
    )
    partial = contexts.partial_values(numbers, options)  # RFC 5267 4.4
    if partial:
        response = dataclasses.replace(response, values=(*response.values, *partial))
    return [response]


def context_result(session: ImapSession, criteria: SearchKey,
                   sort_keys: tuple[tuple[str, bool], ...] | None) -> list[int]:
    """An UPDATE context's result now, as UIDs in its order (sealmail.imap.contexts)."""
    found, _ = _search(session, criteria)
    view = session.require_selected()
    uids = [view.uids[p] for p in found]
    if sort_keys is None:
        return uids
    wanted = set(uids)
    return [uid for uid in _sorted_uids(session, sort_keys) if uid in wanted]


# -- SORT and THREAD (RFC 5256) ------------------------------------------------------------------


def sort(session: ImapSession, command: Sort) -> list[Response]:
    """RFC 5256 SORT (and RFC 5957's display keys): the store orders the mailbox by its kept
    sortable form (sealmail.store.sorting), kept between commands (sealmail.imap.orders); the
    search picks the messages. A SORT of every message (`SORT (...) UTF-8 ALL`, what clients
    send) is kept as the whole answer."""
    view = session.require_selected()  # the parser refused unknown keys (BAD)
    keys = tuple((c.key, c.reverse) for c in command.criteria)
    found, _ = _search(session, command.keys)
    options = command.return_options
    if options is None and len(found) == view.exists:  # (found: distinct positions)
        return [orders_for(session.store).sort(view, keys, command.uid,
                                               *_order_sources(session, keys))]
    ordered, numbers = _sort_numbers(session, keys, command.uid, found)
    if options is None:
        return [replies.sort(numbers)]
    if "UPDATE" in options:  # RFC 5267 4: CONTEXT=SORT
        contexts.register(session, contexts.UpdateContext(
            session.pending_tag or "", command.uid, command.keys, keys, ordered))
    return [contexts.sort_esearch(session, command.uid, options, numbers)]


def _sort_numbers(session: ImapSession, keys: tuple[tuple[str, bool], ...], uid: bool,
                  found: list[int]) -> tuple[list[int], list[int]]:
    """The UIDs at positions `found` in the order of `keys`, and the numbers to answer with."""
    view = session.require_selected()
    kept = _sorted_uids(session, keys)
    if len(found) == view.exists:  # (found: distinct positions) every message matched
        # Both hold UIDs of the view only: nothing is left out.
        ordered = list(kept)
        if uid:
            return ordered, ordered
        return ordered, list(map(view.numbers().__getitem__, ordered))
    wanted = _numbers_of(view, found)
    ordered = [u for u in kept if u in wanted]
    return ordered, ordered if uid else list(map(wanted.__getitem__, ordered))


def _sorted_uids(session: ImapSession, keys: tuple[tuple[str, bool], ...]) -> list[int]:
    """The view's UIDs in the order of `keys`: kept between commands while the mailbox holds
    the same messages (sealmail.imap.orders), else the store's order."""
    view = session.require_selected()
    return orders_for(session.store).sorted_uids(view, keys, *_order_sources(session, keys))


def _order_sources(session: ImapSession, keys: tuple[tuple[str, bool], ...]) -> tuple[
        Callable[[], list[int]], Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]]:
    """The view's UIDs in the store's order of `keys`, and the sort values of some UIDs."""
    view = session.require_selected()

    def compute() -> list[int]:
        known = set(view.uids)
        return [uid for uid in session.store.sorted_uids(view.name, list(keys)) if uid in known]

    def values(uids: Sequence[int]) -> dict[int, tuple[SortValue, ...]]:
        return session.store.sort_values(view.name, list(keys), uids)

    return compute, values


def _numbers_of(view: SelectedMailbox, found: list[int]) -> dict[int, int]:
    """UID -> sequence number of the messages at positions `found`."""
    return dict(zip(map(view.uids.__getitem__, found), map((1).__add__, found), strict=True))


def thread(session: ImapSession, command: Thread) -> list[Response]:
    """ORDEREDSUBJECT (RFC 5256 3): threads by base subject, each flat in sent-date order;
    REFERENCES: sealmail.imap.conversations. The headers come from the index
    (sealmail.store.sorting), in mailbox order (RFC 5256 3 step 1 depends on it; Dovecot's).
    The answer is kept while the mailbox holds the same messages (sealmail.imap.orders); that
    of every message is also brought up to date as mail comes (sealmail.imap.threads)."""
    if command.algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise CommandFailed(f"Unknown threading algorithm {command.algorithm}", status="BAD")
    view = session.require_selected()
    found, _ = _search(session, command.keys)
    if len(found) == view.exists:  # every message (what clients send): kept, and added to
        return [orders_for(session.store).thread(
            view, command.algorithm, command.uid,
            lambda since: session.store.thread_fields(view.name, since))]
    # What matched is part of the key: the UIDs (ascending, as found is).
    matched = tuple(map(view.uids.__getitem__, found))
    return [orders_for(session.store).answer(
        view, ("THREAD", command.algorithm, command.uid, matched),
        lambda: _thread(session, command.algorithm, command.uid, _numbers_of(view, found)))]


def _thread(session: ImapSession, algorithm: str, uid: bool,
            wanted: dict[int, int]) -> replies.DataResponse:
    """THREAD's answer, worked out from the store's thread fields."""
    view = session.require_selected()
    return threads.threaded(session.store.thread_fields(view.name), algorithm, uid, wanted)
