"""Signatures: what each command and test accepts, declared once and checked by the validator.

Every extension module declares its commands and tests as `Signature`s with the function that runs
them; `_registry` gathers them. A tag either stands alone (`:copy`), takes a value (`:days 3`), or
belongs to a group whose members exclude each other (the match types, the address parts): the
validator stores a group's chosen tag under the group's name.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealmail.sieve.errors import CompileProblem

if TYPE_CHECKING:
    from sealmail.sieve._interpreter import Interpreter


class ArgKind(enum.Enum):
    STRING = "string"
    STRINGLIST = "string list"
    NUMBER = "number"


Value = str | int | bool | tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Call:
    """A command or test whose arguments matched its signature."""

    name: str
    options: Mapping[str, Value]
    args: tuple[Value, ...]
    tests: tuple[Call, ...]
    block: tuple[Call, ...] | None
    line: int
    column: int

    def has(self, key: str) -> bool:
        return key in self.options

    def option_string(self, key: str) -> str | None:
        value = self.options.get(key)
        return value if isinstance(value, str) else None

    def option_number(self, key: str) -> int | None:
        value = self.options.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    def option_strings(self, key: str) -> tuple[str, ...] | None:
        value = self.options.get(key)
        if isinstance(value, str):
            return (value,)
        return value if isinstance(value, tuple) else None

    def arg_string(self, index: int) -> str:
        value = self.args[index]
        assert isinstance(value, str)
        return value

    def arg_strings(self, index: int) -> tuple[str, ...]:
        value = self.args[index]
        if isinstance(value, str):
            return (value,)
        assert isinstance(value, tuple)
        return value

    def arg_number(self, index: int) -> int:
        value = self.args[index]
        assert isinstance(value, int)
        return value


@dataclass(frozen=True, slots=True)
class Tag:
    name: str  # with ':'
    value: ArgKind | None = None
    group: str | None = None
    extension: str | None = None


@dataclass(frozen=True)
class CheckScope:
    """What an extra check may look at: the script's requires, and where to put problems."""

    requires: frozenset[str]
    problems: list[CompileProblem]

    def error(self, call: Call, message: str) -> None:
        self.problems.append(CompileProblem(call.line, call.column, message))


CommandRunner = Callable[["Interpreter", Call], None]
TestRunner = Callable[["Interpreter", Call], bool]
Check = Callable[[Call, CheckScope], None]


@dataclass(frozen=True)
class Signature:
    name: str
    extension: str | None
    tags: tuple[Tag, ...] = ()
    positional: tuple[ArgKind, ...] = ()
    tests: int = 0  # 0: none; 1: exactly one test; -1: a test list of one or more
    block: bool = False
    check: Check | None = None
    run_command: CommandRunner | None = field(default=None, compare=False)
    run_test: TestRunner | None = field(default=None, compare=False)


# The tags shared by the string-matching tests (RFC 5228 sections 2.7.1 to 2.7.4) and the
# extensions that add to them: regex (draft), relational (RFC 5231), subaddress (RFC 5233),
# index (RFC 5260 section 6).
COMPARATOR = Tag(":comparator", ArgKind.STRING)
MATCH_TYPES = (
    Tag(":is", group="match"),
    Tag(":contains", group="match"),
    Tag(":matches", group="match"),
    Tag(":regex", group="match", extension="regex"),
    Tag(":count", ArgKind.STRING, group="match", extension="relational"),
    Tag(":value", ArgKind.STRING, group="match", extension="relational"),
)
ADDRESS_PARTS = (
    Tag(":all", group="address-part"),
    Tag(":localpart", group="address-part"),
    Tag(":domain", group="address-part"),
    Tag(":user", group="address-part", extension="subaddress"),
    Tag(":detail", group="address-part", extension="subaddress"),
)
INDEX = (
    Tag(":index", ArgKind.NUMBER, extension="index"),
    Tag(":last", extension="index"),
)
MATCHING = (COMPARATOR, *MATCH_TYPES)
