"""Cross-process advisory locks of the store: per-mailbox locks and per-user delivery slots.

Short index updates are serialised by SQLite's write lock alone. These file locks (flock(2) on
files under `configdirectory/lock/`) guard the longer operations that must not interleave on one
mailbox (rename, delete, reconstruct) and bound how many deliveries to one user run at once across
every process (`lmtp_user_concurrency_limit`). flock locks belong to an open file description, so
two threads of one process exclude each other just as two processes do, and the kernel drops them
when a process dies: a crash never leaves a lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from sealmail.store.errors import MailboxBusy, StoreError

_MAX_FILENAME = 200


def lock_filename(key: str) -> str:
    """A safe, readable file name for `key`; long keys are hashed to stay under NAME_MAX."""
    readable = quote(key, safe="@.+-_^!")
    if len(readable) <= _MAX_FILENAME and readable not in (".", ".."):
        return readable
    return "sha1-" + hashlib.sha1(key.encode("utf-8")).hexdigest()


def _open_lock_file(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first lock in a new directory
            path.parent.mkdir(parents=True, exist_ok=True)
            return os.open(path, flags, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open lock file {path}: {exc.strerror}") from exc


@contextmanager
def mailbox_lock(lock_directory: Path, names: list[str]) -> Iterator[None]:
    """Exclusive locks on the given mailbox names, taken in sorted order (no deadlock)."""
    fds: list[int] = []
    try:
        for name in sorted(set(names)):
            fd = _open_lock_file(lock_directory / "mailbox" / lock_filename(name))
            fds.append(fd)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        for fd in reversed(fds):
            os.close(fd)  # closing the last descriptor releases the flock


@contextmanager
def delivery_slot(lock_directory: Path, user: str, limit: int) -> Iterator[None]:
    """Hold one of `limit` delivery slots of `user`; MailboxBusy at once when all are taken.

    The LMTP server answers MailboxBusy with 451 4.4.5 (RFC 3463: system congestion).
    Limit 0 means unlimited, as Cyrus's lmtp_user_concurrency_limit.
    """
    if limit <= 0:
        yield
        return
    base = lock_directory / "deliver"
    name = lock_filename(user)
    for slot in range(limit):
        fd = _open_lock_file(base / f"{name}.{slot}")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise StoreError(f"cannot lock delivery slot of {user!r}: {exc.strerror}") from exc
        try:
            yield
        finally:
            os.close(fd)
        return
    raise MailboxBusy(f"{limit} deliveries to {user!r} already in progress")
