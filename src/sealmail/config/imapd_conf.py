"""imapd.conf in Cyrus's format: `key: value` lines, `#` comments, switches as yes/no/on/off/...

Values are checked against the option registry as they are read, so a bad value is reported with
its file, line and key before any service starts.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, cast

from sealmail.config.options import IMAPD, lookup
from sealmail.config.schema import Kind, Option, Status, parse_size, parse_switch, render_value

T = TypeVar("T")

log = logging.getLogger("sealmail.config")

class ConfigError(Exception):
    """A configuration file is wrong; the message names file, line and key."""

    def __init__(self, path: str, line: int, key: str | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.path, self.line, self.key = path, line, key


def _convert(option: Option[Any], raw: str) -> object:
    """The typed value of `raw`, or ValueError with a reason."""
    kind = option.kind
    refusal = option.refusal(raw) if option.refuses is not None else None
    if refusal is not None:
        raise ValueError(refusal)
    if kind is Kind.STRING:
        return raw
    if kind is Kind.BOOLEAN:
        value = parse_switch(raw)
        if value is None:
            raise ValueError(f"{raw!r} is not a switch (yes/no, on/off, true/false, 1/0)")
        return value
    if kind is Kind.INTEGER:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if kind is Kind.SIZE:
        size = parse_size(raw)
        if size is None:
            raise ValueError(
                f"{raw!r} is not a size (a number of bytes, optionally with K, M or G)"
            )
        return size
    if kind is Kind.OCTAL:
        try:
            mode = int(raw, 8)
        except ValueError:
            raise ValueError(f"{raw!r} is not an octal mode such as 0660") from None
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"{raw!r} is not a file mode")
        return mode
    if kind is Kind.ENUM:
        if raw.lower() not in option.choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(option.choices)}")
        return raw.lower()
    if kind is Kind.WORDS:
        return tuple(raw.replace(",", " ").split())
    raise AssertionError(kind)


def _name(option: Option[Any] | str) -> str:
    return option if isinstance(option, str) else option.name


@dataclass
class ImapdConfig:
    """Typed access to imapd.conf values, defaults filled in from the registry.

    `get(IMAPD.name)` is the typed accessor; `lines` keeps where each value was set, so a value
    found wrong after parsing is reported at its line: `raise config.error(IMAPD.name, why)`.
    """

    path: str = "<defaults>"
    values: dict[str, object] = field(default_factory=dict)
    lines: dict[str, int] = field(default_factory=dict)

    def get(self, option: Option[T]) -> T:
        """The value of a declared option, its default (expanded) when unset."""
        return cast(T, self._value(option.name, option))

    def is_set(self, option: Option[Any]) -> bool:
        return option.name in self.values

    def where(self, option: Option[Any] | str) -> str:
        """`path:line` of the line that set `option`, or the path alone for a default."""
        line = self.lines.get(_name(option), 0)
        return f"{self.path}:{line}" if line else self.path

    def error(self, option: Option[Any] | str, message: str) -> ConfigError:
        """A ConfigError naming the file, the line that set `option` (none for a default), and
        the option: a value found wrong after parsing is reported where the operator wrote it.
        A name (str) is for the prefix options only (partition-NAME)."""
        name = _name(option)
        return ConfigError(self.path, self.lines.get(name, 0), name, message)

    def _value(self, name: str, option: Option[Any]) -> object:
        if name in self.values:
            return self.values[name]
        default = option.default
        if isinstance(default, str):
            default = self._expand(default)
        return default

    def _expand(self, text: str) -> str:
        if "{configdirectory}" in text:
            text = text.replace("{configdirectory}", self.get(IMAPD.configdirectory))
        return text

    # -- derived values -----------------------------------------------------------------------

    @property
    def configdirectory(self) -> Path:
        return Path(self.get(IMAPD.configdirectory) or ".")

    @property
    def partitions(self) -> dict[str, Path]:
        return {
            key.removeprefix("partition-"): Path(str(value))
            for key, value in self.values.items()
            if key.startswith("partition-")
        }

    @property
    def servername(self) -> str:
        return self.get(IMAPD.servername) or socket.gethostname()

    @property
    def hierarchy_separator(self) -> str:
        return "/" if self.get(IMAPD.unixhierarchysep) else "."

    @property
    def lmtp_admins(self) -> tuple[str, ...]:
        admins = self.get(IMAPD.lmtp_admins)
        return admins if admins is not None else self.get(IMAPD.admins)

    def is_admin(self, identity: str) -> bool:
        return identity in self.get(IMAPD.admins)

    def without_effect(self) -> list[tuple[str, int]]:
        """(name, line) of each option set here that sealmail accepts without effect."""
        found = []
        for name in self.values:
            option = lookup(name)
            if option is not None and option.status is not Status.SUPPORTED:
                found.append((name, self.lines.get(name, 0)))
        return found

    def warn_without_effect(self) -> None:
        """One warning per option set without effect, with file and line (daemons at start)."""
        for name, line in self.without_effect():
            log.warning("%s:%d: %s: accepted but has no effect in sealmail", self.path, line, name)


def parse_imapd_conf(text: str, path: str = "<string>") -> ImapdConfig:
    """Parse imapd.conf text: unknown keys warn once each, bad values raise ConfigError."""
    values: dict[str, object] = {}
    lines: dict[str, int] = {}
    warned: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        key, sep, raw = stripped.partition(":")
        key = key.strip().lower()
        if not sep or not key or any(c.isspace() for c in key):
            raise ConfigError(path, number, None, f"expected 'key: value', got {stripped!r}")
        raw = raw.strip()
        option = lookup(key)
        if option is None:
            if key not in warned:
                log.warning("%s:%d: unknown option %r ignored", path, number, key)
                warned.add(key)
            continue
        try:
            values[key] = _convert(option, raw)
        except ValueError as exc:
            raise ConfigError(path, number, key, str(exc)) from None
        lines[key] = number
    return ImapdConfig(path=path, values=values, lines=lines)


def load_imapd_conf(path: str | os.PathLike[str]) -> ImapdConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), 0, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), 0, None, f"not UTF-8 text: {exc.reason}") from None
    return parse_imapd_conf(text, str(path))


def render_imapd_conf(values: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """imapd.conf text for the given values (used by `sealmail up` and tests)."""
    items = values.items() if isinstance(values, Mapping) else values
    lines = []
    for key, value in items:
        option = lookup(key)
        if option is not None:
            value = render_value(option, value)
        elif isinstance(value, bool):
            value = "yes" if value else "no"
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


DEFAULT_CONFIG_PATH = "/etc/sealmail/imapd.conf"
