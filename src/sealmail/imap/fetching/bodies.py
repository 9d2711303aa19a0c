"""Whole messages and top-level headers cut from the files (or the index's listed fields) and
framed as literals as they are."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sealmail.imap.fetching.job import (
    INDEX_ITEMS,
    RECORD_ITEMS,
    Job,
    chunks,
    internaldate_text,
    textual,
)
from sealmail.imap.listing import ListedPlan
from sealmail.proto.imap import (
    FetchAttribute,
    RenderedResponses,
    Response,
    header_fields,
    message_header,
    render_value,
)
from sealmail.store.errors import NoSuchMessage
from sealmail.store.headers import LISTED_FIELDS

__all__ = ["HEADER_READ", "fetch_listed", "fetch_whole_bodies", "from_file"]

# Octets read from the start of each file when only headers are fetched.
HEADER_READ = 64 * 1024
_LISTED = frozenset(LISTED_FIELDS)


def fetch_listed(job: Job, plan: ListedPlan, out: list[Response]) -> list[Response]:
    """A folder listing's FETCH from the index in bulk (sealmail.imap.listing); a chunk the
    index cannot answer whole goes the way of whole headers."""
    for chunk in chunks(job.positions):
        data = plan.responses(job.store, job.view, job.rendered_flags, chunk)
        if data is None:
            out = fetch_whole_bodies(Job(job.session, job.view, job.attributes, chunk, set()),
                                      out)
            continue
        out.append(RenderedResponses(data))
        out = job.session.stream_out(out)
    return out


def from_file(attribute: FetchAttribute, listed: bool = False
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
    cut = [a for a in attributes if a.name not in INDEX_ITEMS]
    return bool(cut) and all(
        a.name == "BODY" and a.section is not None and not a.section.part
        and a.section.text == "HEADER.FIELDS"
        and _LISTED.issuperset(f.lower() for f in a.section.fields)
        for a in cut)


def fetch_whole_bodies(job: Job, out: list[Response]) -> list[Response]:
    """Index items and whole messages or their header: each file read once, what is asked
    cut from it (`from_file`) and framed as a literal as it is."""
    view = job.view
    needs_records = any(a.name in RECORD_ITEMS for a in (*job.attributes, *job.extra))
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
    for batch in chunks(job.positions, body=limit is None):  # headers: larger batches
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
                    continue  # expunged meanwhile: as in fetch_index_items
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
                    data = textual(data)
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
                        continue  # expunged meanwhile: as in fetch_index_items
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
    cut = from_file(attribute, listed)
    if cut is not None:
        # A quoted field name may hold "%": the head is a %-format for the literal's length.
        head = attribute.response_name().replace(b"%", b"%%") + b" {%d}\r\n"
        return attribute.name, head, cut, attribute.partial
    return attribute.name, b"", None, None
