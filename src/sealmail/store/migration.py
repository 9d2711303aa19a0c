"""Moving a store into PostgreSQL (`sealmail migrate`), through the source's ordinary roles and
the target's Importer: every mailbox with its UIDVALIDITY, UIDs, UIDNEXT, modseqs, flags,
internal dates and ACL; expunge tombstones (QRESYNC); \\Recent marks and seen states (the
owner's, and those of the users the mailbox's ACL names); quota limits; subscriptions (of every
user who owns or is named on a mailbox); special uses.

Not moved: the IMAP layer's cached BODYSTRUCTUREs (made again on demand), and what is not in
the message store at all: the Sieve scripts (sievedir) and the password database.

Resumable: each mailbox moves in one transaction of the target; a mailbox already there with
the same uniqueid is skipped, one with another uniqueid stops the migration (it is not ours to
overwrite). Limits and subscriptions are written again each run (the same values).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sealmail.store.api import MessageRecord, MessageStore, QuotaAdmin
from sealmail.store.names import owner_of
from sealmail.store.postgres import PostgresStore
from sealmail.store.postgres.importer import MailboxCopy
from sealmail.store.seen import SEEN, index_keeps_seen

_GROUP_OR_ANYONE = ("anyone", "anonymous", "group:", "-")


@dataclass(slots=True)
class MigrationReport:
    mailboxes: int = 0
    skipped: list[str] = field(default_factory=list)  # already there (an earlier run)
    messages: int = 0
    quota_roots: int = 0
    subscriptions: int = 0


def _readers(acl: dict[str, str], name: str) -> list[str]:
    """Who may have a seen state of their own on mailbox `name`: users its ACL names."""
    return [who for who in acl
            if not who.startswith(_GROUP_OR_ANYONE) and not index_keeps_seen(name, who)]


def _messages(source: MessageStore, name: str, records: list[MessageRecord]
              ) -> Iterator[tuple[MessageRecord, bytes]]:
    uids = [r.uid for r in records]
    for record, content in zip(records, source.message_contents(name, uids), strict=True):
        if content is None:
            continue  # expunged while we read: the target gets a tombstone-less gap
        yield record, content


def migrate_store(
    source: MessageStore,
    target: PostgresStore,
    say: Callable[[str], None] = lambda line: None,
) -> MigrationReport:
    report = MigrationReport()
    importer = target.importer
    special = source.special_uses()
    users: set[str] = set()
    for info in source.list_mailboxes():
        owner = owner_of(info.name)
        if owner is not None:
            users.add(owner.userid)
        users.update(w for w in info.acl if not w.startswith(_GROUP_OR_ANYONE))
        there = importer.existing(info.name)
        if there == info.uniqueid:
            report.skipped.append(info.name)
            continue
        records = source.messages(info.name)
        readers = _readers(info.acl, info.name)
        seen = {reader: [r.uid for r in source.messages(info.name, reader=reader)
                         if SEEN in r.flags] for reader in readers}
        # claim_recent with upto 0 only reads a mark.
        recent = {reader: source.claim_recent(info.name, 0, reader) for reader in readers}
        copy = MailboxCopy(info, special.get(info.name, ""),
                           _messages(source, info.name, records),
                           source.expunged_since(info.name, 0), seen,
                           source.claim_recent(info.name, 0), recent)
        count = importer.import_mailbox(copy)
        report.mailboxes += 1
        report.messages += count
        say(f"{info.name}: {count} messages, UIDVALIDITY {info.uidvalidity},"
            f" UIDNEXT {info.uidnext}, HIGHESTMODSEQ {info.highestmodseq}")
    if isinstance(source, QuotaAdmin):
        for usage in source.quota_roots():
            importer.set_quota(usage.root, usage.storage_limit, usage.messages_limit)
            report.quota_roots += 1
    for userid in sorted(users):
        for name in source.subscriptions(userid):
            target.subscribe(userid, name)
            report.subscriptions += 1
    return report
