"""Delivery into the memory store (an LMTP delivery, an IMAP APPEND, MULTIAPPEND), the per-user
delivery slots, POP locks and the duplicate delivery database."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

from sealmail.store import quota
from sealmail.store.api import AppendedMessage, DeliveryTarget, QuotaUsage, QuotaWarn
from sealmail.store.duplicates import DUPLICATES_NAME, DuplicateDatabase
from sealmail.store.errors import MailboxBusy, StoreError
from sealmail.store.headers import listed_form, searchable_form
from sealmail.store.locks import ProcessPopLock
from sealmail.store.memory.state import Memory, StoredMessage
from sealmail.store.seen import SEEN
from sealmail.store.sorting import sort_fields


class Delivery:
    """Appends, as the disk store's group commit makes them (UIDs and modseqs allocated when a
    message becomes visible, in ascending order)."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]:
        """Append `content` to every target; one result per target, in order."""
        if not targets:
            return []
        memory = self._memory
        guid = hashlib.sha1(content).hexdigest()
        when = memory.clock() if internaldate is None else internaldate
        headers, listed = searchable_form(content), listed_form(content)
        sorting = sort_fields(content)
        results: list[AppendedMessage | StoreError] = []
        with memory.lock:
            for target in targets:
                try:
                    mailbox = memory.require(target.mailbox)
                    usage = None if target.ignore_quota else memory.usage(mailbox.name)
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
                mailbox.messages[uid] = StoredMessage(
                    uid, mailbox.highestmodseq, when, len(content), guid, tuple(wanted), content,
                    headers, listed, sorting, target.kept,
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
        memory = self._memory
        with memory.lock:
            mailbox = memory.require(name)
            usage = memory.usage(mailbox.name)
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
        """The disk store's quota.BatchUsages.note_append, on the in-memory mark."""
        warned_roots = self._memory.quota_warned
        warned = before.root in warned_roots
        after = quota.after_append(before, size)
        if quota.at_warning_level(after, warn):
            warned_roots.add(before.root)
        else:
            warned_roots.discard(before.root)
        return after if quota.warning_due(before, size, warn, warned) else None

    @contextmanager
    def _slot(self, user: str, limit: int) -> Iterator[None]:
        memory = self._memory
        with memory.lock:
            if memory.slots.get(user, 0) >= limit:
                raise MailboxBusy(f"{limit} deliveries to {user!r} already in progress")
            memory.slots[user] = memory.slots.get(user, 0) + 1
        try:
            yield
        finally:
            with memory.lock:
                memory.slots[user] -= 1

    def delivery_slot(self, user: str) -> AbstractContextManager[None]:
        """One of lmtp_user_concurrency_limit slots of `user` (0: unlimited)."""
        limit = self._memory.settings.user_concurrency_limit
        return self._slot(user, limit if limit > 0 else 1 << 62)

    def pop_lock(self, mailbox: str) -> ProcessPopLock:
        """The POP lock of `mailbox` among this store's sessions (one process)."""
        return ProcessPopLock(self._memory.pop_locks, self._memory.pop_guard, mailbox)

    def duplicates(self) -> DuplicateDatabase | None:
        """The duplicate delivery database (a file in the configdirectory, as the disk store's:
        it is not part of the message store), or None when duplicatesuppression is off."""
        memory = self._memory
        if not memory.settings.duplicate_suppression:
            return None
        with memory.lock:
            if memory.duplicates is None:
                memory.duplicates = DuplicateDatabase(
                    memory.settings.configdirectory / DUPLICATES_NAME
                )
            return memory.duplicates
