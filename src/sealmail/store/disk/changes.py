"""Group commit for the changes IMAP makes to the index: STORE, EXPUNGE, COPY.

Each of these is a durable commit (docs/imapd.md, "What is durable before the tagged OK": a
STORE's new MODSEQ is told to the client, so it must never be reused after a crash). Made one
by one, every command waited for the write lock and held it through its own WAL fsync. Here, as
deliveries do (sealmail.store.disk.commit), concurrent callers of one process join a pending
batch; one committer at a time runs the whole batch in ONE transaction:

1. the commit turn, `lock/commit` (sealmail.store.locks.CommitTurn), the one deliveries take,
   then the batch as it is once the turn is ours, then BEGIN IMMEDIATE
   (sealmail.store.index.Index.writing). Without the turn, a committer that met the write
   lock of another process (the other imapd workers, lmtpd) napped and retried BEGIN until it
   was free, while the holder could take it again; waiting on the turn, it sleeps in the
   kernel until the holder is done, and what its sessions sent meanwhile comes along;
2. each change in its own SAVEPOINT, in the order they joined: a change that fails is rolled
   back to its savepoint and only its caller gets the error; later changes see the earlier
   ones, as if they had been committed one after the other (a change alone in its batch runs
   without a savepoint, and if it fails the transaction is rolled back instead of committed);
3. the directories the changes named (COPY's new links) fsynced once each, then COMMIT (the
   one WAL fsync for everybody);
4. every caller is woken with its own result, so each tagged OK still follows its own commit.

FETCH's kept parses waiting to be written come along in step 2, in a savepoint of their own
(sealmail.store.disk.structures): a FETCH never waits for the write lock to save them.

If the COMMIT (or anything outside a savepoint) fails, every change of the batch is lost and
every caller gets an error; nothing was promised to any of them yet.

The links a change made (COPY's `UID.` files) are removed by the committer when the change is
rolled back, at once and while the write lock is held: the UIDs they took are drawn again by
the next change (or the next batch, or another process), whose links at the same names must not
be removed by a late clean-up of the failed one.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sealmail.durable import fsync_directories
from sealmail.store.disk.batches import Batches, Waiter
from sealmail.store.disk.layout import Spool, os_error
from sealmail.store.errors import StoreError
from sealmail.store.index import sqlite_error
from sealmail.store.locks import CommitTurn

T = TypeVar("T")


@dataclass(eq=False)
class FileEffects:
    """What a change did on disk: directories whose new entries must be durable before COMMIT,
    and links to remove should the change be rolled back."""

    directories: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)

    def undo(self) -> None:
        for path in self.links:
            with suppress(OSError):  # left over, it is debris at uid >= uidnext (reconstruct)
                os.unlink(path)
        self.links.clear()
        self.directories.clear()


# A change: runs inside the batch's transaction on the committer's connection.
Change = Callable[[sqlite3.Connection, FileEffects], T]


@dataclass(eq=False)
class _Pending(Waiter, Generic[T]):
    change: Change[T] | None = None
    result: T | None = None
    error: BaseException | None = None
    effects: FileEffects = field(default_factory=FileEffects)


class ChangeGroup:
    """Runs changes of many threads in shared transactions, one committer at a time."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._batches: Batches[_Pending[object]] = Batches()
        self._turn = CommitTurn(spool.lock_directory / "commit")  # the deliveries' (step 1)

    def close(self) -> None:
        self._turn.close()

    def apply(self, change: Change[T]) -> T:
        """Run `change` in the next group transaction; returns its result once it is durable,
        or raises its own error (a StoreError for an SQLite or OS failure)."""
        pending: _Pending[T] = _Pending(change=change)
        self._batches.join(pending, self._lead)  # type: ignore[arg-type]  # holds every T
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]  # set when error is None

    def _lead(self) -> None:
        """The batch is taken once the turn is ours (step 1)."""
        try:
            with self._turn.taken():
                self._commit(self._batches.batch())
        except StoreError as exc:  # the turn's lock file; _commit raises no StoreError
            for pending in self._batches.batch():
                pending.result = None
                pending.error = _own_error(exc, shared=True)

    def _commit(self, batch: list[_Pending[object]]) -> None:
        try:
            with self._spool.index.writing() as conn:
                try:
                    if self._run(conn, batch):
                        self._spool.structures.write_into(conn)  # FETCH's parses, if any wait
                        fsync_directories(set().union(*(p.effects.directories for p in batch)))
                        self._spool.fault("changes")
                        conn.execute("COMMIT")
                except BaseException:
                    for pending in batch:
                        pending.effects.undo()  # before the ROLLBACK gives the lock away
                    raise
        except BaseException as exc:
            for pending in batch:
                pending.result = None
                pending.error = _own_error(exc, shared=True)
            if not isinstance(exc, Exception):
                raise

    @staticmethod
    def _run(conn: sqlite3.Connection, batch: list[_Pending[object]]) -> bool:
        """Runs the batch's changes; whether there is anything to COMMIT. A change alone in
        its batch needs no savepoint: should it fail, the whole transaction is its own, and
        is rolled back (by `Index.writing`) instead of committed empty."""
        if len(batch) == 1:
            [pending] = batch
            assert pending.change is not None
            try:
                pending.result = pending.change(conn, pending.effects)
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back: the batch fails
                pending.effects.undo()  # before the ROLLBACK gives the lock away
                pending.error = _own_error(exc)
                return False
            return True
        for pending in batch:
            conn.execute("SAVEPOINT change")
            try:
                assert pending.change is not None
                pending.result = pending.change(conn, pending.effects)
            except Exception as exc:
                if not conn.in_transaction:
                    raise  # SQLite rolled the whole transaction back: the batch fails
                conn.execute("ROLLBACK TO change")
                pending.effects.undo()  # before a later change draws the same UIDs
                pending.error = _own_error(exc)
            conn.execute("RELEASE change")
        return True


def _own_error(exc: BaseException, shared: bool = False) -> BaseException:
    """The error a caller raises: store errors as they are (a copy of it when `shared`, so
    each thread raises its own object), SQLite and OS errors mapped."""
    if isinstance(exc, sqlite3.Error):
        error: BaseException = sqlite_error(exc, "index change")
    elif isinstance(exc, OSError):
        error = os_error(exc, "index change")
    elif not isinstance(exc, Exception) or (isinstance(exc, StoreError) and not shared):
        return exc
    elif isinstance(exc, StoreError):
        error = type(exc)(*exc.args)
    else:
        error = StoreError(f"index change failed: {exc!r}")
    error.__cause__ = exc
    return error
