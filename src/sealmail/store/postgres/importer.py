"""Writing a mailbox into the PostgreSQL store exactly as another store has it (`sealmail
migrate`): the same UIDVALIDITY, UIDs, UIDNEXT, modseqs, flags, internal dates, ACL and seen
states, so an IMAP client that synchronised against the old store finds nothing changed.

The ordinary API cannot do that (a delivery takes the next UID and modseq), so this writes the
rows itself, one transaction per mailbox: a migration stopped half-way leaves whole mailboxes,
and run again it skips those it finds (the same uniqueid) and refuses a mailbox of that name
that is another one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sealmail.store.api import MailboxInfo, MessageRecord
from sealmail.store.errors import MailboxExists
from sealmail.store.postgres.database import Connection, Database
from sealmail.store.postgres.delivery import Delivery
from sealmail.store.postgres.userdata import save_seen
from sealmail.store.seen import UidSet


@dataclass(frozen=True, slots=True)
class MailboxCopy:
    """One mailbox as the source store has it."""

    info: MailboxInfo
    special_use: str
    messages: Iterable[tuple[MessageRecord, bytes]]  # read lazily, in UID order
    expunged: Sequence[int]  # UIDs expunged (QRESYNC tombstones)
    seen: Mapping[str, Sequence[int]]  # other readers' \Seen UIDs
    recentuid: int = 0  # the owner's \Recent mark
    recent: Mapping[str, int] = field(default_factory=dict)  # other readers' marks


class Importer:
    def __init__(self, db: Database, delivery: Delivery) -> None:
        self._db = db
        self._delivery = delivery

    def existing(self, name: str) -> str | None:
        """The uniqueid of mailbox `name` in this store, if there is one."""
        row = self._db.read(lambda conn: self._db.row(conn, name))
        return None if row is None else row.uniqueid

    def import_mailbox(self, copy: MailboxCopy) -> int:
        """Write one mailbox with its messages; how many messages. MailboxExists when a
        different mailbox (another uniqueid) has its name."""
        return self._db.write(lambda conn: self._write(conn, copy))

    def _write(self, conn: Connection, copy: MailboxCopy) -> int:
        info = copy.info
        found = self._db.row(conn, info.name)
        if found is not None:
            raise MailboxExists(f"mailbox {info.name!r} is already in the target store"
                                f" as another mailbox (uniqueid {found.uniqueid})")
        inserted = conn.execute(
            "INSERT INTO mailboxes (name, uniqueid, partition, uidvalidity, uidnext,"
            " highestmodseq, recentuid, special_use) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (info.name, info.uniqueid, info.partition, info.uidvalidity, info.uidnext,
             info.highestmodseq, copy.recentuid, copy.special_use),
        ).fetchone()
        assert inserted is not None
        mailbox_id = int(inserted[0])
        self._db.write_acl(conn, mailbox_id, dict(info.acl))
        # New mailboxes must get a greater UIDVALIDITY than any copied one (RFC 3501 2.3.1.1).
        conn.execute(
            "INSERT INTO counters (name, value) VALUES ('uidvalidity', %s) ON CONFLICT (name)"
            " DO UPDATE SET value = greatest(excluded.value, counters.value)",
            (info.uidvalidity,))
        count = size = 0
        for record, content in copy.messages:
            message_id = self._delivery._store_message(conn, content, record.internaldate,
                                                       record.guid)
            conn.execute(
                "INSERT INTO mailbox_message (mailbox_id, uid, message_id, modseq, flags)"
                " VALUES (%s, %s, %s, %s, %s)",
                (mailbox_id, record.uid, message_id, record.modseq, list(record.flags)))
            count, size = count + 1, size + len(content)
        conn.execute("UPDATE mailboxes SET exists_count = %s, size_bytes = %s WHERE id = %s",
                     (count, size, mailbox_id))
        # Expunged before the move: tombstones at the mailbox's modseq, so a QRESYNC client
        # from any older modseq hears of them (again, at worst: RFC 7162 allows that).
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (%s, %s, %s)",
                [(mailbox_id, uid, info.highestmodseq) for uid in copy.expunged])
        for reader, uids in copy.seen.items():
            if uids:
                save_seen(conn, mailbox_id, reader, UidSet.of(uids))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO recent_marks (mailbox_id, userid, uid) VALUES (%s, %s, %s)",
                [(mailbox_id, reader, mark) for reader, mark in copy.recent.items() if mark])
        self._db.changed(info.name, info.highestmodseq)
        return count

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        """A quota root's limits (the mailbox must have been imported)."""
        self._db.write(lambda conn: conn.execute(
            "INSERT INTO quota_roots (mailbox_id, storage_kb, messages)"
            " SELECT id, %s, %s FROM mailboxes WHERE name = %s ON CONFLICT (mailbox_id)"
            " DO UPDATE SET storage_kb = excluded.storage_kb, messages = excluded.messages",
            (storage_kb, messages, root)))
