"""Cross-process advisory locks of the store: per-mailbox locks, per-user delivery slots and the
POP lock of a maildrop.

Short index updates are serialised by SQLite's write lock (deliveries' group commits and
duplicate marks also take turns, CommitTurn, rather than poll for it). These file locks (flock(2)
on files under `configdirectory/lock/`) guard the longer operations that must not interleave on one
mailbox (rename, delete, reconstruct) and bound how many deliveries to one user run at once across
every process (`lmtp_user_concurrency_limit`). flock locks belong to an open file description, so
two threads of one process exclude each other just as two processes do, and the kernel drops them
when a process dies: a crash never leaves a lock behind.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import os
import resource
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from urllib.parse import quote

from sealmail.store.errors import MailboxBusy, StoreError
from sealmail.store.forks import FORKS

_MAX_FILENAME = 200


def lock_filename(key: str) -> str:
    """A safe, readable file name for `key`; long keys are hashed to stay under NAME_MAX."""
    readable = quote(key, safe="@.+-_^!")
    if len(readable) <= _MAX_FILENAME and readable not in (".", ".."):
        return readable
    return "sha1-" + hashlib.sha1(key.encode("utf-8")).hexdigest()


def _open_lock_file(path: str | Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:  # the first lock in a new directory
            Path(path).parent.mkdir(parents=True, exist_ok=True)
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


_slot_starts = itertools.count()  # next() is atomic under the GIL
_MAX_IDLE_SLOT_FILES = 1024  # slot files a process keeps open between deliveries


def _idle_slot_files_limit() -> int:
    """At most a quarter of the open-files limit: a standalone lmtpd under Debian's default
    soft limit (1,024) must keep descriptors for its sessions, index and stage files."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        return _MAX_IDLE_SLOT_FILES
    return min(_MAX_IDLE_SLOT_FILES, soft // 4)


class SlotFiles:
    """This process's delivery-slot files: which it holds, and those it keeps open, unlocked,
    for the next delivery to the same user.

    At 50 recipients a delivery took 50 slots, each an open, a flock and a close, and a try
    at a slot this process itself held (another envelope of the same batch) cost all three
    for nothing. A slot held here is skipped without a system call; one let go is unlocked
    (LOCK_UN) and kept open, so the next delivery to that user costs one flock. Only one
    thread of the process uses a file at a time (a held one is skipped), so its lock is never
    shared by two threads through one open file description. A forked child starts afresh:
    the descriptors it inherited share its parent's locks, so it closes them unused."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: set[str] = set()
        self._idle: dict[str, int] = {}  # path -> open descriptor, not locked
        self._most_idle = _idle_slot_files_limit()
        _LIVE_SLOT_FILES.add(self)

    def forked(self) -> None:
        """In a forked child (os.register_at_fork): a fresh lock, nothing held or kept."""
        self._lock = threading.Lock()
        for inherited in self._idle.values():
            with suppress(OSError):
                os.close(inherited)
        self._held, self._idle = set(), {}

    def close(self) -> None:
        """Close the files kept open (those held are closed as they are given back)."""
        with self._lock:
            idle, self._idle = self._idle, {}
        for fd in idle.values():
            with suppress(OSError):
                os.close(fd)

    def take(self, path: str) -> int | None:
        """An open descriptor for `path`, now counted as held; None when held already."""
        with self._lock:
            if path in self._held:
                return None
            fd = self._idle.pop(path) if path in self._idle else None
            self._held.add(path)
        if fd is None:
            try:
                fd = _open_lock_file(path)
            except BaseException:
                with self._lock:
                    self._held.discard(path)
                raise
        return fd

    def give_back(self, path: str, fd: int, locked: bool = False) -> None:
        """`path` no longer held: its descriptor unlocked (while still counted as held, so no
        other thread of ours opens it meanwhile) and kept, or closed."""
        with self._lock:
            ours = path in self._held  # not after a fork: the parent's lock, never unlocked
        keep = ours
        if ours and locked:
            try:
                fcntl.flock(fd, fcntl.LOCK_UN)
            except OSError:
                keep = False
        with self._lock:
            self._held.discard(path)
            if keep and path not in self._idle and len(self._idle) < self._most_idle:
                self._idle[path] = fd
                return
        os.close(fd)  # closing the last descriptor releases the flock


_LIVE_SLOT_FILES: weakref.WeakSet[SlotFiles] = weakref.WeakSet()


def _slot_files_forked() -> None:
    for files in list(_LIVE_SLOT_FILES):
        files.forked()


os.register_at_fork(after_in_child=_slot_files_forked)


@contextmanager
def delivery_slot(
    lock_directory: Path, user: str, limit: int, files: SlotFiles | None = None
) -> Iterator[None]:
    """Hold one of `limit` delivery slots of `user`; MailboxBusy at once when all are taken.

    The LMTP server answers MailboxBusy with 451 4.4.5 (RFC 3463: system congestion).
    Limit 0 means unlimited, as Cyrus's lmtp_user_concurrency_limit. `files`: the store's
    SlotFiles (kept open between deliveries); without, a slot file is opened and closed.
    """
    if limit <= 0:
        yield
        return
    if files is None:
        files = SlotFiles()
        try:
            with delivery_slot(lock_directory, user, limit, files):
                yield
        finally:
            files.close()
        return
    base = f"{os.fspath(lock_directory)}/deliver/{lock_filename(user)}"  # once per delivery:
    # a string, not Paths. Each try starts at the next slot, so concurrent deliveries to one
    # user mostly find theirs free at once (from slot 0 each tried 2.4 files at 4 sessions).
    first = next(_slot_starts)
    for step in range(limit):
        path = f"{base}.{(first + step) % limit}"
        fd = files.take(path)
        if fd is None:
            continue  # this process holds it (SlotFiles)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            files.give_back(path, fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                continue
            raise StoreError(f"cannot lock delivery slot of {user!r}: {exc.strerror}") from exc
        try:
            yield
        finally:
            files.give_back(path, fd, locked=True)
        return
    raise MailboxBusy(f"{limit} deliveries to {user!r} already in progress")


class CommitTurn:
    """The turn to write one SQLite database: one thread of one process at a time (a flock on
    a file under `lock/`, and a thread lock, since threads share the process's descriptor).

    SQLite's write lock alone serialises writers too, but a writer that finds it taken polls
    with sleeps of 1 ms growing to 100 ms (its busy handler), while the holder may take it again
    at once: under `sealmail master`, two lmtpd processes starved each other's group commits for
    hundreds of milliseconds, and four sessions' duplicate marks slept about once a message. A
    writer waiting here sleeps in the kernel and wakes as the holder releases; a group committer
    takes its batch only once the turn is its own, so what arrived during another process's
    commit comes along and the processes alternate, each commit a full batch. Only an order,
    never a guarantee: every write still takes SQLite's lock (writers that skip the turn, such
    as FETCH's kept parses or a CREATE, just wait on it as before). IMAP's STORE, EXPUNGE and
    COPY take the deliveries' turn too (sealmail.store.disk.changes).
    """

    def __init__(self, path: Path) -> None:
        self.path = os.fspath(path)
        self._fd = -1
        self._forks = -1  # a forked child opens its own: flock belongs to the file description
        self._threads = threading.Lock()
        self._threads_forks = FORKS.count  # (FORKS rather than os.getpid(), a system call)

    @contextmanager
    def taken(self) -> Iterator[None]:
        """Hold the turn; StoreError when the lock file cannot be opened or locked."""
        if self._threads_forks != FORKS.count:
            # A forked child (one thread) may have copied the lock held by another thread.
            self._threads, self._threads_forks = threading.Lock(), FORKS.count
        with self._threads:
            if self._forks != FORKS.count:
                fd = _open_lock_file(self.path)
                if self._fd >= 0:  # the parent's: closing our copy leaves the parent's lock be
                    os.close(self._fd)
                self._fd, self._forks = fd, FORKS.count
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError as exc:
                raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
            try:
                yield
            finally:
                fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        with self._threads:
            if self._forks == FORKS.count and self._fd >= 0:
                os.close(self._fd)
            self._fd, self._forks = -1, -1


class PopLock:
    """The exclusive POP lock on one maildrop: flock(2), taken without waiting.

    flock belongs to the open file description, so a second session of the same process is
    refused as one of another process is, and a crashed process leaves no lock behind.
    """

    def __init__(self, directory: Path, mailbox: str) -> None:
        self.path = directory / "pop" / lock_filename(mailbox)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock, or MailboxBusy at once when another POP session holds the maildrop."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open POP lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise MailboxBusy("Mailbox is locked by another POP session") from None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
        self._fd = fd

    def last_login(self) -> float:
        """When the last POP session on this maildrop ended well (0: never)."""
        assert self._fd is not None
        raw = os.pread(self._fd, 64, 0).strip()
        try:
            return float(raw) if raw else 0.0
        except ValueError:
            return 0.0

    def record_login(self, when: float) -> None:
        assert self._fd is not None
        data = f"{when:.0f}\n".encode("ascii")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def renew(self) -> None:
        """Nothing to do: flock holds for as long as the descriptor is open."""

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class ProcessPopLock:
    """The POP lock of a store that lives in one process (the memory store): a set of held
    maildrops and their last logins, shared by that store's sessions."""

    def __init__(self, held: dict[str, float | None], guard: threading.Lock, mailbox: str) -> None:
        # held: mailbox -> last login; a mailbox whose POP lock is taken is in `taken`
        self._held = held
        self._guard = guard
        self._mailbox = mailbox
        self._mine = False

    def acquire(self) -> None:
        key = "\0taken\0" + self._mailbox
        with self._guard:
            if key in self._held:
                raise MailboxBusy("Mailbox is locked by another POP session")
            self._held[key] = None
        self._mine = True

    def last_login(self) -> float:
        with self._guard:
            return self._held.get(self._mailbox) or 0.0

    def record_login(self, when: float) -> None:
        with self._guard:
            self._held[self._mailbox] = when

    def renew(self) -> None:
        """Nothing to do: held until released."""

    def release(self) -> None:
        if self._mine:
            with self._guard:
                self._held.pop("\0taken\0" + self._mailbox, None)
            self._mine = False
