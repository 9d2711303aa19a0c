"""aliases(5): the alias database of local delivery, parsed, built and looked up.

Source format (aliases(5), as Postfix's postalias reads it):

    # comment
    name: value1, value2,
        continued, "|/usr/bin/command with args", /var/log/file, :include:/etc/list

A line that starts with whitespace continues the previous one; `#` lines and blank lines are
skipped (also inside a continuation). The name ends at the first `:`; it may be written in double
quotes. Keys are folded to lower case. A value is a comma-separated list of destinations:

- `|command`   run the command with the message on stdin (allow_mail_to_commands),
- `/file/path` append to the file in mbox format (allow_mail_to_files),
- `:include:/path` read more destinations from that file,
- anything else is an address; `\\user` is delivered to user's mailbox without further aliasing.

Double quotes group a destination that holds commas or spaces (`"|cmd a, b"`).

The database (`sealmail newaliases`, `sealmail postalias`) is the lookup tables' `hash:` index
built with `mta.config.tables.write_index`, so `alias_maps = hash:/etc/aliases` is read by the
same table code as any map.

Expansion rules kept here so local(8) and tests share them: the lookup order with a
recipient_delimiter (user+ext, then user), the owner-NAME and NAME-request conventions
(owner_request_special), Delivered-To loop detection and duplicate elimination.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config.postfix_files import logical_lines
from sealmail.mta.config.tables import LookupTable, parse_source, write_index

log = logging.getLogger("sealmail.mta.aliases")

MAX_INCLUDE_SIZE = 1 << 20  # an :include: file larger than this is refused (runaway lists)


class AliasError(ConfigError):
    """An aliases(5) or :include: file is malformed; the message names file and line."""


@dataclass(frozen=True, slots=True)
class AliasEntry:
    name: str  # folded to lower case
    value: str  # continuation lines joined with one space
    path: str
    line: int


class DestinationKind(enum.Enum):
    ADDRESS = "address"
    COMMAND = "command"
    FILE = "file"
    INCLUDE = "include"


@dataclass(frozen=True, slots=True)
class Destination:
    kind: DestinationKind
    text: str  # the address, the command (without '|'), the path
    literal: bool = False  # `\user`: deliver to the mailbox, no more alias or .forward lookups

    def key(self) -> str:
        """Identity for duplicate elimination (addresses compare case-insensitively)."""
        text = self.text.lower() if self.kind is DestinationKind.ADDRESS else self.text
        mark = "\\" if self.literal else ""
        return f"{self.kind.value}:{mark}{text}"


# --------------------------------------------------------------------------------------------
# Parsing


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(first line number, text): continuations joined with one space."""
    for logical in logical_lines(text):
        if logical.continues_nothing:
            # A continuation with nothing to continue: Postfix warns and skips it.
            log.warning("line %d: continuation line without an entry; skipped", logical.number)
            continue
        first, *rest = logical.parts
        yield logical.number, " ".join([first.rstrip(), *(part.strip() for part in rest)])


def _split_name(logical: str, path: str, line: int) -> tuple[str, str]:
    if logical.startswith('"'):
        end = logical.find('"', 1)
        if end < 0 or logical[end + 1 : end + 2] != ":":
            raise AliasError(path, line, None, "unterminated quoted alias name or missing ':'")
        return logical[1:end], logical[end + 2 :]
    name, colon, value = logical.partition(":")
    if not colon:
        raise AliasError(path, line, None, f"missing ':' after alias name in {logical[:40]!r}")
    if not name.strip() or any(c.isspace() for c in name.strip()):
        raise AliasError(path, line, None, f"bad alias name {name.strip()!r}")
    return name.strip(), value


def parse_aliases(text: str, path: str = "<string>") -> list[AliasEntry]:
    """Every entry in file order; a duplicate name keeps the first entry, with a warning."""
    entries: list[AliasEntry] = []
    seen: set[str] = set()
    for line, logical in _logical_lines(text):
        name, value = _split_name(logical, path, line)
        value = value.strip()
        if not value:
            raise AliasError(path, line, name, "alias without a value")
        key = name.lower()
        if key in seen:
            log.warning("%s:%d: duplicate alias %s; the first entry is kept", path, line, key)
            continue
        seen.add(key)
        entries.append(AliasEntry(key, value, path, line))
    return entries


def split_destinations(value: str) -> list[str]:
    """Split on commas (and newlines) outside double quotes and <...>; strip each item."""
    items: list[str] = []
    current: list[str] = []
    quoted = False
    angle = 0
    escaped = False
    for char in value:
        if escaped:
            current.append(char)
            escaped = False
            continue
        if char == "\\" and quoted:
            current.append(char)
            escaped = True
            continue
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            angle += 1
        elif char == ">" and not quoted and angle:
            angle -= 1
        if char in ",\n" and not quoted and not angle:
            items.append("".join(current))
            current = []
            continue
        current.append(char)
    if quoted:
        raise ValueError(f"unbalanced double quote in {value!r}")
    items.append("".join(current))
    return [item.strip() for item in items if item.strip()]


def _unquote(item: str) -> str:
    if len(item) >= 2 and item.startswith('"') and item.endswith('"'):
        inner = item[1:-1]
        out: list[str] = []
        escaped = False
        for char in inner:
            if escaped or char != "\\":
                out.append(char)
                escaped = False
            else:
                escaped = True
        return "".join(out)
    return item


def classify(item: str) -> Destination:
    """One list item as a destination (see the module docstring)."""
    text = item.strip()
    literal = False
    if text.startswith("\\"):
        literal, text = True, text[1:]
    # A quoted local part ("|cmd"@domain is not a command; "|cmd" is) - Postfix unquotes first.
    text = _unquote(text)
    if not literal and text.startswith("|"):
        return Destination(DestinationKind.COMMAND, text[1:].strip())
    if not literal and text.lower().startswith(":include:"):
        return Destination(DestinationKind.INCLUDE, text[len(":include:") :].strip())
    if not literal and text.startswith("/"):
        return Destination(DestinationKind.FILE, text)
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    return Destination(DestinationKind.ADDRESS, text, literal)


def parse_destinations(value: str, path: str = "<string>", line: int = 0) -> list[Destination]:
    try:
        return [classify(item) for item in split_destinations(value)]
    except ValueError as exc:
        raise AliasError(path, line, None, str(exc)) from None


def parse_include(text: str, path: str = "<string>") -> list[Destination]:
    """An :include: or .forward file: destinations separated by commas and newlines."""
    found: list[Destination] = []
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        found.extend(parse_destinations(stripped, path, number))
    return found


def read_include(path: str | os.PathLike[str]) -> list[Destination]:
    source = Path(path)
    with open(source, "rb") as handle:
        return include_members(handle.read(MAX_INCLUDE_SIZE + 1), str(source))


def include_members(data: bytes, source: str) -> list[Destination]:
    """The destinations of an :include: or .forward file read as at most MAX_INCLUDE_SIZE + 1
    bytes; a larger one is refused (a runaway list)."""
    if len(data) > MAX_INCLUDE_SIZE:
        raise AliasError(source, 0, None, f"larger than {MAX_INCLUDE_SIZE} bytes")
    return parse_include(data.decode("utf-8", "replace"), source)


# --------------------------------------------------------------------------------------------
# Building the database


def render_table_source(entries: Iterable[AliasEntry]) -> str:
    """The entries in postmap(1) source format (`key value`), as build_hash reads it."""
    lines = []
    for entry in entries:
        if any(c.isspace() for c in entry.name):
            raise AliasError(
                entry.path, entry.line, entry.name, "alias names with whitespace cannot be indexed"
            )
        lines.append(f"{entry.name} {entry.value}\n")
    return "".join(lines)


def build_alias_database(source: str | os.PathLike[str]) -> Path:
    """Build SOURCE.sqlite (the hash: index) from an aliases(5) file; returns the index path.

    The index holds what postmap would make of the aliases written in its `key value` format,
    written durably as any hash: index; it keeps the aliases file's group and other bits and
    belongs to whoever builds it.
    """
    source_path = Path(source)
    text = source_path.read_text(encoding="utf-8", errors="replace")
    entries = parse_aliases(text, str(source_path))
    table = parse_source(render_table_source(entries), str(source_path))
    return write_index(table, source_path, fold=True, mode=source_path.stat().st_mode)


# --------------------------------------------------------------------------------------------
# Lookups


def lookup_keys(
    local_part: str,
    delimiter: str,
    *,
    owner_request_special: bool = True,
) -> list[str]:
    """Alias keys to try for a local part, in order: `user+ext` then `user` (local(8)).

    With owner_request_special and a `-` delimiter, `owner-list` and `list-request` are never
    split: they name the list's owner and request addresses, not an extension.
    """
    local = local_part.lower()
    keys = [local]
    if not delimiter:
        return keys
    if (
        owner_request_special
        and "-" in delimiter
        and (local.startswith("owner-") or local.endswith("-request"))
    ):
        return keys
    for index, char in enumerate(local):
        if char in delimiter and index > 0:
            keys.append(local[:index])
            break
    return keys


@dataclass(frozen=True, slots=True)
class AliasHit:
    key: str  # the alias name that matched
    value: str
    table: str  # the table spec, for logging
    owner: str | None  # owner-KEY's name when that alias exists and owner_request_special


def find_alias(
    tables: Sequence[tuple[str, LookupTable]],
    local_part: str,
    delimiter: str,
    *,
    owner_request_special: bool = True,
) -> AliasHit | None:
    """The first table value for the first matching key (every table per key, as local(8))."""
    for key in lookup_keys(local_part, delimiter, owner_request_special=owner_request_special):
        for spec, table in tables:
            value = table.lookup(key)
            if value is None:
                continue
            owner = None
            if owner_request_special and not key.startswith("owner-"):
                owner_key = f"owner-{key}"
                if any(t.lookup(owner_key) is not None for _, t in tables):
                    owner = owner_key
            return AliasHit(key, value, spec, owner)
    return None


# --------------------------------------------------------------------------------------------
# Expansion bookkeeping


@dataclass
class ExpansionState:
    """What one recipient's expansion has seen: duplicates are delivered once, and
    Delivered-To headers of the message stop forwarding loops."""

    delivered_to: frozenset[str] = frozenset()  # lower-cased Delivered-To values of the message
    seen: set[str] = field(default_factory=set)
    count: int = 0
    limit: int = 1000

    def first_time(self, destination: Destination) -> bool:
        """True the first time a destination comes up in this expansion."""
        key = destination.key()
        if key in self.seen:
            return False
        self.seen.add(key)
        self.count += 1
        return True

    def is_loop(self, address: str) -> bool:
        """RFC 5321 section 6.3 wants loops detected; Delivered-To is Postfix's marker."""
        return address.strip().lower() in self.delivered_to

    def too_many(self) -> bool:
        return self.count > self.limit
