"""What local(8) and pipe(8) do with another account's privileges, behind one interface.

Postfix runs local and pipe as root processes of their own while the rest of the mail system
runs as mail_owner. sealmail's agents run inside the master; when the master was started as root
it drops to mail_owner after binding its listeners (sealmail.mta.privsep), and these three
operations are then asked of a small privileged helper process instead:

- run a command as a non-root uid/gid with the message on its standard input;
- append a message to an mbox or /file destination for its (non-root) owner;
- read a .forward or :include: file as the account whose file it is.

`InProcessPrivileges` does the same in this process: for a master not started as root (it runs
everything as itself) and for tests that call the agents directly. The agents take the
implementation as an argument; by default they use `current()`, which the master sets with
`install()` once it has its helper.
"""

from __future__ import annotations

import asyncio
import errno
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from sealmail.mta.agents.pipe import CommandRun

OUTPUT_LIMIT = 4096  # bytes of command output kept (pipe.OUTPUT_LIMIT, which reads this one)


class DeliveryPrivileges(Protocol):
    async def run_command(self, argv: Sequence[str], data: bytes, *, uid: int, gid: int,
                          time_limit: float, cwd: str | None, env: dict[str, str] | None,
                          output_limit: int = OUTPUT_LIMIT) -> CommandRun: ...

    async def append_mbox(self, path: Path, data: bytes, *, owner: tuple[int, int],
                          size_limit: int, lock_attempts: int, lock_delay: float,
                          stale_lock_time: float, spool: bool) -> None: ...

    async def read_file(self, path: str, *, uid: int, gid: int, limit: int,
                        ) -> tuple[int, bytes]: ...


def readable_by(st: os.stat_result, uid: int, gid: int) -> bool:
    """Whether uid/gid (never treated as root) may read a file with this status."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IRUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IRGRP)
    return bool(st.st_mode & stat.S_IROTH)


def read_as(path: str, uid: int, gid: int, limit: int) -> tuple[int, bytes]:
    """(owner uid, content) of a regular file that uid/gid may read; at most `limit` bytes.

    Opened without following a symlink; a file uid/gid may not read is a PermissionError even
    when we could (we may be root), so a .forward or :include: can never name /etc/shadow.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if os.geteuid() == 0 and not readable_by(st, uid, gid):
            raise PermissionError(13, f"not readable by uid {uid}", path)
        chunks = []
        left = limit
        while left > 0 and (chunk := os.read(fd, min(left, 1 << 16))):
            chunks.append(chunk)
            left -= len(chunk)
        return st.st_uid, b"".join(chunks)
    finally:
        os.close(fd)


class InProcessPrivileges:
    """The operations done by this process itself, in worker threads (any event loop)."""

    async def run_command(self, argv: Sequence[str], data: bytes, *, uid: int, gid: int,
                          time_limit: float, cwd: str | None, env: dict[str, str] | None,
                          output_limit: int = OUTPUT_LIMIT) -> CommandRun:
        from sealmail.mta.agents.pipe import run_command_blocking

        return await asyncio.to_thread(
            run_command_blocking, argv, data, uid=uid, gid=gid, time_limit=time_limit,
            cwd=cwd, env=env, output_limit=output_limit)

    async def append_mbox(self, path: Path, data: bytes, *, owner: tuple[int, int],
                          size_limit: int, lock_attempts: int, lock_delay: float,
                          stale_lock_time: float, spool: bool) -> None:
        from sealmail.mta.agents.local import append_mbox

        await asyncio.to_thread(
            append_mbox, path, data, owner=owner, size_limit=size_limit,
            lock_attempts=lock_attempts, lock_delay=lock_delay,
            stale_lock_time=stale_lock_time, spool=spool)

    async def read_file(self, path: str, *, uid: int, gid: int, limit: int,
                        ) -> tuple[int, bytes]:
        return await asyncio.to_thread(read_as, path, uid, gid, limit)


_current: DeliveryPrivileges = InProcessPrivileges()


def current() -> DeliveryPrivileges:
    """The implementation agents use unless given one: the master's helper once installed."""
    return _current


def install(privileges: DeliveryPrivileges) -> DeliveryPrivileges:
    """Make `privileges` the default of new agents; returns the previous one."""
    global _current
    previous, _current = _current, privileges
    return previous
