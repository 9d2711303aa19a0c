"""Mailbox administration in the memory store: create, rename, delete, list, ACLs, quotas and
special uses."""

from __future__ import annotations

import uuid

from sealmail.store import acl as acls
from sealmail.store import quota
from sealmail.store.api import MailboxInfo, QuotaUsage, UsageChange
from sealmail.store.errors import InvalidMailboxName, InvalidQuota, MailboxExists, PartitionNotFound
from sealmail.store.memory.state import MailboxState, Memory
from sealmail.store.names import owner_of, user_inbox, validate_internal


class Mailboxes:
    """The mailbox list, as the disk store's (sealmail.store.disk.mailboxes)."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def mailbox(self, name: str) -> MailboxInfo | None:
        with self._memory.lock:
            mailbox = self._memory.mailboxes.get(name)
            return None if mailbox is None else mailbox.info()

    def mailbox_changed(self, name: str, highestmodseq: int) -> bool:
        info = self.mailbox(name)
        return info is None or info.highestmodseq != highestmodseq

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo:
        memory = self._memory
        validate_internal(name)
        partition = partition or memory.settings.default_partition
        if partition not in memory.settings.partitions:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf")
        initial = None if acl is None else acls.acl_of_entries(acl)
        with memory.lock:
            if name in memory.mailboxes:
                raise MailboxExists(f"mailbox {name!r} already exists")
            memory.require_owner_inbox(name, f"cannot create {name!r}: ")
            if initial is None:
                initial = acls.default_acl(name, self._acl_of)
            # RFC 3501 2.3.1.1: a re-created mailbox gets a greater UIDVALIDITY.
            memory.last_uidvalidity = max(int(memory.clock()), memory.last_uidvalidity + 1)
            mailbox = MailboxState(name, uuid.uuid4().hex, partition, memory.last_uidvalidity,
                                   initial)
            memory.mailboxes[name] = mailbox
            return mailbox.info()

    def _acl_of(self, name: str) -> dict[str, str] | None:
        mailbox = self._memory.mailboxes.get(name)
        return None if mailbox is None else mailbox.acl

    def delete_mailbox(self, name: str) -> None:
        """A user's INBOX takes its whole subtree and the user's seen states with it."""
        memory = self._memory
        validate_internal(name)
        owner = owner_of(name)
        with memory.lock:
            memory.require(name)
            whole_user = owner is not None and name == user_inbox(owner.user, owner.domain)
            for doomed in memory.subtree(name) if whole_user else [memory.mailboxes[name]]:
                del memory.mailboxes[doomed.name]
                memory.quotas.pop(doomed.name, None)
            if whole_user:
                assert owner is not None
                for mailbox in memory.mailboxes.values():
                    mailbox.seen.pop(owner.userid, None)
                    mailbox.recent.pop(owner.userid, None)

    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its inferiors (RFC 3501 6.3.5)."""
        memory = self._memory
        validate_internal(old)
        validate_internal(new)
        if new == old or new.startswith(old + "."):
            raise InvalidMailboxName(f"cannot rename {old!r} to {new!r} (inside itself)")
        with memory.lock:
            memory.require(old)
            if new in memory.mailboxes:
                raise MailboxExists(f"mailbox {new!r} already exists")
            memory.require_owner_inbox(new, "")
            renames = [(m.name, new + m.name[len(old):]) for m in memory.subtree(old)]
            for _, target in renames:
                validate_internal(target)
                if target != new and target in memory.mailboxes:
                    raise MailboxExists(f"mailbox {target!r} already exists")
            moved = [(memory.mailboxes.pop(source), target) for source, target in renames]
            for mailbox, target in moved:
                if mailbox.name in memory.quotas:
                    memory.quotas[target] = memory.quotas.pop(mailbox.name)
                mailbox.name = target
                memory.mailboxes[target] = mailbox

    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]:
        with self._memory.lock:
            return [m.info() for n, m in sorted(self._memory.mailboxes.items())
                    if n.startswith(prefix)]

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL (RFC 4314 3.1): '+r'/'-r' modify, plain rights replace, empty removes."""
        with self._memory.lock:
            mailbox = self._memory.require(name)
            mailbox.acl = acls.set_entry(mailbox.acl, identifier, rights)

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        for value in (storage_kb, messages):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidQuota(f"quota limits must be non-negative, got {value!r}")
        memory = self._memory
        with memory.lock:
            memory.require(root)
            if storage_kb is None and messages is None:
                memory.quotas.pop(root, None)
            else:
                memory.quotas[root] = (storage_kb, messages)
            memory.quota_warned.discard(root)  # as the disk store's INSERT OR REPLACE

    def quota_roots(self) -> list[QuotaUsage]:
        memory = self._memory
        with memory.lock:
            return [u for root in sorted(memory.quotas) if (u := memory.usage(root)) is not None]

    def repair_quota(self, root: str) -> list[UsageChange]:
        """Nothing to repair: usage is summed from the messages themselves."""
        return []

    def quota_for(self, name: str) -> QuotaUsage | None:
        with self._memory.lock:
            return self._memory.usage(name)

    def check_quota(self, name: str, incoming_size: int) -> None:
        usage = self.quota_for(name)
        if usage is not None:
            quota.enforce_at_rcpt(usage, incoming_size)

    def special_uses(self) -> dict[str, str]:
        with self._memory.lock:
            return {m.name: m.special_use for m in self._memory.mailboxes.values()
                    if m.special_use}

    def set_special_use(self, name: str, use: str) -> None:
        with self._memory.lock:
            self._memory.require(name).special_use = use
