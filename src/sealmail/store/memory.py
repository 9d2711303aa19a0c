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
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sealmail.store import acl as acls
from sealmail.store import quota
from sealmail.store.api import (
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
    QuotaWarn,
    UsageChange,
    flags_after,
)
from sealmail.store.duplicates import DUPLICATES_NAME, DuplicateDatabase
from sealmail.store.errors import (
    InvalidMailboxName,
    InvalidQuota,
    MailboxBusy,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    PartitionNotFound,
    StoreError,
)
from sealmail.store.headers import (
    INDEXED_FIELDS,
    VALUE_SEPARATOR,
    encode,
    indexed_value,
    listed_form,
    searchable_form,
)
from sealmail.store.locks import ProcessPopLock
from sealmail.store.names import owner_of, user_inbox, validate_internal
from sealmail.store.seen import SEEN, UidSet, index_keeps_seen, with_seen
from sealmail.store.settings import StoreSettings, store_settings
from sealmail.store.sorting import (
    SortFields,
    SortValue,
    ThreadFields,
    sort_fields,
    sort_value,
    thread_fields_of,
)

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.store.api import MessageStore

__all__ = ["MemoryStore"]


@dataclass(slots=True)
class _Message:
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
class _Mailbox:
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
    messages: dict[int, _Message] = field(default_factory=dict)  # in UID order
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

    def view(self, message: _Message, seen: UidSet | None) -> tuple[str, ...]:
        return message.flags if seen is None else with_seen(message.flags, message.uid in seen)


def _sort_value(key: str, message: _Message) -> float | str:
    return sort_value(key, message.sorting, message.internaldate, message.size)


class MemoryStore:
    """The in-memory store; safe from many threads of one process."""

    def __init__(
        self, settings: StoreSettings | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.settings = settings or StoreSettings(
            configdirectory=Path("."), partitions={"default": Path(".")},
            default_partition="default", duplicate_suppression=False,
        )
        self._clock = clock
        self._lock = threading.RLock()
        self._mailboxes: dict[str, _Mailbox] = {}
        self._quotas: dict[str, tuple[int | None, int | None]] = {}
        self._quota_warned: set[str] = set()  # roots whose users were warned (quotawarn)
        self._subscriptions: dict[str, set[str]] = {}
        self._access_keys: dict[str, bytes] = {}  # uniqueid -> URLAUTH key
        self._last_uidvalidity = 0
        self._slots: dict[str, int] = {}
        self._duplicates: DuplicateDatabase | None = None
        self._pop_locks: dict[str, float | None] = {}
        self._pop_guard = threading.Lock()

    @classmethod
    def from_config(cls, config: ImapdConfig, **options: Any) -> MemoryStore:
        return cls(store_settings(config), **options)

    def close(self) -> None:
        with self._lock:
            if self._duplicates is not None:
                self._duplicates.close()
                self._duplicates = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _require(self, name: str) -> _Mailbox:
        mailbox = self._mailboxes.get(name)
        if mailbox is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        return mailbox

    def _require_owner_inbox(self, name: str, doing: str) -> None:
        owner = owner_of(name)
        if owner is not None:
            inbox = user_inbox(owner.user, owner.domain)
            if name != inbox and inbox not in self._mailboxes:
                raise MailboxNotFound(f"{doing}user mailbox {inbox!r} does not exist")

    def _subtree(self, name: str) -> list[_Mailbox]:
        """`name` (if it exists) and every mailbox below it, by name."""
        low, high = quota.subtree_bounds(name)
        return [m for n, m in sorted(self._mailboxes.items()) if n == name or low <= n < high]

    def _usage(self, name: str) -> QuotaUsage | None:
        root = next((r for r in quota.ancestors_or_self(name) if r in self._quotas), None)
        if root is None:
            return None
        storage, messages = self._quotas[root]
        subtree = self._subtree(root)
        return QuotaUsage(root, sum(m.size_bytes for m in subtree), storage,
                          sum(len(m.messages) for m in subtree), messages)

    # ------------------------------------------------------------------ mailbox admin

    def mailbox(self, name: str) -> MailboxInfo | None:
        with self._lock:
            mailbox = self._mailboxes.get(name)
            return None if mailbox is None else mailbox.info()

    def mailbox_changed(self, name: str, highestmodseq: int) -> bool:
        info = self.mailbox(name)
        return info is None or info.highestmodseq != highestmodseq

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo:
        validate_internal(name)
        partition = partition or self.settings.default_partition
        if partition not in self.settings.partitions:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf")
        initial = None if acl is None else acls.acl_of_entries(acl)
        with self._lock:
            if name in self._mailboxes:
                raise MailboxExists(f"mailbox {name!r} already exists")
            self._require_owner_inbox(name, f"cannot create {name!r}: ")
            if initial is None:
                initial = acls.default_acl(name, self._acl_of)
            # RFC 3501 2.3.1.1: a re-created mailbox gets a greater UIDVALIDITY.
            self._last_uidvalidity = max(int(self._clock()), self._last_uidvalidity + 1)
            mailbox = _Mailbox(name, uuid.uuid4().hex, partition, self._last_uidvalidity, initial)
            self._mailboxes[name] = mailbox
            return mailbox.info()

    def _acl_of(self, name: str) -> dict[str, str] | None:
        mailbox = self._mailboxes.get(name)
        return None if mailbox is None else mailbox.acl

    def delete_mailbox(self, name: str) -> None:
        """A user's INBOX takes its whole subtree and the user's seen states with it."""
        validate_internal(name)
        owner = owner_of(name)
        with self._lock:
            self._require(name)
            whole_user = owner is not None and name == user_inbox(owner.user, owner.domain)
            for doomed in self._subtree(name) if whole_user else [self._mailboxes[name]]:
                del self._mailboxes[doomed.name]
                self._quotas.pop(doomed.name, None)
            if whole_user:
                assert owner is not None
                for mailbox in self._mailboxes.values():
                    mailbox.seen.pop(owner.userid, None)
                    mailbox.recent.pop(owner.userid, None)

    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its inferiors (RFC 3501 6.3.5)."""
        validate_internal(old)
        validate_internal(new)
        if new == old or new.startswith(old + "."):
            raise InvalidMailboxName(f"cannot rename {old!r} to {new!r} (inside itself)")
        with self._lock:
            self._require(old)
            if new in self._mailboxes:
                raise MailboxExists(f"mailbox {new!r} already exists")
            self._require_owner_inbox(new, "")
            renames = [(m.name, new + m.name[len(old):]) for m in self._subtree(old)]
            for _, target in renames:
                validate_internal(target)
                if target != new and target in self._mailboxes:
                    raise MailboxExists(f"mailbox {target!r} already exists")
            moved = [(self._mailboxes.pop(source), target) for source, target in renames]
            for mailbox, target in moved:
                if mailbox.name in self._quotas:
                    self._quotas[target] = self._quotas.pop(mailbox.name)
                mailbox.name = target
                self._mailboxes[target] = mailbox

    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]:
        with self._lock:
            return [m.info() for n, m in sorted(self._mailboxes.items()) if n.startswith(prefix)]

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL (RFC 4314 3.1): '+r'/'-r' modify, plain rights replace, empty removes."""
        with self._lock:
            mailbox = self._require(name)
            mailbox.acl = acls.set_entry(mailbox.acl, identifier, rights)

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        for value in (storage_kb, messages):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidQuota(f"quota limits must be non-negative, got {value!r}")
        with self._lock:
            self._require(root)
            if storage_kb is None and messages is None:
                self._quotas.pop(root, None)
            else:
                self._quotas[root] = (storage_kb, messages)
            self._quota_warned.discard(root)  # as the disk store's INSERT OR REPLACE

    def quota_roots(self) -> list[QuotaUsage]:
        with self._lock:
            return [u for root in sorted(self._quotas) if (u := self._usage(root)) is not None]

    def repair_quota(self, root: str) -> list[UsageChange]:
        """Nothing to repair: usage is summed from the messages themselves."""
        return []

    def quota_for(self, name: str) -> QuotaUsage | None:
        with self._lock:
            return self._usage(name)

    def check_quota(self, name: str, incoming_size: int) -> None:
        usage = self.quota_for(name)
        if usage is not None:
            quota.enforce(usage, incoming_size, 1 if incoming_size > 0 else 0)

    def special_uses(self) -> dict[str, str]:
        with self._lock:
            return {m.name: m.special_use for m in self._mailboxes.values() if m.special_use}

    def set_special_use(self, name: str, use: str) -> None:
        with self._lock:
            self._require(name).special_use = use

    # ------------------------------------------------------------------ delivery

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]:
        """Append `content` to every target; one result per target, in order."""
        if not targets:
            return []
        guid = hashlib.sha1(content).hexdigest()
        when = self._clock() if internaldate is None else internaldate
        headers, listed = searchable_form(content), listed_form(content)
        sorting = sort_fields(content)
        results: list[AppendedMessage | StoreError] = []
        with self._lock:
            for target in targets:
                try:
                    mailbox = self._require(target.mailbox)
                    usage = None if target.ignore_quota else self._usage(mailbox.name)
                    if usage is not None:
                        if target.strict_quota:
                            quota.enforce(usage, len(content), 1)
                        else:
                            quota.enforce(usage, 0, 0)
                except StoreError as exc:
                    results.append(exc)
                    continue
                warning = None
                if usage is not None and target.quota_warn is not None:
                    warning = self._note_append(usage, len(content), target.quota_warn)
                uid = mailbox.uidnext
                mailbox.uidnext += 1
                mailbox.highestmodseq += 1
                wanted = list(dict.fromkeys(target.flags))
                seen = mailbox.seen_of(target.reader) if SEEN in wanted else None
                if seen is not None:
                    assert target.reader is not None
                    wanted.remove(SEEN)  # the appending user does not own this mailbox
                    mailbox.seen[target.reader] = seen.union([uid])
                mailbox.messages[uid] = _Message(
                    uid, mailbox.highestmodseq, when, len(content), guid, tuple(wanted), content,
                    headers, listed, sorting,
                )
                mailbox.size_bytes += len(content)
                results.append(AppendedMessage(mailbox.name, mailbox.uidvalidity, uid,
                                               mailbox.highestmodseq, guid, len(content),
                                               warning, mailbox.uniqueid, tuple(wanted)))
        return results

    def deliver_all(
        self, messages: Sequence[tuple[bytes, DeliveryTarget, float | None]]
    ) -> list[AppendedMessage]:
        """MULTIAPPEND (sealmail.store.api.AtomicAppending): checked as a whole (the mailbox,
        the quota for every message together), then appended under one hold of the lock, so
        no reader sees part of it."""
        if not messages:
            return []
        name = messages[0][1].mailbox
        if any(target.mailbox != name for _, target, _ in messages):
            raise ValueError("deliver_all appends to one mailbox")
        with self._lock:
            mailbox = self._require(name)
            usage = self._usage(mailbox.name)
            if usage is not None and not messages[0][1].ignore_quota:
                quota.enforce(usage, sum(len(c) for c, _, _ in messages), len(messages))
            out: list[AppendedMessage] = []
            for content, target, internaldate in messages:
                [result] = self.deliver(content, [target], internaldate)
                if not isinstance(result, AppendedMessage):
                    raise result  # not reached: everything that could fail was checked
                out.append(result)
            return out

    def _note_append(self, before: QuotaUsage, size: int, warn: QuotaWarn) -> QuotaUsage | None:
        """The disk store's quota.note_append, on the in-memory mark."""
        warned = before.root in self._quota_warned
        after = quota.after_append(before, size)
        if quota.at_warning_level(after, warn):
            self._quota_warned.add(before.root)
        else:
            self._quota_warned.discard(before.root)
        return after if quota.warning_due(before, size, warn, warned) else None

    @contextmanager
    def _slot(self, user: str, limit: int) -> Iterator[None]:
        with self._lock:
            if self._slots.get(user, 0) >= limit:
                raise MailboxBusy(f"{limit} deliveries to {user!r} already in progress")
            self._slots[user] = self._slots.get(user, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._slots[user] -= 1

    def delivery_slot(self, user: str) -> AbstractContextManager[None]:
        """One of lmtp_user_concurrency_limit slots of `user` (0: unlimited)."""
        limit = self.settings.user_concurrency_limit
        return self._slot(user, limit if limit > 0 else 1 << 62)

    def pop_lock(self, mailbox: str) -> ProcessPopLock:
        """The POP lock of `mailbox` among this store's sessions (one process)."""
        return ProcessPopLock(self._pop_locks, self._pop_guard, mailbox)

    def duplicates(self) -> DuplicateDatabase | None:
        """The duplicate delivery database (a file in the configdirectory, as the disk store's:
        it is not part of the message store), or None when duplicatesuppression is off."""
        if not self.settings.duplicate_suppression:
            return None
        with self._lock:
            if self._duplicates is None:
                self._duplicates = DuplicateDatabase(
                    self.settings.configdirectory / DUPLICATES_NAME
                )
            return self._duplicates

    # ------------------------------------------------------------------ reading

    def _records(
        self, mailbox: _Mailbox, messages: Iterable[_Message], reader: str | None
    ) -> list[MessageRecord]:
        seen = mailbox.seen_of(reader)
        return [m.record(mailbox.view(m, seen)) for m in messages]

    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]:
        with self._lock:
            mailbox = self._require(name)
            return self._records(mailbox, list(mailbox.messages.values()), reader)

    def message_bytes(self, name: str, uid: int) -> bytes:
        with self._lock:
            message = self._require(name).messages.get(uid)
        if message is None:
            raise NoSuchMessage(f"no message with UID {uid} in {name!r}")
        return message.content

    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]:
        with self._lock:
            messages = self._require(name).messages
            contents = [None if (m := messages.get(uid)) is None else m.content for uid in uids]
        if limit is not None:
            return iter([c if c is None else c[:limit] for c in contents])
        return iter(contents)

    def _chosen(self, mailbox: _Mailbox, uids: Sequence[int]) -> list[_Message]:
        messages = mailbox.messages
        return [messages[uid] for uid in sorted(set(uids)) if uid in messages]

    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]:
        with self._lock:
            mailbox = self._require(name)
            return self._records(mailbox, self._chosen(mailbox, uids), reader)

    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot:
        with self._lock:
            mailbox = self._require(name)
            seen = mailbox.seen_of(reader)
            ids: dict[tuple[str, ...], int] = {}
            uids, modseqs, flag_ids = [], [], []
            for message in mailbox.messages.values():
                uids.append(message.uid)
                modseqs.append(message.modseq)
                flag_ids.append(ids.setdefault(mailbox.view(message, seen), len(ids)))
            return FlagSnapshot(mailbox.info(), uids, modseqs, flag_ids, list(ids))

    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]:
        with self._lock:
            mailbox = self._require(name)
            changed = [m for m in mailbox.messages.values() if m.modseq > modseq]
            return self._records(mailbox, changed, reader)

    def expunged_since(self, name: str, modseq: int) -> list[int]:
        with self._lock:
            expunged = self._require(name).expunged
            return sorted(uid for uid, when in expunged.items() if when > modseq)

    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        with self._lock:
            return {m.uid: m.structure for m in self._chosen(self._require(name), uids)
                    if m.structure is not None}

    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None:
        if not structures:
            return
        with self._lock:
            messages = self._require(name).messages
            for uid, blob in structures.items():
                if uid in messages:
                    messages[uid].structure = blob

    # ------------------------------------------------------------------ search, sort, thread

    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches:
        """As the disk store's: from the searchable forms (sealmail.store.headers)."""
        field = field.lower()
        wanted = encode(needle.casefold())
        with self._lock:
            messages = list(self._require(name).messages.values())
        if field not in INDEXED_FIELDS or VALUE_SEPARATOR in wanted:
            return HeaderMatches([], [m.uid for m in messages])
        matched: list[int] = []
        unanswered: list[int] = []
        for message in messages:
            if message.headers is None:
                unanswered.append(message.uid)
                continue
            value = indexed_value(message.headers, field)
            if value is not None and wanted in value:
                matched.append(message.uid)
        return HeaderMatches(matched, unanswered)

    def listed_headers(self, name: str, uids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        with self._lock:
            return {m.uid: (m.size, m.listed) for m in self._chosen(self._require(name), uids)}

    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Ordered by `keys` (most significant first), ties in UID order (RFC 5256 3)."""
        with self._lock:
            messages = list(self._require(name).messages.values())
        for key, reverse in reversed(keys):  # a stable sort per key, least significant first
            messages.sort(key=partial(_sort_value, key), reverse=reverse)
        return [m.uid for m in messages]

    def sort_values(self, name: str, keys: Sequence[tuple[str, bool]],
                    uids: Sequence[int]) -> dict[int, tuple[SortValue, ...]]:
        with self._lock:
            messages = self._require(name).messages
            chosen = [messages[uid] for uid in uids if uid in messages]
        return {m.uid: tuple(_sort_value(key, m) for key, _ in keys) for m in chosen}

    def thread_fields(self, name: str, since: int = 0) -> list[ThreadFields]:
        with self._lock:
            messages = [m for m in self._require(name).messages.values() if m.uid > since]
        return [thread_fields_of(m.uid, m.sorting, m.internaldate) for m in messages]

    # ------------------------------------------------------------------ flags and expunge

    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int:
        """Replace the flags; a message whose flags change gets a new modseq (RFC 7162 3.1)."""
        wanted = tuple(dict.fromkeys(flags))
        with self._lock:
            mailbox = self._require(name)
            chosen = self._chosen(mailbox, uids)
            for message in chosen:
                if message.flags != wanted:
                    mailbox.highestmodseq += 1
                    message.flags, message.modseq = wanted, mailbox.highestmodseq
            return len(chosen)

    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate:
        """As the disk store's (sealmail.store.disk.flags): only real changes get a modseq; a
        reader's \\Seen goes to their own seen state, the owner's stays in the index."""
        if mode not in FLAG_MODES:
            raise ValueError(f"mode must be one of {FLAG_MODES}")
        records: list[MessageRecord] = []
        refused: list[int] = []
        with self._lock:
            mailbox = self._require(name)
            seen = mailbox.seen_of(reader)
            seen_now: list[int] = []
            unseen_now: list[int] = []
            for message in self._chosen(mailbox, uids):
                current = mailbox.view(message, seen)
                if unchanged_since is not None and message.modseq > unchanged_since:
                    refused.append(message.uid)
                    records.append(message.record(current))
                    continue
                new = flags_after(current, flags, mode)
                if set(new) != set(current):
                    mailbox.highestmodseq += 1
                    message.modseq = mailbox.highestmodseq
                    if seen is None:
                        message.flags = tuple(new)
                    else:
                        if (SEEN in new) != (SEEN in current):
                            (seen_now if SEEN in new else unseen_now).append(message.uid)
                        kept = [f for f in new if f != SEEN]
                        if SEEN in message.flags:
                            kept.append(SEEN)  # the owner's: not this reader's to change
                        if set(kept) != set(message.flags):
                            message.flags = tuple(kept)
                    current = tuple(new)
                records.append(message.record(current))
            if seen is not None and (seen_now or unseen_now):
                assert reader is not None
                mailbox.seen[reader] = seen.union(seen_now).difference(unseen_now)
        return FlagUpdate(records, refused)

    def expunge(self, name: str, uids: Sequence[int]) -> list[int]:
        """Remove messages; the UIDs that were there, ascending, each with its own modseq."""
        with self._lock:
            mailbox = self._require(name)
            removed = [m.uid for m in self._chosen(mailbox, uids)]
            for uid in removed:
                mailbox.highestmodseq += 1
                mailbox.size_bytes -= mailbox.messages.pop(uid).size
                mailbox.expunged[uid] = mailbox.highestmodseq
            if removed:
                for userid, seen in list(mailbox.seen.items()):
                    mailbox.seen[userid] = seen.difference(removed)
        return removed

    # ------------------------------------------------------------------ copy

    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """Copy messages with their flags and internal dates, all or nothing (RFC 9051 6.4.7;
        the target's quota counts the copies); \\Seen as the disk store carries it."""
        with self._lock:
            src = self._require(source)
            dst = self._require(target)
            result = CopiedMessages(dst.uidvalidity, [])
            chosen = self._chosen(src, uids)
            if not chosen:
                return result
            usage = self._usage(target)
            if usage is not None:
                quota.enforce(usage, sum(m.size for m in chosen), len(chosen))
            src_seen, dst_seen = src.seen_of(reader), dst.seen_of(reader)
            seen_copies: list[int] = []
            for message in chosen:
                new_uid = dst.uidnext
                dst.uidnext += 1
                dst.highestmodseq += 1
                flags = message.flags
                if src_seen is not None or dst_seen is not None:
                    was_seen = SEEN in flags if src_seen is None else message.uid in src_seen
                    flags = with_seen(flags, was_seen and dst_seen is None)
                    if was_seen and dst_seen is not None:
                        seen_copies.append(new_uid)
                dst.messages[new_uid] = _Message(
                    new_uid, dst.highestmodseq, message.internaldate, message.size, message.guid,
                    flags, message.content, message.headers, message.listed, message.sorting,
                    message.structure,
                )
                dst.size_bytes += message.size
                result.pairs.append((message.uid, new_uid))
            if dst_seen is not None and seen_copies:
                assert reader is not None
                dst.seen[reader] = dst_seen.union(seen_copies)
            return result

    # ------------------------------------------------------------------ user data

    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int:
        """Raise `reader`'s \\Recent mark of `name` to `upto` (never past the last UID given
        out); the mark as it was (sealmail.store.disk.userdata)."""
        with self._lock:
            mailbox = self._require(name)
            keeps = index_keeps_seen(name, reader)
            mark = mailbox.recentuid if keeps else mailbox.recent.get(reader or "", 0)
            new = min(upto, mailbox.uidnext - 1)
            if new > mark:
                if keeps:
                    mailbox.recentuid = new
                else:
                    assert reader is not None
                    mailbox.recent[reader] = new
            return mark

    def access_key(self, name: str) -> bytes:
        """URLAUTH's key of mailbox `name` (sealmail.store.api.AccessKeys)."""
        with self._lock:
            uniqueid = self._require(name).uniqueid
            return self._access_keys.setdefault(uniqueid, secrets.token_bytes(32))

    def reset_access_key(self, name: str) -> None:
        with self._lock:
            self._access_keys.pop(self._require(name).uniqueid, None)

    def subscriptions(self, userid: str) -> list[str]:
        with self._lock:
            return sorted(self._subscriptions.get(userid, ()))

    def subscribe(self, userid: str, name: str) -> None:
        validate_internal(name)
        with self._lock:
            self._subscriptions.setdefault(userid, set()).add(name)

    def unsubscribe(self, userid: str, name: str) -> bool:
        """True when the subscription existed."""
        with self._lock:
            names = self._subscriptions.get(userid, set())
            if name not in names:
                return False
            names.remove(name)
            return True


def _roles(store: MemoryStore) -> MessageStore:
    return store  # mypy: the memory store plays every role
