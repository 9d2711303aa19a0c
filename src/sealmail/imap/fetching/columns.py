"""FETCH answered a column at a time: index items, the items kept rendered (ENVELOPE,
BODYSTRUCTURE, BODY: sealmail.imap.fetching.kept) and top-level header sections.

This is what imaptest and mail clients ask of a range of messages: `(UID FLAGS ENVELOPE
INTERNALDATE BODYSTRUCTURE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To ...)])` in any mix. Each
response is one %-format of a line made once per command (`plan`), over a column per item built
for a chunk of messages: no value tree and no dispatch per item per message. Header fields come
from those the index keeps as sent when every field asked is one of them, else from the start
of each file, read for the chunk in one batch (as sealmail.imap.fetching.bodies reads them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealmail.imap.decimals import decimals, interleaved, pieces_of
from sealmail.imap.fetching import bodies
from sealmail.imap.fetching.job import RECORD_ITEMS, Job, chunks, internaldate_text, textual
from sealmail.imap.fetching.kept import RENDERED, KeptForms, StructureCache
from sealmail.imap.fetching.memo import memos_for
from sealmail.imap.listing import memo_for
from sealmail.proto.imap import FetchAttribute, RenderedResponses, Response
from sealmail.rfc5322 import header_fields, header_fields_finder, message_header
from sealmail.store.errors import NoSuchMessage
from sealmail.store.headers import LISTED_FIELDS

__all__ = ["answers", "fetch_index_items", "plan"]

_FORMATS = {
    "UID": b"UID %d",
    "FLAGS": b"FLAGS %b",
    "MODSEQ": b"MODSEQ (%d)",
    "INTERNALDATE": b"INTERNALDATE %b",
    "RFC822.SIZE": b"RFC822.SIZE %d",
    "ENVELOPE": b"ENVELOPE %b",
    "BODYSTRUCTURE": b"BODYSTRUCTURE %b",
    "BODY": b"BODY %b",  # without a section: the non-extensible BODYSTRUCTURE
}
_LISTED = frozenset(LISTED_FIELDS)


@dataclass(frozen=True, slots=True)
class _Header:
    """A top-level header item: `cut` from a message's header; `find`, the fields over the
    index's listed ones, when every field asked is one it keeps (None: from the file)."""

    cut: Callable[[bytes], bytes]
    find: Callable[[bytes], list[bytes]] | None
    partial: tuple[int, int] | None


def _same(header: bytes) -> bytes:
    return header


def _header_item(attribute: FetchAttribute) -> _Header | None:
    """How to cut BODY[HEADER], BODY[HEADER.FIELDS (...)], BODY[HEADER.FIELDS.NOT (...)] or
    RFC822.HEADER (as the generic way cuts them); None for any other item."""
    section, partial = attribute.section, attribute.partial
    if attribute.name == "RFC822.HEADER":
        return _Header(_same, None, partial)
    if attribute.name != "BODY" or section is None or section.part:
        return None
    if section.text == "HEADER":
        return _Header(_same, None, partial)
    if section.text not in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return None
    names, exclude = section.fields, section.text == "HEADER.FIELDS.NOT"
    find = None
    if not exclude and _LISTED.issuperset(f.lower() for f in names):
        find = header_fields_finder(names)
    return _Header(lambda header: header_fields(header, names, exclude), find, partial)


def plan(attributes: Sequence[FetchAttribute]) -> tuple[bytes, list[_Header | None]] | None:
    """The line (a %-format taking the sequence number, then a value per item and two for a
    header item: length and octets) and the header cuts, or None if an item needs more."""
    parts = [b"* %d FETCH ("]
    headers: list[_Header | None] = []
    for attribute in attributes:
        if attribute.section is None and attribute.name in _FORMATS:
            parts.append(_FORMATS[attribute.name])
            headers.append(None)
            continue
        header = _header_item(attribute)
        if header is None:
            return None
        # A quoted field name may hold "%": the head is a %-format for the literal's length.
        parts.append(attribute.response_name().replace(b"%", b"%%") + b" {%d}\r\n%b")
        headers.append(header)
    return parts[0] + b" ".join(parts[1:]) + b")\r\n", headers


def answers(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether this way answers a FETCH of these items (no \\Seen set by it): header items
    from the files only beside a kept form (else sealmail.imap.fetching.bodies answers)."""
    planned = plan(attributes)
    if planned is None:
        return False
    return all(h is None or h.find is not None for h in planned[1]) or any(
        a.section is None and a.name in RENDERED for a in attributes)


def _column(values: list[int], chunk: list[int], contiguous: bool) -> list[int]:
    return values[chunk[0] : chunk[-1] + 1] if contiguous else [values[i] for i in chunk]


def fetch_index_items(job: Job, out: list[Response]) -> list[Response]:
    """The items `plan` accepts, octets built a column at a time, chunk by chunk."""
    planned = plan(job.attributes)
    assert planned is not None
    line, headers = planned
    view = job.view
    structures = None
    if any(a.section is None and a.name in RENDERED for a in job.attributes):
        # The index's blobs of only the messages whose forms this process does not keep:
        # reading all (up to 100 scattered blobs of ~1 KiB, imaptest) for the one new message
        # among them was most of such a FETCH's SQLite time. (One dropped from the memo
        # meanwhile is parsed again: slower, the same answer.) A UTF-8 session may need the
        # parse of any of them (_rendered_column): all.
        uids = [view.uids[i] for i in job.positions]
        if not job.session.utf8:
            known = memos_for(job.store).forms.lookup(view.name, view.uidvalidity, uids)
            uids = [uid for uid in uids if uid not in known]
        structures = StructureCache(job.store, view.name, uids)
    try:
        for chunk in chunks(job.positions):
            out = _Chunk(job, structures, chunk).write(line, headers, out)
    finally:
        if structures is not None:
            structures.flush()
    return out


class _Chunk:
    """One chunk's columns: what each needs is read once for the chunk, and a message gone
    meanwhile is left out of all (RFC 2180 4.1.1: its EXPUNGE follows at the next command
    that may announce it)."""

    def __init__(self, job: Job, structures: StructureCache | None, chunk: list[int]) -> None:
        self.job = job
        self.view = job.view
        self.structures = structures
        self.chunk = chunk
        self.contiguous = chunk[-1] - chunk[0] + 1 == len(chunk)
        self.uids = _column(self.view.uids, chunk, self.contiguous)
        self.records: dict[int, tuple[int, bytes]] = {}  # RFC822.SIZE, INTERNALDATE as sent
        self.forms: dict[int, KeptForms] = {}
        self.listed: dict[int, bytes] = {}  # the listed fields kept in the index
        self.headers: dict[int, bytes] = {}  # the header from the file

    def _load(self, headers: list[_Header | None]) -> None:
        job, view, uids = self.job, self.view, self.uids
        names = {a.name for a in job.attributes if a.section is None}
        memos = memos_for(job.store)
        gone: set[int] = set()
        if names & RECORD_ITEMS:
            self.records = memos.records.lookup(view.name, view.uidvalidity, uids)
            missing = [uid for uid in uids if uid not in self.records]
            if missing:
                read = {uid: (record.size,
                              b'"%b"' % internaldate_text(record.internaldate).encode())
                        for uid, record in job.records(missing).items()}
                memos.records.add(view.name, view.uidvalidity, read)
                self.records.update(read)
                gone.update(uid for uid in missing if uid not in read)
        if self.structures is not None:
            self.forms = memos.forms.lookup(view.name, view.uidvalidity, uids)
            read_forms: dict[int, KeptForms] = {}
            for uid in uids:
                if uid not in self.forms and uid not in gone:
                    forms = self.structures.forms(uid)
                    if forms is None:
                        gone.add(uid)
                    else:
                        read_forms[uid] = forms
            memos.forms.add(view.name, view.uidvalidity, read_forms)
            self.forms.update(read_forms)
        cuts = [h for h in headers if h is not None]
        if cuts:
            missing = [uid for uid in uids if uid not in gone]
            if all(h.find is not None for h in cuts):
                listed = memo_for(job.store).listed(job.store, view, missing)
                self.listed = {uid: listed[uid][1] for uid in missing if uid in listed}
                missing = [uid for uid in missing if uid not in listed]
            if missing:  # fields the index does not keep, or a row it could not fill
                gone.update(self._read_headers(missing))
        if gone:
            self.chunk = [i for i, uid in zip(self.chunk, uids, strict=True) if uid not in gone]
            self.uids = [uid for uid in uids if uid not in gone]
            self.contiguous = False

    def _read_headers(self, uids: list[int]) -> list[int]:
        """The headers of `uids` from their files into `headers`; the UIDs gone meanwhile."""
        store, name = self.job.store, self.view.name
        limit = bodies.HEADER_READ
        gone = []
        for uid, raw in zip(uids, store.message_contents(name, uids, limit), strict=True):
            header = None if raw is None else message_header(raw)
            if raw is not None and len(raw) == limit and len(header or b"") == limit:
                try:
                    header = message_header(store.message_bytes(name, uid))  # goes on past it
                except NoSuchMessage:
                    header = None
            if header is None:
                gone.append(uid)
            else:
                self.headers[uid] = header
        return gone

    def write(self, line: bytes, headers: list[_Header | None], out: list[Response]
              ) -> list[Response]:
        self._load(headers)
        if not self.chunk:
            return out
        chunk = self.chunk
        seqs = range(chunk[0] + 1, chunk[-1] + 2) if self.contiguous else [i + 1 for i in chunk]
        columns: list[Sequence[bytes]] = [decimals(seqs)]
        for attribute, header in zip(self.job.attributes, headers, strict=True):
            if header is not None:
                data = self._header_column(header)
                columns += (decimals(list(map(len, data))), data)
            else:
                columns.append(self._column(attribute.name))
        out.append(RenderedResponses(interleaved(pieces_of(line), columns)))
        return self.job.session.stream_out(out)

    def _column(self, name: str) -> Sequence[bytes]:
        view, uids = self.view, self.uids
        if name == "UID":
            return decimals(uids, ascending=True)  # the view's, in sequence order
        if name == "FLAGS":
            rendered = self.job.rendered_flags
            return list(map(rendered.__getitem__,
                            _column(view.flag_ids, self.chunk, self.contiguous)))
        if name == "MODSEQ":
            return decimals(_column(view.modseqs, self.chunk, self.contiguous))
        if name == "INTERNALDATE":
            return [self.records[uid][1] for uid in uids]
        if name == "RFC822.SIZE":
            return decimals([self.records[uid][0] for uid in uids])
        return self._rendered_column(name)

    def _rendered_column(self, name: str) -> list[bytes]:
        forms = self.forms
        if not self.job.session.utf8:
            return [forms[uid].form(name) for uid in self.uids]
        structures = self.structures
        assert structures is not None
        column: list[bytes] = []
        for uid in self.uids:
            form = structures.rendered(uid, name, forms[uid], True)
            # Gone since its forms were read (its parse not at hand to render again): the
            # IMAP4rev1 form, which a UTF-8 client reads as well (RFC 2180 4.1.1 lets a server
            # answer for a message expunged meanwhile as long as it has its data).
            column.append(form if form is not None else forms[uid].form(name))
        return column

    def _header_column(self, header: _Header) -> list[bytes]:
        find, partial, listed = header.find, header.partial, self.listed
        data = []
        for uid in self.uids:
            if find is not None and uid in listed:
                # header_fields without a call per message: every listed field ends in CRLF.
                piece = b"".join(find(listed[uid])) + b"\r\n"
            else:
                piece = header.cut(self.headers[uid])
            if partial is not None:
                piece = piece[partial[0] : partial[0] + partial[1]]
            data.append(textual(piece))
        return data
