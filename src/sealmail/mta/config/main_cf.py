"""main.cf: `name = value` lines, `$name` expansion, and an editor for `postconf -e/-X/-#`.

Syntax, as Postfix's postconf(5) describes it and Postfix 3.7 behaves (checked with its postconf):

- A logical line starts at a line whose first character is not whitespace; a following line that
  starts with whitespace continues it. Comment lines (first non-blank character `#`) and blank
  lines are skipped, also between a line and its continuation. The physical lines are joined as
  they are (the newline dropped, the continuation's leading whitespace kept); the value is the text
  after the first `=`, with surrounding whitespace removed.
- A later entry for a name overrides an earlier one.
- Values are kept raw. Expansion happens when a value is used: `$name`, `${name}`, `$(name)`;
  `${name?value}` (value when $name is non-empty), `${name:value}` (value when $name is empty),
  the Postfix 3.0 forms `${name?{value}}`, `${name:{value}}`, `${name?{value1}:{value2}}`; `$$`
  is a literal `$`. An undefined name expands to nothing, with a warning. Expansion is recursive
  and bounded: a loop (`d = $d`) is an `ExpansionError`, never a hang.

The document model keeps every physical line, so rendering an unedited document gives back the
exact text, and an edit touches only the lines of the entries it changes.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn, TypeVar, cast

from sealmail.config.imapd_conf import ConfigError
from sealmail.config.schema import Kind, Option
from sealmail.durable import replace_file
from sealmail.mta.config import parameters
from sealmail.mta.config.parameters import MAIN, Parameter
from sealmail.mta.config.postfix_files import is_skipped, logical_lines, read_text

T = TypeVar("T")

log = logging.getLogger("sealmail.mta.config")

MAX_EXPANSION_DEPTH = 100  # Postfix gives up at 100 nested macro calls too


class ExpansionError(ConfigError):
    """A `$name` expansion is malformed or does not end (a parameter that refers to itself)."""


# --------------------------------------------------------------------------------------------
# Parsing and the document


@dataclass(frozen=True, slots=True)
class MainCfEntry:
    """One `name = value` entry, with where it came from."""

    name: str
    value: str
    path: str
    line: int


@dataclass(slots=True)
class _Block:
    """Physical lines of the file: an entry with its continuations, or other lines (comments)."""

    lines: list[str]
    entry: MainCfEntry | None = None


def split_assignment(text: str, path: str = "<string>", line: int = 0) -> tuple[str, str]:
    """`name = value` -> (name, value); a missing `=` or a bad name is a ConfigError."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name or not parameters.is_valid_name(name):
        raise ConfigError(path, line, None, f"missing '=' after parameter name: {text.strip()!r}")
    return name, value.strip()


@dataclass
class MainCfDocument:
    """main.cf as lines, for reading entries and for in-place edits that keep everything else."""

    path: str = "<string>"
    blocks: list[_Block] = field(default_factory=list)

    @property
    def entries(self) -> list[MainCfEntry]:
        return [block.entry for block in self.blocks if block.entry is not None]

    def values(self) -> dict[str, MainCfEntry]:
        """name -> effective entry (the last one in the file wins, as in Postfix)."""
        found: dict[str, MainCfEntry] = {}
        for entry in self.entries:
            if entry.name in found:
                log.warning(
                    "%s: multiple entries for %r; line %d wins", self.path, entry.name, entry.line
                )
            found[entry.name] = entry
        return found

    def render(self) -> str:
        return "".join("".join(block.lines) for block in self.blocks)

    # -- edits (postconf -e, -X, -#) --------------------------------------------------------

    def set(self, name: str, value: str) -> None:
        """Set `name`: every existing entry is rewritten in place (as Postfix 3.7's postconf -e
        does, continuation lines included), or a new line is appended."""
        line_text = f"{name} = {value}\n" if value else f"{name} =\n"
        found = False
        for block in self.blocks:
            if block.entry is not None and block.entry.name == name:
                found = True
                kept = [line for line in block.lines if is_skipped(line)]
                block.lines = [line_text, *kept]
                block.entry = MainCfEntry(name, value, self.path, block.entry.line)
        if not found:
            self._ensure_final_newline()
            self.blocks.append(_Block([line_text], MainCfEntry(name, value, self.path, 0)))

    def remove(self, name: str) -> bool:
        """Drop every entry for `name` (postconf -X); comments in between stay. True if any."""
        found = False
        for block in self.blocks:
            if block.entry is not None and block.entry.name == name:
                found = True
                block.lines = [line for line in block.lines if is_skipped(line)]
                block.entry = None
        return found

    def comment_out(self, name: str) -> bool:
        """Prefix every line of each entry for `name` with `#` (postconf -#). True if any."""
        found = False
        for block in self.blocks:
            if block.entry is not None and block.entry.name == name:
                found = True
                block.lines = [line if is_skipped(line) else "#" + line for line in block.lines]
                block.entry = None
        return found

    def _ensure_final_newline(self) -> None:
        for block in reversed(self.blocks):
            if block.lines:
                if not block.lines[-1].endswith("\n"):
                    block.lines[-1] += "\n"
                return


def parse_main_cf(text: str, path: str = "<string>") -> MainCfDocument:
    """Parse main.cf text; a line that is not `name = value` is a ConfigError naming its line."""
    physical = text.splitlines(keepends=True)
    owner: dict[int, MainCfEntry] = {}
    members: dict[int, list[int]] = {}
    for logical in logical_lines(text):
        number, indexes = logical.number, logical.indexes
        name, value = split_assignment("".join(logical.parts), path, number)
        owner[indexes[0]] = MainCfEntry(name, value, path, number)
        members[indexes[0]] = list(indexes)
    blocks: list[_Block] = []
    index = 0
    while index < len(physical):
        if index in owner:
            last = members[index][-1]
            blocks.append(_Block(physical[index : last + 1], owner[index]))
            index = last + 1
        else:
            if blocks and blocks[-1].entry is None:
                blocks[-1].lines.append(physical[index])
            else:
                blocks.append(_Block([physical[index]]))
            index += 1
    return MainCfDocument(path, blocks)


def load_main_cf(path: str | os.PathLike[str], *, missing_ok: bool = False) -> MainCfDocument:
    text = read_text(path, missing_ok=missing_ok)
    return MainCfDocument(str(path)) if text is None else parse_main_cf(text, str(path))


def render_main_cf(values: Mapping[str, str] | Iterable[tuple[str, str]]) -> str:
    """main.cf text for the given values (for `sealmail up` and tests)."""
    items = values.items() if isinstance(values, Mapping) else values
    return "".join(f"{name} = {value}\n" if value else f"{name} =\n" for name, value in items)


def write_main_cf(document: MainCfDocument, path: str | os.PathLike[str]) -> None:
    """Replace the file atomically: a temporary file beside it, fsync, rename, fsync the
    directory; the mode of the old file is kept (main.cf may hold nothing secret, but the
    operator's choice stands)."""
    target = Path(path)
    try:
        mode = target.stat().st_mode & 0o7777
    except FileNotFoundError:
        mode = 0o644
    replace_file(target, document.render().encode("utf-8"), mode=mode)


# --------------------------------------------------------------------------------------------
# Expansion

_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")


def _closing(text: str, start: int, open_char: str, close_char: str) -> int:
    """Index of the bracket closing the one at `start` (nesting counted), or -1."""
    depth = 0
    for index in range(start, len(text)):
        char = text[index]
        if char == open_char:
            depth += 1
        elif char == close_char:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _unbrace(text: str) -> str:
    """`{ value }` -> `value` (Postfix 3.0 braced operands); anything else unchanged."""
    stripped = text.strip()
    if stripped.startswith("{") and _closing(stripped, 0, "{", "}") == len(stripped) - 1:
        return stripped[1:-1].strip()
    return text


def _split_alternatives(text: str) -> tuple[str, str | None]:
    """`{a}:{b}` -> ("a", "b"); `value` -> ("value", None)."""
    stripped = text.strip()
    if stripped.startswith("{"):
        end = _closing(stripped, 0, "{", "}")
        if end > 0:
            rest = stripped[end + 1 :].strip()
            if rest.startswith(":"):
                return stripped[1:end].strip(), _unbrace(rest[1:])
    return _unbrace(text), None


Resolver = Callable[[str], "str | None"]


def expand(
    text: str,
    resolve: Resolver,
    *,
    where: str = "<string>",
    undefined: Callable[[str], None] | None = None,
    _depth: int = 0,
) -> str:
    """Expand `$name` references in `text`; `resolve` gives a name's raw value or None.

    Raises ExpansionError for a malformed reference or when nesting passes
    MAX_EXPANSION_DEPTH (a loop such as `a = $b`, `b = $a`).
    """
    if _depth > MAX_EXPANSION_DEPTH:
        raise ExpansionError(where, 0, None, "unreasonable nesting of $name expansion (a loop?)")
    out: list[str] = []
    index = 0
    length = len(text)
    while index < length:
        char = text[index]
        if char != "$":
            next_dollar = text.find("$", index)
            if next_dollar < 0:
                out.append(text[index:])
                break
            out.append(text[index:next_dollar])
            index = next_dollar
            continue
        if index + 1 >= length:
            out.append("$")  # a trailing `$` stands for itself, as in Postfix
            break
        following = text[index + 1]
        if following == "$":
            out.append("$")
            index += 2
            continue
        if following in "{(":
            closer = "}" if following == "{" else ")"
            end = _closing(text, index + 1, following, closer)
            if end < 0:
                raise ExpansionError(where, 0, None, f"missing {closer!r} in {text[index:]!r}")
            inner = text[index + 2 : end]
            out.append(_expand_braced(inner, resolve, where, undefined, _depth))
            index = end + 1
            continue
        end = index + 1
        while end < length and text[end] in _NAME_CHARS:
            end += 1
        if end == index + 1:
            out.append("$")  # `$` before a non-name character is literal
            index += 1
            continue
        out.append(_value_of(text[index + 1 : end], resolve, where, undefined, _depth))
        index = end
    return "".join(out)


def _value_of(
    name: str, resolve: Resolver, where: str, undefined: Callable[[str], None] | None, depth: int
) -> str:
    raw = resolve(name)
    if raw is None:
        if undefined is not None:
            undefined(name)
        return ""
    return expand(raw, resolve, where=where, undefined=undefined, _depth=depth + 1)


def _expand_braced(
    inner: str, resolve: Resolver, where: str, undefined: Callable[[str], None] | None, depth: int
) -> str:
    """`name`, `name?value`, `name:value`, `name?{a}:{b}` (the text between the brackets)."""
    end = 0
    while end < len(inner) and inner[end] in _NAME_CHARS:
        end += 1
    name, rest = inner[:end], inner[end:]
    if not name:
        raise ExpansionError(where, 0, None, f"bad parameter name in ${{{inner}}}")
    if not rest:
        return _value_of(name, resolve, where, undefined, depth)
    operator, operand = rest[0], rest[1:]
    if operator not in "?:":
        raise ExpansionError(
            where, 0, None, f"bad expression ${{{inner}}}: expected ? or : after {name}"
        )
    # `${name?...}` tests without warning about an undefined name.
    raw = resolve(name)
    non_empty = bool(raw) and bool(
        expand(raw or "", resolve, where=where, undefined=undefined, _depth=depth + 1)
    )
    if_set, if_unset = _split_alternatives(operand)
    if operator == ":":
        chosen = "" if non_empty else if_set
    elif if_unset is None:
        chosen = if_set if non_empty else ""
    else:
        chosen = if_set if non_empty else if_unset
    return expand(chosen, resolve, where=where, undefined=undefined, _depth=depth + 1)


# --------------------------------------------------------------------------------------------
# The effective configuration

_TRUE = {"yes", "true", "on", "1"}
_FALSE = {"no", "false", "off", "0"}
_TIME_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_SIZE_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def _system_hostname() -> str:
    name = socket.getfqdn()
    if "." not in name:
        name = f"{socket.gethostname()}.localdomain"
    return name


@dataclass
class MainConfig:
    """Effective main.cf: explicit values (and per-service overrides) over registry defaults.

    `get(MAIN.name)` expands and converts, and a bad value is a ConfigError naming the file,
    line and parameter; `error(MAIN.name, why)` builds one for a value found wrong later.
    `raw()` gives a parameter's unexpanded value. The getters by name (`value("name")`,
    `integer`, `time`, ...) serve generic tools (postconf) and the modules listed in
    tests/config/test_typed_options.py until they are converted; code reads through `get`.
    """

    explicit: dict[str, MainCfEntry] = field(default_factory=dict)
    path: str = "<defaults>"
    transports: frozenset[str] = frozenset()
    hostname: str | None = None  # injectable, so tests do not depend on the machine
    _warned: set[str] = field(default_factory=set, repr=False)
    # Expanded values: a configuration does not change once read (a reload reads a new one),
    # and the queue manager asks for the same few parameters for every message.
    _expanded: dict[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_document(
        cls,
        document: MainCfDocument,
        *,
        transports: Iterable[str] = (),
        hostname: str | None = None,
    ) -> MainConfig:
        config = cls(document.values(), document.path, frozenset(transports), hostname)
        for entry in config.explicit.values():
            rename = parameters.renamed(entry.name)
            if rename is not None:
                parameters.note_rename(rename, f"{entry.path}:{entry.line}")
        return config

    def with_overrides(self, overrides: Iterable[MainCfEntry]) -> MainConfig:
        """This configuration with a master.cf service's `-o` overrides on top."""
        merged = dict(self.explicit)
        for entry in overrides:
            rename = parameters.renamed(entry.name)
            if rename is not None:
                parameters.note_rename(rename, f"{entry.path}:{entry.line}")
            merged[entry.name] = entry
        return MainConfig(merged, self.path, self.transports, self.hostname)

    # -- raw values ---------------------------------------------------------------------------

    def get(self, parameter: Option[T]) -> T:
        """The typed value of a declared parameter: `config.get(MAIN.relayhost)`; its kind
        picks the conversion, and a bad value names file, line and parameter."""
        return cast(T, _READERS[parameter.kind](self, parameter.name))

    def declaration(self, name: str) -> Parameter[Any] | None:
        return parameters.lookup(name)

    def default(self, name: str) -> str | None:
        """The default of `name` (computed ones filled in), or None if it is not declared."""
        if name == "myhostname":
            return self.hostname or _system_hostname()
        if name == "mydomain":
            host = self.raw(MAIN.myhostname) or ""

            def resolve(reference: str) -> str | None:
                # An unset mydomain comes from myhostname: one that names $mydomain is a loop
                # (was a RecursionError, found by fuzz/main_cf.py).
                if reference == "mydomain":
                    raise ExpansionError(self.path, 0, "myhostname",
                                         "myhostname refers to $mydomain, which is not set and "
                                         "is derived from myhostname (a loop)")
                return self.raw(reference)

            host = expand(host, resolve, where=self.path)
            _, dot, domain = host.partition(".")
            return domain if dot and domain else "localdomain"
        declared = parameters.lookup(name)
        return None if declared is None else str(declared.default)

    def entry(self, parameter: Option[Any] | str) -> MainCfEntry | None:
        """The explicit entry that sets `parameter`, following a renamed parameter's old name."""
        name = _name(parameter)
        found = self.explicit.get(name)
        if found is not None:
            return found
        for rename in parameters.RENAMES.values():
            if rename.new == name and rename.old in self.explicit:
                return self.explicit[rename.old]
        return None

    def raw(self, parameter: Option[Any] | str) -> str | None:
        """Unexpanded value: explicit, else via an old name, else the default; None if unknown.
        (`raw(MAIN.forward_path)`: a value whose `$` are another program's macros.)"""
        name = _name(parameter)
        found = self.entry(name)
        if found is not None:
            return found.value
        return self.default(name)

    def is_set(self, name: str) -> bool:
        return self.entry(name) is not None

    # -- expanded and typed values ------------------------------------------------------------

    def _where(self, name: str) -> tuple[str, int]:
        found = self.entry(name)
        return (found.path, found.line) if found is not None else (self.path, 0)

    def _warn_undefined(self, name: str) -> None:
        if name not in self._warned:
            self._warned.add(name)
            log.warning("%s: undefined parameter: %s", self.path, name)

    def expand_text(self, text: str, where: str | None = None) -> str:
        return expand(text, self.raw, where=where or self.path, undefined=self._warn_undefined)

    def value(self, name: str) -> str:
        """The expanded value; an undeclared, unset name is a KeyError (a programming error)."""
        known = self._expanded.get(name)
        if known is not None:
            return known
        raw = self.raw(name)
        if raw is None:
            raise KeyError(f"undeclared main.cf parameter {name!r}")
        path, line = self._where(name)
        try:
            value = expand(raw, self.raw, where=path, undefined=self._warn_undefined)
        except ExpansionError as exc:
            raise ExpansionError(path, line, name, str(exc).split(": ", 1)[-1]) from None
        self._expanded[name] = value
        return value

    def string(self, name: str) -> str:
        return self.value(name)

    def instance_path(self, parameter: Option[Any] | str) -> str:
        """A path the MTA writes under or to (queue_directory, data_directory, alias_database).

        Its default is the system instance's (/var/spool/sealmail ...): a configuration read
        from any other directory (`-c DIR`) must set it, else a command run on that instance
        would create and write system directories (issue 16). Unset there: a ConfigError naming
        the parameter. (A name, str, is the older form, for the modules not yet converted.)
        """
        name = _name(parameter)
        system = str(MAIN.config_directory.default)
        if not self.is_set(name) and self.get(MAIN.config_directory) != system:
            raise self.error(name, f"{name} is not set: an instance whose main.cf is not in "
                                   f"{system} must set it (the default {self.value(name)} "
                                   "belongs to the system instance)")
        return self.value(name)

    def error(self, parameter: Option[Any] | str, message: str) -> ConfigError:
        """A ConfigError naming the file and line that set `parameter` (main.cf's or a
        master.cf -o override; the file alone for a default) and the parameter."""
        name = _name(parameter)
        path, line = self._where(name)
        return ConfigError(path, line, name, message)

    def boolean(self, name: str) -> bool:
        text = self.value(name).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        return self._raise(name, f"{text!r} is not yes or no")

    def integer(self, name: str) -> int:
        text = self.value(name).strip()
        try:
            return int(text)
        except ValueError:
            return self._raise(name, f"{text!r} is not a whole number")

    def size(self, name: str) -> int:
        """Bytes; Postfix takes a plain number, we also accept a k/m/g suffix."""
        text = self.value(name).strip().lower()
        digits, unit = (text[:-1], text[-1]) if text[-1:] in "kmg" and text else (text, "")
        if not digits.isdigit():
            return self._raise(name, f"{text!r} is not a size in bytes")
        return int(digits) * _SIZE_UNITS[unit]

    def time(self, name: str) -> int:
        """Seconds. A value without a unit uses the parameter's own default unit (postconf(5))."""
        text = self.value(name).strip().lower()
        declared = parameters.lookup(name)
        unit = declared.time_unit if declared is not None else "s"
        if text[-1:] in _TIME_UNITS:
            text, unit = text[:-1], text[-1]
        if not text.isdigit():
            return self._raise(name, f"{self.value(name)!r} is not a time (number and s/m/h/d/w)")
        return int(text) * _TIME_UNITS[unit]

    def words(self, name: str) -> tuple[str, ...]:
        """A list value: words separated by whitespace and/or commas."""
        return tuple(self.value(name).replace(",", " ").split())

    def maps(self, name: str) -> tuple[str, ...]:
        """A list of `type:name` tables; `inline:{...}` and `static:{...}` stay whole."""
        return split_table_list(self.value(name))

    def _raise(self, name: str, message: str) -> NoReturn:
        raise self.error(name, message)

    def known_names(self) -> set[str]:
        """Declared names, per-transport names of master.cf transports, old names, and
        user-defined names that some known value refers to (postconf's "used" rule)."""
        known = set(parameters.PARAMETERS) | set(parameters.RENAMES)
        known |= {
            transport + suffix
            for transport in self.transports
            for suffix in parameters.PER_TRANSPORT
        }
        known |= set(self.get(MAIN.smtpd_restriction_classes))
        pending = [
            self.raw(name) or ""
            for name in known
            if name in self.explicit or name in parameters.PARAMETERS
        ]
        while pending:
            for referred in referenced_names(pending.pop()):
                if referred not in known:
                    known.add(referred)
                    pending.append(self.raw(referred) or "")
        return known

    def unused(self) -> list[MainCfEntry]:
        """Explicit entries that nothing reads (postconf's "unused parameter" warning)."""
        known = self.known_names()
        return [entry for name, entry in self.explicit.items() if name not in known]


def _name(parameter: Option[Any] | str) -> str:
    return parameter if isinstance(parameter, str) else parameter.name


_READERS: dict[Kind, Callable[[MainConfig, str], object]] = {
    Kind.STRING: MainConfig.value,
    Kind.INTEGER: MainConfig.integer,
    Kind.BOOLEAN: MainConfig.boolean,
    Kind.TIME: MainConfig.time,
    Kind.SIZE: MainConfig.size,
    Kind.WORDS: MainConfig.words,
    Kind.MAPS: MainConfig.maps,
}

_REFERENCE = re.compile(r"\$\$|\$[{(]?([A-Za-z0-9_]+)")


def referenced_names(text: str) -> set[str]:
    """Names a value refers to with `$name`, `${name...}` or `$(name)` (`$$` is no reference)."""
    return {match.group(1) for match in _REFERENCE.finditer(text) if match.group(1)}


def split_table_list(text: str) -> tuple[str, ...]:
    """Split a list of tables on whitespace and commas, keeping `{...}` groups together."""
    items: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}" and depth:
            depth -= 1
        if depth == 0 and (char.isspace() or char == ","):
            if current:
                items.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        items.append("".join(current))
    return tuple(items)
