"""The searchable form of a message's header, kept in the index at delivery.

IMAP SEARCH FROM / TO / CC / BCC / SUBJECT / HEADER (RFC 9051 6.4.4) is "a case-insensitive
substring match" on a field's value. Reading every message file per SEARCH is what made header
searches slow; instead each message gets one small `header_index` row holding the values of the
fields clients search (`INDEXED_FIELDS`), already unfolded, RFC 2047-decoded and casefolded, and
SQLite answers with `instr` over one contiguous range of rows; no file is opened. Other fields
are searched in the message files, as before. The set is small on purpose: a scan costs what the
rows weigh, and a whole header (Received, DKIM-Signature, ...) would weigh ten times more.

The decoding here is THE definition of a field's searchable value: the IMAP layer's per-message
evaluation (`sealmail.imap.searching`) uses the same `searchable_fields`, so the index and a
message read from disk can never disagree. An address field (FROM, TO, ...: "the envelope
structure's" field, RFC 9051 6.4.4) has one more value beside its text: its addresses as
mailbox@host, as ENVELOPE parses them (`sealmail.rfc5322.parse_address_list`), so that an
address written with comments or spaces inside (`<user (x)@ (y) example.org>`) is found too.

Form (a BLOB, UTF-8 with surrogates passed through, so that a substring of the octets is a
substring of the text): for each indexed field present, in `INDEXED_FIELDS` order,
`RS name US length value`, where `length` is six decimal digits counting the octets of `value`
and `value` joins the casefolded values of every occurrence of the field with GS (RS, US, GS =
0x1E, 0x1F, 0x1D). A value holding RS or GS, or longer than 999999 octets, cannot be kept: such a
message gets a NULL form and is searched in its file, with the same result.
"""

from __future__ import annotations

import email.header
import functools
import re

from sealmail import rfc5322
from sealmail.rfc5322 import address_list
from sealmail.rfc5322 import message_header as header_block

__all__ = [
    "ADDRESS_FIELDS",
    "FIELD_SEPARATOR",
    "INDEXED_FIELDS",
    "LISTED_FIELDS",
    "NAME_SEPARATOR",
    "VALUE_SEPARATOR",
    "decode_words",
    "encode",
    "header_block",
    "header_fields",
    "listed_form",
    "raw_header_fields",
    "searchable_fields",
    "searchable_form",
]

# Fields kept in the index: those SEARCH names, and the short ones clients search with HEADER.
INDEXED_FIELDS = ("subject", "from", "to", "cc", "bcc", "reply-to", "sender", "message-id",
                  "in-reply-to", "list-id")
# Fields whose value is an address list: searched also by their addresses (see above).
ADDRESS_FIELDS = frozenset(("from", "sender", "reply-to", "to", "cc", "bcc"))
FIELD_SEPARATOR = b"\x1e"
NAME_SEPARATOR = b"\x1f"
VALUE_SEPARATOR = b"\x1d"
LENGTH_DIGITS = 6
_INDEXED = frozenset(INDEXED_FIELDS)
_FOLD = re.compile(r"\n[ \t]+")


def decode_words(value: str) -> str:
    """RFC 2047 encoded-words decoded, best effort (never raises). A short value is
    remembered: the searchable and the sortable form of one message decode the same Subject
    and From, and the email package's decoder is most of what a header's forms cost."""
    if "=?" not in value:
        return value  # what the email package gives back for text without an encoded-word
    if len(value) > 998:
        return _decode_words(value)
    return _remembered_words(value)


def _decode_words(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


_remembered_words = functools.lru_cache(maxsize=256)(_decode_words)


def header_fields(block: bytes, only: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(lower-case name, unfolded RFC 2047-decoded value) of each field of a header block (of
    those named in `only`: decoding is most of the cost)."""
    return [(name, decode_words(value)) for name, value in raw_header_fields(block)
            if only is None or name in only]


def searchable_fields(block: bytes, only: frozenset[str] | None = None,
                      raw: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """(lower-case name, text) that SEARCH matches a header's fields with, not yet casefolded:
    each field's value as `header_fields` gives it, and after an address field's value the
    field again with its addresses (mailbox@host, comma-separated; none for a group's name).
    An address without a host is left out: its text is in the value already, and a value
    that is no address at all (`From: =?utf-8?q?Caf=C3=A9?=`, a display name alone) would
    otherwise be searched undecoded, "3" matching the "C3" of its encoding.
    `raw`: the block's `raw_header_fields`, when the caller split it already."""
    out: list[tuple[str, str]] = []
    for name, value in raw_header_fields(block) if raw is None else raw:
        if only is not None and name not in only:
            continue
        out.append((name, decode_words(value)))
        if name in ADDRESS_FIELDS:
            specs = ", ".join(
                f"{a.mailbox}@{a.host}" for a in address_list(value) if a.mailbox and a.host)
            if specs:
                out.append((name, specs))
    return out


def raw_header_fields(block: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value as sent) of each field of a header block."""
    text = block.decode("utf-8", "replace").replace("\r\n", "\n")
    fields = []
    for line in _FOLD.sub(" ", text).split("\n"):
        name, colon, value = line.partition(":")
        if colon and name and " " not in name.strip():
            fields.append((name.strip().lower(), value.strip()))
    return fields


def encode(text: str) -> bytes:
    """Text as the form stores it (and as a needle is compared with it)."""
    return text.encode("utf-8", "surrogatepass")


def searchable_form(raw: bytes, fields: list[tuple[str, str]] | None = None) -> bytes | None:
    """The `header_index.fields` value of a message, or None when it cannot be kept.
    `fields`: its header's `raw_header_fields`, when the caller split it already (delivery
    shares one split between this and `sealmail.store.sorting.sort_fields`)."""
    grouped: dict[str, list[bytes]] = {}
    block = b"" if fields is not None else header_block(raw)
    for name, value in searchable_fields(block, _INDEXED, fields):  # only what is kept
        grouped.setdefault(name, []).append(encode(value.casefold()))
    form = bytearray()
    for name in INDEXED_FIELDS:
        values = grouped.get(name)
        if values is None:
            continue
        if any(FIELD_SEPARATOR in v or VALUE_SEPARATOR in v for v in values):
            return None
        joined = VALUE_SEPARATOR.join(values)
        if len(joined) >= 10**LENGTH_DIGITS:
            return None
        form += FIELD_SEPARATOR + name.encode() + NAME_SEPARATOR
        form += b"%0*d" % (LENGTH_DIGITS, len(joined)) + joined
    return bytes(form)


# The fields mail clients list a folder with (the HEADER.FIELDS of mutt, Thunderbird, Roundcube,
# K-9; Cyrus keeps such a set in its cache file): kept as sent in the index, so a FETCH of them
# reads no message file (`listed_form`).
LISTED_FIELDS = (
    "from", "to", "cc", "bcc", "subject", "date", "message-id", "references", "in-reply-to",
    "reply-to", "sender", "content-type", "content-description", "priority", "x-priority",
    "importance", "newsgroups", "list-post", "list-subscribe", "list-unsubscribe", "list-id",
    "lines", "x-label", "x-original-to", "disposition-notification-to", "return-receipt-to",
)


def listed_form(raw: bytes) -> bytes:
    """The `header_index.listed` value of a message: its `LISTED_FIELDS` as sent, in their
    order, and the empty line (BODY[HEADER.FIELDS (LISTED_FIELDS)])."""
    return rfc5322.header_fields(header_block(raw), LISTED_FIELDS, False)


def indexed_value(form: bytes, field: str) -> bytes | None:
    """The value `searchable_form` keeps for `field` (lower case), or None when the message has
    no such field: what the disk store's SEARCH query extracts in SQL."""
    key = FIELD_SEPARATOR + field.encode() + NAME_SEPARATOR
    at = form.find(key)
    if at < 0:
        return None
    at += len(key)
    length = int(form[at : at + LENGTH_DIGITS])
    at += LENGTH_DIGITS
    return form[at : at + length]
