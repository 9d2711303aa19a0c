"""The header of an Internet message (RFC 5322 2.2) read as octets, shared by the IMAP core and
the store: where the header ends, its fields cut out as sent, and its address lists read.

The first two are one regular expression each, and both read a header as
`sealmail.proto.imap.mime` parses it (property-tested there): a field is a line starting with a
name and a colon, with the lines folded under it; other lines are skipped; the header ends at the
first line that is empty once its CRs are ignored, or with the message.

Address lists (RFC 5322 3.4, read leniently) give the addresses of IMAP's ENVELOPE (RFC 9051
7.5.2), which SEARCH FROM/TO/... and SORT FROM/TO/CC/DISPLAYFROM/DISPLAYTO (RFC 5256, RFC 5957)
are defined on: the ENVELOPE's parse is THE parse, so what FETCH shows, SEARCH finds and SORT
orders always agree.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Address", "address_list", "header_fields", "header_fields_finder", "message_header",
           "parse_address_list"]

_NAME = rb"[!-9;-~]+[ \t]*:"
_FIELD_NAME = re.compile(rb"[!-9;-~]+")
_REST_OF_FIELD = rb"[^\n]*(?:\n[ \t][^\n]*)*\n?"
# The header ends at the first line that is empty once its CRs are ignored: the first line of
# the message, or one after a LF (two patterns: an alternation at the start would keep `re`
# from scanning for the LF at C speed, ten times slower on a long header).
_EMPTY_FIRST_LINE = re.compile(rb"\r*(?:\n|\Z)")
_EMPTY_LINE = re.compile(rb"\n\r*(?:\n|\Z)")


def header_fields(header: bytes, names: tuple[str, ...], exclude: bool) -> bytes:
    """The fields of `header` named in `names` (or all others with `exclude`) as sent, plus the
    empty line: BODY[HEADER.FIELDS (...)] and BODY[HEADER.FIELDS.NOT (...)] (RFC 9051 6.4.5).

    One regular expression over the block, made once per list of names: mail clients ask for
    the same few fields of every message of a folder, and a loop per line cost more than the
    rest of such a FETCH.
    """
    # The pattern does not depend on the order or repetition of names: one per set of names
    # (imaptest asks for 1-4 of 7 fields in any order, thousands of lists, 127 sets).
    kept = _fields_pattern(tuple(sorted(set(names))), exclude).findall(header)
    if kept and not kept[-1].endswith(b"\n"):  # only a field ending the block can lack one
        kept[-1] += b"\r\n"
    return b"".join(kept) + b"\r\n"


def header_fields_finder(names: tuple[str, ...]) -> Callable[[bytes], list[bytes]]:
    """The fields named in `names` of a header, each as sent: what `header_fields` joins. For
    a bulk caller whose headers end every field with a newline (the index's listed form)."""
    return _fields_pattern(tuple(sorted(set(names))), False).findall  # see header_fields


@functools.lru_cache(maxsize=256)  # every set of 7 fields and more
def _fields_pattern(names: tuple[str, ...], exclude: bool) -> re.Pattern[bytes]:
    """Matches whole fields (name, colon, line, folded lines) named in `names`, compared
    without regard to ASCII case, or, with `exclude`, every other field."""
    encoded = (n.encode("utf-8", "replace") for n in names)
    # A name that is not a field name ("Bad Name", quoted by the client) names no field.
    alternatives = b"|".join(re.escape(n) for n in encoded if _FIELD_NAME.fullmatch(n)) or b"(?!)"
    wanted = b"(?:" + alternatives + b")[ \t]*:"
    name = b"(?!" + wanted + b")" + _NAME if exclude else wanted
    return re.compile(b"^" + name + _REST_OF_FIELD, re.MULTILINE | re.IGNORECASE)


def message_header(raw: bytes) -> bytes:
    """BODY[HEADER] of a whole message (its empty line included) without parsing its
    structure: the block `sealmail.proto.imap.parse_message` takes as the header."""
    match = _EMPTY_FIRST_LINE.match(raw) or _EMPTY_LINE.search(raw)
    return raw if match is None else raw[: match.end()]


# -- address lists (RFC 5322 3.4, read leniently) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Address:
    """addr-name addr-adl addr-mailbox addr-host (RFC 9051 7.5.2).

    A group starts with (None, None, group name, None) and ends with (None, None, None, None).
    A mailbox with no domain gets host "" (NIL would mean a group).
    """

    name: str | None
    adl: str | None
    mailbox: str | None
    host: str | None


# One token at a time at C speed: white space, a quoted string (to the end of the text when
# unterminated; a lone backslash at the end is kept), an angle address, a special, an atom.
# Only a comment, which nests, is read by hand (`_comment`).
_TOKEN = re.compile(
    r'\s+|"((?:[^"\\]|\\.|\\\Z)*)"?|<([^>]*)>?|([,:;])|([^\s",:;<(]+)', re.DOTALL
)
_QUOTED_PAIR = re.compile(r"\\(.)", re.DOTALL)


def _comment(text: str, pos: int) -> tuple[str, int]:
    """The content of the (nested) comment starting at `pos`, and the position after it."""
    depth, start = 1, pos + 1
    pos += 1
    while pos < len(text) and depth:
        if text[pos] == "\\":
            pos += 1
        elif text[pos] == "(":
            depth += 1
        elif text[pos] == ")":
            depth -= 1
        pos += 1
    return text[start : pos - 1].strip(), pos


def _address_tokens(text: str) -> list[tuple[str, str]]:
    """(kind, text) tokens: "q" quoted, "c" comment, "<" angle address, "s" special, "a" atom."""
    tokens: list[tuple[str, str]] = []
    pos = 0
    match = _TOKEN.match
    while pos < len(text):
        found = match(text, pos)
        if found is None:  # a comment (or white space the pattern does not know)
            if text[pos] == "(":
                value, pos = _comment(text, pos)
                tokens.append(("c", value))
            else:
                pos += 1
            continue
        pos = found.end()
        quoted, angle, special, atom = found.groups()
        if quoted is not None:
            tokens.append(("q", _QUOTED_PAIR.sub(r"\1", quoted) if "\\" in quoted else quoted))
        elif angle is not None:
            tokens.append(("<", angle.strip()))
        elif special is not None:
            tokens.append(("s", special))
        elif atom is not None:
            tokens.append(("a", atom))
    return tokens


_CFWS_FREE = re.compile(r'[^\s("]*')


def _without_cfws(spec: str) -> str:
    """An addr-spec without its comments and folding white space (RFC 5322 3.4.1 allows CFWS
    around the dot-atoms and the "@": `<user (comment)@ (comment) example.org>`), quoted
    strings kept as they are."""
    if _CFWS_FREE.fullmatch(spec):
        return spec  # nearly every address: nothing to take out
    out: list[str] = []
    depth = 0
    quoted = False
    pos = 0
    while pos < len(spec):
        char = spec[pos]
        if quoted:
            out.append(char)
            if char == "\\" and pos + 1 < len(spec):
                pos += 1
                out.append(spec[pos])
            elif char == '"':
                quoted = False
        elif depth:
            if char == "\\":
                pos += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif char == '"':
            quoted = True
            out.append(char)
        elif not char.isspace():
            out.append(char)
        pos += 1
    return "".join(out)


def _addr_spec(spec: str) -> tuple[str | None, str, str]:
    """(adl, mailbox, host) of "[@route,@route:]local@domain"."""
    spec = _without_cfws(spec)
    adl = None
    if spec.startswith("@") and ":" in spec:
        adl, _, spec = spec.partition(":")
    local, at, host = spec.rpartition("@")
    if not at:
        local, host = spec, ""
    if len(local) >= 2 and local[0] == local[-1] == '"':
        local = local[1:-1]
    return adl, local, host


def parse_address_list(text: str) -> tuple[Address, ...]:
    """An address-list header value as ENVELOPE addresses, groups included; never raises."""
    result: list[Address] = []
    phrase: list[str] = []
    comment: str | None = None
    angle: str | None = None
    in_group = False

    def flush() -> None:
        nonlocal phrase, comment, angle
        if angle is not None:
            adl, mailbox, host = _addr_spec(angle)
            name = " ".join(phrase) or comment
            if mailbox or host:
                result.append(Address(name or None, adl, mailbox, host))
        elif phrase:
            adl, mailbox, host = _addr_spec("".join(phrase))
            if mailbox or host:
                result.append(Address(comment or None, adl, mailbox, host))
        phrase, comment, angle = [], None, None

    for kind, value in _address_tokens(text):
        if kind == "s" and value == ",":
            flush()
        elif kind == "s" and value == ":" and angle is None and not in_group:
            result.append(Address(None, None, " ".join(phrase), None))
            phrase, comment = [], None
            in_group = True
        elif kind == "s" and value == ";":
            flush()
            if in_group:
                result.append(Address(None, None, None, None))
                in_group = False
        elif kind == "<":
            angle = value
        elif kind == "c":
            comment = comment or value or None
        elif (kind in ("a", "q") and angle is None) or (kind == "s" and value == ":"):
            phrase.append(value)
    flush()
    if in_group:
        result.append(Address(None, None, None, None))
    return tuple(result)


_remembered_address_lists = functools.lru_cache(maxsize=256)(parse_address_list)


def address_list(text: str) -> tuple[Address, ...]:
    """parse_address_list, remembered for short values: an APPEND reads the same From, To and
    Cc three times over (the ENVELOPE of the parse it keeps, then the store's searchable and
    sortable forms of the message), and one parse serves all three. A long value is parsed
    anew, not kept. The result is immutable (a tuple of frozen Address)."""
    if len(text) > 998:  # RFC 5322's line limit: a longer value is rare, and not kept
        return parse_address_list(text)
    return _remembered_address_lists(text)
