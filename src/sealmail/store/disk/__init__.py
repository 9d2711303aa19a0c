"""DiskStore: the sealed mail store on disk (every role of sealmail.store.api), with group-committed
delivery.

Theory of operation
-------------------
Message files live in partitions (`partition-NAME`), one directory per mailbox keyed by the
mailbox's uniqueid (`PARTITION/uuid/X/Y/UNIQUEID/`, files `UID.`), so a rename touches only the
index. Every mailbox directory holds `sealmail.header` (name, uniqueid, uidvalidity, ACL) so
`reconstruct` can rebuild a mailbox whose index rows are lost. The index is one SQLite database
(sealmail.store.index).

A delivery that answers 250 must survive a crash. Order of operations:

1. the caller's thread writes the bytes once per partition to `PARTITION/stage./NAME` and fsyncs
   them (in parallel with other callers); `deliver_batch` (lmtpd's one delivery thread, many
   messages) writes them all and hands their fsyncs and their stage directories' to the fsync
   pool as one round that runs alongside steps 2-3 (the commit records those copies in
   `unconfirmed` until the round is done, and the call returns only then: `unconfirmed`);
2. the caller joins the pending batch. One committer at a time (one process at a time too: it
   first takes the commit turn, sealmail.store.locks.CommitTurn) takes every pending delivery
   and, in ONE `BEGIN IMMEDIATE` transaction, per target: allocates UID = uidnext and the next
   modseq, hard-links the stage file to `MAILBOXDIR/UID.`, inserts the row, bumps the counters;
3. in one round of fsyncs, either the stage directory of each partition whose stage files'
   names are not durable yet (`deliver`'s; none for `deliver_batch`) or, when that saves no
   fsync (one mailbox per partition), each touched mailbox directory; then COMMITs
   (synchronous=FULL: the WAL is on disk when COMMIT returns), then wakes every caller;
4. when the stage directories were fsynced, the stage files stay until a thread has fsynced
   every touched mailbox directory, once per interval for all the commits of that interval,
   then removes them (`deferred`): a commit of N mailboxes waits for one directory fsync, not
   N. Otherwise each caller unlinks its stage files.

A crash before COMMIT leaves links that no row names, at uids >= uidnext: reconstruct removes
them, and a later delivery that draws the same uid replaces the debris. A crash after COMMIT
leaves stage files whose names carry the content's guid: the next open (or reconstruct)
re-links from them every copy the index names whose directory entry was lost, fsyncs, and
removes them; before that, copies committed while their round ran are kept if their file is
whole, re-linked, or expunged (`unconfirmed`: none of them was acknowledged yet). So a message
is either fully there (file, a durable name for it, and row) or
absent. UIDs are allocated inside the commit that publishes
them, so they become visible in ascending order (a client syncing with `UID FETCH last+1:*` never
misses one).

Group commit is why this beats one-fsync-per-message stores: N concurrent deliveries share one
stage directory fsync and one WAL fsync, while each caller still returns only after its own
data is durable.

The parts, one module each, share a `Spool` (settings, partitions, the index connection, locks):
`layout` (directories, header files, index rows), `commit` (delivery by group commit),
`mailboxes` (create/rename/delete, ACLs, quotas), `reading` (records, snapshots, files),
`syncing` (what a session's view needs to catch up, in one read or none), `header_index`
(SEARCH, SORT, THREAD), `flags` (STORE, EXPUNGE), `copying` (COPY, MOVE) and `userdata`
(subscriptions, seen states, \\Recent). STORE, EXPUNGE, COPY and MOVE are group-committed as
deliveries are (`changes`): concurrent sessions share one transaction and one fsync. DiskStore
exposes their bound methods as its own, so a call costs what a method call on one class costs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext, suppress
from typing import TYPE_CHECKING, Any

from sealmail.store import locks, quota
from sealmail.store.api import QuotaUsage, UsageChange
from sealmail.store.disk.access_keys import ACCESS_KEYS_NAME, AccessKeyDatabase
from sealmail.store.disk.changes import ChangeGroup
from sealmail.store.disk.commit import GroupCommit
from sealmail.store.disk.copying import Copying
from sealmail.store.disk.flags import Flags
from sealmail.store.disk.header_index import HeaderIndex
from sealmail.store.disk.layout import (
    HEADER_NAME,
    INDEX_NAME,
    STAGE_DIRECTORY,
    FaultHook,
    MailboxHeader,
    Spool,
    allocate_uidvalidity,
    mailbox_directory,
    make_directories,
    os_error,
    write_file_durably,
)
from sealmail.store.disk.mailboxes import Mailboxes
from sealmail.store.disk.reading import Reading
from sealmail.store.disk.syncing import Syncing
from sealmail.store.disk.userdata import UserData
from sealmail.store.duplicates import DUPLICATES_NAME, DuplicateDatabase
from sealmail.store.errors import MailboxNotFound, StoreError
from sealmail.store.index import Index
from sealmail.store.settings import StoreSettings, store_settings

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.store.api import MessageStore

__all__ = [
    "DUPLICATES_NAME",
    "HEADER_NAME",
    "INDEX_NAME",
    "STAGE_DIRECTORY",
    "DiskStore",
    "FaultHook",
    "MailboxHeader",
    "allocate_uidvalidity",
    "mailbox_directory",
    "make_directories",
    "os_error",
    "write_file_durably",
]

_NO_SLOT: AbstractContextManager[None] = nullcontext()  # delivery_slot when unlimited


class DiskStore:
    """The on-disk store; safe from many threads and many processes at once."""

    def __init__(
        self,
        settings: StoreSettings,
        *,
        fault_hook: FaultHook | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.partitions = dict(settings.partitions)
        self.configdirectory = settings.configdirectory
        self._duplicates: DuplicateDatabase | None = None
        self._duplicates_lock = threading.Lock()
        self._slot_files = locks.SlotFiles()  # delivery slots' files, kept open
        try:
            for path in self.partitions.values():
                make_directories(path / STAGE_DIRECTORY)
        except OSError as exc:
            raise os_error(exc, "cannot prepare partitions") from exc
        self._index = Index(self.configdirectory / INDEX_NAME)
        self._access_keys = AccessKeyDatabase(self.configdirectory / ACCESS_KEYS_NAME)
        self.spool = spool = Spool(settings, self._index, clock, fault_hook)

        # Delivery (sealmail.store.api.DeliveryStore).
        self._commit = commit = GroupCommit(spool)
        self.deliver = commit.deliver
        self.deliver_all = commit.deliver_all
        self.deliver_batch = commit.deliver_batch
        self.clean_stage_files = commit.clean_stage_files
        self.sync_directories = commit.sync_directories
        # Mailbox administration.
        self._mailboxes = mailboxes = Mailboxes(spool)
        self.create_mailbox = mailboxes.create_mailbox
        self.delete_mailbox = mailboxes.delete_mailbox
        self.rename_mailbox = mailboxes.rename_mailbox
        self.list_mailboxes = mailboxes.list_mailboxes
        self.mailbox_path = mailboxes.mailbox_path
        self.remove_mailbox_directory = mailboxes.remove_mailbox_directory
        self.set_acl = mailboxes.set_acl
        self.set_quota = mailboxes.set_quota
        self.quota_for = mailboxes.quota_for
        self.check_quota = mailboxes.check_quota
        self.namespace_stamp = mailboxes.namespace_stamp
        self.used_under = mailboxes.used_under
        self.special_uses = mailboxes.special_uses
        self.set_special_use = mailboxes.set_special_use
        # Mailbox view: reading, searching, flags, copies.
        self._reading = reading = Reading(spool)
        self.messages = reading.messages
        self.message_bytes = reading.message_bytes
        self.message_contents = reading.message_contents
        self.message_records = reading.message_records
        self.flag_snapshot = reading.flag_snapshot
        self.messages_since = reading.messages_since
        self.expunged_since = reading.expunged_since
        syncing = Syncing(spool)
        self.mailbox = syncing.mailbox
        self.mailbox_changes = syncing.mailbox_changes
        self.mailbox_changed = syncing.mailbox_changed
        self.message_structures = reading.message_structures
        self.save_message_structures = reading.save_message_structures
        header_index = HeaderIndex(spool)
        self.search_header = header_index.search_header
        self.listed_headers = header_index.listed_headers
        self.sorted_uids = header_index.sorted_uids
        self.sort_values = header_index.sort_values
        self.thread_fields = header_index.thread_fields
        self._changes = changes = ChangeGroup(spool)  # STORE, EXPUNGE, COPY share commits
        flags = Flags(spool, changes)
        self.set_flags = flags.set_flags
        self.update_flags = flags.update_flags
        self.expunge = flags.expunge
        copying = Copying(spool, changes)
        self.copy_messages = copying.copy_messages
        self.move_messages = copying.move_messages
        # User data.
        user_data = UserData(spool)
        self.claim_recent = user_data.claim_recent
        self.subscriptions = user_data.subscriptions
        self.subscribe = user_data.subscribe
        self.unsubscribe = user_data.unsubscribe

        self.clean_stage_files()

    @classmethod
    def from_config(cls, config: ImapdConfig, **options: Any) -> DiskStore:
        """The store of an imapd.conf (its StoreSettings: sealmail.store.settings)."""
        return cls(store_settings(config), **options)

    def close(self) -> None:
        with suppress(StoreError):  # a cache: what is not written now is parsed again
            self._reading.write_structures()
        self._commit.close()
        self._changes.close()
        self._slot_files.close()
        self._index.close()
        self.spool.recent.close()
        with self._duplicates_lock:
            if self._duplicates is not None:
                self._duplicates.close()
                self._duplicates = None

    def __enter__(self) -> DiskStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ concurrency and repair

    def delivery_slot(self, user: str) -> AbstractContextManager[None]:
        limit = self.settings.user_concurrency_limit
        if limit <= 0:
            # Unlimited: nothing to take, one shared do-nothing context (the slot's generator
            # was ~1 us of every copy; issue 18).
            return _NO_SLOT
        return locks.delivery_slot(
            self.spool.lock_directory, user, limit, self._slot_files,
        )

    def access_key(self, name: str) -> bytes:
        """URLAUTH's key of mailbox `name` (sealmail.store.api.AccessKeys)."""
        return self._access_keys.key(self._uniqueid(name))

    def reset_access_key(self, name: str) -> None:
        self._access_keys.reset(self._uniqueid(name))

    def _uniqueid(self, name: str) -> str:
        info = self.mailbox(name)
        if info is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return info.uniqueid
    def pop_lock(self, mailbox: str) -> locks.PopLock:
        """The POP lock of `mailbox`: a flock under configdirectory/lock/pop, shared by every
        process on this machine."""
        return locks.PopLock(self.spool.lock_directory, mailbox)

    def duplicates(self) -> DuplicateDatabase | None:
        """The duplicate delivery database, or None when duplicatesuppression is off."""
        if not self.settings.duplicate_suppression:
            return None
        with self._duplicates_lock:
            if self._duplicates is None:
                self._duplicates = DuplicateDatabase(self.configdirectory / DUPLICATES_NAME)
            return self._duplicates

    def quota_roots(self) -> list[QuotaUsage]:
        with self.spool.reading() as conn:
            return quota.all_usages(conn)

    def repair_quota(self, root: str) -> list[UsageChange]:
        """Recount the usage under `root` (`sealmail quota -f`), in one short transaction."""
        with self._index.transaction() as conn:
            return quota.repair(conn, root)

    def reconstruct(self, name: str) -> list[str]:
        from sealmail.store.reconstruct import reconstruct_mailbox

        return reconstruct_mailbox(self, self._index, name)

    def reconstruct_all(self, checked: Callable[[str, int], None] | None = None) -> list[str]:
        """Check every mailbox, adopt or remove orphan directories, clear stale stage files;
        `checked(name, of)` after each mailbox."""
        from sealmail.store.reconstruct import reconstruct_store

        return reconstruct_store(self, self._index, checked)


def _roles(store: DiskStore) -> MessageStore:
    return store  # mypy: the disk store plays every role
