"""What every part of the memory store shares: the mailboxes as Python objects under one lock,
quotas, subscriptions, URLAUTH keys and the settings (the memory twin of the disk store's
`Spool`, sealmail.store.disk.layout)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from sealmail.store import quota
from sealmail.store.api import MailboxInfo, MessageRecord, QuotaUsage
from sealmail.store.duplicates import DuplicateDatabase
from sealmail.store.errors import MailboxNotFound
from sealmail.store.names import owner_of, user_inbox
from sealmail.store.seen import UidSet, index_keeps_seen, with_seen
from sealmail.store.settings import StoreSettings
from sealmail.store.sorting import SortFields


@dataclass(slots=True)
class StoredMessage:
    uid: int
    modseq: int
    internaldate: float
    size: int
    guid: str
    flags: tuple[str, ...]  # the index's flags (the owner's \Seen)
    content: bytes
    headers: bytes | None  # searchable form
    listed: bytes
    sorting: SortFields
    structure: bytes | None = None

    def record(self, flags: tuple[str, ...]) -> MessageRecord:
        return MessageRecord(self.uid, self.modseq, self.internaldate, self.size, self.guid, flags)


@dataclass(slots=True)
class MailboxState:
    name: str
    uniqueid: str
    partition: str
    uidvalidity: int
    acl: dict[str, str]
    uidnext: int = 1
    highestmodseq: int = 1
    recentuid: int = 0  # the owner's \Recent mark
    special_use: str = ""
    size_bytes: int = 0
    messages: dict[int, StoredMessage] = field(default_factory=dict)  # in UID order
    expunged: dict[int, int] = field(default_factory=dict)  # uid -> modseq of its expunge
    seen: dict[str, UidSet] = field(default_factory=dict)  # other readers' seen states
    recent: dict[str, int] = field(default_factory=dict)  # other readers' \Recent marks

    def info(self) -> MailboxInfo:
        return MailboxInfo(self.name, self.uniqueid, self.partition, self.uidvalidity,
                           self.uidnext, self.highestmodseq, len(self.messages), dict(self.acl))

    def seen_of(self, reader: str | None) -> UidSet | None:
        """`reader`'s own seen set, or None when their \\Seen is the index's."""
        if index_keeps_seen(self.name, reader):
            return None
        assert reader is not None
        return self.seen.get(reader, UidSet())

    def view(self, message: StoredMessage, seen: UidSet | None) -> tuple[str, ...]:
        return message.flags if seen is None else with_seen(message.flags, message.uid in seen)

    def records(
        self, messages: Iterable[StoredMessage], reader: str | None
    ) -> list[MessageRecord]:
        seen = self.seen_of(reader)
        return [m.record(self.view(m, seen)) for m in messages]

    def chosen(self, uids: Sequence[int]) -> list[StoredMessage]:
        """Those of `uids` that are here, in UID order."""
        messages = self.messages
        return [messages[uid] for uid in sorted(set(uids)) if uid in messages]


class Memory:
    """The memory store's state; every role takes `lock` around what it reads or changes."""

    def __init__(self, settings: StoreSettings, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock
        self.lock = threading.RLock()
        self.mailboxes: dict[str, MailboxState] = {}
        self.quotas: dict[str, tuple[int | None, int | None]] = {}
        self.quota_warned: set[str] = set()  # roots whose users were warned (quotawarn)
        self.subscriptions: dict[str, set[str]] = {}
        self.access_keys: dict[str, bytes] = {}  # uniqueid -> URLAUTH key
        self.last_uidvalidity = 0
        self.slots: dict[str, int] = {}
        self.duplicates: DuplicateDatabase | None = None
        self.pop_locks: dict[str, float | None] = {}
        self.pop_guard = threading.Lock()

    def require(self, name: str) -> MailboxState:
        mailbox = self.mailboxes.get(name)
        if mailbox is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return mailbox

    def require_owner_inbox(self, name: str, doing: str) -> None:
        owner = owner_of(name)
        if owner is not None:
            inbox = user_inbox(owner.user, owner.domain)
            if name != inbox and inbox not in self.mailboxes:
                raise MailboxNotFound(f"{doing}user mailbox {inbox!r} does not exist")

    def subtree(self, name: str) -> list[MailboxState]:
        """`name` (if it exists) and every mailbox below it, by name."""
        low, high = quota.subtree_bounds(name)
        return [m for n, m in sorted(self.mailboxes.items()) if n == name or low <= n < high]

    def usage(self, name: str) -> QuotaUsage | None:
        root = next((r for r in quota.ancestors_or_self(name) if r in self.quotas), None)
        if root is None:
            return None
        storage, messages = self.quotas[root]
        subtree = self.subtree(root)
        return QuotaUsage(root, sum(m.size_bytes for m in subtree), storage,
                          sum(len(m.messages) for m in subtree), messages)
