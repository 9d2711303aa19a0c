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
as SEARCH (`sealmail.store.headers.header_fields`), compared as Python compares text (by code
point, which is also the octet order of the UTF-8 that SQLite compares).
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Sequence
from typing import NamedTuple

from sealmail.store.headers import decode_words, header_block, header_fields

__all__ = [
    "SORT_COLUMNS",
    "SORT_KEYS",
    "SortFields",
    "ThreadFields",
    "base_subject",
    "sent_date",
    "sort_fields",
]

# The keys a mailbox can be ordered by (RFC 5256 3, RFC 5957 DISPLAYFROM / DISPLAYTO).
SORT_KEYS = frozenset(
    ("ARRIVAL", "DATE", "SIZE", "SUBJECT", "FROM", "TO", "CC", "DISPLAYFROM", "DISPLAYTO")
)

_SUBJECT_LEADER = re.compile(r"^(?:\s*(?:re|fwd?)\s*(?:\[[^\]]*\]\s*)?:\s*|\s*\[[^\]]*\]\s*)",
                             re.IGNORECASE)
_SUBJECT_TRAILER = re.compile(r"(?:\s*\(fwd\)\s*|\s+)$", re.IGNORECASE)


def base_subject(subject: str) -> str:
    """RFC 5256 2.1: the subject without Re:, Fwd:, [blob] leaders and (fwd) trailers."""
    text = " ".join(decode_words(subject).split())
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
    """Of the first address, casefolded: RFC 5256 3 (FROM, TO, CC) its local part; RFC 5957
    (DISPLAYFROM, DISPLAYTO) its display name, or the whole address without one."""
    if not values:
        return "", ""
    name, address = email.utils.parseaddr(values[0])
    return address.partition("@")[0].casefold(), (name or address).casefold()


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


def sort_fields(raw: bytes) -> SortFields:
    """The sortable form of a message (never fails: a missing field gives an empty value)."""
    fields: dict[str, list[str]] = {}
    for name, value in header_fields(header_block(raw), _SORTED_FIELDS):
        fields.setdefault(name, []).append(value)
    subject = (fields.get("subject") or [""])[0]
    from_mailbox, from_display = _first_address(fields.get("from", ()))
    to_mailbox, to_display = _first_address(fields.get("to", ()))
    return SortFields(
        sent_date(fields.get("date", ())),
        subject,
        base_subject(subject),
        from_mailbox,
        from_display,
        to_mailbox,
        to_display,
        _first_address(fields.get("cc", ()))[0],
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
