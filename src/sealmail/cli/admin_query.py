"""doveadm's search query language (doveadm-search-query(7)), the part `sealmail admin` keeps.

A query is words, ANDed: `mailbox INBOX seen savedbefore 30d subject invoice`. Kept: `mailbox
PATTERN` (IMAP wildcards * and %), `all`, the flag keys (`seen`, `unseen`, `flagged`, `deleted`,
`answered`, `draft` and their `un` forms), `keyword K`, `uid SET`, `larger`/`smaller SIZE`
(k, M, G suffixes), the date keys on the received date (`before`, `since`, `on`, and doveadm's
`savedbefore`, `savedsince`, `savedon`: a message is saved when it is received here) with a date
(YYYY-MM-DD, 06-Dec-2026, seconds since the epoch) or an interval back from now (`30d`, `2w`,
`12h`, `45mins`), and the header keys `from`, `to`, `cc`, `subject`, `header NAME`. Anything
else is refused by name, so a typo never selects everything (and `expunge` deletes nothing).
"""

from __future__ import annotations

import email.header
import email.parser
import email.policy
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sealmail.store.api import MessageRecord

FLAG_KEYS = {
    "seen": "\\Seen", "flagged": "\\Flagged", "deleted": "\\Deleted",
    "answered": "\\Answered", "draft": "\\Draft",
}
HEADER_KEYS = {"from", "to", "cc", "bcc", "subject"}
DATE_KEYS = {"before", "since", "on", "savedbefore", "savedsince", "savedon"}
_INTERVAL = re.compile(r"(\d+)\s*(s|secs?|m|mins?|h|hours?|d|days?|w|weeks?)", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE = re.compile(r"(\d+)([kmg]?)", re.IGNORECASE)


class QueryError(ValueError):
    """A query sealmail admin cannot run; the text names the word."""


@dataclass(frozen=True, slots=True)
class Term:
    key: str  # lower-case key
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    mailboxes: tuple[str, ...]  # patterns of `mailbox`; empty: every mailbox
    terms: tuple[Term, ...]


_ARITY = {"mailbox": 1, "keyword": 1, "unkeyword": 1, "uid": 1, "larger": 1, "smaller": 1,
          "header": 2, **dict.fromkeys(DATE_KEYS, 1), **dict.fromkeys(HEADER_KEYS, 1)}
_BARE = {"all", *FLAG_KEYS, *(f"un{k}" for k in FLAG_KEYS)}


def parse_query(words: Iterable[str]) -> Query:
    pending = list(words)
    mailboxes: list[str] = []
    terms: list[Term] = []
    while pending:
        key = pending.pop(0).lower()
        if key in _BARE:
            terms.append(Term(key))
            continue
        if key not in _ARITY:
            raise QueryError(f"unknown search key {key!r}")
        count = _ARITY[key]
        if len(pending) < count:
            raise QueryError(f"search key {key!r} needs {count} argument(s)")
        args, pending = tuple(pending[:count]), pending[count:]
        if key == "mailbox":
            mailboxes.append(args[0])
        else:
            _check(key, args)
            terms.append(Term(key, args))
    return Query(tuple(mailboxes), tuple(terms))


def _check(key: str, args: tuple[str, ...]) -> None:
    """Refuse malformed arguments when parsing, before any mailbox is touched."""
    if key in DATE_KEYS:
        cutoff(args[0], datetime.now(UTC))
    elif key in ("larger", "smaller"):
        size_of(args[0])
    elif key == "uid":
        uid_ranges(args[0])


def size_of(text: str) -> int:
    found = _SIZE.fullmatch(text)
    if found is None:
        raise QueryError(f"{text!r} is not a size")
    factor = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}[found.group(2).lower()]
    return int(found.group(1)) * factor


def cutoff(text: str, now: datetime) -> tuple[datetime, bool]:
    """(the moment a date word names, whether it is a whole day); QueryError when none."""
    interval = _INTERVAL.fullmatch(text)
    if interval is not None:
        seconds = int(interval.group(1)) * _UNIT_SECONDS[interval.group(2)[0].lower()]
        return now - timedelta(seconds=seconds), False
    if text.isdigit():
        return datetime.fromtimestamp(int(text), UTC), False
    for form in ("%Y-%m-%d", "%d-%b-%Y"):
        try:
            return datetime.strptime(text, form).replace(tzinfo=UTC), True
        except ValueError:
            continue
    raise QueryError(f"{text!r} is not a date or an interval (30d, 2w, 2026-12-06)")


def uid_ranges(text: str) -> list[tuple[int, int | None]]:
    """An IMAP UID set (1:5,7,10:*); None as the upper bound is `*`."""
    ranges: list[tuple[int, int | None]] = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        try:
            first = int(low) if low != "*" else 0
            last = None if high == "*" or low == "*" else int(high or low)
        except ValueError:
            raise QueryError(f"{text!r} is not a UID set") from None
        ranges.append((first, last))
    return ranges


HeaderSearch = Callable[[str, str], set[int]]  # (field, needle) -> UIDs whose field contains it


def matches(
    term: Term, record: MessageRecord, headers: HeaderSearch, now: datetime
) -> bool:
    key = term.key
    if key == "all":
        return True
    if key in FLAG_KEYS:
        return FLAG_KEYS[key] in record.flags
    if key.startswith("un") and key[2:] in FLAG_KEYS:
        return FLAG_KEYS[key[2:]] not in record.flags
    if key in ("keyword", "unkeyword"):
        return (term.args[0] in record.flags) == (key == "keyword")
    if key == "uid":
        return any(low <= record.uid and (high is None or record.uid <= high)
                   for low, high in uid_ranges(term.args[0]))
    if key == "larger":
        return record.size > size_of(term.args[0])
    if key == "smaller":
        return record.size < size_of(term.args[0])
    if key in DATE_KEYS:
        return _date_matches(key.removeprefix("saved"), term.args[0], record.internaldate, now)
    if key in HEADER_KEYS:
        return record.uid in headers(key, term.args[0])
    if key == "header":
        return record.uid in headers(term.args[0].lower(), term.args[1])
    raise QueryError(f"unknown search key {key!r}")  # parse_query lets none through


def _date_matches(how: str, word: str, received: float, now: datetime) -> bool:
    moment, whole_day = cutoff(word, now)
    when = datetime.fromtimestamp(received, UTC)
    if whole_day:
        day = when.date()
        wanted = moment.date()
        return {"before": day < wanted, "since": day >= wanted, "on": day == wanted}[how]
    return {"before": when < moment, "since": when >= moment,
            "on": when.date() == moment.date()}[how]


def header_contains(raw: bytes, field: str, needle: str) -> bool:
    """The per-message check for what the header index cannot answer: any `field` whose
    decoded value contains `needle`, case-insensitively (as IMAP SEARCH compares)."""
    parsed = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)
    wanted = needle.casefold()
    for value in parsed.get_all(field, []):
        try:
            text = str(email.header.make_header(email.header.decode_header(str(value))))
        except (ValueError, LookupError):
            text = str(value)
        if wanted in text.casefold():
            return True
    return False
