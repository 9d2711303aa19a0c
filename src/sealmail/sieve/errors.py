"""Sieve's two kinds of failure: a script that cannot compile, and one that fails while running.

A compile error is for the script's owner (ManageSieve's PUTSCRIPT/CHECKSCRIPT reply it, RFC 5804
section 2.6), so every problem carries the line and column where it was found. A runtime error is
for the host's log: RFC 5228 section 2.10.6 says a failing script still keeps the message.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CompileProblem:
    """One thing wrong with a script, at a 1-based line and column."""

    line: int
    column: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}, column {self.column}: {self.message}"


class SieveCompileError(Exception):
    """The script does not compile; `problems` lists every error found, in script order."""

    def __init__(self, problems: list[CompileProblem]) -> None:
        if not problems:
            raise ValueError("a compile error needs at least one problem")
        self.problems = sorted(problems, key=lambda p: (p.line, p.column))
        super().__init__("; ".join(str(p) for p in self.problems))

    @property
    def line(self) -> int:
        """The first error's line, the one `sieve-test --json` reports."""
        return self.problems[0].line


class SieveRuntimeError(Exception):
    """The script failed while running; the host logs it and the message is kept."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        self.line = line
        self.column = column
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(f"{where}{message}")
