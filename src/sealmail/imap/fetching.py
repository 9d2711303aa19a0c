"""FETCH (RFC 9051 6.4.5, 7.5.2; RFC 3516 BINARY; RFC 7162 CHANGEDSINCE / MODSEQ).

ENVELOPE and BODYSTRUCTURE come from the parse kept in the index (`ParsedMessage.to_bytes`),
made once per message by the first FETCH that needs it; body sections are cut from the stored
bytes by the part offsets of that parse, so no FETCH parses MIME again.

Three ways to answer, picked by the items asked for:

- only UID, FLAGS, MODSEQ, INTERNALDATE, RFC822.SIZE (what clients ask of every message when
  they open a mailbox), and ENVELOPE, which is kept rendered beside the parse: the responses
  are built as octets, a column per item over the view's per-message lists, thousands of
  messages per join;
- those plus whole messages or their top-level header (BODY[], RFC822, BODY[HEADER],
  BODY[HEADER.FIELDS (...)], RFC822.HEADER, PEEK or not, with a partial: what mail clients ask
  of every message when they list a folder): the same, with the files read in batches and the
  header cut out by one regular expression, framed as literals without re-encoding;
- anything else (BODYSTRUCTURE, sections, BINARY, ENVELOPE in a UTF-8 session): one
  `DataResponse` per message.

Large results go to the client in chunks while the rest is produced (`ImapSession.stream_out`).
Whatever the way, \\Seen is set first, in one store call, on the messages a non-PEEK body fetch
reads (RFC 9051 6.4.5), and their responses then carry FLAGS (and MODSEQ with CONDSTORE).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.listing import ListedPlan, listed_plan
from sealmail.imap.selected import SelectedMailbox, flag_atoms
from sealmail.proto.imap import (
    Fetch,
    FetchAttribute,
    Literal,
    ParsedMessage,
    RenderedResponses,
    Response,
    SequenceSet,
    Value,
    body_structure_value,
    decode_part,
    find_part,
    header_fields,
    message_header,
    parse_message,
    render_envelope,
    render_value,
    section_bytes,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MailboxView, MessageRecord
from sealmail.store.errors import NoSuchMessage, StoreError
from sealmail.store.headers import LISTED_FIELDS

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["StructureCache", "fetch", "fetch_index_responses", "internaldate_text",
           "render_flags"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
# Items the index answers (no file, no parse); those needing the message record, not the view.
_INDEX_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
_RECORD_ITEMS = frozenset({"INTERNALDATE", "RFC822.SIZE"})
# Messages per chunk handed to the client while the rest is built: small first, so the first
# octets leave at once and the client works while the server does, then larger ones.
CHUNKS = (256, 1024, 4096)
# Files read per chunk when whole messages are sent: small, so the client starts at once and
# never waits long (bench/imap_throughput.py, 100 bodies of 3 KiB: best of 4..100 per chunk).
BODY_CHUNKS = (8, 28)
# Octets read from the start of each file when only headers are fetched.
HEADER_READ = 64 * 1024
_LISTED = frozenset(LISTED_FIELDS)


def internaldate_text(timestamp: float) -> str:
    """date-time of RFC 9051 9, in UTC: "17-Jul-1996 09:44:25 +0000"."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return (f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000")


def render_flags(flags: Sequence[str]) -> bytes:
    """A flag list as FLAGS sends it: `(\\Seen $Label1)` (flags are atoms)."""
    return b"(" + " ".join(flags).encode("utf-8") + b")"


class StructureCache:
    """The kept parses of one mailbox's messages for one command: read in one query, new ones
    parsed once and written back in one transaction (`flush`)."""

    def __init__(self, store: MailboxView, name: str, uids: list[int]) -> None:
        self.store = store
        self.name = name
        self._uids = uids
        self._loaded: dict[int, bytes] | None = None
        self._new: dict[int, bytes] = {}

    def get(self, uid: int, raw: bytes | None) -> tuple[ParsedMessage, bytes | None]:
        """The parse of `uid` and the message bytes if they had to be read."""
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        blob = self._loaded.get(uid)
        if blob is not None:
            try:
                return ParsedMessage.from_bytes(_unpack(blob)[1]), raw
            except ValueError:
                pass  # written by another version: parse again below
        if raw is None:
            raw = self.store.message_bytes(self.name, uid)
        parsed = parse_message(raw)
        self._keep(uid, parsed)
        return parsed, raw

    def envelope(self, uid: int) -> bytes | None:
        """ENVELOPE of `uid` as IMAP4rev1 writes it (no UTF-8 quoting): kept rendered beside
        the parse, so a FETCH ENVELOPE of a folder decodes nothing; None if the message is
        gone."""
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        blob = self._loaded.get(uid)
        if blob is not None:
            rendered, _ = _unpack(blob)
            if rendered is not None:
                return rendered
        try:
            parsed, _ = self.get(uid, None)
        except NoSuchMessage:
            return None
        rendered, _ = _unpack(self._loaded[uid])  # parsed just now, or kept without it
        return rendered if rendered is not None else _unpack(self._keep(uid, parsed))[0]

    def _keep(self, uid: int, parsed: ParsedMessage) -> bytes:
        assert self._loaded is not None
        rendered = render_envelope(parsed.envelope)
        blob = b"E%d:" % len(rendered) + rendered + parsed.to_bytes()
        self._loaded[uid] = self._new[uid] = blob
        return blob

    def flush(self) -> None:
        if self._new:
            new, self._new = self._new, {}
            self.store.save_message_structures(self.name, new)


def _unpack(blob: bytes) -> tuple[bytes | None, bytes]:
    """A kept structure: `E<length>:` and the rendered ENVELOPE, then `ParsedMessage.to_bytes`
    (blobs written before the envelope was kept have the latter alone)."""
    if blob[:1] != b"E":
        return None, blob
    length, _, rest = blob[1:].partition(b":")
    try:
        size = int(length)
    except ValueError:
        return None, blob
    return rest[:size], rest[size:]


def _partial(data: bytes, attribute: FetchAttribute) -> bytes:
    if attribute.partial is None:
        return data
    origin, length = attribute.partial
    return data[origin : origin + length]


def _chunks(positions: list[int], body: bool = False) -> Iterator[list[int]]:
    sizes = BODY_CHUNKS if body else CHUNKS
    start = 0
    for size in (*sizes, *([sizes[-1]] * (len(positions) // sizes[-1] + 1))):
        if start >= len(positions):
            return
        yield positions[start : start + size]
        start += size


# -- the generic way: one DataResponse per message -------------------------------------------------


class _Message:
    """One message being fetched: its bytes and parse, loaded only when an item needs them."""

    def __init__(self, store: MailboxView, name: str, record: MessageRecord,
                 structures: StructureCache) -> None:
        self.store = store
        self.name = name
        self.record = record
        self.structures = structures
        self._raw: bytes | None = None
        self._parsed: ParsedMessage | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.store.message_bytes(self.name, self.record.uid)
        return self._raw

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed, raw = self.structures.get(self.record.uid, self._raw)
            self._raw = raw or self._raw
        return self._parsed


def _textual(data: bytes) -> bytes:
    """Message octets for a BODY, BODY.PEEK, RFC822 or RFC822.* item, whose value is a string
    (RFC 9051 9: `nstring`), never RFC 3516's literal8: and a string cannot hold NUL ("CHAR8 =
    %x01-ff", RFC 9051 4.3), which only BINARY's literal8 can carry. A message stored with NUL
    (an APPEND of binary content, `~{n}`) shows each as 0x80 there, as Dovecot does; one for
    one, so that sizes and partial offsets stay those of the message."""
    return data.replace(b"\0", b"\x80") if b"\0" in data else data


def _item(message: _Message, attribute: FetchAttribute) -> Value:
    record = message.record
    name = attribute.name
    if name == "UID":
        return record.uid
    if name == "FLAGS":
        return flag_atoms(record.flags)
    if name == "INTERNALDATE":
        return internaldate_text(record.internaldate)
    if name == "RFC822.SIZE":
        return record.size
    if name == "MODSEQ":
        return [record.modseq]
    if name == "ENVELOPE":
        return message.parsed.envelope  # rendered as ENVELOPE (render_envelope)
    if name == "BODYSTRUCTURE":
        return body_structure_value(message.parsed.body, extensible=True)
    if name == "BODY" and attribute.section is None:
        return body_structure_value(message.parsed.body, extensible=False)
    if name == "RFC822":
        return Literal(_textual(message.raw))
    if name in ("RFC822.HEADER", "RFC822.TEXT"):
        body = message.parsed.body
        text = "HEADER" if name == "RFC822.HEADER" else "TEXT"
        return Literal(_textual(section_bytes(message.raw, body, (), text) or b""))
    if name == "BODY":
        section = attribute.section
        assert section is not None
        if not section.part and section.text is None:
            data: bytes | None = message.raw
        else:
            data = section_bytes(message.raw, message.parsed.body, section.part, section.text,
                                 section.fields)
        return Literal(_textual(_partial(data or b"", attribute)))
    if name in ("BINARY", "BINARY.SIZE"):
        section = attribute.section
        assert section is not None
        if not section.part:
            decoded: bytes | None = message.raw
        else:
            part = find_part(message.parsed.body, section.part)
            if part is None:
                raise CommandFailed(f"No part {'.'.join(map(str, section.part))}", "NONEXISTENT")
            # RFC 3516 4.2: BINARY of a multipart is an error.
            decoded = None if part.is_multipart else decode_part(message.raw, part)
        if decoded is None:
            # RFC 3516 4.3: the server cannot decode this part's encoding.
            raise CommandFailed("Cannot decode this part's Content-Transfer-Encoding",
                                "UNKNOWN-CTE")
        if name == "BINARY.SIZE":
            return len(decoded)
        data = _partial(decoded, attribute)
        return Literal(data, binary=b"\0" in data)
    return None  # EMAILID, THREADID, SAVEDATE: not kept


# -- the command -----------------------------------------------------------------------------------


class _Job:
    """What one FETCH needs while it builds its responses."""

    def __init__(self, session: ImapSession, view: SelectedMailbox,
                 attributes: list[FetchAttribute], positions: list[int],
                 seen_now: set[int]) -> None:
        self.session = session
        self.view = view
        self.store = session.store
        self.attributes = attributes
        self.positions = positions
        self.seen_now = seen_now  # uids whose \Seen this FETCH set
        self.extra: list[FetchAttribute] = []  # items added to the responses of seen_now
        if seen_now:
            if not any(a.name == "FLAGS" for a in attributes):
                self.extra.append(FetchAttribute("FLAGS"))  # RFC 9051 6.4.5: \Seen was set
            if session.condstore and not any(a.name == "MODSEQ" for a in attributes):
                self.extra.append(FetchAttribute("MODSEQ"))
        # Each distinct flag set rendered once (for the session: sets are only added).
        self.rendered_flags = view.rendered_flag_sets(render_flags)

    def flags_bytes(self, flag_id: int) -> bytes:
        return self.rendered_flags[flag_id]

    def records(self, uids: list[int]) -> dict[int, MessageRecord]:
        return {r.uid: r for r in self.store.message_records(self.view.name, uids)}


def fetch(session: ImapSession, command: Fetch) -> list[Response]:
    view: SelectedMailbox = session.require_selected()
    store = session.store
    attributes = list(command.attributes)
    if command.uid and not any(a.name == "UID" for a in attributes):
        attributes.insert(0, FetchAttribute("UID"))  # RFC 9051 6.4.9: UID FETCH always has UID
    if command.changed_since is not None:
        session.enable_condstore()
    if session.condstore and command.changed_since is not None and not any(
            a.name == "MODSEQ" for a in attributes):
        attributes.append(FetchAttribute("MODSEQ"))  # RFC 7162 3.1.4.1
    if any(a.name == "MODSEQ" for a in attributes):
        session.enable_condstore()
    spans = session.resolve_spans(command.sequence_set, command.uid)
    out: list[Response] = []
    if command.vanished and command.changed_since is not None:
        gone = store.expunged_since(view.name, command.changed_since)
        if gone:
            known = {view.uids[i] for start, stop in spans for i in range(start, stop)}
            wanted = set(command.sequence_set.iter_members(sorted(set(gone) | set(view.uids))))
            gone = [uid for uid in gone if uid in wanted and uid not in known]
        if gone:
            out.append(replies.vanished(SequenceSet.of(gone), earlier=True))
    positions = view.positions(spans)
    if command.changed_since is not None:
        since = command.changed_since
        modseqs = view.modseqs
        positions = [i for i in positions if modseqs[i] > since]
    seen_now: set[int] = set()
    if not view.readonly and any(a.sets_seen for a in attributes) and session.has_rights(
            view.name, "s"):
        # RFC 4314 4: without the "s" right a body fetch reads but does not set \Seen.
        seen_now = _set_seen(session, view, positions, out)
    job = _Job(session, view, attributes, positions, seen_now)
    if not seen_now and all(a.name in _INDEX_ITEMS or (
            a.name == "ENVELOPE" and not session.utf8) for a in attributes):
        # ENVELOPE kept rendered as IMAP4rev1 writes it; UTF-8 sessions quote differently.
        return _fetch_index_items(job, out)
    if not seen_now and (plan := listed_plan(attributes)) is not None:
        return _fetch_listed(job, plan, out)
    if all(a.name in _INDEX_ITEMS or _from_file(a) is not None for a in attributes):
        return _fetch_whole_bodies(job, out)
    return _fetch_generic(job, out)


def _fetch_listed(job: _Job, plan: ListedPlan, out: list[Response]) -> list[Response]:
    """A folder listing's FETCH from the index in bulk (sealmail.imap.listing); a chunk the
    index cannot answer whole goes the way of whole headers."""
    for chunk in _chunks(job.positions):
        data = plan.responses(job.store, job.view, job.rendered_flags, chunk)
        if data is None:
            out = _fetch_whole_bodies(_Job(job.session, job.view, job.attributes, chunk, set()),
                                      out)
            continue
        out.append(RenderedResponses(data))
        out = job.session.stream_out(out)
    return out


def fetch_index_responses(session: ImapSession, positions: list[int], names: list[str]
                          ) -> list[Response]:
    """FETCH responses of index items only (`names`, in that order, from UID, FLAGS, MODSEQ,
    INTERNALDATE, RFC822.SIZE) for positions of the selected view: STORE's replies."""
    view = session.require_selected()
    job = _Job(session, view, [FetchAttribute(name) for name in names], positions, set())
    return _fetch_index_items(job, [])


def _set_seen(session: ImapSession, view: SelectedMailbox, positions: list[int],
              out: list[Response]) -> set[int]:
    """Set \\Seen, in one store call, on the messages that lack it (the user's own \\Seen:
    sealmail.store.seen); the UIDs it was set on. A keyword another session set on them and
    this one had not announced yet goes to `out` first (`SelectedMailbox.remember`)."""
    unseen = view.ids_where("\\Seen", present=False)
    flag_ids = view.flag_ids
    uids = [view.uids[i] for i in positions if flag_ids[i] in unseen]
    if not uids:
        return set()
    try:
        update = session.store.update_flags(view.name, uids, ["\\Seen"], "add",
                                            reader=session.userid)
    except StoreError:
        return set()  # the data is still sent; \Seen is best effort here
    out.extend(view.remember(update.records))
    return {record.uid for record in update.records}


def _from_file(attribute: FetchAttribute, listed: bool = False
               ) -> Callable[[bytes], bytes] | None:
    """How to cut the item from the message's bytes without its parse (whole message and
    top-level header sections, as `_item` answers them), or None. `listed`: from the listed
    fields the index keeps instead, a header already (`_listed_only`)."""
    name, section = attribute.name, attribute.section
    if name == "RFC822":
        return _whole
    if name == "RFC822.HEADER":
        return message_header
    if name != "BODY" or section is None or section.part:
        return None
    if section.text is None:
        return _whole
    if section.text == "HEADER":
        return message_header
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        names, exclude = section.fields, section.text == "HEADER.FIELDS.NOT"
        if listed:
            return lambda header: header_fields(header, names, exclude)
        return lambda raw: header_fields(message_header(raw), names, exclude)
    return None


def _whole(raw: bytes) -> bytes:
    return raw


def _listed_only(attributes: Sequence[FetchAttribute]) -> bool:
    """Whether every item cut from the message is BODY[HEADER.FIELDS (...)] of fields the
    index keeps as sent (sealmail.store.headers.LISTED_FIELDS)."""
    cut = [a for a in attributes if a.name not in _INDEX_ITEMS]
    return bool(cut) and all(
        a.name == "BODY" and a.section is not None and not a.section.part
        and a.section.text == "HEADER.FIELDS"
        and _LISTED.issuperset(f.lower() for f in a.section.fields)
        for a in cut)


_FORMATS = {
    "UID": b"UID %d",
    "FLAGS": b"FLAGS %b",
    "MODSEQ": b"MODSEQ (%d)",
    "INTERNALDATE": b"INTERNALDATE %b",
    "RFC822.SIZE": b"RFC822.SIZE %d",
    "ENVELOPE": b"ENVELOPE %b",
}


def _column(values: list[int], chunk: list[int], contiguous: bool) -> list[int]:
    return values[chunk[0] : chunk[-1] + 1] if contiguous else [values[i] for i in chunk]


def _fetch_index_items(job: _Job, out: list[Response]) -> list[Response]:
    """UID / FLAGS / MODSEQ / INTERNALDATE / RFC822.SIZE, and ENVELOPE as the kept parse has
    it rendered (`StructureCache.envelope`): octets built a column at a time."""
    view = job.view
    needs_records = any(a.name in _RECORD_ITEMS for a in job.attributes)
    structures = None
    if any(a.name == "ENVELOPE" for a in job.attributes):
        structures = StructureCache(job.store, view.name, [view.uids[i] for i in job.positions])
    line = b"* %d FETCH (" + b" ".join(_FORMATS[a.name] for a in job.attributes) + b")\r\n"
    try:
        for chunk in _chunks(job.positions):
            out = _index_chunk(job, structures, needs_records, line, chunk, out)
    finally:
        if structures is not None:
            structures.flush()
    return out


def _index_chunk(job: _Job, structures: StructureCache | None, needs_records: bool, line: bytes,
                 chunk: list[int], out: list[Response]) -> list[Response]:
    view = job.view
    contiguous = chunk[-1] - chunk[0] + 1 == len(chunk)
    chunk_uids = _column(view.uids, chunk, contiguous)
    records: dict[int, MessageRecord] = {}
    envelopes: dict[int, bytes | None] = {}
    if needs_records:
        records = job.records(chunk_uids)
    if structures is not None:
        envelopes = {uid: structures.envelope(uid) for uid in chunk_uids}
    if (needs_records and len(records) < len(chunk)) or None in envelopes.values():
        # Expunged meanwhile by another session (RFC 2180 4.1.1): no data left to send; the
        # EXPUNGE follows at the next command that may announce it.
        chunk = [i for i, uid in zip(chunk, chunk_uids, strict=True)
                 if (not needs_records or uid in records)
                 and (structures is None or envelopes[uid] is not None)]
        if not chunk:
            return out
        contiguous = False
        chunk_uids = [view.uids[i] for i in chunk]
    columns: list[Sequence[object]] = []
    for attribute in job.attributes:
        name = attribute.name
        if name == "UID":
            columns.append(chunk_uids)
        elif name == "FLAGS":
            columns.append(list(map(job.rendered_flags.__getitem__,
                                    _column(view.flag_ids, chunk, contiguous))))
        elif name == "MODSEQ":
            columns.append(_column(view.modseqs, chunk, contiguous))
        elif name == "INTERNALDATE":
            columns.append([b'"%b"' % internaldate_text(records[uid].internaldate).encode()
                            for uid in chunk_uids])
        elif name == "ENVELOPE":
            columns.append([envelopes[uid] for uid in chunk_uids])
        else:  # RFC822.SIZE
            columns.append([records[uid].size for uid in chunk_uids])
    seqs = range(chunk[0] + 1, chunk[-1] + 2) if contiguous else [i + 1 for i in chunk]
    out.append(RenderedResponses(b"".join(map(line.__mod__, zip(seqs, *columns, strict=True)))))
    return job.session.stream_out(out)


def _fetch_whole_bodies(job: _Job, out: list[Response]) -> list[Response]:
    """Index items and whole messages or their header: each file read once, what is asked
    cut from it (`_from_file`) and framed as a literal as it is."""
    view = job.view
    needs_records = any(a.name in _RECORD_ITEMS for a in (*job.attributes, *job.extra))
    # What to write for each item, worked out once: (name, literal head, how to cut it from
    # the message's bytes, partial); no head, cut or partial for index items.
    # Only fields the index keeps as sent: no file is opened at all.
    listed = _listed_only((*job.attributes, *job.extra))
    plain = [_body_item(a, listed) for a in job.attributes]
    seen = plain + [_body_item(a, listed) for a in job.extra]
    rendered_flags = job.rendered_flags
    # Headers only: the start of each file is enough (a message of many megabytes is not
    # read for its header), unless its header goes on past it.
    limit = None if any(cut is _whole for _, _, cut, _ in seen) else HEADER_READ
    # One index query for all; the files are read batch by batch as the iterator is drawn.
    everything = None if listed else job.store.message_contents(
        view.name, [view.uids[i] for i in job.positions], limit)
    for batch in _chunks(job.positions, body=limit is None):  # headers: larger batches
        uids = [view.uids[i] for i in batch]
        if everything is None:
            kept = job.store.listed_headers(view.name, uids)
            contents = [kept[uid][1] if uid in kept else None for uid in uids]
        else:
            contents = [next(everything) for _ in batch]
        records = job.records(uids) if needs_records else {}
        pieces: list[bytes] = []  # joined once per batch: the bodies are copied once
        for i, uid, raw in zip(batch, uids, contents, strict=True):
            if raw is None:
                if everything is not None:
                    continue  # expunged meanwhile: as in _fetch_index_items
                try:  # not in the index: gone, or a file the index could not be filled from
                    raw = message_header(job.store.message_bytes(view.name, uid))
                except NoSuchMessage:
                    continue
            elif (everything is not None and limit is not None and len(raw) == limit
                  and len(message_header(raw)) == limit):
                try:
                    raw = job.store.message_bytes(view.name, uid)  # the header goes on past it
                except NoSuchMessage:
                    continue
            pieces.append(b"* %d FETCH (" % (i + 1))
            separator = b""
            for name, head, cut, partial in (seen if uid in job.seen_now else plain):
                if cut is not None:
                    data = cut(raw)
                    if partial is not None:
                        data = data[partial[0] : partial[0] + partial[1]]
                    data = _textual(data)
                    pieces += (separator, head % len(data), data)
                elif name == "UID":
                    pieces += (separator, b"UID %d" % uid)
                elif name == "FLAGS":
                    pieces += (separator, b"FLAGS ", rendered_flags[view.flag_ids[i]])
                elif name == "MODSEQ":
                    pieces += (separator, b"MODSEQ (%d)" % view.modseqs[i])
                else:
                    record = records.get(uid)
                    if record is None:
                        continue  # expunged meanwhile: as in _fetch_index_items
                    pieces += (separator, name.encode(), b" ", render_value(
                        internaldate_text(record.internaldate) if name == "INTERNALDATE"
                        else record.size))
                separator = b" "
            pieces.append(b")\r\n")
        out.append(RenderedResponses(b"".join(pieces)))
        out = job.session.stream_out(out)
    return out


def _body_item(attribute: FetchAttribute, listed: bool
               ) -> tuple[str, bytes, Callable[[bytes], bytes] | None, tuple[int, int] | None]:
    cut = _from_file(attribute, listed)
    if cut is not None:
        # A quoted field name may hold "%": the head is a %-format for the literal's length.
        head = attribute.response_name().replace(b"%", b"%%") + b" {%d}\r\n"
        return attribute.name, head, cut, attribute.partial
    return attribute.name, b"", None, None


def _fetch_generic(job: _Job, out: list[Response]) -> list[Response]:
    view = job.view
    session = job.session
    store = job.store
    uids = [view.uids[i] for i in job.positions]
    needs_records = any(a.name in _RECORD_ITEMS for a in (*job.attributes, *job.extra))
    structures = StructureCache(store, view.name, uids)
    try:
        for chunk in _chunks(job.positions):
            chunk_uids = [view.uids[i] for i in chunk]
            records = job.records(chunk_uids) if needs_records else {}
            for i, uid in zip(chunk, chunk_uids, strict=True):
                known = records.get(uid)
                if needs_records and known is None:
                    continue  # expunged meanwhile: as in _fetch_index_items
                record = MessageRecord(
                    uid, view.modseqs[i],
                    known.internaldate if known is not None else 0.0,
                    known.size if known is not None else 0,
                    known.guid if known is not None else "",
                    view.flags_at(i))
                items = job.attributes if uid not in job.seen_now else [*job.attributes,
                                                                          *job.extra]
                message = _Message(store, view.name, record, structures)
                values: list[tuple[str, Value]] = []
                try:
                    for attribute in items:
                        values.append((attribute.response_name().decode(),
                                       _item(message, attribute)))
                except NoSuchMessage:
                    # Another session expunged it and this one has not been told yet: it is
                    # left out and the others answered (RFC 9051 6.4.9, RFC 2180 4.1.2).
                    continue
                out.append(replies.fetch(i + 1, values))
            out = session.stream_out(out)
    finally:
        structures.flush()
    return out
