"""Postfix's file syntax, read once for main.cf, master.cf, lookup table sources and aliases(5).

postconf(5), master(5), postmap(1) and aliases(5) share one rule: a logical line starts at a line
whose first character is not whitespace, and a following line that starts with whitespace
continues it; comment lines (first non-blank character `#`) and blank lines are skipped, also
between a line and its continuation. How the pieces are joined differs by file (main.cf keeps
them as they are, master.cf and aliases put a space between), so a logical line keeps its
physical lines and each parser joins them. An error names the first physical line of its logical
line, as Postfix does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from sealmail.config.imapd_conf import ConfigError


@dataclass(frozen=True, slots=True)
class LogicalLine:
    number: int  # of its first physical line, from 1: the line an error names
    indexes: tuple[int, ...]  # of its physical lines in text.splitlines(), from 0
    parts: tuple[str, ...]  # those lines, without their line endings

    @property
    def continues_nothing(self) -> bool:
        """An indented line with no entry before it (Postfix warns about it)."""
        return self.parts[0][:1].isspace()


def logical_lines(text: str) -> Iterator[LogicalLine]:
    """The logical lines of `text`, in order; an indented line at the start of the text (or after
    only comments) begins one of its own, marked `continues_nothing`."""
    lines = text.splitlines()
    indexes: list[int] = []
    for index, line in enumerate(lines):
        if is_skipped(line):
            continue
        if indexes and line[0].isspace():
            indexes.append(index)
            continue
        if indexes:
            yield _logical(lines, indexes)
        indexes = [index]
    if indexes:
        yield _logical(lines, indexes)


def is_skipped(line: str) -> bool:
    """A blank or comment line: never part of a logical line."""
    stripped = line.strip()
    return not stripped or stripped[0] == "#"


def _logical(lines: list[str], indexes: list[int]) -> LogicalLine:
    return LogicalLine(indexes[0] + 1, tuple(indexes), tuple(lines[i] for i in indexes))


def read_text(
    path: str | os.PathLike[str],
    error: type[ConfigError] = ConfigError,
    *,
    missing_ok: bool = False,
) -> str | None:
    """A configuration file's text; None if it is missing and `missing_ok`. A file that cannot
    be read or is not UTF-8 is `error` naming the file (line 0)."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        if missing_ok:
            return None
        raise error(str(path), 0, None, "cannot read: no such file") from None
    except OSError as exc:
        raise error(str(path), 0, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise error(str(path), 0, None, "not UTF-8 text") from None
