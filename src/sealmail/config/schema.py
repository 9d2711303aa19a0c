"""The one shape of a configuration option, shared by imapd.conf and main.cf.

Cyrus declares every imapd.conf option once (lib/imapoptions) and Postfix every main.cf parameter
once (mail_params.h and postconf's tables); sealmail does the same for both files with one type:
an `Option` has a kind (which gives its typed accessor), a default, a doc line, and a status:

- `supported`: sealmail honours it;
- `accepted`: read without effect. Harmless (a default sealmail keeps anyway, or a tuning knob of
  a mechanism sealmail does differently); setting it is warned about once, with file and line;
- `refused`: a control whose absence weakens security (restrictions, milters, TLS policy).
  Setting it to a value sealmail cannot honour stops the start with file, line and parameter:
  silently not enforcing a restriction the operator wrote is worse than not starting.

A supported option may still refuse some values (`refuses`): smtpd_relay_restrictions is
honoured for the checks smtpd implements, and a list naming another check is refused.

Declarations are class attributes of a `Registry` subclass (`IMAPD.servername`, `MAIN.relayhost`),
so a reader's typo is an AttributeError mypy catches, and `config.get(IMAPD.servername)` has the
option's Python type. `postconf -d`, `sealmail imapd-conf -d` and the docs read the same table.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T", covariant=True)  # an Option[str] is an Option[str | None]: read-only


class Kind(enum.Enum):
    STRING = "string"
    INTEGER = "integer"
    BOOLEAN = "boolean"  # imapd.conf: yes/no/on/off/true/false/1/0; main.cf: yes/no
    SIZE = "size"  # bytes, with an optional K/M/G suffix
    TIME = "time"  # a number with an optional unit s, m, h, d, w
    OCTAL = "octal"  # a file mode such as 0660
    ENUM = "enum"  # one of `choices`
    WORDS = "words"  # words separated by whitespace and/or commas
    MAPS = "maps"  # a list of lookup tables, type:name


class Status(enum.Enum):
    SUPPORTED = "supported"
    ACCEPTED = "accepted"
    REFUSED = "refused"


Refusal = Callable[[str], "str | None"]
"""Given an option's (expanded) text, why sealmail cannot honour it, or None."""


def refuse_any_value(text: str) -> str | None:
    """A refused option: any non-empty value is one sealmail would not enforce."""
    return "sealmail does not implement it" if text.strip() else None


@dataclass(frozen=True, slots=True, eq=False)
class Option(Generic[T]):
    """One declared option. `T` is the Python type its accessor returns."""

    kind: Kind
    default: object  # imapd.conf: the typed value; main.cf: the raw text, expanded when read
    doc: str
    status: Status = Status.SUPPORTED
    choices: tuple[str, ...] = ()
    time_unit: str = "s"  # the unit of a TIME value written without one (postconf(5))
    refuses: Refusal | None = None
    name: str = ""

    def __set_name__(self, owner: type, name: str) -> None:
        object.__setattr__(self, "name", name)

    def named(self, name: str) -> Option[T]:
        """The same declaration under another name (prefix and per-transport options)."""
        copy: Option[T] = Option(self.kind, self.default, self.doc, self.status, self.choices,
                                 self.time_unit, self.refuses, name)
        return copy

    def refusal(self, text: str) -> str | None:
        """Why `text` cannot be honoured for this option, or None when it can."""
        if self.refuses is not None:
            return self.refuses(text)
        if self.status is Status.REFUSED:
            return refuse_any_value(text)
        return None

    def __repr__(self) -> str:
        return f"<Option {self.name} {self.kind.value} {self.status.value}>"


class Registry:
    """A file's declarations: subclass and assign `Option`s as class attributes."""

    @classmethod
    def options(cls) -> dict[str, Option[Any]]:
        found: dict[str, Option[Any]] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Option):
                    found[name] = value
        return found


# -- constructors: the kind decides the accessor's type -------------------------------------------
# Keyword arguments are passed through to Option (status, choices, time_unit, refuses).


def string(default: str, doc: str, **more: Any) -> Option[str]:
    return Option(Kind.STRING, default, doc, **more)


def optional_string(doc: str, default: str | None = None, **more: Any) -> Option[str | None]:
    return Option(Kind.STRING, default, doc, **more)


def integer(default: object, doc: str, **more: Any) -> Option[int]:
    return Option(Kind.INTEGER, default, doc, **more)


def boolean(default: object, doc: str, **more: Any) -> Option[bool]:
    return Option(Kind.BOOLEAN, default, doc, **more)


def optional_boolean(doc: str, **more: Any) -> Option[bool | None]:
    return Option(Kind.BOOLEAN, None, doc, **more)


def size(default: object, doc: str, **more: Any) -> Option[int]:
    return Option(Kind.SIZE, default, doc, **more)


def time(default: str, doc: str, **more: Any) -> Option[int]:
    return Option(Kind.TIME, default, doc, **more)


def octal(default: int, doc: str, **more: Any) -> Option[int]:
    return Option(Kind.OCTAL, default, doc, **more)


def choice(default: str, choices: tuple[str, ...], doc: str, **more: Any) -> Option[str]:
    return Option(Kind.ENUM, default, doc, choices=choices, **more)


def words(default: object, doc: str, **more: Any) -> Option[tuple[str, ...]]:
    return Option(Kind.WORDS, default, doc, **more)


def optional_words(doc: str, **more: Any) -> Option[tuple[str, ...] | None]:
    return Option(Kind.WORDS, None, doc, **more)


def maps(default: str, doc: str, **more: Any) -> Option[tuple[str, ...]]:
    return Option(Kind.MAPS, default, doc, **more)


# -- values as text -------------------------------------------------------------------------------

_TRUE = frozenset({"yes", "on", "true", "1", "t", "y"})
_FALSE = frozenset({"no", "off", "false", "0", "f", "n"})
_SIZE_SUFFIX = {"k": 1024, "m": 1024**2, "g": 1024**3}


def parse_switch(text: str) -> bool | None:
    """yes/no, on/off, true/false, 1/0 (and Cyrus's t/f, y/n) -> bool; anything else None."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    return None


def parse_size(text: str) -> int | None:
    """Bytes with an optional K, M or G suffix; None when it is not a size."""
    lowered = text.strip().lower()
    scale = _SIZE_SUFFIX.get(lowered[-1:], 1)
    digits = lowered[:-1] if scale != 1 else lowered
    return int(digits) * scale if digits.isdigit() else None


def render_value(option: Option[Any], value: object) -> str:
    """The text a configuration file would hold for `value` (for -d listings and docs)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if option.kind is Kind.OCTAL and isinstance(value, int):
        return f"0{value:o}"
    if isinstance(value, (tuple, list)):
        return " ".join(str(v) for v in value)
    return str(value)


# -- generated documentation ----------------------------------------------------------------------


def markdown_table(title: str, intro: str, options: dict[str, Option[Any]]) -> str:
    """A Markdown page listing every option: name, kind, default, status and doc."""
    lines = [f"# {title}", "", intro, "",
             "| option | kind | default | status | description |", "|---|---|---|---|---|"]
    for name in sorted(options):
        option = options[name]
        default = render_value(option, option.default).replace("|", "\\|")
        kind = option.kind.value
        if option.choices:
            kind += ": " + ", ".join(option.choices)
        doc = option.doc.replace("|", "\\|")
        lines.append(f"| `{name}` | {kind} | `{default}` | {option.status.value} | {doc} |"
                     .replace("``", "(none)"))
    return "\n".join(lines) + "\n"
