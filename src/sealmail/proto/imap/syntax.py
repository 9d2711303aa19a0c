"""The lexical layer of IMAP (RFC 9051 9, formal syntax): reading tokens from a whole command and
rendering strings back with the right form.

A command reaches the parser *assembled*: its lines with their CRLFs and each literal's octets in
place right after its `{n}` CRLF, exactly as it came over the wire. So the grammar is read as the
RFC writes it, e.g.

    literal   = "{" number64 ["+"] "}" CRLF *CHAR8     ; RFC 9051 9, RFC 7888
    literal8  = "~{" number64 ["+"] "}" CRLF *OCTET    ; RFC 3516 / RFC 9051
    quoted    = DQUOTE *QUOTED-CHAR DQUOTE
    astring   = 1*ASTRING-CHAR / string
    atom      = 1*ATOM-CHAR
    ATOM-CHAR = <any CHAR except atom-specials>
    atom-specials = "(" / ")" / "{" / SP / CTL / list-wildcards / quoted-specials / resp-specials

and rendering a parsed command gives back bytes that parse to the same command.
"""

from __future__ import annotations

import contextlib
import re
from collections import OrderedDict
from collections.abc import Callable, Hashable
from datetime import date, datetime, timedelta, timezone
from typing import Generic, TypeVar

from sealmail.proto.imap.errors import BadCommand, NestingTooDeep, TooManyItems

__all__ = [
    "MONTHS",
    "Reader",
    "canonical_flag",
    "render_astring",
    "render_date",
    "render_datetime",
    "render_list_mailbox",
    "render_nstring",
    "render_string",
]

T = TypeVar("T")

# Character classes, from atom-specials (RFC 9051 9). 8-bit octets never appear in atoms.
ATOM = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\]\x80-\xff]+')
ASTRING = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\\x80-\xff]+')  # ASTRING-CHAR adds "]"
LIST_MAILBOX = re.compile(rb'[^(){ \x00-\x1f\x7f"\\\x80-\xff]+')  # list-char adds "%" "*"
TAG = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\+\x80-\xff]+')  # ASTRING-CHAR except "+"
NUMBER = re.compile(rb"[0-9]+")
LITERAL = re.compile(rb"(~?)\{([0-9]+)(\+?)\}\r\n")
QUOTED = re.compile(rb'"((?:[^"\\\r\n\x00]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_QUOTED_SAFE = re.compile(rb'[^\r\n\x00\x80-\xff]*')
_QUOTED_SAFE_UTF8 = re.compile(rb'[^\r\n\x00]*')
_FLAG = re.compile(rb"\\?" + ATOM.pattern)

NUMBER_MAX = 0xFFFFFFFF  # number = 32-bit unsigned
NUMBER64_MAX = 0x7FFFFFFFFFFFFFFF  # number64 = 63-bit (RFC 9051 9)
# Quoted strings longer than this are sent as literals (clients are happier with big literals).
QUOTED_MAX = 1024

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.upper(): index + 1 for index, name in enumerate(MONTHS)}
_DATE_TEXT = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) '  # RFC 3501 8 sends "7-Feb"
    rb'([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)

_FLAG_LIST = re.compile(rb"\((" + _FLAG.pattern + rb"(?: " + _FLAG.pattern + rb")*)?\)")
_ZONES: dict[bytes, timezone] = {}  # "+0200" -> its timezone, made once (a client has few)


def _zone(text: bytes) -> timezone:
    """zone = ("+" / "-") 4DIGIT; ValueError past 23:59."""
    zone = _ZONES.get(text)
    if zone is None:
        offset = timedelta(hours=int(text[1:3]), minutes=int(text[3:5]))
        zone = timezone(-offset if text[:1] == b"-" else offset)
        if len(_ZONES) >= 1024:
            _ZONES.clear()
        _ZONES[text] = zone
    return zone


SYSTEM_FLAGS = {
    f.upper(): f
    for f in ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft", "\\Recent")
}


def canonical_flag(flag: str) -> str:
    """System flags in their RFC spelling (flags are case-insensitive); others as sent."""
    return SYSTEM_FLAGS.get(flag.upper(), flag)


class Reader:
    """A cursor over one assembled command, with the limits the grammar cannot express."""

    __slots__ = ("_depth", "_items", "data", "max_depth", "max_items", "pos")

    def __init__(self, data: bytes, max_depth: int = 16, max_items: int = 10000) -> None:
        self.data = data
        self.pos = 0
        self.max_depth = max_depth
        self.max_items = max_items
        self._depth = 0
        self._items = 0

    # -- position -----------------------------------------------------------------------------

    def at_end(self) -> bool:
        return self.pos >= len(self.data)

    def peek(self) -> int:
        """The next octet, or -1 at the end."""
        return self.data[self.pos] if self.pos < len(self.data) else -1

    def startswith(self, prefix: bytes) -> bool:
        return self.data.startswith(prefix, self.pos)

    def startswith_word(self, word: bytes) -> bool:
        """True when the next token is the atom `word` (case-insensitive)."""
        end = self.pos + len(word)
        if self.data[self.pos : end].upper() != word:
            return False
        return end == len(self.data) or self.data[end] in b" )"

    def fail(self, what: str) -> BadCommand:
        shown = self.data[self.pos : self.pos + 20].decode("ascii", "replace")
        where = f" near {shown!r}" if shown else " at end of command"
        return BadCommand(f"Invalid syntax: expected {what}{where}")

    def expect(self, token: bytes, what: str | None = None) -> None:
        if not self.data.startswith(token, self.pos):
            raise self.fail(what or repr(token.decode("ascii")))
        self.pos += len(token)

    def expect_word(self, word: bytes) -> None:
        """An atom compared case-insensitively (command names, keywords)."""
        if not self.startswith_word(word):
            raise self.fail(word.decode("ascii"))
        self.pos += len(word)

    def sp(self) -> None:
        self.expect(b" ", "a space")

    def end(self) -> None:
        """Nothing may follow the last argument (RFC 9051 2.2.1: the command ends with CRLF)."""
        if not self.at_end():
            raise self.fail("end of command")

    def untouched(self) -> bool:
        """No item counted and no list entered yet: what follows parses the same whatever came
        before (the parser's cache of FETCH and STORE tails relies on it)."""
        return self._items == 0 and self._depth == 0

    def count_item(self, count: int = 1) -> None:
        self._items += count
        if self._items > self.max_items:
            raise TooManyItems(f"Too many items in command (limit {self.max_items})")

    @property
    def items(self) -> int:
        """Items counted so far."""
        return self._items

    def read_to_end(self, items: int) -> None:
        """The rest was read elsewhere (a memo of its parts): count its `items`, go to the end."""
        self.count_item(items)
        self.pos = len(self.data)

    # -- tokens -------------------------------------------------------------------------------

    def _match(self, pattern: re.Pattern[bytes], what: str) -> bytes:
        match = pattern.match(self.data, self.pos)
        if not match:
            raise self.fail(what)
        self.pos = match.end()
        return match.group(0)

    def tag(self) -> str:
        return self._match(TAG, "a tag").decode("ascii")

    def atom(self) -> str:
        return self._match(ATOM, "an atom").decode("ascii")

    def flag(self) -> str:
        """flag = "\\" atom / atom (system flags, flag-extension, flag-keyword)."""
        return canonical_flag(self._match(_FLAG, "a flag").decode("ascii"))

    def flag_list(self) -> tuple[str, ...]:
        """flag-list = "(" [flag *(SP flag)] ")". A list of valid flags is matched in one step
        and split (STORE's and APPEND's lists: ~1 us a flag read one by one), counted and
        nested as `paren_list` does; anything else is read flag by flag, for its error."""
        match = _FLAG_LIST.match(self.data, self.pos)
        if match is None:
            return tuple(self.paren_list(Reader.flag))
        inside = match.group(1)
        flags = inside.decode("ascii").split(" ") if inside else []
        self.enter()
        self.count_item(len(flags))
        self.leave()
        self.pos = match.end()
        return tuple(map(canonical_flag, flags))

    def number(self, limit: int = NUMBER_MAX) -> int:
        digits = self._match(NUMBER, "a number")
        if len(digits) > 20 or int(digits) > limit:
            raise BadCommand(f"Number {digits[:24].decode()} is out of range")
        return int(digits)

    def nz_number(self, limit: int = NUMBER_MAX) -> int:
        value = self.number(limit)
        if value == 0:
            raise BadCommand("Number must not be zero")
        return value

    def number64(self) -> int:
        return self.number(NUMBER64_MAX)

    def quoted(self) -> bytes:
        match = QUOTED.match(self.data, self.pos)
        if not match:
            raise self.fail("a quoted string")
        self.pos = match.end()
        text = match.group(1)
        return _UNESCAPE.sub(rb"\1", text) if b"\\" in text else text

    def literal(self, allow_binary: bool = False) -> bytes:
        match = LITERAL.match(self.data, self.pos)
        if not match or (match.group(1) and not allow_binary):
            raise self.fail("a literal")
        size = int(match.group(2))
        start = match.end()
        if start + size > len(self.data):
            raise BadCommand("Literal is shorter than its announced size")
        content = self.data[start : start + size]
        if not match.group(1) and b"\x00" in content:
            # RFC 9051 4.3: "CHAR8 ... any OCTET except NUL"; NUL needs literal8 (RFC 3516).
            raise BadCommand("NUL octet in a literal (use literal8)")
        self.pos = start + size
        return content

    def is_binary_literal(self) -> bool:
        return self.startswith(b"~{")

    def string(self) -> bytes:
        if self.peek() == 0x22:
            return self.quoted()
        if self.peek() == 0x7B:
            return self.literal()
        raise self.fail("a string")

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        return self._match(ASTRING, "an atom or string")

    def nstring(self) -> bytes | None:
        if self.startswith_word(b"NIL"):
            self.pos += 3
            return None
        return self.string()

    def text(self, raw: bytes) -> str:
        """A deliberate decode: strings are UTF-8 (RFC 9051 / RFC 6855); anything else is BAD."""
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise BadCommand("String is not valid UTF-8") from None

    def astring_text(self) -> str:
        return self.text(self.astring())

    def mailbox(self) -> str:
        """mailbox = "INBOX" / astring; INBOX in any case is INBOX (RFC 9051 5.1)."""
        name = self.astring_text()
        return "INBOX" if name.upper() == "INBOX" else name

    def list_mailbox(self) -> str:
        """list-mailbox = 1*list-char / string (wildcards allowed)."""
        if self.peek() in (0x22, 0x7B):
            return self.text(self.string())
        return self._match(LIST_MAILBOX, "a mailbox pattern").decode("ascii")

    def date(self) -> date:
        """date = date-text / DQUOTE date-text DQUOTE (date-text = d-Mon-yyyy, RFC 9051 9)."""
        quoted = self.peek() == 0x22
        if quoted:
            self.pos += 1
        match = _DATE_TEXT.match(self.data, self.pos)
        if not match:
            raise self.fail("a date (d-Mon-yyyy)")
        self.pos = match.end()
        if quoted:
            self.expect(b'"')
        day, month, year = match.groups()
        try:
            return date(int(year), _MONTH_NUMBER[month.decode().upper()], int(day))
        except (KeyError, ValueError):
            raise BadCommand(f"Invalid date {match.group(0).decode()!r}") from None

    def date_time(self) -> datetime:
        """date-time = DQUOTE date-day-fixed "-" date-month "-" date-year SP time SP zone DQUOTE."""
        match = _DATE_TIME.match(self.data, self.pos)
        if not match:
            raise self.fail("a date-time")
        self.pos = match.end()
        day, month, year, hour, minute, second, sign, zh, zm = match.groups()  # int() takes bytes
        try:
            return datetime(
                int(year), _MONTH_NUMBER[month.decode().upper()], int(day),
                int(hour), int(minute), int(second), tzinfo=_zone(sign + zh + zm),
            )
        except (KeyError, ValueError):
            raise BadCommand(f"Invalid date-time {match.group(0).decode()!r}") from None

    # -- structure ----------------------------------------------------------------------------

    def enter(self) -> None:
        self._depth += 1
        if self._depth > self.max_depth:
            raise NestingTooDeep(f"Nesting deeper than {self.max_depth} levels")

    def leave(self) -> None:
        self._depth -= 1

    def paren_list(self, item: Callable[[Reader], T], allow_empty: bool = True) -> list[T]:
        """ "(" [item *(SP item)] ")" with depth and item limits."""
        self.expect(b"(", "'('")
        self.enter()
        values: list[T] = []
        if self.peek() == 0x29:
            if not allow_empty:
                raise self.fail("at least one item")
        else:
            while True:
                self.count_item()
                values.append(item(self))
                if self.peek() != 0x20:
                    break
                self.pos += 1
        self.expect(b")", "')'")
        self.leave()
        return values


_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")


class Memo(Generic[_K, _V]):
    """Parse results by what they were parsed from, for what clients repeat: bounded, the least
    recently used out first. `wanted` lets a caller keep a value only the second time its key
    is seen (a command sent once, e.g. imaptest's FETCH of a random set, then costs a number in
    a set, not an entry: keeping every one cost such a FETCH a fifth of its parse). Frozen
    values only: they are shared between a worker's sessions. No step fails when another
    thread uses the memo at the same time (a test's servers in one process)."""

    __slots__ = ("_kept", "_seen", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._kept: OrderedDict[_K, _V] = OrderedDict()
        self._seen: set[int] = set()  # hashes of keys seen once (a collision keeps one sooner)

    def __len__(self) -> int:
        return len(self._kept)

    def __contains__(self, key: _K) -> bool:
        return key in self._kept

    def clear(self) -> None:
        self._kept.clear()
        self._seen.clear()

    def get(self, key: _K) -> _V | None:
        value = self._kept.pop(key, None)
        if value is not None:
            self._kept[key] = value  # the most recently used now
        return value

    def wanted(self, key: _K) -> bool:
        """Whether to keep a value for `key` now: it was seen before (else note that it was)."""
        sighting = hash(key)
        if sighting in self._seen:
            self._seen.discard(sighting)
            return True
        if len(self._seen) >= 4 * self.limit:
            self._seen.clear()
        self._seen.add(sighting)
        return False

    def keep(self, key: _K, value: _V) -> None:
        if len(self._kept) >= self.limit:
            with contextlib.suppress(KeyError):  # emptied by another thread meanwhile
                self._kept.popitem(last=False)
        self._kept[key] = value


# -- rendering ------------------------------------------------------------------------------------


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def render_string(value: str | bytes, utf8: bool = False, literal_plus: bool = False) -> bytes:
    """A string as quoted when it can be, else as a literal (RFC 9051 4.3).

    Quoted strings cannot hold CR, LF or NUL; 8-bit text goes quoted only when the peer accepts
    UTF-8 (RFC 9051 / RFC 6855) and the octets are valid UTF-8. NUL needs literal8.
    """
    raw = _as_bytes(value)
    if len(raw) <= QUOTED_MAX:
        safe = _QUOTED_SAFE_UTF8 if utf8 else _QUOTED_SAFE
        if safe.fullmatch(raw) and (not utf8 or _valid_utf8(raw)):
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    prefix = b"~" if b"\x00" in raw else b""
    plus = b"+" if literal_plus else b""
    return prefix + b"{" + str(len(raw)).encode() + plus + b"}\r\n" + raw


def _valid_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def render_astring(value: str | bytes, utf8: bool = False, literal_plus: bool = False) -> bytes:
    """An atom when every octet is an ASTRING-CHAR (and it does not read as NIL), else a string."""
    raw = _as_bytes(value)
    if raw and ASTRING.fullmatch(raw) and raw.upper() != b"NIL":
        return raw
    return render_string(raw, utf8, literal_plus)


def render_list_mailbox(value: str, utf8: bool = False, literal_plus: bool = False) -> bytes:
    raw = _as_bytes(value)
    if raw and LIST_MAILBOX.fullmatch(raw) and raw.upper() != b"NIL":
        return raw
    return render_string(raw, utf8, literal_plus)


def render_nstring(value: str | bytes | None, utf8: bool = False) -> bytes:
    return b"NIL" if value is None else render_string(value, utf8)


def render_date(value: date) -> bytes:
    return f"{value.day}-{MONTHS[value.month - 1]}-{value.year:04d}".encode()


def render_datetime(value: datetime) -> bytes:
    """RFC 9051 date-time, e.g. "17-Jul-1996 02:44:25 -0700" (day padded with a space)."""
    offset = value.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    return (
        f'"{value.day:2d}-{MONTHS[value.month - 1]}-{value.year:04d} '
        f"{value.hour:02d}:{value.minute:02d}:{value.second:02d} "
        f'{sign}{minutes // 60:02d}{minutes % 60:02d}"'
    ).encode()
