"""The parsed script: commands and tests with their arguments, before any meaning is checked."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StringArg:
    """A string literal, or a bracketed string list (`listed` tells which, for signatures)."""

    values: tuple[str, ...]
    listed: bool
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class NumberArg:
    value: int
    line: int
    column: int


@dataclass(frozen=True, slots=True)
class TagArg:
    name: str  # with its leading ':'
    line: int
    column: int


Argument = StringArg | NumberArg | TagArg


@dataclass(frozen=True, slots=True)
class Node:
    """A command (with `block` when it has braces) or a test (never a block)."""

    name: str
    arguments: tuple[Argument, ...]
    tests: tuple[Node, ...]
    test_list: bool  # the tests came in parentheses
    block: tuple[Node, ...] | None
    line: int
    column: int
