"""How many forks this process came through: a SQLite connection opened before the last one is
the parent's, and a child must open its own (sqlite.org, "How To Corrupt An SQLite Database",
2.6). Compared on every use instead of os.getpid(), a system call (~2 reads per IMAP command).
"""

from __future__ import annotations

import os

__all__ = ["FORKS"]


class _Forks:
    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0


FORKS = _Forks()


def _forked() -> None:
    FORKS.count += 1


os.register_at_fork(after_in_child=_forked)
