"""FETCH of what clients list a folder with, built in bulk from the index.

`FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date ...)])` is what
mail clients send to list a folder. When every header field asked for is one the index keeps as
sent (sealmail.store.headers.LISTED_FIELDS) no message file is needed: one store query gives the
size and the listed fields of a chunk of messages, and the responses are a line made once per
command put together over columns (sealmail.imap.decimals, as FETCH FLAGS is built), instead of
a loop of appends per item per message. The fields are cut from the listed ones as from the message
(sealmail.rfc5322.header_fields), so both ways give the same octets.

The size and listed fields of a message never change (a UID names one message for as long as
the mailbox keeps its UIDVALIDITY), so each imapd process keeps those it read (`ListedMemo`, up
to `MEMO_MESSAGES` messages, whole mailboxes dropped oldest first): a client listing the same
folder again, or another session of the process, reads them from memory, as Dovecot reads its
cache file, instead of turning 10,000 index rows into Python objects again. A message another
session expunged and this one was not told of yet may then still be answered, which RFC 2180
4.1.1 allows until its EXPUNGE is sent.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealmail.imap.decimals import decimals, interleaved, pieces_of
from sealmail.imap.per_store import PerStore
from sealmail.imap.selected import SelectedMailbox
from sealmail.proto.imap import FetchAttribute
from sealmail.rfc5322 import header_fields_finder
from sealmail.store.api import MailboxView
from sealmail.store.headers import LISTED_FIELDS

__all__ = ["MEMO_MESSAGES", "ListedMemo", "ListedPlan", "listed_plan", "memo_for"]

MEMO_MESSAGES = 50_000  # messages whose size and listed fields a process keeps (~12 MB)

# Items answered from the view or the listed row; with these, a HEADER.FIELDS of listed fields.
_FORMATS = {
    "UID": b"UID %d",
    "FLAGS": b"FLAGS %b",
    "MODSEQ": b"MODSEQ (%d)",
    "RFC822.SIZE": b"RFC822.SIZE %d",
}
_LISTED = frozenset(LISTED_FIELDS)
_Cut = tuple[Callable[[bytes], list[bytes]], tuple[int, int] | None]


@dataclass(frozen=True, slots=True)
class ListedPlan:
    """How each response of the command is written: `line`, a %-format taking the sequence
    number, then a value per item (two for a header item: its length and its octets)."""

    line: bytes
    # (name, the header item's field finder and partial)
    items: tuple[tuple[str, _Cut | None], ...]

    @property
    def pieces(self) -> list[bytes]:
        """The text around the line's values (sealmail.imap.decimals.interleaved)."""
        return pieces_of(self.line)

    def responses(self, store: MailboxView, view: SelectedMailbox,
                  rendered_flags: Sequence[bytes], chunk: list[int]) -> bytes | None:
        """The responses of the messages at positions `chunk`, or None when the index lacks
        one of them (expunged meanwhile, or a row it could not fill): the caller then answers
        that chunk the general way."""
        uids = [view.uids[i] for i in chunk]
        kept = memo_for(store).listed(store, view, uids)
        if len(kept) < len(uids):
            return None
        rows = [kept[uid] for uid in uids]
        listed = [fields for _, fields in rows]
        contiguous = chunk[-1] - chunk[0] + 1 == len(chunk)
        columns: list[Sequence[bytes]] = [decimals(
            range(chunk[0] + 1, chunk[-1] + 2) if contiguous else [i + 1 for i in chunk])]
        for name, cut in self.items:
            if cut is not None:
                # header_fields without a call per message: every listed field ends in CRLF.
                find, partial = cut
                data = [b"".join(fields) + b"\r\n" for fields in map(find, listed)]
                if partial is not None:
                    start, stop = partial[0], partial[0] + partial[1]
                    data = [piece[start:stop] for piece in data]
                columns += (decimals(list(map(len, data))), data)
            elif name == "UID":
                columns.append(decimals(uids, ascending=True))  # the view's, in order
            elif name == "FLAGS":
                flag_ids = view.flag_ids
                columns.append([rendered_flags[flag_ids[i]] for i in chunk])
            elif name == "MODSEQ":
                modseqs = view.modseqs
                columns.append(decimals([modseqs[i] for i in chunk]))
            else:  # RFC822.SIZE
                columns.append(decimals([size for size, _ in rows]))
        out = interleaved(self.pieces, columns)
        # A body string cannot hold NUL (RFC 9051 4.3): as fetching._textual does, one for one,
        # so the literal lengths stay right; nothing else in these lines can be a NUL.
        return out.replace(b"\0", b"\x80") if b"\0" in out else out


def listed_plan(attributes: Sequence[FetchAttribute]) -> ListedPlan | None:
    """The plan for a FETCH of these items, or None when one of them needs more than the view
    and the listed row (INTERNALDATE, a body part, a field the index does not keep...)."""
    parts = [b"* %d FETCH ("]
    items: list[tuple[str, _Cut | None]] = []
    for attribute in attributes:
        name, section = attribute.name, attribute.section
        if name in _FORMATS:
            parts.append(_FORMATS[name])
            items.append((name, None))
            continue
        if (name != "BODY" or section is None or section.part
                or section.text != "HEADER.FIELDS"
                or not _LISTED.issuperset(f.lower() for f in section.fields)):
            return None
        # A quoted field name may hold "%": the head is a %-format for the literal's length.
        parts.append(attribute.response_name().replace(b"%", b"%%") + b" {%d}\r\n%b")
        items.append((name, (header_fields_finder(section.fields), attribute.partial)))
    if all(cut is None for _, cut in items):
        return None  # nothing from the listed fields: fetching's index path answers it
    return ListedPlan(parts[0] + b" ".join(parts[1:]) + b")\r\n", tuple(items))



class ListedMemo:
    """(RFC822.SIZE, listed fields) of messages read by this process, per mailbox."""

    def __init__(self, capacity: int = MEMO_MESSAGES) -> None:
        self._capacity = capacity
        self._mailboxes: OrderedDict[tuple[str, int], dict[int, tuple[int, bytes]]] = (
            OrderedDict())
        self._lock = threading.Lock()

    def listed(self, store: MailboxView, view: SelectedMailbox, uids: list[int]
               ) -> dict[int, tuple[int, bytes]]:
        """Those of `uids` the store has (or had, see above): kept, else read and kept."""
        key = (view.name, view.uidvalidity)
        with self._lock:
            known = self._mailboxes.get(key)
            if known is not None:
                self._mailboxes.move_to_end(key)
        if known is None:
            known = {}
        missing = [uid for uid in uids if uid not in known]
        if not missing:
            return known
        read = store.listed_headers(view.name, missing)
        with self._lock:
            entry = self._mailboxes.setdefault(key, {})
            self._mailboxes.move_to_end(key)
            if len(entry) + len(read) <= self._capacity:
                entry.update(read)
                total = sum(map(len, self._mailboxes.values()))
                while total > self._capacity:  # never this mailbox: it fits alone
                    total -= len(self._mailboxes.popitem(last=False)[1])
        if not known:
            return read
        return {**{uid: known[uid] for uid in uids if uid in known}, **read}


# The listed fields kept of a store's messages.
memo_for = PerStore(ListedMemo)
