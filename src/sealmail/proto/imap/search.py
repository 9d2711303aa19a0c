"""SEARCH keys as a tree (RFC 9051 6.4.4, search-key in 9; RFC 5032 WITHIN; RFC 7162 MODSEQ;
RFC 5182 "$").

A key is `SearchKey(name, args)`: the upper-case key name and its typed arguments. Three names are
structural: "AND" (a parenthesized list, or the implicit AND of a whole program), "OR" (two keys),
"NOT" (one key); "SEQSET" is a bare sequence set and "UID" a UID set. The tree renders back to the
same wire form, so parse(render(key)) == key.

String arguments are text: the charset is UTF-8 or US-ASCII (RFC 9051 6.4.4: "US-ASCII MUST be
supported"; RFC 6855 asks for UTF-8); any other charset is refused with NO [BADCHARSET].
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Union

from sealmail.proto.imap.errors import BadCommand, CommandRefused
from sealmail.proto.imap.sequence import SequenceSet
from sealmail.proto.imap.syntax import (
    Reader,
    render_astring,
    render_date,
    render_string,
)

__all__ = [
    "SUPPORTED_CHARSETS",
    "SearchArg",
    "SearchKey",
    "parse_search_key",
    "parse_search_program",
    "render_search_key",
]

SearchArg = Union[str, int, date, SequenceSet, "SearchKey"]

SUPPORTED_CHARSETS = ("US-ASCII", "UTF-8")

_NO_ARGS = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
_STRING = frozenset(["BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"])
_KEYWORD = frozenset({"KEYWORD", "UNKEYWORD"})
_DATE = frozenset(["BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"])
_SIZE = frozenset({"LARGER", "SMALLER"})
_INTERVAL = frozenset({"OLDER", "YOUNGER"})  # RFC 5032 WITHIN: nz-number of seconds
_ENTRY_TYPES = frozenset({"priv", "shared", "all"})


@dataclass(frozen=True, slots=True)
class SearchKey:
    """One search key; see the module docstring for the names and their arguments.

    MODSEQ (RFC 7162 3.1.5) has args (modseq,) or (entry-name, entry-type, modseq).
    """

    name: str
    args: tuple[SearchArg, ...] = ()

    @property
    def keys(self) -> tuple[SearchKey, ...]:
        """The child keys of AND / OR / NOT."""
        return tuple(arg for arg in self.args if isinstance(arg, SearchKey))


def _string(reader: Reader, charset: str) -> str:
    raw = reader.astring()
    if charset == "US-ASCII" and any(octet > 0x7F for octet in raw):
        raise BadCommand("8-bit octets in a US-ASCII search string")
    return reader.text(raw)


def parse_search_key(reader: Reader, charset: str = "UTF-8") -> SearchKey:
    """search-key, recursively; nesting and the number of keys are bounded by the reader."""
    reader.count_item()
    if reader.peek() == 0x28:  # "(" search-key *(SP search-key) ")"
        keys = reader.paren_list(lambda r: parse_search_key(r, charset), allow_empty=False)
        return SearchKey("AND", tuple(keys))
    if reader.peek() == 0x24 or reader.peek() == 0x2A or 0x30 <= reader.peek() <= 0x39:
        return SearchKey("SEQSET", (_sequence_set(reader),))
    name = reader.atom().upper()
    if name in _NO_ARGS:
        return SearchKey(name)
    reader.sp()
    if name in _STRING:
        return SearchKey(name, (_string(reader, charset),))
    if name in _KEYWORD:
        return SearchKey(name, (reader.flag(),))
    if name in _DATE:
        return SearchKey(name, (reader.date(),))
    if name in _SIZE:
        return SearchKey(name, (reader.number64(),))
    if name in _INTERVAL:
        return SearchKey(name, (reader.nz_number(),))
    if name == "HEADER":
        field = reader.text(reader.astring())
        reader.sp()
        return SearchKey(name, (field, _string(reader, charset)))
    if name == "UID":
        return SearchKey(name, (_sequence_set(reader),))
    if name == "NOT":
        reader.enter()
        key = parse_search_key(reader, charset)
        reader.leave()
        return SearchKey(name, (key,))
    if name == "OR":
        reader.enter()
        left = parse_search_key(reader, charset)
        reader.sp()
        right = parse_search_key(reader, charset)
        reader.leave()
        return SearchKey(name, (left, right))
    if name == "MODSEQ":
        if reader.peek() == 0x22:
            entry = reader.text(reader.quoted())
            reader.sp()
            kind = reader.atom().lower()
            if kind not in _ENTRY_TYPES:
                raise BadCommand(f"Invalid MODSEQ entry type {kind!r}")
            reader.sp()
            return SearchKey(name, (entry, kind, reader.number64()))
        return SearchKey(name, (reader.number64(),))
    raise BadCommand(f"Unknown search key {name}")


def _sequence_set(reader: Reader) -> SequenceSet:
    start = reader.pos
    while not reader.at_end() and reader.peek() not in (0x20, 0x29):
        reader.pos += 1
    return SequenceSet.parse(reader.data[start : reader.pos].decode("ascii", "replace"))


def parse_charset(reader: Reader) -> str:
    """charset = atom / quoted; only the supported ones pass (NO [BADCHARSET] otherwise)."""
    raw = reader.quoted() if reader.peek() == 0x22 else reader.atom().encode()
    charset = raw.decode("ascii", "replace").upper()
    if charset not in SUPPORTED_CHARSETS:
        # RFC 9051 6.4.4: "If the server does not support the specified [CHARSET], it MUST
        # return a tagged NO response (not a BAD)" with the BADCHARSET response code.
        raise CommandRefused(
            f"Charset {charset} is not supported",
            code=f"BADCHARSET ({' '.join(SUPPORTED_CHARSETS)})",
        )
    return charset


def parse_search_program(
    reader: Reader, allow_charset: bool = True
) -> tuple[str | None, SearchKey]:
    """search-program = ["CHARSET" SP charset SP] search-key *(SP search-key).

    Returns (charset or None, the AND of the keys). The keys run to the end of the command.
    """
    charset: str | None = None
    if allow_charset and reader.startswith_word(b"CHARSET"):
        reader.pos += len(b"CHARSET")
        reader.sp()
        charset = parse_charset(reader)
        reader.sp()
    keys = [parse_search_key(reader, charset or "UTF-8")]
    while reader.peek() == 0x20:
        reader.pos += 1
        keys.append(parse_search_key(reader, charset or "UTF-8"))
    return charset, SearchKey("AND", tuple(keys))


def render_search_key(key: SearchKey, top: bool = False) -> bytes:
    """The wire form; `top` renders an AND as a space-separated program (no parentheses)."""
    name = key.name
    if name == "AND":
        inner = b" ".join(render_search_key(child) for child in key.keys)
        return inner if top else b"(" + inner + b")"
    if name == "SEQSET":
        return str(key.args[0]).encode()
    parts = [name.encode()]
    for arg in key.args:
        if isinstance(arg, SearchKey):
            parts.append(render_search_key(arg))
        elif isinstance(arg, SequenceSet):
            parts.append(str(arg).encode())
        elif isinstance(arg, date):
            parts.append(render_date(arg))
        elif isinstance(arg, int):
            parts.append(str(arg).encode())
        elif name in _KEYWORD or (name == "MODSEQ" and arg in _ENTRY_TYPES):
            parts.append(arg.encode())
        elif name == "MODSEQ":
            parts.append(render_string(arg, utf8=True))
        else:
            parts.append(render_astring(arg, utf8=True))
    return b" ".join(parts)
