"""Making a change on disk survive a crash: the one place sealmail writes, replaces and fsyncs.

A new, renamed or removed name is only durable once its directory is fsync'd (POSIX says
nothing about it otherwise); every path that answers 250 or OK after creating a file needs it.

A file is replaced in four steps, so that a crash at any point leaves either the old file or
the new one under the name, never a mix: write the new bytes to a temporary file in the same
directory (a rename across file systems is not atomic), fsync it (else the rename may reach the
disk before the data), rename it over the name, fsync the directory. A failure before the rename
removes the temporary file and leaves the old file as it was.

The queue's and the store's group commits (`mta.queue`, `store.disk`) share one directory fsync
among many files; they call `fsync_directory` themselves and are not routed through here. A
commit that touched many directories (one delivery to many mailboxes) fsyncs them all at once
with `fsync_directories`: one at a time, each fsync after the first waits for a disk cache flush
of its own (ext4 sends one even when the journal already holds the change); issued together, the
block layer merges those flushes, so 2,000 mailboxes cost a few flushes instead of 2,000.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import queue
import secrets
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

PARALLEL_FSYNCS = 32  # threads that fsync directories at once (they wait on the disk, not the CPU)


def fsync_directory(path: str | os.PathLike[str]) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directories(paths: Collection[str | os.PathLike[str]]) -> None:
    """fsync every directory in `paths`, concurrently when there are several; the first error
    is raised once all are done (the caller's commit then fails as a whole)."""
    if len(paths) <= 1:
        for path in paths:
            fsync_directory(path)
        return
    _run_round([(_fsync_or_error, path) for path in paths])


def fsync_together(directories: Collection[str], fds: Sequence[int]) -> None:
    """`fsync_directories(directories)` with the open files `fds` fsynced in the same round
    (their cache flushes merge too); the first error is raised once all are done."""
    if not fds:
        fsync_directories(directories)
        return
    _run_round([(_fsync_or_error, path) for path in directories]
               + [(_fsync_fd_or_error, fd) for fd in fds])


def fsyncs_started(directories: Collection[str], fds: Sequence[int]) -> Fsyncs:
    """`fsync_together`, started in the pool and not waited for: the caller does other work
    (a delivery's COMMIT, store.disk.commit) and calls `finish()` once, before it closes `fds`.
    A pool that cannot start a thread leaves the round to the caller's thread, done here.

    Where the kernel can say when a file's data is written (`written_out`), the fsyncs wait
    for all of the files' data first and are then issued together: a directory's fsync on
    ext4 commits the journal's running transaction at once, so issued beside the files'
    fsyncs it committed the new names alone, and the files' block allocations (and, once
    their data was written, the conversion of their unwritten extents) went into a second
    journal commit that every file's fsync then waited for. Issued after the data, one
    commit covers all (docs/benchmarks.md, one18d)."""
    jobs: list[_Job] = [(_fsync_or_error, path) for path in directories]
    jobs += [(_fsync_fd_or_error, fd) for fd in fds]
    round_ = _Round(len(jobs))
    if not jobs:
        return round_
    if fds and _sync_file_range is not None:
        jobs = [(_after_data, (fds, jobs, round_))]  # it stands for jobs[0] in the count
    try:
        _FsyncPool.get().submit(jobs, round_)
    except RuntimeError:
        for function, argument in jobs:
            round_.finished(function(argument))
    return round_


_Job = tuple[Callable[[Any], "OSError | None"], Any]


def _load_sync_file_range() -> Any:
    """libc's sync_file_range(2) (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_sync_file_range = _load_sync_file_range()
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4  # sync_file_range's flags (linux/fs.h)
_UNSUPPORTED = (errno.ENOSYS, errno.EINVAL, errno.ESPIPE)  # refused before any writeback


def _start_writeback(fd: int) -> None:
    """Have the kernel start writing `fd`'s new data, without waiting. Reports nothing: an
    error stays with the file for `written_out` and the fsync."""
    assert _sync_file_range is not None
    _sync_file_range(fd, 0, 0, _WRITE)


def written_out(fd: int) -> OSError | None:
    """Wait until `fd`'s data is written (on ext4 also its unwritten extents converted): not
    durable, no journal commit. Its error is returned, not left to the fsync that follows:
    the wait consumes the file's writeback error, which that fsync would not see again."""
    if _sync_file_range is None or _sync_file_range(
        fd, 0, 0, _WAIT_BEFORE | _WRITE | _WAIT_AFTER
    ) == 0:
        return None
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return None  # the fsync does it all
    return OSError(code, f"writing out a file: {os.strerror(code)}")


def _after_data(state: tuple[Sequence[int], list[_Job], _Round]) -> OSError | None:
    """A round's first job: every file's data written out (all started, then each waited
    for), then the round's fsyncs issued together (this thread runs the first); its result
    counts as the first fsync's."""
    fds, jobs, round_ = state
    (first, argument), *others = jobs
    for fd in fds:
        _start_writeback(fd)
    for fd in fds:
        error = written_out(fd)
        if error is not None:
            for _ in others:  # the round fails: its fsyncs are not needed
                round_.finished(None)
            return error
    if others:
        try:
            _FsyncPool.get().submit(others, round_)
        except RuntimeError:
            for function, other in others:
                round_.finished(function(other))
    return first(argument)


class _Round:
    """The fsyncs of one round handed to the pool: the caller waits once, for the last of them,
    not on a Future per fsync (each a Condition, a lock and a wake-up of its own: the pool's
    hand-off per stage file, issue 18)."""

    __slots__ = ("_count", "_done", "_lock", "errors")

    def __init__(self, count: int) -> None:
        self._count = count
        self._lock = threading.Lock()
        self._done = threading.Lock()
        if count:
            self._done.acquire()  # released by the last job to finish
        self.errors: list[OSError] = []

    def finished(self, error: OSError | None) -> None:
        with self._lock:
            if error is not None:
                self.errors.append(error)
            self._count -= 1
            last = self._count == 0
        if last:
            self._done.release()

    def wait(self) -> None:
        self._done.acquire()

    def finish(self) -> None:
        """Wait for every fsync of the round; the first error is raised."""
        self.wait()
        if self.errors:
            raise self.errors[0]


Fsyncs = _Round  # what fsyncs_started hands back


def _run_round(jobs: Sequence[_Job]) -> None:
    """Run `jobs` at once: the calling thread runs the first itself (one hand-off fewer per
    commit), the pool the others; the first error is raised once all are done."""
    (first, argument), *others = jobs
    round_ = _Round(len(others)) if others else None
    if round_ is not None:
        _FsyncPool.get().submit(others, round_)
    try:
        error = first(argument)
    finally:
        if round_ is not None:
            round_.wait()  # the callers close the files once this returns
    if error is None and round_ is not None and round_.errors:
        error = round_.errors[0]
    if error is not None:
        raise error


def _fsync_fd_or_error(fd: int) -> OSError | None:
    try:
        os.fsync(fd)
    except OSError as exc:
        return exc
    return None


def _fsync_or_error(path: str | os.PathLike[str]) -> OSError | None:
    try:
        fsync_directory(path)
    except OSError as exc:
        return exc
    return None


class _FsyncPool:
    """Up to PARALLEL_FSYNCS threads that run fsyncs from one queue (they wait on the disk, not
    the CPU); one pool per process (a forked worker makes its own: threads do not fork)."""

    _current: _FsyncPool | None = None
    _current_pid = 0
    _guard = threading.Lock()

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[tuple[_Job, _Round]] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._outstanding = 0  # jobs queued or running: threads enough for all, up to the cap

    @classmethod
    def get(cls) -> _FsyncPool:
        with cls._guard:
            if cls._current is None or cls._current_pid != os.getpid():
                cls._current = cls()
                cls._current_pid = os.getpid()
            return cls._current

    def submit(self, jobs: Sequence[_Job], round_: _Round) -> None:
        """Queue `jobs`; a thread that cannot start (RuntimeError, the process's thread limit)
        fails the round before any job is queued, and the count stays true for the next."""
        with self._lock:
            self._outstanding += len(jobs)
            try:
                while self._threads < min(PARALLEL_FSYNCS, self._outstanding):
                    threading.Thread(
                        target=self._work, name=f"fsync_{self._threads}", daemon=True
                    ).start()
                    self._threads += 1
            except BaseException:
                self._outstanding -= len(jobs)
                raise
        for job in jobs:
            self._jobs.put((job, round_))

    def _work(self) -> None:
        while True:
            (function, argument), round_ = self._jobs.get()
            try:
                error = function(argument)
            except Exception as exc:  # a bug, not an fsync's OSError: the round still ends
                error = OSError(f"fsync job failed: {exc!r}")
            with self._lock:
                self._outstanding -= 1
            round_.finished(error)


def replace_file(
    target: Path,
    data: bytes,
    *,
    mode: int = 0o600,
    temporary: Path | None = None,
    sync_directory: bool = True,
) -> None:
    """Put `data` under `target` durably, replacing what was there in one step.

    `mode` is set exactly (the umask does not apply). A `temporary` name is for callers that
    look for a crash's leftover under a known name (reconstruct); without one, a fresh random
    name in the target's directory is created exclusively. `sync_directory=False` leaves the
    directory fsync to a caller that cannot open the directory or batches it.
    """
    path, fd = _create_temporary(target, mode, None, temporary)
    with _renamed_over(target, path, sync_directory):
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def replacing(
    target: Path, *, mode: int = 0o600, owner: tuple[int, int] | None = None
) -> Iterator[Path]:
    """For a file another library writes by name (an SQLite index): yields an empty temporary
    file beside `target` (with `mode`, and `owner` as uid and gid when given); when the block
    ends, it is fsync'd and renamed over `target`, and the directory fsync'd. An exception in
    the block removes it and leaves `target` as it was."""
    path, fd = _create_temporary(target, mode, owner, None)
    os.close(fd)
    with _renamed_over(target, path, True):
        yield path
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def replace_symlink(link: Path, points_to: str, *, sync_directory: bool = True) -> None:
    """Make `link` a symlink to `points_to` in one step (a reader sees the old or the new one)."""
    temporary = link.with_name(f".{os.getpid()}.{link.name}.tmp")
    temporary.unlink(missing_ok=True)
    with _renamed_over(link, temporary, sync_directory):
        os.symlink(points_to, temporary)


@contextlib.contextmanager
def _renamed_over(target: Path, path: Path, sync_directory: bool) -> Iterator[None]:
    """After the block (which writes and fsyncs `path`), rename `path` over `target` and fsync
    the directory; if the block or the rename fails, remove `path`."""
    try:
        yield
        os.rename(path, target)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if sync_directory:
        fsync_directory(target.parent)


def _create_temporary(
    target: Path, mode: int, owner: tuple[int, int] | None, temporary: Path | None
) -> tuple[Path, int]:
    """A new, open temporary file beside `target`.

    The random name is not derived from the target's: a name near NAME_MAX must still fit.
    """
    if temporary is None:
        path = target.with_name(f".{os.getpid()}.{secrets.token_hex(6)}.tmp")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    else:
        path = temporary
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
    fd = os.open(path, flags, 0o600)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, *owner)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    return path, fd
