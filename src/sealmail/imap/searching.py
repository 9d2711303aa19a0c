"""SEARCH, ESEARCH, SORT and THREAD over a selected mailbox (RFC 9051 6.4.4, RFC 4731,
RFC 5032 WITHIN, RFC 7162 MODSEQ, RFC 5256 SORT/THREAD).

Keys are evaluated per message with everything loaded lazily: flags, sizes and dates come from
the index; header and text keys read the message once. String matching is case-insensitive
substring matching on decoded text (RFC 9051 6.4.4: "a substring match", RFC 2047 words decoded,
transfer encodings of text parts undone).
"""

from __future__ import annotations

import email.header
import email.utils
import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.fetching import StructureCache
from sealmail.proto.imap import (
    BodyStructure,
    ParsedMessage,
    Response,
    Search,
    SearchKey,
    SequenceSet,
    Sort,
    Thread,
    ThreadNode,
    decode_part,
    section_bytes,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MessageRecord, MessageStore

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["base_subject", "search", "sort", "thread"]

_FLAG_KEYS = {
    "ANSWERED": ("\\Answered", True), "UNANSWERED": ("\\Answered", False),
    "DELETED": ("\\Deleted", True), "UNDELETED": ("\\Deleted", False),
    "DRAFT": ("\\Draft", True), "UNDRAFT": ("\\Draft", False),
    "FLAGGED": ("\\Flagged", True), "UNFLAGGED": ("\\Flagged", False),
    "SEEN": ("\\Seen", True), "UNSEEN": ("\\Seen", False),
}


def _decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded, best effort (never raises)."""
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


class _Candidate:
    """One message under evaluation; bytes, parse and headers loaded on first use."""

    def __init__(self, store: MessageStore, mailbox: str, seq: int, record: MessageRecord,
                 structures: StructureCache) -> None:
        self.structures = structures
        self.store = store
        self.mailbox = mailbox
        self.seq = seq
        self.record = record
        self._raw: bytes | None = None
        self._parsed: ParsedMessage | None = None
        self._headers: list[tuple[str, str]] | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.store.message_bytes(self.mailbox, self.record.uid)
        return self._raw

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed, raw = self.structures.get(self.record.uid, self._raw)
            self._raw = raw or self._raw
        return self._parsed

    @property
    def headers(self) -> list[tuple[str, str]]:
        """(lower-case name, unfolded decoded value) of the top-level header."""
        if self._headers is None:
            block = section_bytes(self.raw, self.parsed.body, (), "HEADER") or b""
            text = block.decode("utf-8", "replace").replace("\r\n", "\n")
            unfolded = re.sub(r"\n[ \t]+", " ", text)
            fields = []
            for line in unfolded.split("\n"):
                name, colon, value = line.partition(":")
                if colon and name and " " not in name.strip():
                    fields.append((name.strip().lower(), _decode_words(value.strip())))
            self._headers = fields
        return self._headers

    def header(self, name: str) -> list[str]:
        wanted = name.lower()
        return [value for field, value in self.headers if field == wanted]

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
        if name == "ALL" or name == "OLD":
            return True  # no session has \Recent here: every message is "old"
        if name in ("RECENT", "NEW"):
            return False
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


def matching(session: ImapSession, criteria: SearchKey) -> tuple[list[_Candidate], bool]:
    """The messages that match, in sequence order, and whether MODSEQ was searched."""
    view = session.require_selected()
    evaluator = _Evaluator(session, session.saved_search)
    found: list[_Candidate] = []
    structures = StructureCache(session.store, view.name, list(view.uids))
    try:
        for index, uid in enumerate(view.uids):
            if uid in view.vanished:
                continue
            candidate = _Candidate(session.store, view.name, index + 1, view.records[uid],
                                   structures)
            if evaluator.match(criteria, candidate):
                found.append(candidate)
    finally:
        structures.flush()
    return found, evaluator.used_modseq


def search(session: ImapSession, command: Search) -> list[Response]:
    found, used_modseq = matching(session, command.criteria)
    if used_modseq:
        session.enable_condstore()
    numbers = [m.record.uid if command.uid else m.seq for m in found]
    modseq = max((m.record.modseq for m in found), default=None) if used_modseq else None
    options = command.return_options
    if options is None:
        return [replies.search(numbers, modseq if numbers else None)]
    wanted = {o.upper() for o in options} or {"ALL"}
    if "SAVE" in wanted:  # RFC 5182: remember the result as UIDs for "$"
        session.saved_search = [m.record.uid for m in found]
        wanted.discard("SAVE")
        if not wanted:
            return []
    return [replies.esearch(
        session.pending_tag,
        command.uid,
        minimum=min(numbers) if numbers and "MIN" in wanted else None,
        maximum=max(numbers) if numbers and "MAX" in wanted else None,
        all_numbers=SequenceSet.of(numbers) if numbers and "ALL" in wanted else None,
        count=len(numbers) if "COUNT" in wanted else None,
        modseq=modseq if numbers else None,
    )]


# -- SORT and THREAD (RFC 5256) ------------------------------------------------------------------


_SUBJECT_LEADER = re.compile(r"^(?:\s*(?:re|fwd?)\s*(?:\[[^\]]*\]\s*)?:\s*|\s*\[[^\]]*\]\s*)",
                             re.IGNORECASE)
_SUBJECT_TRAILER = re.compile(r"(?:\s*\(fwd\)\s*|\s+)$", re.IGNORECASE)


def base_subject(subject: str) -> str:
    """RFC 5256 2.1: the subject without Re:, Fwd:, [blob] leaders and (fwd) trailers."""
    text = " ".join(_decode_words(subject).split())
    while True:
        previous = text
        text = _SUBJECT_TRAILER.sub("", text)
        while True:
            stripped = _SUBJECT_LEADER.sub("", text, count=1)
            if stripped == text or not stripped:
                break
            text = stripped
        if text.lower().startswith("[fwd:") and text.endswith("]"):
            text = text[5:-1].strip()
        if text == previous:
            return text.casefold()


def _first_address(m: _Candidate, field: str, display: bool) -> str:
    values = m.header(field)
    if not values:
        return ""
    name, address = email.utils.parseaddr(values[0])
    if display and name:
        return name.casefold()
    return address.partition("@")[0].casefold() if not display else address.casefold()


def _sent_or_internal(m: _Candidate) -> float:
    values = m.header("date")
    if values:
        try:
            return email.utils.parsedate_to_datetime(values[0]).timestamp()
        except (TypeError, ValueError, IndexError):
            pass
    return m.record.internaldate


_SORT_KEYS: dict[str, Callable[[_Candidate], object]] = {
    "ARRIVAL": lambda m: m.record.internaldate,
    "DATE": _sent_or_internal,
    "SIZE": lambda m: m.record.size,
    "SUBJECT": lambda m: base_subject((m.header("subject") or [""])[0]),
    "FROM": lambda m: _first_address(m, "from", False),
    "TO": lambda m: _first_address(m, "to", False),
    "CC": lambda m: _first_address(m, "cc", False),
    "DISPLAYFROM": lambda m: _first_address(m, "from", True),
    "DISPLAYTO": lambda m: _first_address(m, "to", True),
}


def sort(session: ImapSession, command: Sort) -> list[Response]:
    found, _ = matching(session, command.keys)
    ordered = sorted(found, key=lambda m: m.seq)  # RFC 5256 3: ties keep sequence order
    for criterion in reversed(command.criteria):
        key_of = _SORT_KEYS.get(criterion.key)
        if key_of is None:
            raise CommandFailed(f"Unknown sort key {criterion.key}", status="BAD")
        ordered.sort(key=key_of, reverse=criterion.reverse)  # type: ignore[arg-type]
    return [replies.sort([m.record.uid if command.uid else m.seq for m in ordered])]


def thread(session: ImapSession, command: Thread) -> list[Response]:
    """ORDEREDSUBJECT (RFC 5256 3): threads by base subject, each flat in sent-date order.

    REFERENCES is answered with the same grouping refined by In-Reply-To/References parents
    when they are present in the result set.
    """
    found, _ = matching(session, command.keys)

    def number(m: _Candidate) -> int:
        return m.record.uid if command.uid else m.seq

    if command.algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
        raise CommandFailed(f"Unknown threading algorithm {command.algorithm}", status="BAD")
    ordered = sorted(found, key=lambda m: (_sent_or_internal(m), m.seq))
    if command.algorithm == "REFERENCES":
        return [replies.thread(_references(ordered, number))]
    groups: dict[str, list[_Candidate]] = {}
    for m in ordered:
        groups.setdefault(base_subject((m.header("subject") or [""])[0]), []).append(m)
    roots = []
    for members in groups.values():
        first, rest = members[0], members[1:]
        roots.append((first, ThreadNode(number(first),
                                        tuple(ThreadNode(number(r)) for r in rest))))
    roots.sort(key=lambda pair: (_sent_or_internal(pair[0]), pair[0].seq))
    return [replies.thread([node for _, node in roots])]


_MESSAGE_ID = re.compile(r"<[^<>]+>")


def _references(ordered: list[_Candidate], number: Callable[[_Candidate], int]
                ) -> list[ThreadNode]:
    """Parent links from References (last id) or In-Reply-To, among the found messages."""
    by_id: dict[str, _Candidate] = {}
    for m in ordered:
        ids = _MESSAGE_ID.findall((m.header("message-id") or [""])[0])
        if ids and ids[0] not in by_id:
            by_id[ids[0]] = m
    children: dict[int, list[_Candidate]] = {}
    roots: list[_Candidate] = []
    for m in ordered:
        refs = _MESSAGE_ID.findall(" ".join(m.header("references")))
        refs += _MESSAGE_ID.findall(" ".join(m.header("in-reply-to")))
        parent = next((by_id[r] for r in reversed(refs) if r in by_id and by_id[r] is not m),
                      None)
        if parent is None:
            roots.append(m)
        else:
            children.setdefault(id(parent), []).append(m)

    def node(m: _Candidate, depth: int = 0) -> ThreadNode:
        kids = children.get(id(m), []) if depth < 200 else []
        return ThreadNode(number(m), tuple(node(k, depth + 1) for k in kids))

    return [node(m) for m in roots]
