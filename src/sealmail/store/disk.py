"""DiskStore: the sealed mail store on disk (a MessageStore), with group-committed delivery.

Theory of operation
-------------------
Message files live in partitions (`partition-NAME`), one directory per mailbox keyed by the
mailbox's uniqueid (`PARTITION/uuid/X/Y/UNIQUEID/`, files `UID.`), so a rename touches only the
index. Every mailbox directory holds `sealmail.header` (name, uniqueid, uidvalidity, ACL) so
`reconstruct` can rebuild a mailbox whose index rows are lost. The index is one SQLite database
(sealmail.store.index).

A delivery that answers 250 must survive a crash. Order of operations:

1. the caller's thread writes the bytes once per partition to `PARTITION/stage./NAME` and fsyncs
   them (in parallel with other callers);
2. the caller joins the pending batch. One committer at a time takes every pending delivery and,
   in ONE `BEGIN IMMEDIATE` transaction, per target: allocates UID = uidnext and the next modseq,
   hard-links the stage file to `MAILBOXDIR/UID.`, inserts the row, bumps the counters;
3. fsyncs each touched mailbox directory once (the new names are durable), then COMMITs
   (synchronous=FULL: the WAL is on disk when COMMIT returns), then wakes every caller;
4. each caller unlinks its stage files.

A crash before COMMIT leaves links that no row names, at uids >= uidnext: reconstruct removes
them, and a later delivery that draws the same uid replaces the debris. A crash after COMMIT
leaves only stage files, removed at the next open. So a message is either fully there (file,
directory entry and row durable) or absent. UIDs are allocated inside the commit that publishes
them, so they become visible in ascending order (a client syncing with `UID FETCH last+1:*` never
misses one).

Group commit is why this beats one-fsync-per-message stores: N concurrent deliveries share one
directory fsync per mailbox and one WAL fsync, while each caller still returns only after its own
data is durable.
"""

from __future__ import annotations

import errno
import hashlib
import itertools
import json
import operator
import os
import secrets
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.durable import fsync_directory, replace_file
from sealmail.store import acl as acls
from sealmail.store import locks, quota
from sealmail.store.api import (
    ALL_RIGHTS,
    FLAG_MODES,
    AppendedMessage,
    CopiedMessages,
    DeliveryTarget,
    FlagSnapshot,
    FlagUpdate,
    HeaderMatches,
    MailboxInfo,
    MessageRecord,
    QuotaUsage,
    flags_after,
)
from sealmail.store.duplicates import DuplicateDatabase
from sealmail.store.errors import (
    DiskFull,
    InvalidMailboxName,
    InvalidQuota,
    MailboxCorrupt,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    PartitionNotFound,
    StoreError,
)
from sealmail.store.headers import (
    FIELD_SEPARATOR,
    INDEXED_FIELDS,
    LENGTH_DIGITS,
    NAME_SEPARATOR,
    VALUE_SEPARATOR,
    encode,
    listed_form,
    searchable_form,
)
from sealmail.store.index import Index, sqlite_error
from sealmail.store.names import owner_of, parent_of, user_inbox, validate_internal
from sealmail.store.seen import SEEN, UidSet, index_keeps_seen, with_seen
from sealmail.store.sorting import SORT_COLUMNS, SORT_KEYS, SortFields, ThreadFields, sort_fields

HEADER_NAME = "sealmail.header"
STAGE_DIRECTORY = "stage."
INDEX_NAME = "mailboxes.db"
DUPLICATES_NAME = "deliver.db"

FaultHook = Callable[[str], None]
"""Called with a fault point name; tests use it to kill a process mid-delivery.

Points: "staged" (stage files written and fsynced, before the transaction) and "linked" (links
made and directories fsynced, before COMMIT).
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


def _write_all(fd: int, data: bytes) -> None:
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


@dataclass(eq=False)
class _Delivery:
    """One deliver() call waiting for the group commit."""

    targets: Sequence[DeliveryTarget]
    stages: list[Path | None]  # per target; shared paths when single-instance
    size: int
    guid: str
    internaldate: float
    headers: bytes | None  # searchable form of the header (sealmail.store.headers)
    listed: bytes  # the fields clients list folders with (sealmail.store.headers)
    sorting: SortFields  # sortable form (sealmail.store.sorting)
    results: list[AppendedMessage | StoreError | None]
    wake: threading.Event = field(default_factory=threading.Event)
    finished: bool = False


# A header_index row past its key: searchable form, listed fields, sortable form.
_ROW_LIST = ", ".join(("fields", "listed", *SORT_COLUMNS))
_ROW_PLACES = ", ".join("?" * (2 + len(SORT_COLUMNS)))
# RFC 5256 3 and RFC 5957 sort keys over `messages AS m` joined with `header_index AS h`.
_SORT_EXPRESSIONS = {
    "ARRIVAL": "m.internaldate",
    "DATE": "coalesce(h.sentdate, m.internaldate)",  # RFC 5256 2.2: else the internal date
    "SIZE": "m.size",
    "SUBJECT": "h.base_subject",
    "FROM": "h.from_mailbox",
    "TO": "h.to_mailbox",
    "CC": "h.cc_mailbox",
    "DISPLAYFROM": "h.from_display",
    "DISPLAYTO": "h.to_display",
}
assert frozenset(_SORT_EXPRESSIONS) == SORT_KEYS

_MAILBOX_COLUMNS = (
    "id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq, acl, exists_count"
)


class DiskStore:
    """The on-disk MessageStore; safe from many threads and many processes at once."""

    def __init__(
        self,
        config: ImapdConfig,
        *,
        fault_hook: FaultHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.partitions = dict(config.partitions)
        self.default_partition = config.string("defaultpartition") or "default"
        if self.default_partition not in self.partitions:
            raise ConfigError(
                config.path,
                0,
                "defaultpartition",
                f"no partition-{self.default_partition} is configured",
            )
        self.configdirectory = config.configdirectory
        self.lock_directory = self.configdirectory / "lock"
        self.single_instance = config.switch("singleinstancestore")
        self.user_concurrency_limit = config.integer("lmtp_user_concurrency_limit")
        self._fault_hook = fault_hook
        self._clock = clock
        self._stage_counter = itertools.count()
        self._queue: list[_Delivery] = []
        self._queue_lock = threading.Lock()
        self._committing = False
        self._duplicates: DuplicateDatabase | None = None
        self._duplicates_lock = threading.Lock()
        try:
            for path in self.partitions.values():
                make_directories(path / STAGE_DIRECTORY)
        except OSError as exc:
            raise os_error(exc, "cannot prepare partitions") from exc
        self._index = Index(self.configdirectory / INDEX_NAME)
        self.clean_stage_files()

    @classmethod
    def open(cls, config: ImapdConfig, **options: Any) -> DiskStore:
        return cls(config, **options)

    def close(self) -> None:
        self._index.close()
        with self._duplicates_lock:
            if self._duplicates is not None:
                self._duplicates.close()
                self._duplicates = None

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _fault(self, point: str) -> None:
        if self._fault_hook is not None:
            self._fault_hook(point)

    def _partition_path(self, partition: str) -> Path:
        try:
            return self.partitions[partition]
        except KeyError:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf") from None

    def _directory(self, partition: str, uniqueid: str) -> Path:
        return mailbox_directory(self._partition_path(partition), uniqueid)

    @contextmanager
    def _reading(self) -> Iterator[sqlite3.Connection]:
        try:
            yield self._index.connection()
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self._index.path)) from exc

    @staticmethod
    def _row(conn: sqlite3.Connection, name: str) -> tuple[Any, ...] | None:
        row: tuple[Any, ...] | None = conn.execute(
            f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE name = ?", (name,)
        ).fetchone()
        return row

    @classmethod
    def _require(cls, conn: sqlite3.Connection, name: str) -> tuple[Any, ...]:
        row = cls._row(conn, name)
        if row is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return tuple(row)

    @staticmethod
    def _info(row: tuple[Any, ...]) -> MailboxInfo:
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

    def _write_header(self, directory: Path, header: MailboxHeader) -> None:
        try:
            write_file_durably(directory / HEADER_NAME, header.render())
        except OSError as exc:
            raise os_error(exc, f"cannot write header of {header.name}") from exc

    def _refresh_header(self, name: str) -> None:
        """Rewrite a mailbox's header after a committed change (best effort: reconstruct
        repairs a stale header; it is only read when the index entry is gone)."""
        with self._reading() as conn:
            row = self._row(conn, name)
        if row is None:
            return
        info = self._info(tuple(row))
        with suppress(StoreError):
            self._write_header(
                self._directory(info.partition, info.uniqueid),
                MailboxHeader(info.name, info.uniqueid, info.uidvalidity, info.acl),
            )

    def _mailbox_lock(self, *names: str) -> AbstractContextManager[None]:
        return locks.mailbox_lock(self.lock_directory, list(names))

    @staticmethod
    def _seen_of(
        conn: sqlite3.Connection, mailbox_id: int, name: str, reader: str | None
    ) -> UidSet | None:
        """`reader`'s own seen set of a mailbox, or None when their \\Seen is the index's
        (sealmail.store.seen)."""
        if index_keeps_seen(name, reader):
            return None
        row = conn.execute(
            "SELECT uids FROM seen WHERE mailbox_id = ? AND userid = ?", (mailbox_id, reader)
        ).fetchone()
        return UidSet() if row is None else UidSet.parse(row[0])

    @staticmethod
    def _save_seen(
        conn: sqlite3.Connection, mailbox_id: int, reader: str | None, seen: UidSet
    ) -> None:
        conn.execute(
            "INSERT INTO seen (mailbox_id, userid, uids) VALUES (?, ?, ?)"
            " ON CONFLICT (mailbox_id, userid) DO UPDATE SET uids = excluded.uids",
            (mailbox_id, reader, seen.render()),
        )

    # ------------------------------------------------------------------ mailboxes

    def mailbox(self, name: str) -> MailboxInfo | None:
        with self._reading() as conn:
            row = self._row(conn, name)
        return None if row is None else self._info(tuple(row))

    def _default_acl(self, conn: sqlite3.Connection, name: str) -> dict[str, str]:
        """Cyrus's initial ACL: see sealmail.store.acl."""
        owner = owner_of(name)
        if owner is not None and name == user_inbox(owner.user, owner.domain):
            return {owner.userid: ALL_RIGHTS}
        parent = parent_of(name)
        while parent is not None:
            row = self._row(conn, parent)
            if row is not None:
                return acls.parse_acl(row[7])
            parent = parent_of(parent)
        return dict(acls.DEFAULT_SHARED_ACL)

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo:
        validate_internal(name)
        partition = partition or self.default_partition
        partition_path = self._partition_path(partition)
        initial_acl: dict[str, str] | None = None
        if acl is not None:
            initial_acl = {}
            for identifier, rights in acl.items():
                initial_acl = acls.set_entry(initial_acl, identifier, rights)
        owner = owner_of(name)
        with self._mailbox_lock(name), self._index.transaction() as conn:
            if self._row(conn, name) is not None:
                raise MailboxExists(f"mailbox {name!r} already exists")
            if owner is not None:
                inbox = user_inbox(owner.user, owner.domain)
                if name != inbox and self._row(conn, inbox) is None:
                    raise MailboxNotFound(
                        f"cannot create {name!r}: user mailbox {inbox!r} does not exist"
                    )
            if initial_acl is None:
                initial_acl = self._default_acl(conn, name)
            uidvalidity = allocate_uidvalidity(conn, self._clock)
            uniqueid = uuid.uuid4().hex
            directory = mailbox_directory(partition_path, uniqueid)
            try:
                make_directories(directory)
            except OSError as exc:
                raise os_error(exc, f"cannot create directory of {name}") from exc
            self._write_header(directory, MailboxHeader(name, uniqueid, uidvalidity, initial_acl))
            conn.execute(
                "INSERT INTO mailboxes (name, uniqueid, partition, uidvalidity, uidnext,"
                " highestmodseq, acl) VALUES (?, ?, ?, ?, 1, 1, ?)",
                (name, uniqueid, partition, uidvalidity, acls.render_acl(initial_acl)),
            )
            row = self._require(conn, name)
        return self._info(row)

    def delete_mailbox(self, name: str) -> None:
        """Delete a mailbox; a user's INBOX takes its whole subtree with it (as Cyrus).

        The index commit comes first; files go afterwards. A tombstone per deleted uniqueid
        tells reconstruct to finish removing a directory a crash left behind.
        """
        validate_internal(name)
        owner = owner_of(name)
        whole_user = owner is not None and name == user_inbox(owner.user, owner.domain)
        with self._mailbox_lock(name):
            with self._index.transaction() as conn:
                self._require(conn, name)
                low, high = quota.subtree_bounds(name)
                if whole_user:
                    doomed = conn.execute(
                        "SELECT id, uniqueid, partition, name FROM mailboxes"
                        " WHERE name = ? OR (name >= ? AND name < ?)",
                        (name, low, high),
                    ).fetchall()
                else:
                    doomed = conn.execute(
                        "SELECT id, uniqueid, partition, name FROM mailboxes WHERE name = ?",
                        (name,),
                    ).fetchall()
                for mailbox_id, uniqueid, partition, doomed_name in doomed:
                    conn.execute(
                        "INSERT OR REPLACE INTO tombstones (uniqueid, partition) VALUES (?, ?)",
                        (uniqueid, partition),
                    )
                    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
                    conn.execute("DELETE FROM quotaroots WHERE root = ?", (doomed_name,))
                if whole_user:
                    # Cyrus removes the user's seen database with the user: a user created
                    # later under the same name starts with nothing seen anywhere.
                    assert owner is not None
                    conn.execute("DELETE FROM seen WHERE userid = ?", (owner.userid,))
            for _, uniqueid, partition, _ in doomed:
                self.remove_mailbox_directory(partition, uniqueid)

    def remove_mailbox_directory(self, partition: str, uniqueid: str) -> bool:
        """Remove a deleted mailbox's directory, then its tombstone. True when done."""
        directory = self._directory(partition, uniqueid)
        try:
            if directory.exists():
                header = directory / HEADER_NAME
                # The header goes first: a directory without one is never resurrected.
                header.unlink(missing_ok=True)
                for entry in directory.iterdir():
                    entry.unlink()
                directory.rmdir()
        except OSError:
            return False
        try:
            with self._index.transaction() as conn:
                conn.execute("DELETE FROM tombstones WHERE uniqueid = ?", (uniqueid,))
        except StoreError:
            return False
        return True

    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its inferiors (RFC 3501 6.3.5); only the index changes."""
        validate_internal(old)
        validate_internal(new)
        if new == old or new.startswith(old + "."):
            raise InvalidMailboxName(f"cannot rename {old!r} to {new!r} (inside itself)")
        owner = owner_of(new)
        with self._mailbox_lock(old, new):
            with self._index.transaction() as conn:
                self._require(conn, old)
                if self._row(conn, new) is not None:
                    raise MailboxExists(f"mailbox {new!r} already exists")
                if owner is not None:
                    inbox = user_inbox(owner.user, owner.domain)
                    if new != inbox and self._row(conn, inbox) is None:
                        raise MailboxNotFound(f"user mailbox {inbox!r} does not exist")
                low, high = quota.subtree_bounds(old)
                names = [old] + [
                    n
                    for (n,) in conn.execute(
                        "SELECT name FROM mailboxes WHERE name >= ? AND name < ? ORDER BY name",
                        (low, high),
                    )
                ]
                renames = [(n, new + n[len(old) :]) for n in names]
                for _, target in renames:
                    validate_internal(target)
                    if target != new and self._row(conn, target) is not None:
                        raise MailboxExists(f"mailbox {target!r} already exists")
                for source, target in renames:
                    conn.execute("UPDATE mailboxes SET name = ? WHERE name = ?", (target, source))
                    conn.execute("UPDATE quotaroots SET root = ? WHERE root = ?", (target, source))
            for _, target in renames:
                self._refresh_header(target)

    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]:
        with self._reading() as conn:
            if prefix:
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                rows = conn.execute(
                    f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes WHERE name >= ? AND name < ?"
                    " ORDER BY name",
                    (prefix, upper),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {_MAILBOX_COLUMNS} FROM mailboxes ORDER BY name"
                ).fetchall()
        return [self._info(tuple(row)) for row in rows]

    def mailbox_path(self, name: str) -> Path:
        with self._reading() as conn:
            row = self._require(conn, name)
        return self._directory(row[3], row[2])

    # ------------------------------------------------------------------ rights and quotas

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL (RFC 4314 3.1): '+r'/'-r' modify, plain rights replace, empty removes."""
        with self._index.transaction() as conn:
            row = self._require(conn, name)
            updated = acls.set_entry(acls.parse_acl(row[7]), identifier, rights)
            conn.execute(
                "UPDATE mailboxes SET acl = ? WHERE id = ?", (acls.render_acl(updated), row[0])
            )
        self._refresh_header(name)

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        """Set the limits of a quota root (an existing mailbox); both None removes the root."""
        for value in (storage_kb, messages):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidQuota(f"quota limits must be non-negative, got {value!r}")
        with self._index.transaction() as conn:
            self._require(conn, root)
            if storage_kb is None and messages is None:
                conn.execute("DELETE FROM quotaroots WHERE root = ?", (root,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO quotaroots (root, storage_limit, messages_limit)"
                    " VALUES (?, ?, ?)",
                    (root, storage_kb, messages),
                )

    def quota_for(self, name: str) -> QuotaUsage | None:
        with self._reading() as conn:
            root = quota.quota_root_of(conn, name)
            return None if root is None else quota.usage_of(conn, root)

    def check_quota(self, name: str, incoming_size: int) -> None:
        usage = self.quota_for(name)
        if usage is not None:
            quota.enforce(usage, incoming_size, 1 if incoming_size > 0 else 0)

    # ------------------------------------------------------------------ delivery

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]:
        """Append `content` to every target; one result per target, in order.

        Returns only once every appended copy is durable (see the module docstring).
        """
        if not targets:
            return []
        results: list[AppendedMessage | StoreError | None] = [None] * len(targets)
        with self._reading() as conn:
            partition_of: dict[str, str] = {}
            for target in targets:
                row = conn.execute(
                    "SELECT partition FROM mailboxes WHERE name = ?", (target.mailbox,)
                ).fetchone()
                if row is not None:
                    partition_of[target.mailbox] = row[0]
        stages: list[Path | None] = [None] * len(targets)
        written: list[Path] = []
        shared: dict[str, Path | StoreError] = {}
        try:
            for i, target in enumerate(targets):
                partition = partition_of.get(target.mailbox)
                if partition is None:
                    results[i] = MailboxNotFound(f"mailbox {target.mailbox!r} does not exist")
                    continue
                staged = shared.get(partition) if self.single_instance else None
                if staged is None:
                    staged = self._stage(partition, content)
                    if isinstance(staged, Path):
                        written.append(staged)
                    if self.single_instance:
                        shared[partition] = staged
                if isinstance(staged, StoreError):
                    results[i] = staged
                else:
                    stages[i] = staged
            self._fault("staged")
            delivery = _Delivery(
                targets=targets,
                stages=stages,
                size=len(content),
                guid=hashlib.sha1(content).hexdigest(),
                internaldate=self._clock() if internaldate is None else internaldate,
                headers=searchable_form(content),
                listed=listed_form(content),
                sorting=sort_fields(content),
                results=results,
            )
            if any(stage is not None for stage in stages):
                self._commit_in_group(delivery)
        finally:
            for path in written:
                with suppress(OSError):  # removed at the next open or reconstruct
                    path.unlink()
        final: list[AppendedMessage | StoreError] = []
        for result in results:
            assert result is not None
            final.append(result)
        return final

    def _stage(self, partition: str, content: bytes) -> Path | StoreError:
        """Write and fsync a stage file; its name starts with our pid (see clean_stage_files)."""
        directory = self._partition_path(partition) / STAGE_DIRECTORY
        name = f"{os.getpid()}-{next(self._stage_counter)}-{secrets.token_hex(6)}"
        path = directory / name
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                _write_all(fd, content)
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            with suppress(OSError):
                path.unlink()
            return os_error(exc, f"cannot stage message on partition {partition}")
        return path

    def _commit_in_group(self, delivery: _Delivery) -> None:
        """Join the pending batch; commit it ourselves if no one is committing."""
        with self._queue_lock:
            self._queue.append(delivery)
            lead = not self._committing
            self._committing = True
        while True:
            if not lead:
                delivery.wake.wait()
                delivery.wake.clear()
                if delivery.finished:
                    return
            # We lead: our own delivery is in the queue, so this batch includes it.
            with self._queue_lock:
                batch, self._queue = self._queue, []
            try:
                self._commit_batch(batch)
            finally:
                for waiting in batch:
                    waiting.finished = True
                    if waiting is not delivery:
                        waiting.wake.set()
                with self._queue_lock:
                    if self._queue:
                        self._queue[0].wake.set()  # hand the committer role on
                    else:
                        self._committing = False
            return

    def _commit_batch(self, batch: list[_Delivery]) -> None:
        conn = self._index.connection()
        linked: list[Path] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                has_quotas = conn.execute("SELECT EXISTS (SELECT 1 FROM quotaroots)").fetchone()[0]
                directories: set[Path] = set()
                for delivery in batch:
                    for i, target in enumerate(delivery.targets):
                        stage = delivery.stages[i]
                        if stage is None or delivery.results[i] is not None:
                            continue
                        try:
                            delivery.results[i] = self._append(
                                conn, delivery, target, stage, bool(has_quotas), linked
                            )
                        except StoreError as exc:
                            delivery.results[i] = exc
                            continue
                        directories.add(linked[-1].parent)
                for directory in directories:
                    fsync_directory(directory)
                self._fault("linked")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    with suppress(sqlite3.Error):
                        conn.execute("ROLLBACK")
                raise
        except BaseException as exc:
            # Left-over links are debris at uid >= uidnext; reconstruct or the next delivery
            # that draws the same uid clears them.
            for path in linked:
                with suppress(OSError):
                    path.unlink()
            if isinstance(exc, sqlite3.Error):
                error: StoreError = sqlite_error(exc, "delivery")
            elif isinstance(exc, OSError):
                error = os_error(exc, "delivery")
            elif isinstance(exc, StoreError):
                error = exc
            else:
                error = StoreError(f"delivery failed: {exc!r}")
                error.__cause__ = exc
            for delivery in batch:
                for i, result in enumerate(delivery.results):
                    if result is None or isinstance(result, AppendedMessage):
                        delivery.results[i] = error
            if not isinstance(exc, Exception):
                raise

    def _append(
        self,
        conn: sqlite3.Connection,
        delivery: _Delivery,
        target: DeliveryTarget,
        stage: Path,
        has_quotas: bool,
        linked: list[Path],
    ) -> AppendedMessage:
        row = self._row(conn, target.mailbox)
        if row is None:
            raise MailboxNotFound(f"mailbox {target.mailbox!r} does not exist")
        mailbox_id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq = row[:7]
        directory = self._directory(partition, uniqueid)
        if stage.parent.parent != self._partition_path(partition):
            # Deleted and re-created on another partition since we staged: let the client retry.
            raise StoreError(f"mailbox {name!r} moved to partition {partition!r}; try again")
        if has_quotas and not target.ignore_quota:
            root = quota.quota_root_of(conn, name)
            usage = None if root is None else quota.usage_of(conn, root)
            if usage is not None:
                if target.strict_quota:
                    quota.enforce(usage, delivery.size, 1)
                else:
                    quota.enforce(usage, 0, 0)
        uid, modseq = uidnext, highestmodseq + 1
        path = directory / f"{uid}."
        try:
            try:
                os.link(stage, path)
            except FileExistsError:
                # Debris of a delivery that never committed (uid >= uidnext): replace it.
                path.unlink()
                os.link(stage, path)
        except OSError as exc:
            raise os_error(exc, f"cannot store message in {name}") from exc
        linked.append(path)
        wanted = list(dict.fromkeys(target.flags))
        seen = None if SEEN not in wanted else self._seen_of(conn, mailbox_id, name, target.reader)
        if seen is not None:
            # The appending user does not own this mailbox: \Seen is theirs alone.
            wanted.remove(SEEN)
            self._save_seen(conn, mailbox_id, target.reader, seen.union([uid]))
        flags = " ".join(wanted)
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid, flags,"
            " filename) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                mailbox_id,
                uid,
                modseq,
                delivery.internaldate,
                delivery.size,
                delivery.guid,
                flags,
                path.name,
            ),
        )
        conn.execute(
            f"INSERT OR REPLACE INTO header_index (mailbox_id, uid, {_ROW_LIST})"
            f" VALUES (?, ?, {_ROW_PLACES})",
            (mailbox_id, uid, delivery.headers, delivery.listed, *delivery.sorting),
        )
        conn.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?, exists_count = exists_count + 1,"
            " size_bytes = size_bytes + ? WHERE id = ?",
            (uid + 1, modseq, delivery.size, mailbox_id),
        )
        return AppendedMessage(name, uidvalidity, uid, modseq, delivery.guid, delivery.size)

    def clean_stage_files(self) -> list[str]:
        """Remove stage files of processes that are gone (a crash after or before COMMIT)."""
        removed: list[str] = []
        for partition, path in sorted(self.partitions.items()):
            directory = path / STAGE_DIRECTORY
            try:
                entries = list(directory.iterdir())
            except OSError:
                continue
            for entry in entries:
                pid_text = entry.name.split("-", 1)[0]
                if pid_text.isdigit() and _process_alive(int(pid_text)):
                    continue
                try:
                    entry.unlink()
                except OSError:
                    continue
                removed.append(f"partition {partition}: removed stale stage file {entry.name}")
        return removed

    # ------------------------------------------------------------------ messages

    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]:
        """Every message, in UID order, with its flags as `reader` sees them."""
        with self._reading() as conn:
            conn.execute("BEGIN")  # the rows and the seen state of one moment
            try:
                mailbox_id = self._require(conn, name)[0]
                rows = conn.execute(
                    "SELECT uid, modseq, internaldate, size, guid, flags FROM messages"
                    " WHERE mailbox_id = ? ORDER BY uid",
                    (mailbox_id,),
                ).fetchall()
                seen = self._seen_of(conn, mailbox_id, name, reader)
            finally:
                conn.execute("COMMIT")
        return _records(rows, seen)

    def message_bytes(self, name: str, uid: int) -> bytes:
        with self._reading() as conn:
            row = self._require(conn, name)
            message = conn.execute(
                "SELECT filename FROM messages WHERE mailbox_id = ? AND uid = ?", (row[0], uid)
            ).fetchone()
        if message is None:
            raise NoSuchMessage(f"no message with UID {uid} in {name!r}")
        path = self._directory(row[3], row[2]) / message[0]
        try:
            data: bytes = path.read_bytes()
            return data
        except FileNotFoundError:
            raise MailboxCorrupt(f"{name}: file of UID {uid} is missing; run reconstruct") from None
        except OSError as exc:
            raise os_error(exc, f"cannot read UID {uid} of {name}") from exc

    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]:
        """The bytes of several messages, in the order of `uids`, read as the caller iterates:
        one index query first, then one open and read per file (FETCH of many bodies, which
        sends each batch while reading the next). With `limit`, at most that many octets from
        the start of each (a FETCH of headers). None for a UID the mailbox no longer has
        (another session expunged it: RFC 2180 4.1.1 leaves it out of the FETCH)."""
        with self._reading() as conn:
            row = self._require(conn, name)
            files = {uid: (filename, size) for uid, filename, size
                     in _rows_for(conn, "uid, filename, size", row[0], uids)}
        return self._read_messages(name, self._directory(row[3], row[2]), uids, files, limit)

    def _read_messages(
        self,
        name: str,
        directory: Path,
        uids: Sequence[int],
        files: dict[int, tuple[str, int]],
        limit: int | None = None,
    ) -> Iterator[bytes | None]:
        try:
            directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, f"cannot open the directory of {name}") from exc
        try:
            for uid in uids:
                file = files.get(uid)
                if file is None:
                    yield None
                    continue
                try:
                    data = _read_file(file[0], directory_fd, file[1], limit)
                except FileNotFoundError:
                    raise MailboxCorrupt(
                        f"{name}: file of UID {uid} is missing; run reconstruct"
                    ) from None
                except OSError as exc:
                    raise os_error(exc, f"cannot read UID {uid} of {name}") from exc
                yield data
        finally:
            os.close(directory_fd)

    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]:
        """The records of those of `uids` that exist, in UID order (flags as `reader` sees
        them)."""
        with self._reading() as conn:
            mailbox_id = self._require(conn, name)[0]
            rows = _rows_for(conn, "uid, modseq, internaldate, size, guid, flags", mailbox_id, uids)
            seen = self._seen_of(conn, mailbox_id, name, reader)
        return _records(rows, seen)

    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot:
        """The mailbox row and every message's UID, modseq and flags (as `reader` sees them)
        in one read transaction, so the rows are exactly those of the mailbox's highestmodseq
        (an IMAP view can then catch up with `messages_since(highestmodseq)` without missing a
        change).

        The columns come back as three concatenated strings from one scan: a Python object
        per row and column is what a SELECT of a large mailbox would otherwise spend its time
        on. A newline separates the flags of two messages (flags are IMAP atoms: none has one;
        should one ever, the rows are read one by one instead).
        """
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                row = self._require(conn, name)
                uid_text, modseq_text, flag_text = conn.execute(
                    "SELECT group_concat(uid), group_concat(modseq), group_concat(flags, char(10))"
                    " FROM (SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ?"
                    " ORDER BY uid)",
                    (row[0],),
                ).fetchone()
                if uid_text is not None:
                    uids = list(map(int, uid_text.split(",")))
                    texts = flag_text.split("\n")
                    modseqs = list(map(int, modseq_text.split(",")))
                    if len(texts) != len(uids):
                        uids, modseqs, texts = map(list, zip(*conn.execute(
                            "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ?",
                            (row[0],),
                        ).fetchall(), strict=True))
                seen = self._seen_of(conn, row[0], name, reader)
            finally:
                conn.execute("COMMIT")
        if uid_text is None:
            return FlagSnapshot(self._info(row), [], [], [], [])
        sets = _FlagSetIds()
        flag_ids = list(map(sets.__getitem__, texts))
        if any(map(operator.ge, uids, itertools.islice(uids, 1, None))):
            # group_concat's order follows the subquery's in practice, not by contract; the
            # three lists are aligned in any case (one pass feeds all three).
            uids, modseqs, flag_ids = map(list, zip(*sorted(zip(uids, modseqs, flag_ids,
                                                                strict=True)), strict=True))
        if seen is not None:
            flag_ids, flag_sets = _overlay_seen(uids, flag_ids, sets.flag_sets, seen)
            return FlagSnapshot(self._info(row), uids, modseqs, flag_ids, flag_sets)
        return FlagSnapshot(self._info(row), uids, modseqs, flag_ids, sets.flag_sets)

    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches:
        """UIDs whose header field `field` (any occurrence) contains `needle`, compared
        casefolded on the decoded value (RFC 9051 6.4.4), from `header_index` alone.

        Messages without a row yet (stored before the index had the table) are indexed first,
        once. `unanswered`: the UIDs whose header has no searchable form, or every UID when the
        field is not one the index keeps (sealmail.store.headers.INDEXED_FIELDS) or the needle
        could match across two occurrences of the field.
        """
        field = field.lower()
        wanted = encode(needle.casefold())
        with self._reading() as conn:
            row = self._require(conn, name)
            mailbox_id = row[0]
            if field not in INDEXED_FIELDS or VALUE_SEPARATOR in wanted:
                uids = conn.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
                ).fetchall()
                return HeaderMatches([], [uid for (uid,) in uids])
            indexed, exists = conn.execute(
                "SELECT (SELECT count(*) FROM header_index WHERE mailbox_id = ?1), exists_count"
                " FROM mailboxes WHERE id = ?1",
                (mailbox_id,),
            ).fetchone()
        if indexed != exists:
            self._index_headers(name, mailbox_id, self._directory(row[3], row[2]))
        key = FIELD_SEPARATOR + field.encode() + NAME_SEPARATOR
        # The value: after "RS name US", `length` octets announced by the digits there. Only
        # octets up to the field's own are looked at: the common fields come first.
        at = "instr(fields, ?2) + ?3"
        value = f"substr(fields, {at} + {LENGTH_DIGITS}, CAST(substr(fields, {at}, {LENGTH_DIGITS})"
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT uid, fields IS NULL FROM header_index WHERE mailbox_id = ?1"
                " AND (fields IS NULL OR (instr(fields, ?2) > 0"
                f" AND instr({value} AS INTEGER)), ?4) > 0))"
                " ORDER BY uid",
                (mailbox_id, key, len(key), wanted),
            ).fetchall()
        matched = [uid for uid, unknown in rows if not unknown]
        return HeaderMatches(matched, [uid for uid, unknown in rows if unknown])

    def listed_headers(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        """The fields clients list folders with (sealmail.store.headers.listed_form) of those
        of `uids` that exist, from the index alone; rows without them yet (older than index
        version 6) are filled first, for the whole mailbox, reading each file once."""
        wanted = set(uids)
        if not wanted:
            return {}
        found: dict[int, bytes | None] = {}
        for attempt in range(2):
            with self._reading() as conn:
                row = self._require(conn, name)
                rows = conn.execute(
                    "SELECT m.uid, h.listed FROM messages AS m LEFT JOIN header_index AS h"
                    " ON h.mailbox_id = m.mailbox_id AND h.uid = m.uid"
                    " WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ?",
                    (row[0], min(wanted), max(wanted)),
                ).fetchall()
            found = {uid: listed for uid, listed in rows if uid in wanted}
            if attempt or None not in found.values():
                break
            self._index_headers(name, row[0], self._directory(row[3], row[2]))
        return {uid: listed for uid, listed in found.items() if listed is not None}

    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Every UID of `name`, ordered by `keys` ((RFC 5256 / RFC 5957 sort key, reverse),
        most significant first); messages equal on all keys stay in UID order (RFC 5256 3).

        From the sortable form in the index (sealmail.store.sorting), filled first for the
        messages that lack it; SQLite orders the mailbox, no file is opened.
        """
        order = "".join(f"{_SORT_EXPRESSIONS[key]}{' DESC' if reverse else ''}, "
                        for key, reverse in keys)
        rows = self._sortable(
            name,
            "SELECT m.uid, h.base_subject IS NULL FROM messages AS m LEFT JOIN header_index AS h"
            " ON h.mailbox_id = m.mailbox_id AND h.uid = m.uid WHERE m.mailbox_id = ?"
            f" ORDER BY {order}m.uid",
        )
        return [row[0] for row in rows]

    def thread_fields(self, name: str) -> list[ThreadFields]:
        """What THREAD needs of every message of `name`, in UID order (sortable form, as for
        `sorted_uids`)."""
        rows = self._sortable(
            name,
            "SELECT m.uid, h.base_subject IS NULL, ifnull(h.message_id, ''), ifnull(h.refs, ''),"
            " ifnull(h.in_reply_to, ''), ifnull(h.subject, ''), ifnull(h.base_subject, ''),"
            " coalesce(h.sentdate, m.internaldate) FROM messages AS m"
            " LEFT JOIN header_index AS h ON h.mailbox_id = m.mailbox_id AND h.uid = m.uid"
            " WHERE m.mailbox_id = ? ORDER BY m.uid",
        )
        return [ThreadFields(row[0], *row[2:]) for row in rows]

    def _sortable(self, name: str, query: str) -> list[tuple[Any, ...]]:
        """The rows of `query` (its second column: whether the message lacks its sortable
        form) once every message has its sortable form: filled first when one lacks it."""
        for _ in range(2):
            with self._reading() as conn:
                row = self._require(conn, name)
                rows = conn.execute(query, (row[0],)).fetchall()
            if not any(row[1] for row in rows):
                break
            self._index_headers(name, row[0], self._directory(row[3], row[2]))
        return rows  # still lacking only where a file could not be read: sorted as empty

    def _index_headers(self, name: str, mailbox_id: int, directory: Path) -> None:
        """Give every message of a mailbox its header_index row, with its searchable and its
        sortable form (a backfill after a migration or a repair); drop rows of messages that
        are gone."""
        with self._reading() as conn:
            missing = [
                (uid, filename)
                for uid, filename in conn.execute(
                    "SELECT m.uid, m.filename FROM messages AS m LEFT JOIN header_index AS h"
                    " ON h.mailbox_id = m.mailbox_id AND h.uid = m.uid"
                    " WHERE m.mailbox_id = ? AND (h.base_subject IS NULL OR h.listed IS NULL)",
                    (mailbox_id,),
                )
            ]
        rows: list[tuple[object, ...]] = []
        for uid, filename in missing:
            try:
                data = (directory / filename).read_bytes()
            except OSError:
                continue  # searched from the file (and reported) by the caller
            rows.append((mailbox_id, uid, searchable_form(data), listed_form(data),
                         *sort_fields(data), mailbox_id, uid))
        with self._index.transaction() as conn:
            # Only for messages still there: an expunge may have come in between.
            conn.executemany(
                f"INSERT OR REPLACE INTO header_index (mailbox_id, uid, {_ROW_LIST})"
                f" SELECT ?, ?, {_ROW_PLACES}"
                " WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?)",
                rows,
            )
            conn.execute(
                "DELETE FROM header_index WHERE mailbox_id = ?1 AND uid NOT IN"
                " (SELECT uid FROM messages WHERE mailbox_id = ?1)",
                (mailbox_id,),
            )

    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int:
        """Replace the flags of the given messages; returns how many of them exist.

        Each message whose flags change gets a new modseq (RFC 7162 3.1: every change of
        metadata MUST increase the mod-sequence); unchanged messages keep theirs.
        """
        wanted = " ".join(dict.fromkeys(flags))
        matched = 0
        with self._index.transaction() as conn:
            row = self._require(conn, name)
            mailbox_id, modseq = row[0], row[6]
            for uid in sorted(set(uids)):
                current = conn.execute(
                    "SELECT flags FROM messages WHERE mailbox_id = ? AND uid = ?",
                    (mailbox_id, uid),
                ).fetchone()
                if current is None:
                    continue
                matched += 1
                if current[0] == wanted:
                    continue
                modseq += 1
                conn.execute(
                    "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                    (wanted, modseq, mailbox_id, uid),
                )
            conn.execute(
                "UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id)
            )
        return matched

    def expunge(self, name: str, uids: Sequence[int]) -> list[int]:
        """Remove messages; returns the UIDs that were there, ascending. Files go after COMMIT."""
        removed: list[int] = []
        files: list[Path] = []
        with self._index.transaction() as conn:
            row = self._require(conn, name)
            mailbox_id, modseq = row[0], row[6]
            directory = self._directory(row[3], row[2])
            for uid in sorted(set(uids)):
                message = conn.execute(
                    "SELECT size, filename FROM messages WHERE mailbox_id = ? AND uid = ?",
                    (mailbox_id, uid),
                ).fetchone()
                if message is None:
                    continue
                modseq += 1
                conn.execute(
                    "DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
                )
                conn.execute(
                    "DELETE FROM header_index WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid)
                )
                conn.execute(
                    "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                    (mailbox_id, uid, modseq),
                )
                conn.execute(
                    "UPDATE mailboxes SET exists_count = exists_count - 1,"
                    " size_bytes = size_bytes - ? WHERE id = ?",
                    (message[0], mailbox_id),
                )
                removed.append(uid)
                files.append(directory / message[1])
            conn.execute(
                "UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id)
            )
            if removed:
                # UIDs are never reused, so a stale seen entry would do no harm; dropped all
                # the same, so a seen state names only messages that are there.
                for userid, text in conn.execute(
                    "SELECT userid, uids FROM seen WHERE mailbox_id = ? AND uids != ''",
                    (mailbox_id,),
                ).fetchall():
                    seen = UidSet.parse(text)
                    pruned = seen.difference(removed)
                    if pruned != seen:
                        self._save_seen(conn, mailbox_id, userid, pruned)
        for path in files:
            with suppress(OSError):  # an expunged uid's file is debris reconstruct removes
                path.unlink()
        return removed

    # ------------------------------------------------------------------ what IMAP needs

    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]:
        """Messages added or changed after `modseq` (RFC 7162 CHANGEDSINCE; session sync),
        flags as `reader` sees them. A change of a reader's own \\Seen gives the message a new
        modseq too (as Cyrus), so it is among these."""
        with self._reading() as conn:
            conn.execute("BEGIN")
            try:
                mailbox_id = self._require(conn, name)[0]
                rows = conn.execute(
                    "SELECT uid, modseq, internaldate, size, guid, flags FROM messages"
                    " WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                    (mailbox_id, modseq),
                ).fetchall()
                seen = self._seen_of(conn, mailbox_id, name, reader)
            finally:
                conn.execute("COMMIT")
        return _records(rows, seen)

    def expunged_since(self, name: str, modseq: int) -> list[int]:
        """UIDs expunged after `modseq`, ascending (RFC 7162 3.2.10 VANISHED)."""
        with self._reading() as conn:
            mailbox_id = self._require(conn, name)[0]
            rows = conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ? ORDER BY uid",
                (mailbox_id, modseq),
            ).fetchall()
        return [uid for (uid,) in rows]

    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate:
        """Set, add or remove flags of many messages in one transaction, as `reader` sees them.

        Only a message whose flags really change gets a new modseq (RFC 7162 3.1); the others
        are not written at all. With `unchanged_since`, a message whose modseq is above it is
        left alone and reported in `refused` (RFC 7162 3.1.3: the conditional STORE fails for
        it). For a reader with their own seen state (sealmail.store.seen) \\Seen changes that
        state, the index's \\Seen (the owner's) stays as it is, and the message still gets a new
        modseq, as Cyrus gives it: the reader's other sessions, and CONDSTORE clients, learn of
        the change through the modseq like of any other.
        """
        if mode not in FLAG_MODES:
            raise ValueError(f"mode must be one of {FLAG_MODES}")
        records: list[MessageRecord] = []
        refused: list[int] = []
        changes: list[tuple[str, int, int, int]] = []
        texts = _FlagTexts()
        with self._index.transaction() as conn:
            row = self._require(conn, name)
            mailbox_id, modseq = row[0], row[6]
            rows = _rows_for(
                conn, "uid, modseq, internaldate, size, guid, flags", mailbox_id, uids
            )
            seen = self._seen_of(conn, mailbox_id, name, reader)
            seen_now: list[int] = []
            unseen_now: list[int] = []
            for uid, mseq, internaldate, size, guid, text in rows:
                stored = current = texts[text]
                if seen is not None:
                    current = with_seen(stored, uid in seen)
                if unchanged_since is not None and mseq > unchanged_since:
                    refused.append(uid)
                    records.append(MessageRecord(uid, mseq, internaldate, size, guid, current))
                    continue
                new = flags_after(current, flags, mode)
                if set(new) != set(current):
                    modseq += 1
                    mseq = modseq
                    if seen is None:
                        new_text = " ".join(new)
                        current = texts[new_text]
                    else:
                        if (SEEN in new) != (SEEN in current):
                            (seen_now if SEEN in new else unseen_now).append(uid)
                        kept = [f for f in new if f != SEEN]
                        if SEEN in stored:
                            kept.append(SEEN)  # the owner's: not this reader's to change
                        new_text = text if set(kept) == set(stored) else " ".join(kept)
                        current = tuple(new)
                    changes.append((new_text, mseq, mailbox_id, uid))
                records.append(MessageRecord(uid, mseq, internaldate, size, guid, current))
            if changes:
                conn.executemany(
                    "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                    changes,
                )
                conn.execute(
                    "UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id)
                )
            if seen is not None and (seen_now or unseen_now):
                self._save_seen(
                    conn, mailbox_id, reader, seen.union(seen_now).difference(unseen_now)
                )
        return FlagUpdate(records, refused)

    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """Copy messages with their flags and internal dates (IMAP COPY, RFC 9051 6.4.7).

        All or nothing, in one transaction: the files are hard-linked (copied across
        partitions), fsynced through their directory before COMMIT, like a delivery; the quota
        of the target counts the copies (RFC 9051 6.4.7: COPY fails with OVERQUOTA). Each copy
        has \\Seen as `reader` sees the original, kept where the target keeps `reader`'s \\Seen
        (the index when they own it, else their own seen state: sealmail.store.seen).
        """
        linked: list[Path] = []
        try:
            with self._index.transaction() as conn:
                src = self._require(conn, source)
                dst = self._require(conn, target)
                src_dir = self._directory(src[3], src[2])
                dst_dir = self._directory(dst[3], dst[2])
                dst_id, uidnext, modseq = dst[0], dst[5], dst[6]
                src_seen = self._seen_of(conn, src[0], source, reader)
                dst_seen = self._seen_of(conn, dst_id, target, reader)
                seen_copies: list[int] = []
                rows = [
                    found
                    for uid in sorted(set(uids))
                    if (
                        found := conn.execute(
                            "SELECT uid, internaldate, size, guid, flags, filename FROM messages"
                            " WHERE mailbox_id = ? AND uid = ?",
                            (src[0], uid),
                        ).fetchone()
                    )
                    is not None
                ]
                result = CopiedMessages(dst[4], [])
                if not rows:
                    return result
                root = quota.quota_root_of(conn, target)
                usage = None if root is None else quota.usage_of(conn, root)
                if usage is not None:
                    quota.enforce(usage, sum(r[2] for r in rows), len(rows))
                pairs = result.pairs
                total = 0
                for uid, internaldate, size, guid, flags, filename in rows:
                    new_uid = uidnext
                    uidnext += 1
                    modseq += 1
                    if src_seen is not None or dst_seen is not None:
                        stored = flags.split()
                        was_seen = SEEN in stored if src_seen is None else uid in src_seen
                        flags = " ".join(with_seen(stored, was_seen and dst_seen is None))
                        if was_seen and dst_seen is not None:
                            seen_copies.append(new_uid)
                    path = dst_dir / f"{new_uid}."
                    try:
                        path.unlink(missing_ok=True)  # debris of an uncommitted delivery
                        try:
                            os.link(src_dir / filename, path)
                        except OSError as exc:
                            if exc.errno != errno.EXDEV:
                                raise
                            path.write_bytes((src_dir / filename).read_bytes())
                    except FileNotFoundError:
                        raise MailboxCorrupt(
                            f"{source}: file of UID {uid} is missing; run reconstruct"
                        ) from None
                    except OSError as exc:
                        raise os_error(exc, f"cannot copy UID {uid} to {target}") from exc
                    linked.append(path)
                    structure = conn.execute(
                        "SELECT structure FROM messages WHERE mailbox_id = ? AND uid = ?",
                        (src[0], uid),
                    ).fetchone()[0]
                    conn.execute(
                        "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid,"
                        " flags, filename, structure) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (
                            dst_id,
                            new_uid,
                            modseq,
                            internaldate,
                            size,
                            guid,
                            flags,
                            path.name,
                            structure,
                        ),
                    )
                    conn.execute(
                        "INSERT OR REPLACE INTO header_index"
                        f" (mailbox_id, uid, {_ROW_LIST})"
                        f" SELECT ?, ?, {_ROW_LIST} FROM header_index"
                        " WHERE mailbox_id = ? AND uid = ?",
                        (dst_id, new_uid, src[0], uid),
                    )
                    pairs.append((uid, new_uid))
                    total += size
                conn.execute(
                    "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?,"
                    " exists_count = exists_count + ?, size_bytes = size_bytes + ? WHERE id = ?",
                    (uidnext, modseq, len(pairs), total, dst_id),
                )
                if dst_seen is not None and seen_copies:
                    self._save_seen(conn, dst_id, reader, dst_seen.union(seen_copies))
                try:
                    fsync_directory(dst_dir)
                except OSError as exc:
                    raise os_error(exc, f"cannot sync {target}") from exc
            linked.clear()  # committed: the links are the messages now
            return result
        finally:
            for path in linked:  # the transaction failed: these links are debris
                with suppress(OSError):
                    path.unlink()

    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int:
        """Raise `reader`'s \\Recent mark of `name` to `upto`; the mark as it was.

        RFC 3501 2.3.2: a message is \\Recent in "the first session to have been notified
        about" it; "if the session is read-write, subsequent sessions will not see \\Recent
        set". The mark is the highest UID some read-write session of `reader` has been told
        about (the owner's in the mailbox row, anyone else's in their seen row:
        sealmail.store.seen), so the caller's \\Recent messages are the UIDs above the
        returned mark up to `upto`. Read and raised in one write transaction: of two sessions
        claiming at once, each gets only what the other did not. The mark never goes down nor
        past the last UID given out; with `upto` at or below it nothing is written (how a
        read-only session or STATUS reads the mark).
        """
        keeps = index_keeps_seen(name, reader)
        with self._reading() as conn:
            mailbox_id = self._require(conn, name)[0]
            mark = self._recent_mark(conn, mailbox_id, reader, keeps)
        if upto <= mark:
            return mark
        with self._index.transaction() as conn:
            row = self._require(conn, name)
            mailbox_id, uidnext = row[0], row[5]
            mark = self._recent_mark(conn, mailbox_id, reader, keeps)
            new = min(upto, uidnext - 1)
            if new > mark:
                if keeps:
                    conn.execute(
                        "UPDATE mailboxes SET recentuid = ? WHERE id = ?", (new, mailbox_id)
                    )
                else:
                    conn.execute(
                        "INSERT INTO seen (mailbox_id, userid, recentuid) VALUES (?, ?, ?)"
                        " ON CONFLICT (mailbox_id, userid) DO UPDATE SET"
                        " recentuid = excluded.recentuid",
                        (mailbox_id, reader, new),
                    )
        return mark

    @staticmethod
    def _recent_mark(
        conn: sqlite3.Connection, mailbox_id: int, reader: str | None, index_keeps: bool
    ) -> int:
        if index_keeps:
            row = conn.execute(
                "SELECT recentuid FROM mailboxes WHERE id = ?", (mailbox_id,)
            ).fetchone()
        else:
            row = conn.execute(
                "SELECT recentuid FROM seen WHERE mailbox_id = ? AND userid = ?",
                (mailbox_id, reader),
            ).fetchone()
        return 0 if row is None else int(row[0])

    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        """The stored parses (the IMAP layer's blobs) of those messages that have one."""
        found: dict[int, bytes] = {}
        with self._reading() as conn:
            mailbox_id = self._require(conn, name)[0]
            wanted = sorted(set(uids))
            for i in range(0, len(wanted), 500):
                chunk = wanted[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT uid, structure FROM messages WHERE mailbox_id = ? AND uid IN ({marks})"
                    " AND structure IS NOT NULL",
                    (mailbox_id, *chunk),
                ).fetchall()
                found.update((uid, blob) for uid, blob in rows)
        return found

    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None:
        """Keep parses, all in one transaction; not a change a client sees, so no modseq."""
        if not structures:
            return
        with self._index.transaction() as conn:
            mailbox_id = self._require(conn, name)[0]
            conn.executemany(
                "UPDATE messages SET structure = ? WHERE mailbox_id = ? AND uid = ?",
                [(blob, mailbox_id, uid) for uid, blob in structures.items()],
            )

    def subscriptions(self, userid: str) -> list[str]:
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT mailbox FROM subscriptions WHERE userid = ? ORDER BY mailbox", (userid,)
            ).fetchall()
        return [name for (name,) in rows]

    def subscribe(self, userid: str, name: str) -> None:
        validate_internal(name)
        with self._index.transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO subscriptions (userid, mailbox) VALUES (?, ?)",
                (userid, name),
            )

    def unsubscribe(self, userid: str, name: str) -> bool:
        """True when the subscription existed."""
        with self._index.transaction() as conn:
            cursor = conn.execute(
                "DELETE FROM subscriptions WHERE userid = ? AND mailbox = ?", (userid, name)
            )
            return cursor.rowcount > 0

    def special_uses(self) -> dict[str, str]:
        """Mailbox name -> its special use ("\\Sent", ...), for mailboxes that have one."""
        with self._reading() as conn:
            rows = conn.execute(
                "SELECT name, special_use FROM mailboxes WHERE special_use != ''"
            ).fetchall()
        return {name: use for name, use in rows}

    def set_special_use(self, name: str, use: str) -> None:
        """RFC 6154: "" removes it."""
        with self._index.transaction() as conn:
            mailbox_id = self._require(conn, name)[0]
            conn.execute("UPDATE mailboxes SET special_use = ? WHERE id = ?", (use, mailbox_id))

    # ------------------------------------------------------------------ concurrency and repair

    def delivery_slot(self, user: str) -> AbstractContextManager[None]:
        return locks.delivery_slot(self.lock_directory, user, self.user_concurrency_limit)

    def duplicates(self) -> DuplicateDatabase | None:
        """The duplicate delivery database, or None when duplicatesuppression is off."""
        if not self.config.switch("duplicatesuppression"):
            return None
        with self._duplicates_lock:
            if self._duplicates is None:
                self._duplicates = DuplicateDatabase(self.configdirectory / DUPLICATES_NAME)
            return self._duplicates

    def reconstruct(self, name: str) -> list[str]:
        from sealmail.store.reconstruct import reconstruct_mailbox

        return reconstruct_mailbox(self, self._index, name)

    def reconstruct_all(self) -> list[str]:
        """Check every mailbox, adopt or remove orphan directories, clear stale stage files."""
        from sealmail.store.reconstruct import reconstruct_store

        return reconstruct_store(self, self._index)


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class _FlagSetIds(dict[str, int]):
    """Flags column text -> index of its flag set in `flag_sets`, each text split once."""

    def __init__(self) -> None:
        super().__init__()
        self.flag_sets: list[tuple[str, ...]] = []
        self._by_set: dict[tuple[str, ...], int] = {}

    def __missing__(self, text: str) -> int:
        flags = tuple(text.split())
        known = self._by_set.get(flags)
        if known is None:
            known = self._by_set[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
        self[text] = known
        return known


class _FlagTexts(dict[str, tuple[str, ...]]):
    """Flags column text -> tuple, each distinct text split once and its tuple shared."""

    def __missing__(self, text: str) -> tuple[str, ...]:
        flags = self[text] = tuple(text.split())
        return flags


def _records(rows: Sequence[tuple[Any, ...]], seen: UidSet | None) -> list[MessageRecord]:
    """MessageRecords of (uid, modseq, internaldate, size, guid, flags) rows, with a reader's
    own seen state applied when they have one."""
    texts = _FlagTexts()
    if seen is None:
        return [MessageRecord(uid, modseq, internaldate, size, guid, texts[flags])
                for uid, modseq, internaldate, size, guid, flags in rows]
    marks = seen.members([r[0] for r in rows])
    return [MessageRecord(uid, modseq, internaldate, size, guid, with_seen(texts[flags], mark))
            for (uid, modseq, internaldate, size, guid, flags), mark
            in zip(rows, marks, strict=True)]


def _overlay_seen(
    uids: list[int], flag_ids: list[int], flag_sets: list[tuple[str, ...]], seen: UidSet
) -> tuple[list[int], list[tuple[str, ...]]]:
    """A snapshot's flag set ids renumbered for a reader with their own seen state: one new
    set per distinct (index flag set, seen by the reader) pair."""
    sets: list[tuple[str, ...]] = []
    by_set: dict[tuple[str, ...], int] = {}
    by_pair: dict[tuple[int, bool], int] = {}
    out: list[int] = []
    for flag_id, mark in zip(flag_ids, seen.members(uids), strict=True):
        known = by_pair.get((flag_id, mark))
        if known is None:
            flags = with_seen(flag_sets[flag_id], mark)
            known = by_set.get(flags)
            if known is None:
                known = by_set[flags] = len(sets)
                sets.append(flags)
            by_pair[(flag_id, mark)] = known
        out.append(known)
    return out, sets


def _rows_for(
    conn: sqlite3.Connection, columns: str, mailbox_id: int, uids: Sequence[int]
) -> list[tuple[Any, ...]]:
    """`columns` of those of `uids` that exist, in UID order: one IN query for a few scattered
    UIDs, else one range scan (filtered here), which SQLite does faster."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    if len(wanted) <= 256 and wanted[-1] - wanted[0] >= 2 * len(wanted):
        marks = ",".join("?" * len(wanted))
        rows: list[tuple[Any, ...]] = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND uid IN ({marks})"
            " ORDER BY uid",
            (mailbox_id, *wanted),
        ).fetchall()
        return rows
    rows = conn.execute(
        f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?"
        " ORDER BY uid",
        (mailbox_id, wanted[0], wanted[-1]),
    ).fetchall()
    if len(rows) == len(wanted) == wanted[-1] - wanted[0] + 1:
        return rows  # the whole range was asked for
    keep = set(wanted)
    return [r for r in rows if r[0] in keep]


def _read_file(filename: str, directory_fd: int, size: int, limit: int | None = None) -> bytes:
    """A whole file of the size the index says: one open, one read (more only if the size was
    wrong: reconstruct fixes that), one close. With `limit`, at most that many octets."""
    fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory_fd)
    try:
        if limit is not None and size > limit:
            return os.read(fd, limit)
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
