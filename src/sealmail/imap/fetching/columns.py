"""FETCH answered a column at a time: index items, the items kept rendered (ENVELOPE,
BODYSTRUCTURE, BODY: sealmail.imap.fetching.kept) and header fields the index keeps as sent.

This is what imaptest and mail clients ask of a range of messages: `(UID FLAGS ENVELOPE
INTERNALDATE BODYSTRUCTURE RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From To ...)])` in any mix. Each
response is one %-format of a line made once per command (`plan`), over a column per item built
for a chunk of messages: no value tree and no dispatch per item per message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

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
_Header = tuple[Callable[[bytes], list[bytes]], tuple[str, ...], tuple[int, int] | None]


def _header_item(attribute: FetchAttribute) -> _Header | None:
    """How to cut a BODY[HEADER.FIELDS (...)] of listed fields: (finder over the listed
    fields, the names, partial); None for any other item."""
    section = attribute.section
    if (attribute.name != "BODY" or section is None or section.part
            or section.text != "HEADER.FIELDS"
            or not _LISTED.issuperset(f.lower() for f in section.fields)):
        return None
    return header_fields_finder(section.fields), section.fields, attribute.partial


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
    """Whether this way answers a FETCH of these items (no \\Seen set by it)."""
    return plan(attributes) is not None


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
        structures = StructureCache(job.store, view.name, [view.uids[i] for i in job.positions])
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
        self.listed: dict[int, bytes] = {}  # the listed fields, or the header from the file
        self.from_file: set[int] = set()

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
        if any(headers):
            kept = memo_for(job.store).listed(job.store, view, uids)
            for uid in uids:
                if uid in kept:
                    self.listed[uid] = kept[uid][1]
                elif uid not in gone:
                    try:  # a row the index could not fill: the header from the file
                        self.listed[uid] = message_header(job.store.message_bytes(view.name, uid))
                        self.from_file.add(uid)
                    except NoSuchMessage:
                        gone.add(uid)
        if gone:
            self.chunk = [i for i, uid in zip(self.chunk, uids, strict=True) if uid not in gone]
            self.uids = [uid for uid in uids if uid not in gone]
            self.contiguous = False

    def write(self, line: bytes, headers: list[_Header | None], out: list[Response]
              ) -> list[Response]:
        self._load(headers)
        if not self.chunk:
            return out
        columns: list[Sequence[object]] = []
        for attribute, header in zip(self.job.attributes, headers, strict=True):
            if header is not None:
                data = self._header_column(header)
                columns += (list(map(len, data)), data)
            else:
                columns.append(self._column(attribute.name))
        chunk = self.chunk
        seqs = range(chunk[0] + 1, chunk[-1] + 2) if self.contiguous else [i + 1 for i in chunk]
        out.append(RenderedResponses(b"".join(map(line.__mod__,
                                                  zip(seqs, *columns, strict=True)))))
        return self.job.session.stream_out(out)

    def _column(self, name: str) -> Sequence[object]:
        view, uids = self.view, self.uids
        if name == "UID":
            return uids
        if name == "FLAGS":
            rendered = self.job.rendered_flags
            return [rendered[i] for i in _column(view.flag_ids, self.chunk, self.contiguous)]
        if name == "MODSEQ":
            return _column(view.modseqs, self.chunk, self.contiguous)
        if name == "INTERNALDATE":
            return [self.records[uid][1] for uid in uids]
        if name == "RFC822.SIZE":
            return [self.records[uid][0] for uid in uids]
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
        find, names, partial = header
        data = []
        for uid in self.uids:
            listed = self.listed[uid]
            if uid in self.from_file:
                piece = header_fields(listed, names, False)
            else:
                # header_fields without a call per message: every listed field ends in CRLF.
                piece = b"".join(find(listed)) + b"\r\n"
            if partial is not None:
                piece = piece[partial[0] : partial[0] + partial[1]]
            data.append(textual(piece))
        return data
