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

from sealmail.config.options import Option, OptionType, lookup

log = logging.getLogger("sealmail.config")

_TRUE = {"yes", "on", "true", "1", "t", "y"}
_FALSE = {"no", "off", "false", "0", "f", "n"}
_SIZE_SUFFIX = {"k": 1024, "m": 1024**2, "g": 1024**3}


class ConfigError(Exception):
    """A configuration file is wrong; the message names file, line and key."""

    def __init__(self, path: str, line: int, key: str | None, message: str) -> None:
        where = f"{path}:{line}" if line else path
        super().__init__(f"{where}: {key}: {message}" if key else f"{where}: {message}")
        self.path, self.line, self.key = path, line, key


def parse_switch(text: str) -> bool | None:
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def _convert(option: Option, raw: str) -> object:
    """The typed value of `raw`, or ValueError with a reason."""
    kind = option.type
    if kind is OptionType.STRING:
        return raw
    if kind is OptionType.SWITCH:
        value = parse_switch(raw)
        if value is None:
            raise ValueError(f"{raw!r} is not a switch (yes/no, on/off, true/false, 1/0)")
        return value
    if kind is OptionType.INT:
        try:
            return int(raw)
        except ValueError:
            raise ValueError(f"{raw!r} is not a whole number") from None
    if kind is OptionType.BYTESIZE:
        text = raw.strip().lower()
        scale = _SIZE_SUFFIX.get(text[-1:], 1)
        digits = text[:-1] if scale != 1 else text
        if not digits.isdigit():
            raise ValueError(
                f"{raw!r} is not a size (a number of bytes, optionally with K, M or G)"
            )
        return int(digits) * scale
    if kind is OptionType.OCTAL:
        try:
            mode = int(raw, 8)
        except ValueError:
            raise ValueError(f"{raw!r} is not an octal mode such as 0660") from None
        if not 0 <= mode <= 0o7777:
            raise ValueError(f"{raw!r} is not a file mode")
        return mode
    if kind is OptionType.ENUM:
        if raw.lower() not in option.choices:
            raise ValueError(f"{raw!r} is not one of {', '.join(option.choices)}")
        return raw.lower()
    if kind is OptionType.STRINGLIST:
        return tuple(raw.replace(",", " ").split())
    raise AssertionError(kind)


@dataclass
class ImapdConfig:
    """Typed access to imapd.conf values, defaults filled in from the registry."""

    path: str = "<defaults>"
    values: dict[str, object] = field(default_factory=dict)

    def _get(self, name: str, *kinds: OptionType) -> object:
        option = lookup(name)
        if option is None:
            raise KeyError(f"undeclared option {name!r}")
        assert option.type in kinds, f"{name} is {option.type.value}"
        if name in self.values:
            return self.values[name]
        default = option.default
        if isinstance(default, str):
            default = self._expand(default)
        return default

    def _expand(self, text: str) -> str:
        if "{configdirectory}" in text:
            text = text.replace("{configdirectory}", self.string("configdirectory") or "")
        return text

    def string(self, name: str) -> str | None:
        value = self._get(name, OptionType.STRING)
        assert value is None or isinstance(value, str)
        return value

    def enum(self, name: str) -> str:
        value = self._get(name, OptionType.ENUM)
        assert isinstance(value, str)
        return value

    def switch(self, name: str) -> bool:
        value = self._get(name, OptionType.SWITCH)
        assert isinstance(value, bool)
        return value

    def optional_switch(self, name: str, fallback: str) -> bool:
        """A switch that follows another while unset (lmtp_allowplaintext -> allowplaintext)."""
        if name in self.values:
            return self.switch(name)
        return self.switch(fallback)

    def integer(self, name: str) -> int:
        value = self._get(name, OptionType.INT, OptionType.BYTESIZE, OptionType.OCTAL)
        assert isinstance(value, int)
        return value

    def words(self, name: str) -> tuple[str, ...] | None:
        value = self._get(name, OptionType.STRINGLIST)
        assert value is None or isinstance(value, tuple)
        return value

    @property
    def configdirectory(self) -> Path:
        return Path(self.string("configdirectory") or ".")

    @property
    def partitions(self) -> dict[str, Path]:
        return {
            key.removeprefix("partition-"): Path(str(value))
            for key, value in self.values.items()
            if key.startswith("partition-")
        }

    @property
    def servername(self) -> str:
        return self.string("servername") or socket.gethostname()

    @property
    def hierarchy_separator(self) -> str:
        return "/" if self.switch("unixhierarchysep") else "."

    @property
    def lmtp_admins(self) -> tuple[str, ...]:
        admins = self.words("lmtp_admins")
        return admins if admins is not None else (self.words("admins") or ())

    def is_admin(self, identity: str) -> bool:
        return identity in (self.words("admins") or ())


def parse_imapd_conf(text: str, path: str = "<string>") -> ImapdConfig:
    """Parse imapd.conf text: unknown keys warn once each, bad values raise ConfigError."""
    values: dict[str, object] = {}
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
    return ImapdConfig(path=path, values=values)


def load_imapd_conf(path: str | os.PathLike[str]) -> ImapdConfig:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), 0, None, f"cannot read: {exc.strerror}") from None
    return parse_imapd_conf(text, str(path))


def render_imapd_conf(values: Mapping[str, object] | Iterable[tuple[str, object]]) -> str:
    """imapd.conf text for the given values (used by `sealmail up` and tests)."""
    items = values.items() if isinstance(values, Mapping) else values
    lines = []
    for key, value in items:
        option = lookup(key)
        if isinstance(value, bool):
            value = "yes" if value else "no"
        elif option is not None and option.type is OptionType.OCTAL and isinstance(value, int):
            value = f"0{value:o}"
        elif isinstance(value, (tuple, list)):
            value = " ".join(str(v) for v in value)
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


DEFAULT_CONFIG_PATH = "/etc/sealmail/imapd.conf"
