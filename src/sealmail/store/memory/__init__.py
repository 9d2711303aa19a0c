"""MemoryStore: the store in memory, every role of sealmail.store.api; the verified fake.

It keeps what the disk store keeps, as Python objects under one lock: each mailbox's counters
(uidvalidity, uidnext, highestmodseq, the owner's \\Recent mark), its messages with their flags,
modseq and the forms worked out at delivery (sealmail.store.headers, sealmail.store.sorting: the
same functions the disk store indexes with), the expunged UIDs with their modseqs, each other
reader's seen state and \\Recent mark, quota roots, subscriptions. Nothing is durable.

The contract is the disk store's: UIDs and modseqs are allocated when a message becomes visible,
in ascending order; \\Seen is the index's for the owner of a personal mailbox and the reader's own
for anyone else (sealmail.store.seen); a COPY is all or nothing. tests/store runs the contract
tests on both backends, which is what makes this a fake worth testing sessions against.

The parts are split by role as the disk store's are (sealmail.store.disk), one module each, and
share a `Memory` (state: the mailboxes, quotas, subscriptions and the lock): `mailboxes`
(create/rename/delete, ACLs, quotas), `delivery` (appends, slots, POP locks, duplicates),
`reading` (records, snapshots, contents, SEARCH, SORT, THREAD), `flags` (STORE, EXPUNGE, COPY, MOVE)
and `userdata` (\\Recent, URLAUTH keys, subscriptions). MemoryStore exposes their bound methods
as its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealmail.store.memory.delivery import Delivery
from sealmail.store.memory.flags import Flags
from sealmail.store.memory.mailboxes import Mailboxes
from sealmail.store.memory.reading import Reading
from sealmail.store.memory.state import Memory
from sealmail.store.memory.userdata import UserData
from sealmail.store.settings import StoreSettings, store_settings

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.store.api import MessageStore

__all__ = ["MemoryStore"]


class MemoryStore:
    """The in-memory store; safe from many threads of one process."""

    def __init__(
        self, settings: StoreSettings | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or StoreSettings(
            configdirectory=Path("."), partitions={"default": Path(".")},
            default_partition="default", duplicate_suppression=False,
        )
        self._memory = memory = Memory(self.settings, clock)

        mailboxes = Mailboxes(memory)
        self.mailbox = mailboxes.mailbox
        self.mailbox_changed = mailboxes.mailbox_changed
        self.create_mailbox = mailboxes.create_mailbox
        self.delete_mailbox = mailboxes.delete_mailbox
        self.rename_mailbox = mailboxes.rename_mailbox
        self.list_mailboxes = mailboxes.list_mailboxes
        self.set_acl = mailboxes.set_acl
        self.set_quota = mailboxes.set_quota
        self.quota_roots = mailboxes.quota_roots
        self.repair_quota = mailboxes.repair_quota
        self.quota_for = mailboxes.quota_for
        self.check_quota = mailboxes.check_quota
        self.special_uses = mailboxes.special_uses
        self.set_special_use = mailboxes.set_special_use
        delivery = Delivery(memory)
        self.deliver = delivery.deliver
        self.deliver_all = delivery.deliver_all
        self.delivery_slot = delivery.delivery_slot
        self.pop_lock = delivery.pop_lock
        self.duplicates = delivery.duplicates
        reading = Reading(memory)
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
        flags = Flags(memory)
        self.set_flags = flags.set_flags
        self.update_flags = flags.update_flags
        self.expunge = flags.expunge
        self.copy_messages = flags.copy_messages
        self.move_messages = flags.move_messages
        user_data = UserData(memory)
        self.claim_recent = user_data.claim_recent
        self.access_key = user_data.access_key
        self.reset_access_key = user_data.reset_access_key
        self.subscriptions = user_data.subscriptions
        self.subscribe = user_data.subscribe
        self.unsubscribe = user_data.unsubscribe

    @classmethod
    def from_config(cls, config: ImapdConfig, **options: Any) -> MemoryStore:
        return cls(store_settings(config), **options)

    def close(self) -> None:
        memory = self._memory
        with memory.lock:
            if memory.duplicates is not None:
                memory.duplicates.close()
                memory.duplicates = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _roles(store: MemoryStore) -> MessageStore:
    return store  # mypy: the memory store plays every role
