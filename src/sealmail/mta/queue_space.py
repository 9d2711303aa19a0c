"""Room in the queue's file system, as Postfix's smtpd checks it before taking mail.

At MAIL FROM (Postfix's smtpd_check_size): the free space, less queue_minfree, must hold one and
a half times the message's announced SIZE, and a file system with no free space at all refuses
even a message of unknown size; the answer is 452 4.3.1 (RFC 5321 4.2.2's "insufficient system
storage", RFC 3463 X.3.1 "mail system full"), so the client keeps the message and retries later.
At the end of DATA a write that finds the disk full (ENOSPC, EDQUOT) gets the same 452 4.3.1,
and nothing of the message stays behind. Both clear by themselves once space returns.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from sealmail.proto.smtp import Reply

INSUFFICIENT_STORAGE = Reply(452, "4.3.1", "Insufficient system storage")
_FULL = (errno.ENOSPC, errno.EDQUOT)


def free_bytes(directory: Path) -> int | None:
    """Bytes an unprivileged writer may still use in `directory`'s file system (None: unknown)."""
    try:
        stat = os.statvfs(directory)
    except OSError:
        return None
    return stat.f_bavail * stat.f_frsize


def shortfall(directory: Path, size: int, minfree: int) -> str | None:
    """Why the queue cannot take a message of `size` bytes (0: unknown), or None if it can."""
    free = free_bytes(directory)
    if free is None:
        return None
    needed = minfree + size + size // 2
    if free <= 0 or free < needed:
        return f"{free} bytes free < queue_minfree {minfree} + 1.5 * message size {size}"
    return None


def is_disk_full(error: BaseException) -> bool:
    """An OSError (or one it was raised from) that says the file system is full."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno in _FULL:
            return True
        seen = seen.__cause__ or seen.__context__
    return False
