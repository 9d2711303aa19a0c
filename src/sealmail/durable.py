"""Making a change on disk survive a crash: the one place sealmail fsyncs a directory.

A new, renamed or removed name is only durable once its directory is fsync'd (POSIX says
nothing about it otherwise); every path that answers 250 or OK after creating a file needs it.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_directory(path: str | os.PathLike[str]) -> None:
    fd = os.open(Path(path), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
