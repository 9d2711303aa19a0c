"""PostgresStore: the store in one PostgreSQL database that any number of sealmail nodes share
(every role of sealmail.store.api; issue 24).

Theory of operation
-------------------
The database is the only shared state: a node keeps nothing about a mailbox between calls, so
lmtpd, imapd and pop3d on several machines can serve the same users. Each mailbox row carries
its counters (uidvalidity, uidnext, highestmodseq, the owner's \\Recent mark, quota usage), and
every change to a mailbox's messages locks that row first (SELECT ... FOR UPDATE, several rows in
ascending id), so changes to one mailbox are serialized across all nodes while different
mailboxes proceed in parallel.

Delivery (sealmail.store.postgres.delivery): the bytes are written once, by SHA-256, before any
recipient; then one transaction per recipient allocates the UID inside the commit that makes the
message visible, so UIDs are gap-free and become visible in ascending order. Reads that combine a
mailbox row with its messages run in one REPEATABLE READ snapshot (sealmail.store.postgres.
database). The tables and their migrations: sealmail.store.postgres.schema.

Across nodes: lmtp_user_concurrency_limit's delivery slots are leases (sealmail.store.postgres.
leases). Other nodes' IDLE sessions hear of a change through LISTEN/NOTIFY, sent after the
commit, with a poll as the backstop (sealmail.store.postgres.notify).

The parts, one module each, share a `Database` (pool, settings, helpers): `mailboxes`
(MailboxAdmin), `delivery` (deliver, COPY), `reading` (records, contents, SEARCH/SORT/THREAD),
`flags` (STORE, EXPUNGE), `userdata` (seen states, \\Recent, subscriptions), `leases`, `blobs`
(the pluggable blob store). PostgresStore exposes their bound methods as its own, as DiskStore does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from sealmail.store.postgres.blobs import BlobStore, DatabaseBlobs
from sealmail.store.postgres.database import Database
from sealmail.store.postgres.delivery import Delivery
from sealmail.store.postgres.duplicates import SharedDuplicates
from sealmail.store.postgres.flags import Flags
from sealmail.store.postgres.importer import Importer
from sealmail.store.postgres.leases import LeasedPopLock, Leases
from sealmail.store.postgres.mailboxes import Mailboxes
from sealmail.store.postgres.reading import Reading
from sealmail.store.postgres.sweep import Sweeper, SweepResult
from sealmail.store.postgres.userdata import UserData
from sealmail.store.settings import StoreSettings, store_settings

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.store.api import MessageStore

__all__ = ["BlobStore", "DatabaseBlobs", "PostgresStore"]


class PostgresStore:
    """The store in PostgreSQL; safe from many threads, processes and machines at once."""

    def __init__(
        self,
        settings: StoreSettings,
        *,
        blobs: BlobStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self._db = db = Database(settings, blobs or DatabaseBlobs(), clock)
        self._leases = Leases(db)
        self._duplicates = SharedDuplicates(db, clock)

        mailboxes = Mailboxes(db)
        self.mailbox = mailboxes.mailbox
        self.mailbox_changed = db.feed.changed
        self.create_mailbox = mailboxes.create_mailbox
        self.delete_mailbox = mailboxes.delete_mailbox
        self.rename_mailbox = mailboxes.rename_mailbox
        self.list_mailboxes = mailboxes.list_mailboxes
        self.set_acl = mailboxes.set_acl
        self.set_quota = mailboxes.set_quota
        self.quota_for = mailboxes.quota_for
        self.check_quota = mailboxes.check_quota
        self.special_uses = mailboxes.special_uses
        self.set_special_use = mailboxes.set_special_use
        delivery = Delivery(db)
        self.deliver = delivery.deliver
        self.copy_messages = delivery.copy_messages
        self.move_messages = delivery.move_messages
        self.importer = Importer(db, delivery)  # sealmail migrate
        reading = Reading(db)
        self.messages = reading.messages
        self.message_bytes = reading.message_bytes
        self.message_contents = reading.message_contents
        self.message_records = reading.message_records
        self.flag_snapshot = reading.flag_snapshot
        self.messages_since = reading.messages_since
        self.expunged_since = reading.expunged_since
        self.mailbox_changes = reading.mailbox_changes
        self.message_structures = reading.message_structures
        self.save_message_structures = reading.save_message_structures
        self.search_header = reading.search_header
        self.listed_headers = reading.listed_headers
        self.sorted_uids = reading.sorted_uids
        self.sort_values = reading.sort_values
        self.thread_fields = reading.thread_fields
        flags = Flags(db)
        self.set_flags = flags.set_flags
        self.update_flags = flags.update_flags
        self.expunge = flags.expunge
        user_data = UserData(db)
        self.claim_recent = user_data.claim_recent
        self.subscriptions = user_data.subscriptions
        self.subscribe = user_data.subscribe
        self.unsubscribe = user_data.unsubscribe

    @classmethod
    def from_config(cls, config: ImapdConfig, **options: Any) -> PostgresStore:
        """The store of an imapd.conf with store_backend: postgresql (store_dsn)."""
        return cls(store_settings(config), **options)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def delivery_slot(self, user: str) -> AbstractContextManager[None]:
        """One of lmtp_user_concurrency_limit slots of `user` (0: unlimited), counted over
        every node (a lease each: sealmail.store.postgres.leases)."""
        return self._leases.delivery_slot(user, self.settings.user_concurrency_limit)

    def duplicates(self) -> SharedDuplicates | None:
        """The duplicate delivery database, one table every node shares (None when
        duplicatesuppression is off)."""
        return self._duplicates if self.settings.duplicate_suppression else None

    def sweep(self, grace: float | None = None) -> SweepResult | None:
        """Remove message rows and blobs nothing names, older than `grace` seconds
        (store_blob_grace); None when another node is sweeping."""
        return Sweeper(self._db, self._leases).sweep(
            self.settings.blob_grace if grace is None else grace)

    def pop_lock(self, mailbox: str) -> LeasedPopLock:
        """The POP lock of `mailbox`: a lease, so it holds across every node."""
        return LeasedPopLock(self._leases, mailbox)


def _roles(store: PostgresStore) -> MessageStore:
    return store  # mypy: the PostgreSQL store plays every role
