"""Tokens of the Sieve grammar (RFC 5228 section 8.1), each with the line and column it starts at.

Strings come out fully unquoted: quoted strings lose their escapes (section 2.4.2: "\\" and "\""
stand for themselves, any other escaped character for itself), multi-line strings lose their
dot-stuffing (section 2.4.2: a line starting with ".." has one "." removed). Line ends inside
strings become CRLF, as the grammar writes them. Encoded characters and variables are later steps.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Protocol

from sealmail.sieve.errors import CompileProblem, SieveCompileError


class Kind(enum.Enum):
    IDENTIFIER = "identifier"
    TAG = "tag"
    NUMBER = "number"
    STRING = "string"
    PUNCT = "punctuation"
    END = "end of script"


@dataclass(frozen=True, slots=True)
class Token:
    kind: Kind
    text: str  # identifier or tag name (lower-cased), punctuation, or the string's value
    number: int
    line: int
    column: int


# RFC 5228 section 8.1: number = 1*DIGIT [ QUANTIFIER ]; QUANTIFIER = "K" / "M" / "G"
_QUANTIFIERS = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
# identifier = (ALPHA / "_") *(ALPHA / DIGIT / "_")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"[0-9]+([KMGkmg])?")
# multi-line = "text:" *(SP / HTAB) (hash-comment / CRLF) *(multiline-literal / multiline-dotstart)
#              "." CRLF
_MULTILINE_START = re.compile(r"text:[ \t]*(#[^\r\n]*)?(\r\n|\n)", re.IGNORECASE)
NUMBER_MAX = (1 << 63) - 1


def tokenize(text: str) -> list[Token]:
    """All tokens of `text`, ending with an END token; raises SieveCompileError on bad input."""
    tokens: list[Token] = []
    pos = 0
    line = 1
    line_start = 0
    length = len(text)

    def place(where: int) -> tuple[int, int]:
        return text.count("\n", 0, where) + 1, where - (text.rfind("\n", 0, where) + 1) + 1

    def fail(message: str, at: int | None = None) -> SieveCompileError:
        return SieveCompileError([CompileProblem(*place(pos if at is None else at), message)])

    def fail_at_end(message: str, opened: int) -> SieveCompileError:
        """A string or comment left open is reported where the script ends, as Pigeonhole
        does (that is where the parser finds out), naming where it was opened."""
        line_no, column = place(opened)
        return SieveCompileError([CompileProblem(
            *place(length), f"{message} (opened at line {line_no}, column {column})")])

    while pos < length:
        char = text[pos]
        column = pos - line_start + 1
        if char == "\n":
            pos += 1
            line += 1
            line_start = pos
            continue
        if char in " \t\r":
            pos += 1
            continue
        if char == "#":
            end = text.find("\n", pos)
            pos = length if end < 0 else end
            continue
        if text.startswith("/*", pos):
            end = text.find("*/", pos + 2)
            if end < 0:
                raise fail_at_end("unterminated comment: missing '*/'", pos)
            line += text.count("\n", pos, end)
            newline = text.rfind("\n", pos, end)
            if newline >= 0:
                line_start = newline + 1
            pos = end + 2
            continue
        if char in "[](){},;":
            tokens.append(Token(Kind.PUNCT, char, 0, line, column))
            pos += 1
            continue
        if char == '"':
            value, end = _quoted(text, pos, fail_at_end)
            tokens.append(Token(Kind.STRING, value, 0, line, column))
            line += text.count("\n", pos, end)
            newline = text.rfind("\n", pos, end)
            if newline >= 0:
                line_start = newline + 1
            pos = end
            continue
        multiline = _MULTILINE_START.match(text, pos)
        if multiline:
            value, end = _multiline(text, multiline.end(), fail_at_end, pos)
            tokens.append(Token(Kind.STRING, value, 0, line, column))
            line += text.count("\n", pos, end)
            line_start = end
            pos = end
            continue
        if char == ":":
            match = _IDENTIFIER.match(text, pos + 1)
            if not match:
                raise fail("':' must be followed by a tag name")
            tokens.append(Token(Kind.TAG, ":" + match.group().lower(), 0, line, column))
            pos = match.end()
            continue
        if char.isdigit() and char.isascii():
            match = _NUMBER.match(text, pos)
            assert match is not None
            digits = match.group()
            quantifier = _QUANTIFIERS.get(digits[-1].lower(), 1) if match.group(1) else 1
            number = int(digits[:-1] if match.group(1) else digits) * quantifier
            if number > NUMBER_MAX:
                raise fail(f"number {digits} is too large")
            after = match.end()
            if after < length and (text[after].isalnum() or text[after] == "_"):
                raise fail(f"invalid number '{digits}{text[after]}'")
            tokens.append(Token(Kind.NUMBER, digits, number, line, column))
            pos = after
            continue
        match = _IDENTIFIER.match(text, pos)
        if match:
            tokens.append(Token(Kind.IDENTIFIER, match.group().lower(), 0, line, column))
            pos = match.end()
            continue
        shown = repr(char) if char.isprintable() else f"U+{ord(char):04X}"
        raise fail(f"unexpected character {shown}")
    tokens.append(Token(Kind.END, "", 0, line, pos - line_start + 1))
    return tokens


def _quoted(text: str, start: int, fail: _Fail) -> tuple[str, int]:
    """The value of the quoted string opening at `start`, and the position after its quote."""
    out: list[str] = []
    pos = start + 1
    while True:
        end = _next_special(text, pos)
        if end < 0:
            raise fail("unterminated string: missing '\"'", start)
        out.append(text[pos:end])
        if text[end] == '"':
            return _crlf("".join(out)), end + 1
        if end + 1 >= len(text):
            raise fail("unterminated string: missing '\"'", start)
        out.append(text[end + 1])
        pos = end + 2


def _next_special(text: str, pos: int) -> int:
    quote = text.find('"', pos)
    backslash = text.find("\\", pos)
    if backslash < 0 or (0 <= quote < backslash):
        return quote
    return backslash


def _multiline(text: str, pos: int, fail: _Fail, start: int) -> tuple[str, int]:
    """The value of a multi-line string (opening "text:" at `start`, first line at `pos`) and
    the position after its closing "." line."""
    out: list[str] = []
    while True:
        end = text.find("\n", pos)
        if end < 0:
            raise fail("unterminated multi-line string: missing '.' line", start)
        line = text[pos:end].removesuffix("\r")
        pos = end + 1
        if line == ".":
            return "".join(out), pos
        out.append((line[1:] if line.startswith("..") else line) + "\r\n")


def _crlf(value: str) -> str:
    if "\n" not in value:
        return value
    return value.replace("\r\n", "\n").replace("\n", "\r\n")


class _Fail(Protocol):
    """The error factory `tokenize` hands its string readers: message, where the string
    opened -> error."""

    def __call__(self, message: str, opened: int) -> SieveCompileError: ...
