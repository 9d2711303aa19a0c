"""cyrus.conf's syntax: sections, brace blocks, entries and their key=value arguments.

The tokenizer removes comments and continuations; `_raw_entries` walks the tokens and yields each
entry with its arguments still as written, for sealmail.config.cyrus_conf.parsing to check.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum

from sealmail.config.imapd_conf import ConfigError


class Section(Enum):
    START = "START"
    SERVICES = "SERVICES"
    EVENTS = "EVENTS"
    DAEMON = "DAEMON"


@dataclass(frozen=True, slots=True)
class _Where:
    path: str
    line: int
    entry: str | None = None

    def error(self, key: str | None, message: str) -> ConfigError:
        if self.entry is not None:
            message = f"{message} (entry {self.entry!r})"
        return ConfigError(self.path, self.line, key, message)


class _Kind(Enum):
    WORD = "word"  # a bare word: section or entry name
    ARG = "arg"  # key=value
    OPEN = "{"
    CLOSE = "}"
    END = "end of line"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    line: int
    text: str = ""
    value: str = ""


_DELIMITERS = frozenset(' \t\r\f\v\n{}#"')


def _tokens(text: str, path: str) -> Iterator[_Token]:
    """Words, key=value pairs, braces and line ends, with comments and continuations removed."""
    i, line, n = 0, 1, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            yield _Token(_Kind.END, line)
            line += 1
            i += 1
        elif char == "\\" and text.startswith(("\n", "\r\n"), i + 1):
            # A continuation: the next physical line belongs to this logical line.
            i += 2 if text[i + 1] == "\n" else 3
            line += 1
        elif char in " \t\r\f\v":
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif char in "{}":
            yield _Token(_Kind.OPEN if char == "{" else _Kind.CLOSE, line, char)
            i += 1
        elif char == '"':
            raise ConfigError(path, line, None, "a quoted value must follow 'key='")
        else:
            start = i
            while i < n and text[i] not in _DELIMITERS and text[i] != "=":
                if text[i] == "\\" and text.startswith(("\n", "\r\n"), i + 1):
                    break
                i += 1
            word = text[start:i]
            if i < n and text[i] == "=":
                i += 1
                if i < n and text[i] == '"':
                    close = text.find('"', i + 1)
                    newline = text.find("\n", i + 1)
                    if close < 0 or (0 <= newline < close):
                        raise ConfigError(path, line, word, 'missing closing " in quoted value')
                    value = text[i + 1 : close]
                    i = close + 1
                    continues = text.startswith(("\\\n", "\\\r\n"), i)
                    if i < n and text[i] not in _DELIMITERS and not continues:
                        raise ConfigError(
                            path, line, word, "a quoted value must be followed by a space"
                        )
                else:
                    vstart = i
                    while i < n and text[i] not in _DELIMITERS:
                        if text[i] == "\\" and text.startswith(("\n", "\r\n"), i + 1):
                            break
                        i += 1
                    value = text[vstart:i]
                    if i < n and text[i] == '"':
                        raise ConfigError(path, line, word, "a quote inside an unquoted value")
                yield _Token(_Kind.ARG, line, word, value)
            else:
                yield _Token(_Kind.WORD, line, word)
    yield _Token(_Kind.END, line)


def _is_name(word: str) -> bool:
    return word.isascii() and word.isalnum()


@dataclass
class _RawEntry:
    section: Section
    name: str
    where: _Where
    args: dict[str, str]


def _raw_entries(text: str, path: str) -> Iterator[_RawEntry]:
    """Walk the tokens: section headers, brace blocks and the entries inside them."""
    tokens = _tokens(text, path)
    section: Section | None = None
    opened_at = 0
    entry: _RawEntry | None = None
    pending_header: tuple[Section, int] | None = None
    for token in tokens:
        if section is None:
            # Between sections: a header word, then '{' (on the same or a later line).
            if pending_header is not None:
                if token.kind is _Kind.END:
                    continue
                if token.kind is _Kind.OPEN:
                    section, opened_at = pending_header
                    pending_header = None
                    continue
                name = pending_header[0].value
                raise ConfigError(path, token.line, None, f"expected '{{' after {name}")
            if token.kind is _Kind.END:
                continue
            if token.kind is _Kind.WORD:
                try:
                    pending_header = (Section(token.text.upper()), token.line)
                except ValueError:
                    known = ", ".join(s.value for s in Section)
                    raise ConfigError(
                        path,
                        token.line,
                        None,
                        f"unknown section {token.text!r}; expected one of {known}",
                    ) from None
                continue
            what = f"'{token.text}'" if token.kind is not _Kind.ARG else f"{token.text}="
            raise ConfigError(
                path, token.line, None, f"{what} outside a section; expected a section name"
            )

        # Inside a section.
        if token.kind is _Kind.END or token.kind is _Kind.CLOSE:
            if entry is not None:
                yield entry
                entry = None
            if token.kind is _Kind.CLOSE:
                section = None
            continue
        if token.kind is _Kind.OPEN:
            raise ConfigError(path, token.line, None, f"'{{' inside the {section.value} section")
        if entry is None:
            if token.kind is _Kind.ARG:
                raise ConfigError(path, token.line, token.text, "an entry must start with its name")
            if not _is_name(token.text):
                bad = next((c for c in token.text if not (c.isascii() and c.isalnum())), "?")
                raise ConfigError(
                    path,
                    token.line,
                    None,
                    f"bad character {bad!r} in entry name {token.text!r}; "
                    "names are letters and digits only",
                )
            entry = _RawEntry(section, token.text, _Where(path, token.line, token.text), {})
            continue
        if token.kind is _Kind.WORD:
            raise entry.where.error(None, f"expected key=value, got {token.text!r}")
        key = token.text
        if not _is_name(key):
            raise entry.where.error(key, f"bad key {key!r}; keys are letters and digits only")
        if key in entry.args:
            raise entry.where.error(key, "given twice")
        entry.args[key] = token.value
    if section is not None:
        raise ConfigError(
            path,
            opened_at,
            None,
            f"the {section.value} section opened here is not closed with '}}'",
        )
    if pending_header is not None:
        raise ConfigError(
            path, pending_header[1], None, f"expected '{{' after {pending_header[0].value}"
        )
