"""Index items (and ENVELOPE as kept rendered) written a column at a time over the view."""

from __future__ import annotations

from collections.abc import Sequence

from sealmail.imap.fetching.job import RECORD_ITEMS, Job, chunks, internaldate_text
from sealmail.imap.fetching.kept import StructureCache
from sealmail.proto.imap import RenderedResponses, Response
from sealmail.store.api import MessageRecord

__all__ = ["fetch_index_items"]


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


def fetch_index_items(job: Job, out: list[Response]) -> list[Response]:
    """UID / FLAGS / MODSEQ / INTERNALDATE / RFC822.SIZE, and ENVELOPE as the kept parse has
    it rendered (`StructureCache.envelope`): octets built a column at a time."""
    view = job.view
    needs_records = any(a.name in RECORD_ITEMS for a in job.attributes)
    structures = None
    if any(a.name == "ENVELOPE" for a in job.attributes):
        structures = StructureCache(job.store, view.name, [view.uids[i] for i in job.positions])
    line = b"* %d FETCH (" + b" ".join(_FORMATS[a.name] for a in job.attributes) + b")\r\n"
    try:
        for chunk in chunks(job.positions):
            out = _index_chunk(job, structures, needs_records, line, chunk, out)
    finally:
        if structures is not None:
            structures.flush()
    return out


def _index_chunk(job: Job, structures: StructureCache | None, needs_records: bool, line: bytes,
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
