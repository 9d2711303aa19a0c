"""master.cf: one service per logical line, as master(5) describes.

    service type private unpriv chroot wakeup maxproc command [args...]

Logical lines are built as in main.cf (a line starting with whitespace continues the previous
one; comment and blank lines are skipped). Fields are separated by whitespace; `{ ... }` groups
text with whitespace into one argument (Postfix 3.0). The `-o name=value` options of the command
(also `-o { name = value with spaces }` and `-o{...}`) are per-service main.cf overrides: they apply
to that service only (`MasterService.effective()`).

As with getopt in Postfix's daemons, options are read up to the first argument that is not an
option; the remaining arguments (pipe(8)'s `flags=R user=cyrus argv=...`) are the command's own.
Every error names the file and line.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import parameters
from sealmail.mta.config.main_cf import MainCfEntry, MainConfig, split_assignment
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.postfix_files import logical_lines, read_text

SERVICE_TYPES = ("inet", "unix", "unix-dgram", "fifo", "pass")
_FLAG = re.compile(r"[yn-]\Z")
_WAKEUP = re.compile(r"(-|\d+\??)\Z")
_MAXPROC = re.compile(r"(-|\d+)\Z")
# Column where each field starts in `postconf -M` output (a field that runs past the next column
# pushes the rest right by one space), as Postfix 3.7 prints it.
_COLUMNS = (0, 11, 17, 25, 33, 41, 49, 57)


class MasterCfError(ConfigError):
    """master.cf is malformed; the message names file and line."""


@dataclass(frozen=True, slots=True)
class Override:
    """A `-o name=value` option of one service."""

    name: str
    value: str

    def render(self) -> str:
        if any(char.isspace() for char in self.value):
            return f"-o {{{self.name}={self.value}}}"
        return f"-o {self.name}={self.value}"


@dataclass(frozen=True, slots=True)
class MasterService:
    """One master.cf entry, with the text of its fields as written ('-' for a default)."""

    service: str
    type: str
    private_field: str
    unpriv_field: str
    chroot_field: str
    wakeup_field: str
    maxproc_field: str
    command: str
    overrides: tuple[Override, ...] = ()
    args: tuple[str, ...] = ()  # the command's own arguments, -o options removed
    options: tuple[str, ...] = ()  # other daemon options before args (-v, -D, -S ...)
    path: str = "<string>"
    line: int = 0

    @property
    def key(self) -> str:
        """`service/type`, unique in master.cf (`postconf -M smtp/inet`)."""
        return f"{self.service}/{self.type}"

    # Defaults of '-' as in master(5) for Postfix >= 3.0.
    @property
    def private(self) -> bool:
        return self.private_field != "n"

    @property
    def unprivileged(self) -> bool:
        return self.unpriv_field != "n"

    @property
    def chroot(self) -> bool:
        return self.chroot_field == "y"

    @property
    def wakeup(self) -> int:
        """Seconds between wake-up requests; 0 means none."""
        text = self.wakeup_field.rstrip("?")
        return 0 if text == "-" else int(text)

    @property
    def wakeup_only_when_used(self) -> bool:
        """A `?` after the wakeup time: wake the service only once it has been used."""
        return self.wakeup_field.endswith("?")

    def process_limit(self, config: MainConfig) -> int:
        """maxproc; '-' is $default_process_limit, 0 means no limit."""
        if self.maxproc_field == "-":
            return config.get(MAIN.default_process_limit)
        return int(self.maxproc_field)

    def override_entries(self) -> list[MainCfEntry]:
        return [MainCfEntry(o.name, o.value, self.path, self.line) for o in self.overrides]

    def effective(self, config: MainConfig) -> MainConfig:
        """main.cf plus this service's `-o` overrides (and service_name, as master sets it)."""
        entries = [MainCfEntry("service_name", self.service, self.path, self.line)]
        return config.with_overrides([*entries, *self.override_entries()])

    def render(self) -> str:
        """The entry on one line, normalized as `postconf -M` prints it."""
        line = ""
        fields = (self.service, self.type, self.private_field, self.unpriv_field,
                  self.chroot_field, self.wakeup_field, self.maxproc_field, self.command)
        for column, text in zip(_COLUMNS, fields, strict=True):
            if line:
                line = line.ljust(column) if len(line) < column else line + " "
            line += text
        words = [*self.options, *(o.render() for o in self.overrides), *map(_render_arg, self.args)]
        return " ".join([line, *words])


def _render_arg(arg: str) -> str:
    return f"{{{arg}}}" if not arg or any(char.isspace() for char in arg) else arg


@dataclass
class MasterCf:
    path: str = "<string>"
    services: list[MasterService] = field(default_factory=list)

    def find(self, service: str, type_: str | None = None) -> list[MasterService]:
        return [s for s in self.services
                if s.service == service and (type_ is None or s.type == type_)]

    def get(self, service: str, type_: str = "unix") -> MasterService | None:
        found = self.find(service, type_)
        return found[0] if found else None

    @property
    def transports(self) -> frozenset[str]:
        """Service names that run a delivery agent (they get per-transport parameters)."""
        return frozenset(s.service for s in self.services
                         if s.command in parameters.DELIVERY_AGENTS)

    def __iter__(self) -> Iterator[MasterService]:
        return iter(self.services)


def tokenize(text: str, path: str = "<string>", line: int = 0) -> list[str]:
    """Split on whitespace; `{ ... }` (nesting counted) keeps its text as one token, braces
    included, so callers can tell `-o {a = b}` from `-o a=b`."""
    tokens: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                raise MasterCfError(path, line, None, f"unbalanced '}}' in {text.strip()!r}")
            depth -= 1
        if depth == 0 and char.isspace():
            if current:
                tokens.append("".join(current))
                current = []
            continue
        current.append(char)
    if depth:
        raise MasterCfError(path, line, None, f"missing '}}' in {text.strip()!r}")
    if current:
        tokens.append("".join(current))
    return tokens


def _ungroup(token: str) -> str:
    """`{ text }` -> `text`; other tokens unchanged."""
    if token.startswith("{") and token.endswith("}"):
        return token[1:-1].strip()
    return token


def _parse_override(text: str, path: str, line: int) -> Override:
    body = _ungroup(text)
    try:
        name, value = split_assignment(body, path, line)
    except ConfigError:
        raise MasterCfError(path, line, None, f"-o needs name=value, got {text!r}") from None
    return Override(name, value)


def parse_service(text: str, path: str = "<string>", line: int = 0) -> MasterService:
    """One logical master.cf line -> MasterService."""
    tokens = tokenize(text, path, line)
    if len(tokens) < 8:
        raise MasterCfError(path, line, None,
                            f"expected 8 fields (service type private unpriv chroot wakeup "
                            f"maxproc command), found {len(tokens)}: {text.strip()!r}")
    service, type_, private, unpriv, chroot, wakeup, maxproc, command = tokens[:8]
    if type_ not in SERVICE_TYPES:
        raise MasterCfError(path, line, service,
                            f"bad service type {type_!r} (expected {', '.join(SERVICE_TYPES)})")
    for label, value in (("private", private), ("unpriv", unpriv), ("chroot", chroot)):
        if not _FLAG.match(value):
            raise MasterCfError(path, line, service, f"bad {label} field {value!r} (y, n or -)")
    if not _WAKEUP.match(wakeup):
        raise MasterCfError(path, line, service, f"bad wakeup field {wakeup!r} (-, N or N?)")
    if not _MAXPROC.match(maxproc):
        raise MasterCfError(path, line, service, f"bad maxproc field {maxproc!r} (- or N)")
    if command.startswith("{"):
        raise MasterCfError(path, line, service, f"bad command {command!r}")
    overrides: list[Override] = []
    options: list[str] = []
    rest = tokens[8:]
    index = 0
    while index < len(rest) and rest[index].startswith("-") and rest[index] != "-":
        token = rest[index]
        if token == "-o":
            if index + 1 >= len(rest):
                raise MasterCfError(path, line, service, "-o at the end needs name=value")
            overrides.append(_parse_override(rest[index + 1], path, line))
            index += 2
        elif token.startswith("-o"):
            overrides.append(_parse_override(token[2:], path, line))
            index += 1
        elif token == "--":
            index += 1
            break
        else:
            options.append(token)
            index += 1
    args = tuple(_ungroup(token) for token in rest[index:])
    return MasterService(service, type_, private, unpriv, chroot, wakeup, maxproc, command,
                         tuple(overrides), args, tuple(options), path, line)


def parse_master_cf(text: str, path: str = "<string>") -> MasterCf:
    """Parse master.cf; a malformed or duplicate entry is a MasterCfError naming the line."""
    services: list[MasterService] = []
    seen: dict[str, int] = {}
    for logical in logical_lines(text):
        number = logical.number
        entry = parse_service(" ".join(logical.parts), path, number)
        if entry.key in seen:
            raise MasterCfError(path, number, entry.service,
                                f"duplicate service {entry.key} (first at line {seen[entry.key]})")
        seen[entry.key] = number
        services.append(entry)
    return MasterCf(path, services)


def load_master_cf(path: str | os.PathLike[str], *, missing_ok: bool = False) -> MasterCf:
    text = read_text(path, MasterCfError, missing_ok=missing_ok)
    return MasterCf(str(path)) if text is None else parse_master_cf(text, str(path))


def render_master_cf(services: Iterable[MasterService]) -> str:
    return "".join(service.render() + "\n" for service in services)
