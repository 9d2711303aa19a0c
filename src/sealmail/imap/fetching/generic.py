"""The generic way: one `DataResponse` per message, each item a value of its own (`item`)."""

from __future__ import annotations

from sealmail.imap.errors import CommandFailed
from sealmail.imap.fetching.job import RECORD_ITEMS, Job, chunks, internaldate_text, textual
from sealmail.imap.fetching.kept import LoadedMessage, StructureCache
from sealmail.imap.fetching.memo import memos_for
from sealmail.imap.selected import flag_atoms
from sealmail.proto.imap import (
    FetchAttribute,
    Literal,
    ParsedMessage,
    Response,
    Value,
    body_structure_value,
    decode_part,
    find_part,
    section_bytes,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MessageRecord
from sealmail.store.errors import NoSuchMessage

__all__ = ["fetch_generic"]


def _partial(data: bytes, attribute: FetchAttribute) -> bytes:
    if attribute.partial is None:
        return data
    origin, length = attribute.partial
    return data[origin : origin + length]


def _item(message: LoadedMessage, attribute: FetchAttribute) -> Value:
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
        return Literal(textual(message.raw))
    if name in ("RFC822.HEADER", "RFC822.TEXT"):
        body = message.parsed.body
        text = "HEADER" if name == "RFC822.HEADER" else "TEXT"
        return Literal(textual(section_bytes(message.raw, body, (), text) or b""))
    if name == "BODY":
        section = attribute.section
        assert section is not None
        if not section.part and section.text is None:
            data: bytes | None = message.raw
        else:
            data = section_bytes(message.raw, message.parsed.body, section.part, section.text,
                                 section.fields)
        return Literal(textual(_partial(data or b"", attribute)))
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


def fetch_generic(job: Job, out: list[Response]) -> list[Response]:
    view = job.view
    session = job.session
    store = job.store
    uids = [view.uids[i] for i in job.positions]
    needs_records = any(a.name in RECORD_ITEMS for a in (*job.attributes, *job.extra))
    # The parses this process keeps: a body section (imaptest's FETCH of one BODY.PEEK[1] or
    # [TEXT]) needs only the part offsets, which cost a blob read and a decode otherwise.
    memo = memos_for(store).parses
    parses = memo.lookup(view.name, view.uidvalidity, uids)
    structures = StructureCache(store, view.name, [uid for uid in uids if uid not in parses])
    made: dict[int, ParsedMessage] = {}
    try:
        for chunk in chunks(job.positions):
            chunk_uids = [view.uids[i] for i in chunk]
            records = job.records(chunk_uids) if needs_records else {}
            for i, uid in zip(chunk, chunk_uids, strict=True):
                known = records.get(uid)
                if needs_records and known is None:
                    continue  # expunged meanwhile: as in fetch_index_items
                record = MessageRecord(
                    uid, view.modseqs[i],
                    known.internaldate if known is not None else 0.0,
                    known.size if known is not None else 0,
                    known.guid if known is not None else "",
                    view.flags_at(i))
                items = job.attributes if uid not in job.seen_now else [*job.attributes,
                                                                          *job.extra]
                message = LoadedMessage(record, structures, parses.get(uid))
                values: list[tuple[str, Value]] = []
                try:
                    for attribute in items:
                        values.append((attribute.response_name().decode(),
                                       _item(message, attribute)))
                except NoSuchMessage:
                    # Another session expunged it and this one has not been told yet: it is
                    # left out and the others answered (RFC 9051 6.4.9, RFC 2180 4.1.2).
                    continue
                if uid not in parses and (parsed := message.parsed_if_read) is not None:
                    made[uid] = parsed
                out.append(replies.fetch(i + 1, values))
            out = session.stream_out(out)
    finally:
        structures.flush()
        memo.add(view.name, view.uidvalidity, made)
    return out
