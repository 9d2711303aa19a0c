"""Copies committed before their files were durable, and what recovery does with them (issue 18).

`deliver_batch` (lmtpd's delivery thread) runs its stage files' fsync round *alongside* the
commit instead of before it: the links, the rows and COMMIT (still synchronous=FULL, so readers
only ever see an index a power failure cannot take back) go on while the pool fsyncs the stage
files and their directory, and the replies wait for both. One serial disk wait a batch instead of
two. The price: for a moment a committed row may name a copy whose file is not durable yet.

So that commit also writes its copies into the `unconfirmed_rounds` table, one row for the batch
(its copies packed in one value: `pack`; one row per copy cost 4-7% of the delivery thread at 50
recipients, docs/benchmarks.md), with its `owner` (this process: boot id, pid and start time, so
a live process is never mistaken for a dead one that had its pid) and `round` (drawn per batch).
Once the round is done, a later transaction of the same process deletes the round's rows (its
next batch's commit, or the deferred directory round: `Confirmations`), no commit of its own.
If the round fails, the copies are expunged at once and their recipients hear a temporary
failure.

When the store is opened (or reconstructed), rows of dead owners are checked (`recover`): a copy
whose file holds the content of its guid stays (the file and its directory are fsynced first: a
process killed without a power failure leaves the file in the page cache only); one whose file is
missing or wrong is linked again from a stage file of that content if one is left; any other is
expunged as IMAP expunges (a new modseq, an `expunged` row for VANISHED, the counts and so the
quota usage), never its UID reused (uidnext was durable with the row). A power failure thus turns
a message no one was told was delivered, but that a client may have seen, into an expunge. COPY
and MOVE of an unconfirmed copy pass its mark on to the new copy (`inherit`).
"""

from __future__ import annotations

import itertools
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Iterable, Sequence
from contextlib import suppress
from pathlib import Path

from sealmail.durable import fsync_together
from sealmail.store.disk.deferred import holds_content, restore_copy, stage_guid
from sealmail.store.disk.flags import expunge_rows, remove_files
from sealmail.store.disk.layout import STAGE_DIRECTORY, Spool, mailbox_row

log = logging.getLogger("sealmail.store")

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_owner: str | None = None  # this process (`owner`), made once; a forked child makes its own
_LIVE: weakref.WeakSet[Confirmations] = weakref.WeakSet()


def _forked() -> None:
    """In a forked child: an owner of its own, a fresh lock (a parent's thread may have held
    it), no rounds (the parent's rows are the parent's)."""
    global _owner
    _owner = None
    for confirmations in list(_LIVE):
        confirmations.forget()


os.register_at_fork(after_in_child=_forked)


def process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _boot_id() -> str:
    try:
        with open(_BOOT_ID) as file:
            return file.read().strip()
    except OSError:
        return ""


def _start_time(pid: int) -> str:
    """The process's start time in clock ticks since boot (/proc/PID/stat field 22), or ''."""
    try:
        with open(f"/proc/{pid}/stat") as file:
            fields = file.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19] if len(fields) > 19 else ""


def owner() -> str:
    """This process, as `unconfirmed` names it: boot id, pid, start time."""
    global _owner
    if _owner is None:
        pid = os.getpid()
        _owner = f"{_boot_id()}:{pid}:{_start_time(pid)}"
    return _owner


def owner_gone(name: str) -> bool:
    """Whether the process `name` (from `owner`) has exited: another boot, no such pid, or the
    pid now another process's (another start time)."""
    try:
        boot, pid_text, start = name.split(":")
        pid = int(pid_text)
    except ValueError:
        return True  # not one of ours: nothing that lives owns it
    if boot != _boot_id() or not process_alive(pid):
        return True
    now = _start_time(pid)
    return bool(start and now) and start != now


class Confirmations:
    """This process's rounds: drawn by each batch, marked done once its fsyncs are, deleted from
    `unconfirmed` by the next transaction that asks (`clear`)."""

    def __init__(self) -> None:
        self._numbers = itertools.count(1)
        self.forget()
        _LIVE.add(self)

    def forget(self) -> None:
        self._lock = threading.Lock()
        self._done: list[int] = []

    def draw(self) -> int:
        with self._lock:
            return next(self._numbers)

    def done(self, round_: int) -> None:
        with self._lock:
            self._done.append(round_)

    def clear(self, conn: sqlite3.Connection) -> list[int]:
        """Inside a transaction: delete the rows of the rounds done. Returns them, for
        `put_back` should the transaction roll back."""
        with self._lock:
            rounds, self._done = self._done, []
        if rounds:
            mine = owner()
            conn.executemany("DELETE FROM unconfirmed_rounds WHERE owner = ? AND round = ?",
                             [(mine, r) for r in rounds])
        return rounds

    def put_back(self, rounds: Sequence[int]) -> None:
        with self._lock:
            self._done.extend(rounds)

    def clear_now(self, spool: Spool) -> None:
        """From the deferred directory round: a transaction of its own if the index is free
        this moment (else a later one clears them). Not fsynced: a clearing lost to a power
        failure only makes recovery check those copies."""
        with self._lock:
            if not self._done:
                return
        with suppress(Exception), spool.index.writing_now(durable=False) as conn:
            if conn is None:
                return
            rounds = self.clear(conn)
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                self.put_back(rounds)


def pack(copies: Iterable[tuple[int, int]]) -> str:
    """(mailbox id, uid) pairs as one `unconfirmed_rounds.copies` value."""
    return " ".join([f"{mailbox_id}:{uid}" for mailbox_id, uid in copies])


def unpack(copies: str) -> list[tuple[int, int]]:
    """The (mailbox id, uid) pairs of a `copies` value."""
    pairs = []
    for copy in copies.split():
        mailbox_id, _, uid = copy.partition(":")
        pairs.append((int(mailbox_id), int(uid)))
    return pairs


def record(conn: sqlite3.Connection, round_: int, copies: Iterable[tuple[int, int]]) -> None:
    """Inside the commit: `copies` (mailbox id, uid) unconfirmed until `round_` is done."""
    conn.execute(
        "INSERT INTO unconfirmed_rounds (owner, round, copies) VALUES (?, ?, ?)",
        (owner(), round_, pack(copies)),
    )


def inherit(
    conn: sqlite3.Connection, source_id: int, target_id: int, pairs: Sequence[tuple[int, int]]
) -> None:
    """COPY or MOVE: a copy of an unconfirmed message is unconfirmed alike (same owner and
    round, a row of its own), so recovery checks it too. One query, which SQLite answers
    without handing over the rows of the live rounds (one a delivering process, usually) that
    name no copy in the source mailbox."""
    new_uids = dict(pairs)
    added = []
    for who, round_, copies in conn.execute(
        "SELECT owner, round, copies FROM unconfirmed_rounds WHERE instr(' ' || copies, ?) > 0",
        (f" {source_id}:",),
    ):
        inherited = [(target_id, new_uids[uid]) for mailbox_id, uid in unpack(copies)
                     if mailbox_id == source_id and uid in new_uids]
        if inherited:
            added.append((who, round_, pack(inherited)))
    if added:
        conn.executemany(
            "INSERT INTO unconfirmed_rounds (owner, round, copies) VALUES (?, ?, ?)", added
        )


def withdraw(spool: Spool, round_: int, copies: Iterable[tuple[str, int]]) -> None:
    """The round failed: expunge its copies (mailbox name, uid) at once, in a transaction of
    their own. Their recipients hear a temporary failure; should this fail too, the rows stay
    unconfirmed and the next open after this process checks them."""
    by_name: dict[str, list[int]] = {}
    for name, uid in copies:
        by_name.setdefault(name, []).append(uid)
    files: list[Path] = []
    with spool.index.transaction() as conn:
        for name, uids in by_name.items():
            if mailbox_row(conn, name) is not None:  # else deleted meanwhile, with its rows
                expunge_rows(spool, conn, name, uids, files)
        conn.execute("DELETE FROM unconfirmed_rounds WHERE owner = ? AND round = ?",
                     (owner(), round_))
    remove_files(files)


def recover(spool: Spool) -> list[str]:
    """At open: the unconfirmed copies of dead owners kept (fsynced), linked again from a stage
    file, or expunged (see the top). Returns what was done, one line each."""
    with spool.reading() as conn:
        owners = [o for (o,) in conn.execute("SELECT DISTINCT owner FROM unconfirmed_rounds")]
    gone = [o for o in owners if owner_gone(o)]
    if not gone:
        return []
    fixes: list[str] = []
    files: list[Path] = []
    with spool.index.transaction() as conn:  # one recovery at a time, and no writer meanwhile
        marks = ",".join("?" * len(gone))
        rows = _copies_of(conn, [
            copy for (copies,) in conn.execute(
                f"SELECT copies FROM unconfirmed_rounds WHERE owner IN ({marks})", gone)
            for copy in unpack(copies)
        ])
        stages = _stage_files(spool, {row[1] for row in rows})
        kept: list[Path] = []
        lost: dict[str, list[int]] = {}
        for name, partition, uniqueid, uid, guid, filename in rows:
            if guid is None or filename is None:
                continue  # expunged since: nothing to check
            path = spool.directory(partition, uniqueid) / filename
            if holds_content(path, guid):
                kept.append(path)
            elif (stage := _verified(stages.get((partition, guid)), guid)) is not None:
                path.unlink(missing_ok=True)
                restore_copy(spool, stage, str(path))
                kept.append(path)
                fixes.append(f"{name}: re-linked uid {uid} from stage file {stage.name}")
            else:
                lost.setdefault(name, []).append(uid)
        _fsync_files(kept)
        for name, uids in lost.items():
            expunge_rows(spool, conn, name, uids, files)
            fixes.append(f"{name}: expunged uid {' '.join(map(str, uids))}: its file was not"
                         " durable when its delivery's process died (never acknowledged)")
        conn.execute(f"DELETE FROM unconfirmed_rounds WHERE owner IN ({marks})", gone)
    remove_files(files)
    for fix in fixes:
        log.warning("recovery: %s", fix)
    return fixes


def _copies_of(
    conn: sqlite3.Connection, copies: Iterable[tuple[int, int]]
) -> list[tuple[str, str, str, int, str | None, str | None]]:
    """Each copy (mailbox id, uid) whose mailbox is still there, as (name, partition, uniqueid,
    uid, guid, filename), the last two None when the message was expunged since; by name and
    uid."""
    rows = []
    for mailbox_id, uid in set(copies):
        row = conn.execute(
            "SELECT b.name, b.partition, b.uniqueid, ?2, m.guid, m.filename FROM mailboxes b"
            " LEFT JOIN messages m ON m.mailbox_id = b.id AND m.uid = ?2 WHERE b.id = ?1",
            (mailbox_id, uid),
        ).fetchone()
        if row is not None:
            rows.append(row)
    return sorted(rows, key=lambda row: (row[0], row[3]))


def _stage_files(spool: Spool, partitions: set[str]) -> dict[tuple[str, str], list[Path]]:
    """(partition, guid) -> the stage files of that content left in the partition."""
    found: dict[tuple[str, str], list[Path]] = {}
    for partition in partitions:
        path = spool.partitions.get(partition)
        if path is None:
            continue
        try:
            entries = list((path / STAGE_DIRECTORY).iterdir())
        except OSError:
            continue
        for entry in entries:
            guid = stage_guid(entry.name)
            if guid is not None:
                found.setdefault((partition, guid), []).append(entry)
    return found


def _verified(candidates: list[Path] | None, guid: str) -> Path | None:
    return next((path for path in candidates or () if holds_content(path, guid)), None)


def _fsync_files(paths: list[Path]) -> None:
    """The kept copies' files and directories, durable before their rows are confirmed."""
    fds: list[int] = []
    try:
        for path in paths:
            fds.append(os.open(path, os.O_RDONLY | os.O_CLOEXEC))
        fsync_together({os.path.dirname(path) for path in paths}, fds)
    finally:
        for fd in fds:
            os.close(fd)
