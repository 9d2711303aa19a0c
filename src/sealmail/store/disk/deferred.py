"""Mailbox directory fsyncs out of the 250 path, at equal durability (issue 18).

A delivery's new names in its mailbox directories become durable only once each directory is
fsynced. Done before COMMIT, a commit of N mailboxes pays N fsyncs: on ext4 the first commits
the journal and every other one still waits for a disk cache flush of its own (23% of lmtpd's
samples at 10 recipients). Instead the commit keeps the durable single-instance file where it
was staged (`PARTITION/stage./PID-N-TOKEN-GUID`, written and fsynced by the caller) and fsyncs
the stage directory once per partition before COMMIT: from then on the file and its name are
durable and the index, once committed, names every copy. The mailbox links are made before
COMMIT as before (readers see them at once); their directory fsyncs are deferred:
`DeferredSyncs` fsyncs every touched directory once per `SYNC_INTERVAL`, then drops the stage
names it covered.

A crash (or power failure) before that leaves stage files of a dead process; at the next open
`recover_stage_files` re-links, from them, every copy the index names whose file is missing
(rows are matched by guid, the SHA-1 of the content, which the stage file's name carries),
fsyncs those directories and only then removes the stage files. So every message that heard a
250 stays reachable. Stage files of a commit that never happened match no row (or rows whose
files are there) and are removed as before.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from contextlib import suppress
from pathlib import Path

from sealmail.durable import fsync_directories, fsync_directory
from sealmail.store.disk.index_writes import NAMES_PER_QUERY
from sealmail.store.disk.layout import Spool, write_synced
from sealmail.store.errors import StoreError

SYNC_INTERVAL = 0.1  # seconds between rounds of deferred directory fsyncs (one per directory)
GUID_LENGTH = 40  # hex SHA-1: the last part of a stage file's name
_LIVE: weakref.WeakSet[DeferredSyncs] = weakref.WeakSet()  # closed at exit if not before


def _forked() -> None:
    """In a forked child: fresh locks (one may have been held by a thread that is not
    here), no thread, nothing pending (the parent's stage files are the parent's)."""
    for syncs in list(_LIVE):
        syncs.forget()


os.register_at_fork(after_in_child=_forked)


@atexit.register
def _close_at_exit() -> None:
    """A process that exits without closing its store (a command-line tool) still leaves no
    stage file behind; the daemon thread would simply stop."""
    for syncs in list(_LIVE):
        with suppress(Exception):
            syncs.close()


def stage_guid(name: str) -> str | None:
    """The guid a stage file's name ends with, or None (MULTIAPPEND's stage files, whose
    commit fsyncs its directories before COMMIT, carry none)."""
    parts = name.split("-")
    if len(parts) == 4 and len(parts[3]) == GUID_LENGTH:
        return parts[3]
    return None


def holds_content(path: Path, guid: str) -> bool:
    """Whether `path` is there and holds the content whose SHA-1 is `guid`: a stage file may
    not be durable (store.disk.unconfirmed), so recovery reads it before linking from it."""
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest() == guid
    except OSError:
        return False


def restore_copy(spool: Spool, stage: Path, target: str) -> None:
    """A missing copy made again from its stage file as the delivery made it: a hard link, or
    with singleinstancestore=no a file of its own, written and fsynced under a name of this
    process in the stage directory and then linked in, so a crash never leaves half a copy
    under the copy's name. FileExistsError when the copy is there."""
    if spool.single_instance:
        os.link(stage, target)
        return
    own = stage.with_name(f"{os.getpid()}-restore-{secrets.token_hex(6)}")
    try:
        write_synced(own, stage.read_bytes(), os.O_EXCL)
        os.link(own, target)
    finally:
        with suppress(FileNotFoundError):
            own.unlink()


class DeferredSyncs:
    """This process's pending mailbox directory fsyncs and the stage files they release."""

    def __init__(
        self,
        fault: Callable[[str], None],
        interval: float | None = None,
        after: Callable[[], None] | None = None,
    ) -> None:
        self._fault = fault
        self._after = after  # run after each round (store.disk.unconfirmed clears its rows)
        self._interval = SYNC_INTERVAL if interval is None else interval
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._directories: set[str] = set()
        self._stages: list[str] = []
        self._thread: threading.Thread | None = None
        self._closed = False
        self._idle = False  # the thread waits for work (not gathering, not syncing)
        self._syncing = threading.Lock()  # one round at a time (the thread, or close())
        _LIVE.add(self)

    def forget(self) -> None:
        """After a fork, in the child (see _forked)."""
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._syncing = threading.Lock()
        self._directories, self._stages, self._thread = set(), [], None
        self._idle = False

    def hold(self, stages: Iterable[str], directories: Iterable[str]) -> None:
        """After a COMMIT: `stages` stay until every one of `directories` is fsynced."""
        with self._lock:
            self._directories.update(directories)
            self._stages.extend(stages)
            started = self._thread is not None or self._start()
            if self._idle:
                self._wake.notify()  # not while it gathers: a wake-up per commit costs CPU
        if not started:
            self.sync()  # no thread to defer to: this commit's caller waits for them

    def _start(self) -> bool:
        thread = threading.Thread(target=self._run, name="dirsync", daemon=True)
        try:
            thread.start()
        except RuntimeError:  # "can't start new thread": a later commit tries again
            return False
        self._thread = thread
        return True

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._stages and not self._closed:
                    self._idle = True
                    self._wake.wait()
                    self._idle = False
                if self._closed:
                    return
                # Gather: the commits of the next interval share this round's fsyncs.
                deadline = time.monotonic() + self._interval
                while not self._closed and (left := deadline - time.monotonic()) > 0:
                    self._wake.wait(left)
                if self._closed:
                    return  # close() runs the last round
            self.sync()

    def sync(self) -> None:
        """One round: fsync every pending directory, then remove the stage files they cover.
        A directory that cannot be fsynced (other than gone: its mailbox was deleted) keeps
        the round's stage files; recovery takes them once this process has exited."""
        with self._syncing:
            with self._lock:
                directories, self._directories = self._directories, set()
                stages, self._stages = self._stages, []
            if not stages and not directories:
                return
            self._fault("deferred")
            if _fsync_existing(directories):
                for stage in stages:
                    with suppress(OSError):
                        os.unlink(stage)
            if self._after is not None:
                self._after()

    def close(self) -> None:
        """The last round now: a clean exit leaves no stage file behind."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()
        self.sync()
        _LIVE.discard(self)


def _fsync_existing(directories: set[str]) -> bool:
    """fsync them all at once (sealmail.durable); True unless one failed while it exists."""
    try:
        fsync_directories(directories)
        return True
    except FileNotFoundError:
        pass  # a deleted mailbox: try the others one by one
    except OSError:
        return False
    ok = True
    for directory in directories:
        try:
            fsync_directory(directory)
        except FileNotFoundError:
            continue
        except OSError:
            ok = False
    return ok


def recover_stage_files(spool: Spool, stages: list[tuple[str, Path]]) -> list[str]:
    """Stage files of dead processes, as (partition, path): re-link every copy the index names
    whose file is missing, fsync the directories of every copy of their contents, then remove
    them. Returns what was done, one line each (reconstruct prints them)."""
    wanted: dict[tuple[str, str], Path] = {}
    for partition, path in stages:
        guid = stage_guid(path.name)
        if guid is not None and (partition, guid) not in wanted and holds_content(path, guid):
            wanted[(partition, guid)] = path
    fixes: list[str] = []
    directories: set[str] = set()
    if wanted:
        # Under the write lock: an EXPUNGE deletes its row before it removes its file, so a
        # row seen here still has its file or had it until now (never re-linked once expunged).
        try:
            copies = _relinked(spool, wanted, directories)
        except (OSError, sqlite3.Error, StoreError) as exc:  # kept for the next open or reconstruct
            fixes.append(f"cannot recover stale stage files yet: {exc}")
            return fixes
        fixes.extend(copies)
    if not _fsync_existing(directories):
        fixes.append("cannot fsync the mailbox directories of stale stage files; kept them")
        return fixes
    for partition, path in stages:
        try:
            path.unlink()
        except OSError:
            continue
        fixes.append(f"partition {partition}: removed stale stage file {path.name}")
    return fixes


def _relinked(
    spool: Spool, wanted: dict[tuple[str, str], Path], directories: set[str]
) -> list[str]:
    """Inside the write lock: each missing copy linked again from its stage file;
    `directories` gets every directory that holds a copy. Returns what was done."""
    done: list[str] = []
    with spool.index.transaction() as conn:
        for partition, uniqueid, filename, guid in _copies_of(conn, {g for _, g in wanted}):
            stage = wanted.get((partition, guid))
            if stage is None:
                continue
            directory = spool.directory_name(partition, uniqueid)
            target = f"{directory}/{filename}"
            if not os.path.exists(target):
                try:
                    restore_copy(spool, stage, target)
                except FileExistsError:
                    pass
                except OSError as exc:
                    raise OSError(exc.errno, f"cannot re-link {target}: {exc.strerror}") from exc
                else:
                    done.append(f"partition {partition}: re-linked {target} from stage file"
                                f" {stage.name}")
            directories.add(directory)
    return done


def _copies_of(
    conn: sqlite3.Connection, guids: set[str]
) -> list[tuple[str, str, str, str]]:
    """(partition, uniqueid, filename, guid) of every message with one of `guids`."""
    ordered = sorted(guids)
    found: list[tuple[str, str, str, str]] = []
    for start in range(0, len(ordered), NAMES_PER_QUERY):
        chunk = ordered[start : start + NAMES_PER_QUERY]
        placeholders = ",".join("?" * len(chunk))
        found.extend(conn.execute(
            "SELECT mailboxes.partition, mailboxes.uniqueid, messages.filename, messages.guid"
            " FROM messages JOIN mailboxes ON mailboxes.id = messages.mailbox_id"
            f" WHERE messages.guid IN ({placeholders})",
            chunk,
        ).fetchall())
    return found
