"""The sortable form of a message, kept in the index beside its searchable form.

IMAP SORT and THREAD (RFC 5256, RFC 5957) order a mailbox by values taken from each message's
header: the sent date, the base subject, the first From/To/Cc address or display name, and for
THREAD REFERENCES the Message-ID, References and In-Reply-To. Reading and parsing every message
file per SORT is what made SORT cost a second on a 10,000-message mailbox (webmail clients sort
on every listing); instead the values are worked out once, at delivery, and kept as columns of
the message's `header_index` row, so that SQLite orders a mailbox with one indexed scan. A row
whose columns are NULL (stored before index version 5, or rewritten by reconstruct) gets them
from the first SORT or THREAD that needs them.

These functions are THE definition of each key: the values come from the same decoded fields
as SEARCH (`sealmail.store.headers.header_fields`), the addresses from ENVELOPE's parse
(`sealmail.rfc5322.parse_address_list`). String keys are kept in RFC 5256's collation,
i;ascii-casemap (RFC 4790 9.2: a-z as A-Z, then octet order): stored with ASCII letters upper
case, they compare as Python compares text (by code point, which is also the octet order of the
UTF-8 that SQLite compares), so "[" and "_" sort after the letters as they should.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from typing import NamedTuple, TypeAlias

from sealmail.rfc5322 import address_list
from sealmail.store.headers import decode_words, header_block, raw_header_fields

__all__ = [
    "SORT_COLUMNS",
    "SORT_KEYS",
    "SortFields",
    "SortValue",
    "ThreadFields",
    "ascii_casemap",
    "base_subject",
    "sent_date",
    "sort_fields",
]

# The keys a mailbox can be ordered by (RFC 5256 3, RFC 5957 DISPLAYFROM / DISPLAYTO).
SORT_KEYS = frozenset(
    ("ARRIVAL", "DATE", "SIZE", "SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO")
)

# RFC 5256 5 (the ABNF of the base subject): subj-blob = "[" *BLOBCHAR "]" *WSP, where BLOBCHAR
# is any CHAR8 but "[" and "]"; subj-refwd = ("re" / ("fw" ["d"])) *WSP [subj-blob] ":";
# subj-leader = (*subj-blob subj-refwd) / WSP; subj-trailer = "(fwd)" / WSP.
_BLOB = r"\[[^\[\]]*\][ \t]*"
_SUBJECT_LEADER = re.compile(rf"(?:{_BLOB})*(?:re|fwd?)[ \t]*(?:{_BLOB})?:|[ \t]", re.IGNORECASE)
_SUBJECT_BLOB = re.compile(_BLOB)
_SUBJECT_TRAILER = re.compile(r"(?:\(fwd\)|[ \t])\Z", re.IGNORECASE)
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def ascii_casemap(text: str) -> str:
    """The i;ascii-casemap form (RFC 4790 9.2) that RFC 5256 sorts strings by: ASCII letters
    upper case, every other character as it is."""
    return text.translate(_ASCII_UPPER)


def base_subject(subject: str) -> str:
    """RFC 5256 2.1: the subject without Re:, Fwd:, [blob] leaders and (fwd) trailers, nested
    [fwd: ...] unwrapped, in i;ascii-casemap form (`ascii_casemap`)."""
    text = " ".join(decode_words(subject).split())  # (1) decoded, white space single spaces
    while True:
        while (trailer := _SUBJECT_TRAILER.search(text)) is not None:  # (2)
            text = text[: trailer.start()]
        while True:  # (5): (3) and (4) until neither changes anything
            leader = _SUBJECT_LEADER.match(text)
            if leader is not None and leader.end():
                text = text[leader.end():]  # (3)
                continue
            blob = _SUBJECT_BLOB.match(text)
            if blob is not None and text[blob.end():]:
                text = text[blob.end():]  # (4): only if a subject is left
                continue
            break
        if text[:5].lower() == "[fwd:" and text.endswith("]"):  # (6), then again from (2)
            text = text[5:-1]
            continue
        return ascii_casemap(text)  # (7)


def sent_date(values: Sequence[str]) -> float | None:
    """The first Date field as a POSIX time; None without one that parses (RFC 5256 2.2: the
    internal date stands in)."""
    if values:
        try:
            return email.utils.parsedate_to_datetime(values[0]).timestamp()
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return None


def _first_address(values: Sequence[str]) -> tuple[str, str]:
    """Of the first address of the first field (as sent), in i;ascii-casemap form: RFC 5256 3
    (FROM, TO, CC) its addr-mailbox, RFC 5957 (DISPLAYFROM, DISPLAYTO) its display name, or
    addr-mailbox@addr-host without one. A group comes first as ENVELOPE has it (RFC 9051
    7.5.2: NIL NIL name NIL): its name is both (imaptest's sort-addresses, sort-display-to)."""
    for address in address_list(values[0]) if values else ():
        if address.mailbox is None:
            continue  # the end of a group
        if address.host is None:
            name = decode_words(address.mailbox)
            return ascii_casemap(name), ascii_casemap(name)
        display = decode_words(address.name) if address.name else (
            f"{address.mailbox}@{address.host}" if address.host else address.mailbox)
        return ascii_casemap(address.mailbox), ascii_casemap(" ".join(display.split()))
    return "", ""


class SortFields(NamedTuple):
    """One message's columns, in `SORT_COLUMNS` order."""

    sentdate: float | None
    subject: str  # decoded, as sent (THREAD looks for reply markers in it)
    base_subject: str
    from_mailbox: str
    from_display: str
    to_mailbox: str
    to_display: str
    cc_mailbox: str
    message_id: str  # every occurrence of the field, joined with spaces
    refs: str
    in_reply_to: str


SORT_COLUMNS = SortFields._fields


# A message's value for one sort key: a date or size, or a string in i;ascii-casemap form; None
# where a store could not make the message's sortable form (an unreadable file).
SortValue: TypeAlias = float | int | str | None


class ThreadFields(NamedTuple):
    """What THREAD (RFC 5256) needs of one message."""

    uid: int
    message_id: str
    references: str
    in_reply_to: str
    subject: str
    base_subject: str
    sent: float  # the sent date, else the internal date


_SORTED_FIELDS = frozenset(
    ("date", "subject", "from", "to", "cc", "message-id", "references", "in-reply-to")
)


def sort_fields(raw: bytes, header: list[tuple[str, str]] | None = None) -> SortFields:
    """The sortable form of a message (never fails: a missing field gives an empty value).
    `header`: its `raw_header_fields`, when the caller split it already."""
    sent: dict[str, list[str]] = {}  # as sent: an address list is parsed before decoding
    if header is None:
        header = raw_header_fields(header_block(raw))
    for name, value in header:
        if name in _SORTED_FIELDS:
            sent.setdefault(name, []).append(value)
    fields = {name: [decode_words(v) for v in values] for name, values in sent.items()}
    subject = (fields.get("subject") or [""])[0]
    from_mailbox, from_display = _first_address(sent.get("from", ()))
    to_mailbox, to_display = _first_address(sent.get("to", ()))
    return SortFields(
        sent_date(fields.get("date", ())),
        subject,
        base_subject(subject),
        from_mailbox,
        from_display,
        to_mailbox,
        to_display,
        _first_address(sent.get("cc", ()))[0],
        " ".join(fields.get("message-id", ())),
        " ".join(fields.get("references", ())),
        " ".join(fields.get("in-reply-to", ())),
    )


def sort_value(key: str, fields: SortFields, internaldate: float, size: int) -> float | str:
    """A message's value for sort key `key` (RFC 5256 3, RFC 5957): what the disk store's SQL
    orders by (sealmail.store.disk.header_index), for a backend that orders in Python."""
    if key == "ARRIVAL":
        return internaldate
    if key == "DATE":  # RFC 5256 2.2: the sent date, else the internal date
        return internaldate if fields.sentdate is None else fields.sentdate
    if key == "SIZE":
        return size
    value: str = getattr(fields, _KEY_COLUMNS[key])
    return value


_KEY_COLUMNS = {
    "SUBJECT": "base_subject",
    "FROM": "from_mailbox",
    "TO": "to_mailbox",
    "CC": "cc_mailbox",
    "DISPLAYFROM": "from_display",
    "DISPLAYTO": "to_display",
}
assert frozenset(_KEY_COLUMNS) | {"ARRIVAL", "DATE", "SIZE"} == SORT_KEYS


def thread_fields_of(uid: int, fields: SortFields, internaldate: float) -> ThreadFields:
    """What THREAD needs of one message, from its sortable form."""
    sent = internaldate if fields.sentdate is None else fields.sentdate
    return ThreadFields(uid, fields.message_id, fields.refs, fields.in_reply_to, fields.subject,
                        fields.base_subject, sent)
