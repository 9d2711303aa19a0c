"""The store's API: its records, and its roles as Protocols (lmtpd, deliver, imapd, pop3d, admin
commands each use the narrowest that serves them).

Names are *internal* mailbox names (see sealmail.store.names). Methods raise only StoreError
subclasses on purpose; anything else is a bug. Implementations must be safe to use from several
threads of one process; the disk store (sealmail.store.disk) also from many processes at once,
the memory store (sealmail.store.memory, the verified fake of the tests) lives in one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from sealmail.config.options import RFC4314_RIGHTS
from sealmail.store.errors import StoreError
from sealmail.store.sorting import SortValue, ThreadFields

ALL_RIGHTS = RFC4314_RIGHTS  # in canonical order


@dataclass(frozen=True, slots=True)
class MailboxInfo:
    name: str
    uniqueid: str
    partition: str
    uidvalidity: int
    uidnext: int
    highestmodseq: int
    exists: int
    acl: dict[str, str] = field(default_factory=dict)  # identifier -> rights


@dataclass(frozen=True, slots=True)
class QuotaUsage:
    root: str
    storage_used: int  # bytes
    storage_limit: int | None  # KiB, None = no limit
    messages_used: int
    messages_limit: int | None


@dataclass(frozen=True, slots=True)
class QuotaWarn:
    """When a delivery should report that it took its quota root to the warning level
    (imapd.conf quotawarn, quotawarnkb, quotawarnmsg; sealmail.store.quota.at_warning_level)."""

    percent: int  # of a limit; 0: never
    storage_kb: int = 0  # warn only when less than this is free (0: always)
    messages: int = 0  # warn only when fewer than this many messages are left (0: always)


@dataclass(frozen=True, slots=True)
class UsageChange:
    """What `quota -f` corrected: a root's usage of one resource (Cyrus's names: STORAGE in
    bytes, MESSAGE), as it was recorded and as the recount found it."""

    root: str
    resource: str
    was: int
    now: int


@dataclass(frozen=True, slots=True)
class DeliveryTarget:
    """One copy of a message to append to one mailbox.

    `strict_quota` counts this message against the limits (IMAP APPEND, lmtp_strict_quota);
    without it only a quota root already at its limit refuses, as Cyrus's lmtpd does.
    """

    mailbox: str
    flags: tuple[str, ...] = ()
    ignore_quota: bool = False
    strict_quota: bool = True
    # Who appends (IMAP APPEND): a \Seen among `flags` goes to their own seen state when the
    # mailbox is not theirs (sealmail.store.seen). None: the flags go to the index as they are.
    reader: str | None = None
    # Report a crossing of the quota root's warning level (lmtpd, deliver); None: never.
    quota_warn: QuotaWarn | None = None
    # The IMAP layer's parse of the message (IMAP APPEND: sealmail.imap.fetching.kept), stored
    # with the copy as `save_message_structures` would store it, by the same commit: a cache.
    kept: bytes | None = None
    # The appending session announces the copy at its next sync, selected read-write with
    # \Recent shown (IMAP APPEND to its selected mailbox): the store may claim the copy's
    # \Recent for it in the same commit (`AppendedMessage.recent`), where it would have claimed
    # it just after (`claim_recent`). A store that does not leaves `recent` False.
    claims_recent: bool = False


@dataclass(frozen=True, slots=True)
class AppendedMessage:
    mailbox: str
    uidvalidity: int
    uid: int
    modseq: int
    guid: str  # hex SHA-1 of the stored bytes, as Cyrus's GUID
    size: int
    # The root's usage after this message, when this message took it to the warning level
    # (once per crossing: the store remembers that the root was warned).
    quota_warning: QuotaUsage | None = None
    # The mailbox's uniqueid and the flags the index keeps for the message (a \Seen that went
    # to the appending user's own seen state is not among them): the auditlog's append line.
    uniqueid: str = ""
    flags: tuple[str, ...] = ()
    # Claimed for the appender by the commit (DeliveryTarget.claims_recent): \Recent in the
    # appending session, and in no other (the mark is past it).
    recent: bool = False


@dataclass(frozen=True, slots=True)
class MessageRecord:
    uid: int
    modseq: int
    internaldate: float  # seconds since the epoch
    size: int
    guid: str
    flags: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class FlagSnapshot:
    """A mailbox and the UID, modseq and flags of each of its messages, read at one moment (what
    an IMAP SELECT needs): parallel lists in UID order. A mailbox has few distinct flag sets,
    so each message's flags are `flag_sets[flag_ids[i]]`."""

    mailbox: MailboxInfo
    uids: list[int]
    modseqs: list[int]
    flag_ids: list[int]
    flag_sets: list[tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class MailboxChanges:
    """What a session's view of a mailbox needs to catch up with it since it saw it at modseq
    `since` (IMAP's sync after every command, IDLE, NOOP), read at one moment: the mailbox's
    counters now and, only when its highestmodseq is not `since`, the messages added or changed
    after `since` (flags as the reader sees them, UID order), the UIDs expunged after it
    (ascending) and the reader's \\Recent mark (what `claim_recent(name, 0, reader)` returns).
    An unchanged mailbox has empty lists and no mark: the backends answer that case from one
    cheap read, or from memory when they can tell nothing was committed since."""

    uidvalidity: int
    uidnext: int
    highestmodseq: int
    exists: int
    changed: list[MessageRecord] = field(default_factory=list)
    expunged: list[int] = field(default_factory=list)
    recent_mark: int | None = None  # None: not read (the mailbox had not changed)


@dataclass(frozen=True, slots=True)
class HeaderMatches:
    """A header search answered from the index: the UIDs whose field matched, and the UIDs the
    index cannot answer for (no searchable form kept), which the caller checks itself."""

    matched: list[int]
    unanswered: list[int]


@dataclass(frozen=True, slots=True)
class FlagUpdate:
    """What a flag change did: the new state of every message it matched, and the UIDs it left
    alone because they changed after `unchanged_since` (RFC 7162 3.1.3 MODIFIED)."""

    records: list[MessageRecord]
    refused: list[int]


@dataclass(frozen=True, slots=True)
class CopiedMessages:
    """COPY / MOVE: the target's UIDVALIDITY and (source uid, new uid) pairs (RFC 4315 COPYUID)."""

    uidvalidity: int
    pairs: list[tuple[int, int]]


FLAG_MODES = ("set", "add", "remove")


def flags_after(current: Sequence[str], flags: Sequence[str], mode: str) -> list[str]:
    """A message's flags after a change in `mode` (one of FLAG_MODES): "add" compares flags
    exactly, "remove" without regard to case; the order is kept, new flags go last. Every
    backend applies changes with this, so a caller can tell beforehand whether one changes
    anything (`set(result) != set(current)`)."""
    if mode == "set":
        return list(dict.fromkeys(flags))
    if mode == "add":
        kept = list(current)
        return kept + [f for f in dict.fromkeys(flags) if f not in kept]
    if mode == "remove":
        removed = {f.lower() for f in flags}
        return [f for f in current if f.lower() not in removed]
    raise ValueError(f"mode must be one of {FLAG_MODES}")


# The store's roles: each consumer names the narrowest one it uses, so what a service may do to
# the store is visible in its signature and a backend is checked against each role
# (tests/store: every backend satisfies every role).


class MailboxLookup(Protocol):
    """Whether a mailbox exists, and its row: address resolution (delivery, the MTA's
    `sealmail:` table) needs nothing else."""

    def mailbox(self, name: str) -> MailboxInfo | None: ...


class Appending(MailboxLookup, Protocol):
    """Append a message to mailboxes: a delivery, and an IMAP APPEND."""

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]: ...


class DeliveryStore(Appending, Protocol):
    """What delivery needs (delivery/, lmtpd, deliver): append copies, check a quota at RCPT,
    a per-user delivery slot, and a mailbox Sieve's `fileinto :create` may make."""

    def check_quota(self, name: str, incoming_size: int) -> None: ...
    def delivery_slot(self, user: str) -> AbstractContextManager[None]: ...
    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo: ...


@runtime_checkable
class NamespaceStamp(Protocol):
    """A store that says when what a RCPT looks up may have changed: `namespace_stamp()` is a
    number that moves with every committed change, by any process, to which mailboxes exist,
    their partitions, their ACLs or which quota roots there are (and their limits), and never
    with a delivery (sealmail.delivery.recipient.StableLookups keeps those lookups while it
    holds). What does move with deliveries, a root's usage, `used_under` reads alone: bytes and
    messages in the root and every mailbox below it."""

    def namespace_stamp(self) -> int: ...
    def used_under(self, root: str) -> tuple[int, int]: ...


class MailboxAdmin(MailboxLookup, Protocol):
    """The mailbox list: create, rename, delete, list; ACLs, quotas and special uses (the
    `sealmail mailbox` command, IMAP's mailbox commands)."""

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo: ...
    def delete_mailbox(self, name: str) -> None: ...
    def rename_mailbox(self, old: str, new: str) -> None: ...
    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]: ...
    def set_acl(self, name: str, identifier: str, rights: str) -> None: ...
    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None: ...
    def quota_for(self, name: str) -> QuotaUsage | None: ...
    def special_uses(self) -> dict[str, str]: ...
    def set_special_use(self, name: str, use: str) -> None: ...


class MailboxView(Appending, Protocol):
    """One mailbox's messages as a session sees them (imapd's selected state, pop3d): read,
    search, sort, thread, change flags, expunge, copy, append.

    `reader`: the user whose view of the flags is wanted. \\Seen is the index's for the owner
    of a personal mailbox (and for None), the reader's own seen state for anyone else
    (sealmail.store.seen); every method that reads or writes flags for a session takes it.
    """

    # Whether `name` changed (or went) since a session saw it at `highestmodseq`: IMAP IDLE asks
    # several times a second, so it is cheap; on PostgreSQL it is answered from memory by the
    # node's change feed (LISTEN/NOTIFY and a poll: sealmail.store.postgres.notify), so an idle
    # session holds no database connection.
    def mailbox_changed(self, name: str, highestmodseq: int) -> bool: ...
    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]: ...
    def message_bytes(self, name: str, uid: int) -> bytes: ...
    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]: ...
    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]: ...
    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot: ...
    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches: ...
    # (RFC822.SIZE, the listed fields: sealmail.store.headers.listed_form) per UID that exists.
    def listed_headers(
        self, name: str, uids: Sequence[int]
    ) -> dict[int, tuple[int, bytes]]: ...
    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]: ...
    # The values `sorted_uids` orders those of `uids` that exist by, per key; None where a
    # message has no sortable form (see sealmail.imap.orders: placing new mail in a kept order).
    def sort_values(
        self, name: str, keys: Sequence[tuple[str, bool]], uids: Sequence[int]
    ) -> dict[int, tuple[SortValue, ...]]: ...
    # Of the messages with a UID above `since` (all by default), in UID order.
    def thread_fields(self, name: str, since: int = 0) -> list[ThreadFields]: ...
    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int: ...
    def expunge(self, name: str, uids: Sequence[int]) -> list[int]: ...
    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]: ...
    def expunged_since(self, name: str, modseq: int) -> list[int]: ...
    # messages_since, expunged_since and the \Recent mark in one read, skipped when nothing
    # changed since `modseq` (MailboxChanges); None when the mailbox is not there.
    def mailbox_changes(
        self, name: str, modseq: int, reader: str | None = None
    ) -> MailboxChanges | None: ...
    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate: ...
    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages: ...
    # MOVE (RFC 6851): copy_messages and the expunge of the originals as ONE change (one
    # transaction, one commit): a crash leaves the messages in one mailbox, never both or
    # neither. The originals are expunged as `expunge` does (a modseq each, in UID order).
    def move_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages: ...
    # \Recent (RFC 3501 2.3.2): raise `reader`'s recent mark of `name` to `upto` and return it
    # as it was; the caller's \Recent messages are the UIDs above it, up to `upto`.
    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int: ...
    def quota_for(self, name: str) -> QuotaUsage | None: ...
    # The IMAP layer's parses (BODYSTRUCTURE), kept beside the messages; not a change a client
    # sees.
    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]: ...
    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None: ...


@runtime_checkable
class QuotaAdmin(Protocol):
    """Report and repair quota usage (`sealmail quota`); not every backend keeps counters
    that can drift, so this role is apart from MessageStore."""

    def quota_roots(self) -> list[QuotaUsage]: ...  # every root, by name
    def repair_quota(self, root: str) -> list[UsageChange]: ...  # recount; what changed


@runtime_checkable
class AtomicAppending(Protocol):
    """RFC 3502 MULTIAPPEND: several messages into one mailbox in one commit, all or none.
    Every target names the same mailbox; on any failure a StoreError is raised and nothing
    was appended (no other session saw any of them). Not every backend has it (PostgreSQL
    does not yet): imapd then appends one by one and expunges what it stored on a failure."""

    def deliver_all(
        self, messages: Sequence[tuple[bytes, DeliveryTarget, float | None]]
    ) -> list[AppendedMessage]: ...


@runtime_checkable
class BatchDelivery(Protocol):
    """`deliver` of several messages by one caller at once: one result list per message, in
    order, each as `deliver` would give it (a failure is its message's alone). The disk store
    writes all the files first, fsyncs them together and commits them in one transaction (lmtpd's
    delivery thread); a store without it gets one `deliver` per message."""

    def deliver_batch(
        self, messages: Sequence[tuple[bytes, Sequence[DeliveryTarget]]]
    ) -> list[list[AppendedMessage | StoreError]]: ...


@runtime_checkable
class AccessKeys(Protocol):
    """URLAUTH's per-mailbox secrets (RFC 4467 3): `access_key` makes one on first use,
    `reset_access_key` (RESETKEY) forgets it, so every URL made with it fails from then on.
    Not every backend keeps them (PostgreSQL does not yet): imapd offers URLAUTH only over a
    store that does. MailboxNotFound for a mailbox that is not there."""

    def access_key(self, name: str) -> bytes: ...
    def reset_access_key(self, name: str) -> None: ...


class UserData(Protocol):
    """What belongs to a user rather than to a mailbox: subscriptions (IMAP LSUB/SUBSCRIBE).
    (Seen states and \\Recent marks go with the messages: MailboxView's `reader`.)"""

    def subscriptions(self, userid: str) -> list[str]: ...
    def subscribe(self, userid: str, name: str) -> None: ...
    def unsubscribe(self, userid: str, name: str) -> bool: ...


class DuplicateSuppression(Protocol):
    """duplicatesuppression's record of (Message-ID, mailbox) deliveries: a file of each node
    on disk (sealmail.store.duplicates), one table every node shares on PostgreSQL."""

    def exclusive(self, message_id: str) -> AbstractContextManager[None]: ...
    def seen(self, message_id: str, mailbox: str) -> bool: ...
    # seen() of several mailboxes at once: those of `mailboxes` the message was delivered to
    def seen_among(self, message_id: str, mailboxes: Sequence[str]) -> set[str]: ...
    def mark(self, message_id: str, mailbox: str, when: float | None = None) -> None: ...
    # mark() of several mailboxes at once: one write for a message delivered to many
    def mark_all(self, message_id: str, mailboxes: Sequence[str]) -> None: ...
    # mark() of several (Message-ID, mailbox) pairs at once: a batch of deliveries, one write
    def mark_pairs(self, pairs: Sequence[tuple[str, str]]) -> None: ...
    # entries older than `days` removed, in batches, `progress(removed, total)` after each;
    # how many went
    def expire(self, days: float, progress: Callable[[int, int], None] | None = None) -> int: ...
    def close(self) -> None: ...


class MaildropLock(Protocol):
    """A POP session's exclusive hold on a maildrop (RFC 1939 8), with the time the last POP
    session on it ended (popminpoll): MailboxBusy from `acquire` at once when held elsewhere.
    `renew` is called now and then during a session (a lease that would run out)."""

    def acquire(self) -> None: ...
    def last_login(self) -> float: ...
    def record_login(self, when: float) -> None: ...
    def renew(self) -> None: ...
    def release(self) -> None: ...


class MessageStore(DeliveryStore, MailboxAdmin, MailboxView, UserData, Protocol):
    """Every role: what an IMAP session and a store's owner (a daemon that opens and closes it)
    use. A backend implements this (sealmail.store.disk, sealmail.store.memory,
    sealmail.store.postgres). The owner also gets the duplicate delivery database from it (None
    when duplicatesuppression is off), closed with the store, and pop3d a maildrop's POP lock,
    which must hold across every process (and node) that serves the maildrop."""

    def close(self) -> None: ...
    def duplicates(self) -> DuplicateSuppression | None: ...
    def pop_lock(self, mailbox: str) -> MaildropLock: ...
