"""The disk store's layout: partitions, mailbox directories and their header files, the
index rows every part reads, and the durable-write primitives (see sealmail.store.disk).
"""

from __future__ import annotations

import errno
import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sealmail.durable import fsync_directory, replace_file
from sealmail.store import acl as acls
from sealmail.store import locks
from sealmail.store.api import MailboxInfo
from sealmail.store.disk.recent import RECENT_NAME, RecentMarks
from sealmail.store.disk.structures import WaitingStructures
from sealmail.store.errors import (
    DiskFull,
    MailboxCorrupt,
    MailboxNotFound,
    PartitionNotFound,
    StoreError,
)
from sealmail.store.index import Index, sqlite_error
from sealmail.store.settings import StoreSettings
from sealmail.store.sorting import SORT_COLUMNS

HEADER_NAME = "sealmail.header"
STAGE_DIRECTORY = "stage."
INDEX_NAME = "mailboxes.db"

FaultHook = Callable[[str], None]
"""Called with a fault point name; tests use it to kill a process mid-delivery.

Points: "staged" (stage files written and fsynced, before the transaction) and "linked" (links
made and directories fsynced, before COMMIT); "changes" (a group of IMAP index changes made,
before its COMMIT: sealmail.store.disk.changes).
"""


def os_error(exc: OSError, what: str) -> StoreError:
    """ENOSPC/EDQUOT -> DiskFull; any other OSError -> a temporary StoreError.

    The text (which a client may see) names no path; the OSError, with its path, stays the
    error's __cause__ for the log.
    """
    error: StoreError
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        error = DiskFull(f"{what}: {exc.strerror}")
    else:
        error = StoreError(f"{what}: {exc.strerror or exc}")
    error.__cause__ = exc
    return error


def missing_file(name: str, uid: int) -> MailboxCorrupt:
    """The index names a message whose file is gone: reconstruct drops the row."""
    return MailboxCorrupt(f"{name}: file of UID {uid} is missing; run reconstruct")


def make_directories(path: Path) -> None:
    """mkdir -p whose new entries are durable: each created level's parent is fsynced."""
    missing: list[Path] = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            continue  # another process made it
        fsync_directory(directory.parent)


def write_file_durably(path: Path, data: bytes) -> None:
    """Write a small file atomically (temp + rename) and make it and its name durable."""
    replace_file(path, data, temporary=path.with_name(path.name + ".tmp"))


def write_synced(path: str | os.PathLike[str], data: bytes, mode: int) -> None:
    """Create (`mode` O_EXCL) or overwrite (O_TRUNC) a file with `data`, fsynced; its name is
    not durable until the directory is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)


def write_unsynced(path: str | os.PathLike[str], data: bytes) -> int:
    """Create a file with `data` and return it open: its fsync is the caller's, issued with
    others' (sealmail.durable.fsync_descriptors)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        write_all(fd, data)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def mailbox_directory(partition_path: Path, uniqueid: str) -> Path:
    """Cyrus's uuid layout: two levels of hashing keep directories small."""
    return partition_path / "uuid" / uniqueid[0] / uniqueid[1] / uniqueid


@dataclass(frozen=True, slots=True)
class MailboxHeader:
    """The metadata file of a mailbox directory: enough to rebuild its index entry."""

    name: str
    uniqueid: str
    uidvalidity: int
    acl: dict[str, str]

    def render(self) -> bytes:
        document = {
            "name": self.name,
            "uniqueid": self.uniqueid,
            "uidvalidity": self.uidvalidity,
            "acl": self.acl,
        }
        return (json.dumps(document, sort_keys=True) + "\n").encode("ascii")

    @classmethod
    def parse(cls, data: bytes) -> MailboxHeader:
        try:
            document = json.loads(data)
            return cls(
                name=str(document["name"]),
                uniqueid=str(document["uniqueid"]),
                uidvalidity=int(document["uidvalidity"]),
                acl={str(k): str(v) for k, v in dict(document.get("acl", {})).items()},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise MailboxCorrupt(f"bad mailbox header: {exc}") from None


def allocate_uidvalidity(conn: sqlite3.Connection, clock: Callable[[], float]) -> int:
    """A fresh UIDVALIDITY: the time, but strictly above every value handed out before.

    RFC 3501 2.3.1.1: a mailbox re-created under an old name MUST get a greater UIDVALIDITY.
    """
    row = conn.execute("SELECT value FROM settings WHERE key = 'last_uidvalidity'").fetchone()
    last = int(row[0]) if row else 0
    value = max(int(clock()), last + 1)
    conn.execute(
        "INSERT OR REPLACE INTO settings (key, value) VALUES ('last_uidvalidity', ?)", (value,)
    )
    return value


# A header_index row past its key: searchable form, listed fields (NULL when kept once for the
# content, in `header_content`: store.index, version 11), sortable form.
ROW_LIST = ", ".join(("fields", "listed", *SORT_COLUMNS))

ROW_PLACES = ", ".join("?" * (2 + len(SORT_COLUMNS)))

# header_index's key (store.index, version 11): one integer, the mailbox's id then the uid, so a
# mailbox's rows stay one contiguous range and the B-tree's interior cells hold only integers.
HEADER_KEY = "((m.mailbox_id << 32) | m.uid)"  # of a `messages AS m` row
HEADER_OF_MAILBOX = "id BETWEEN (?1 << 32) AND ((?1 << 32) | 4294967295)"  # mailbox ?1's rows
JOIN_HEADER = f"LEFT JOIN header_index AS h ON h.id = {HEADER_KEY}"


def header_key(mailbox_id: int, uid: int) -> int:
    """header_index.id (and structures.id) of a message."""
    return (mailbox_id << 32) | uid


# A message's kept parse (store.index, version 12), for a message added in the same transaction.
INSERT_STRUCTURE = "INSERT OR REPLACE INTO structures (id, structure) VALUES (?, ?)"


# The listed fields of a message, from its copy's row or else its content's.
LISTED = "coalesce(h.listed, (SELECT c.listed FROM header_content AS c WHERE c.guid = m.guid))"

# Add `copies` copies of a content with its listed fields (guid, copies, listed).
ADD_CONTENT = (
    "INSERT INTO header_content (guid, copies, listed) VALUES (?, ?, ?)"
    " ON CONFLICT (guid) DO UPDATE SET copies = copies + excluded.copies"
)
# One copy more of a content (guid) whose listed fields are kept once, if they are.
ONE_COPY_MORE = "UPDATE header_content SET copies = copies + 1 WHERE guid = ?"


MAILBOX_COLUMNS = (
    "id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq, acl, exists_count"
)


def mailbox_row(conn: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
    """The index row of a mailbox (MAILBOX_COLUMNS), or None."""
    row: tuple[Any, ...] | None = conn.execute(
        f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?", (name,)
    ).fetchone()
    return row


def require_mailbox(conn: sqlite3.Connection, name: str) -> tuple[Any, ...]:
    row = mailbox_row(conn, name)
    if row is None:
        raise MailboxNotFound(f"mailbox {name!r} does not exist")
    return tuple(row)


def mailbox_info(row: tuple[Any, ...]) -> MailboxInfo:
    _, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq, acl, exists = row
    return MailboxInfo(
        name=name,
        uniqueid=uniqueid,
        partition=partition,
        uidvalidity=uidvalidity,
        uidnext=uidnext,
        highestmodseq=highestmodseq,
        exists=exists,
        acl=acls.parse_acl(acl),
    )


_DIRECTORY_MEMO = 8192  # mailbox directory names Spool.directory_name remembers


class Spool:
    """What every part of the disk store shares: the settings, the partitions, the index
    connection (one per thread, sealmail.store.index), the \\Recent marks
    (sealmail.store.disk.recent), the kept parses waiting to be written
    (sealmail.store.disk.structures), the lock directory and the clock."""

    def __init__(
        self,
        settings: StoreSettings,
        index: Index,
        clock: Callable[[], float],
        fault_hook: FaultHook | None,
    ) -> None:
        self.settings = settings
        self.partitions = dict(settings.partitions)
        self.default_partition = settings.default_partition
        self.single_instance = settings.single_instance
        self.lock_directory = settings.configdirectory / "lock"
        self.index = index
        self.recent = RecentMarks(settings.configdirectory / RECENT_NAME)
        self.structures = WaitingStructures()  # FETCH's parses on their way to the index
        self.clock = clock
        self._fault_hook = fault_hook
        # Delivery's hot path joins strings, not Paths (a Path costs ~10 us to build).
        self._directory_names: dict[tuple[str, str], str] = {}
        self._directories: dict[tuple[str, str], Path] = {}
        self._stage_directories = {
            name: os.path.join(path, STAGE_DIRECTORY) for name, path in self.partitions.items()
        }

    def fault(self, point: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)

    def partition_path(self, partition: str) -> Path:
        try:
            return self.partitions[partition]
        except KeyError:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf") from None

    def directory(self, partition: str, uniqueid: str) -> Path:
        """A mailbox's directory, remembered as `directory_name` is (four Path joins cost
        ~30 us, and FETCH, EXPUNGE and COPY ask for it at each command)."""
        key = (partition, uniqueid)
        path = self._directories.get(key)
        if path is None:
            path = mailbox_directory(self.partition_path(partition), uniqueid)
            if len(self._directories) >= _DIRECTORY_MEMO:
                self._directories.clear()
            self._directories[key] = path
        return path

    def directory_name(self, partition: str, uniqueid: str) -> str:
        """`directory` as a string, remembered (a mailbox's uniqueid names one directory for
        good; the memo is bounded by clearing it when full)."""
        key = (partition, uniqueid)
        name = self._directory_names.get(key)
        if name is None:
            name = os.fspath(self.directory(partition, uniqueid))
            if len(self._directory_names) >= _DIRECTORY_MEMO:
                self._directory_names.clear()
            self._directory_names[key] = name
        return name

    def stage_directory(self, partition: str) -> str:
        """Where `partition`'s stage files are written (sealmail.store.disk.commit)."""
        try:
            return self._stage_directories[partition]
        except KeyError:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf") from None

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self.index.connection()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.index.path)) from exc

    def write_header(self, directory: Path, header: MailboxHeader) -> None:
        try:
            write_file_durably(directory / HEADER_NAME, header.render())
        except OSError as exc:
            raise os_error(exc, f"cannot write header of {header.name}") from exc

    def refresh_header(self, name: str) -> None:
        """Rewrite a mailbox's header after a committed change (best effort: reconstruct
        repairs a stale header; it is only read when the index entry is gone)."""
        with self.reading() as conn:
            row = mailbox_row(conn, name)
        if row is None:
            return
        info = mailbox_info(tuple(row))
        with suppress(StoreError):
            self.write_header(
                self.directory(info.partition, info.uniqueid),
                MailboxHeader(info.name, info.uniqueid, info.uidvalidity, info.acl),
            )

    def mailbox_lock(self, *names: str) -> AbstractContextManager[None]:
        return locks.mailbox_lock(self.lock_directory, list(names))
