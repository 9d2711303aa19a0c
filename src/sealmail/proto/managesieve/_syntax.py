"""ManageSieve's wire syntax (RFC 5804 section 4): atoms, numbers, quoted strings, literals.

    string        = quoted / literal-c2s / literal-s2c
    quoted        = <"> *QUOTED-CHAR <">        ;; limited to 1024 octets between the <">s
    QUOTED-CHAR   = SAFE-UTF8-CHAR / "\\" QUOTED-SPECIALS
    QUOTED-SPECIALS = <"> / "\\"
    SAFE-UTF8-CHAR = SAFE-CHAR / UTF8-2 / UTF8-3 / UTF8-4
    SAFE-CHAR     = %x01-09 / %x0B-0C / %x0E-21 / %x23-5B / %x5D-7F
    literal-c2s   = "{" number "+}" CRLF *OCTET   ;; client to server
    literal-s2c   = "{" number "}" CRLF *OCTET    ;; server to client
    number        = (NZDIGIT *DIGIT) / "0"        ;; a 32-bit unsigned number

A command line is split into tokens here; a literal is announced by `{n+}` (or `{n}`, which
older clients send: ManageSieve has no continuation request, so both are read the same way) at
the very end of a line, and its octets come next, after which the command line goes on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "MAX_NUMBER",
    "MAX_QUOTED",
    "Atom",
    "LiteralStart",
    "String",
    "SyntaxProblem",
    "Token",
    "render_string",
    "tokenize",
]

MAX_NUMBER = 2**32 - 1
MAX_QUOTED = 1024  # RFC 5804 4: quoted strings are "limited to 1024 octets between the <">s"
_LITERAL = re.compile(rb"\{([0-9]{1,10})(\+?)\}")
_ATOM_STOP = b' \t"{}()\\'


class SyntaxProblem(Exception):
    """The line does not follow the grammar; the message is what the NO response says."""


@dataclass(frozen=True, slots=True)
class Atom:
    """A bare word: a command name, ACTIVE, a number (RFC 5804 4: `atom`, `number`)."""

    text: str


@dataclass(frozen=True, slots=True)
class String:
    """A quoted string or a literal: raw octets, decoded only where the grammar says UTF-8."""

    value: bytes
    literal: bool = False


Token = Atom | String


@dataclass(frozen=True, slots=True)
class LiteralStart:
    """The line ended with `{size+}` or `{size}`: `size` octets of a literal follow."""

    size: int
    synchronizing: bool


def tokenize(line: bytes) -> tuple[list[Token], LiteralStart | None]:
    """Split one line (without its CRLF) into tokens; a trailing literal marker comes apart.

    Tokens are separated by spaces (tabs and runs of spaces are taken too: be lenient in what
    you accept). Raises SyntaxProblem.
    """
    tokens: list[Token] = []
    position = 0
    end = len(line)
    while position < end:
        octet = line[position]
        if octet in (0x20, 0x09):
            position += 1
            continue
        if octet == 0x22:  # '"'
            value, position = _quoted(line, position)
            tokens.append(String(value))
        elif octet == 0x7B:  # '{'
            match = _LITERAL.match(line, position)
            if match is None or match.end() != end:
                raise SyntaxProblem("Bad literal: expected {number+} at the end of the line")
            size = int(match.group(1))
            if size > MAX_NUMBER:
                raise SyntaxProblem("Literal size is over 4294967295")
            return tokens, LiteralStart(size, synchronizing=not match.group(2))
        else:
            start = position
            while position < end and line[position] not in _ATOM_STOP and line[position] >= 0x20:
                position += 1
            if position == start:
                raise SyntaxProblem(f"Unexpected character {chr(octet)!r}")
            word = line[start:position]
            if any(b >= 0x7F for b in word):
                raise SyntaxProblem("Non-ASCII characters outside a string")
            tokens.append(Atom(word.decode("ascii")))
    return tokens, None


def _quoted(line: bytes, start: int) -> tuple[bytes, int]:
    """The value of the quoted string opening at `start` and the position after it."""
    out = bytearray()
    position = start + 1
    end = len(line)
    while position < end:
        octet = line[position]
        if octet == 0x22:
            if len(out) > MAX_QUOTED:
                raise SyntaxProblem(f"Quoted string is longer than {MAX_QUOTED} octets")
            return bytes(out), position + 1
        if octet == 0x5C:  # '\': only QUOTED-SPECIALS may follow
            if position + 1 >= end or line[position + 1] not in (0x22, 0x5C):
                raise SyntaxProblem('Bad escape in quoted string (only \\" and \\\\ are allowed)')
            out.append(line[position + 1])
            position += 2
            continue
        if octet in (0x00, 0x0D, 0x0A):
            raise SyntaxProblem("NUL, CR or LF in a quoted string")
        out.append(octet)
        position += 1
    raise SyntaxProblem("Unterminated quoted string")


def render_string(value: bytes | str) -> bytes:
    """A server string: quoted when the grammar lets it be, else literal-s2c."""
    raw = value.encode("utf-8") if isinstance(value, str) else value
    if len(raw) <= MAX_QUOTED and not any(b in (0x00, 0x0D, 0x0A) for b in raw):
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            pass
        else:
            return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return b"{%d}\r\n" % len(raw) + raw
