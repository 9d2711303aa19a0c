"""Delivery, COPY and MOVE on PostgreSQL: UIDs allocated inside the transaction that publishes them.

A delivery first writes the bytes once (the blob, by SHA-256, and one `messages` row with what
was parsed from them) and commits; then each target gets its OWN transaction: lock the target
mailbox row and its quota root's row in ascending id (SELECT ... FOR UPDATE), check the quota
against the counters those locks protect, take UID = uidnext and the next modseq, insert the
mailbox_message row, bump the counters, COMMIT. Only then is the target's result a success.

Why UIDs become visible in ascending order, so that a client syncing with `UID FETCH last+1:*`
never misses one: the next writer into a mailbox waits on the row lock, and PostgreSQL releases
a transaction's locks only after its commit is visible to every new snapshot. So a reader that
sees UID n sees every UID below it. A crash before COMMIT leaves no row and no counter bumped
(the blob and the messages row stay, for a sweeper); a crash after COMMIT loses nothing
(synchronous_commit: the WAL is on disk when COMMIT returns). The blob's own transaction does not
wait for its flush: the first recipient's commit, later in the same WAL, flushes it too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from functools import partial

from sealmail.store import quota
from sealmail.store.api import (
    AppendedMessage,
    CopiedMessages,
    DeliveryTarget,
    QuotaUsage,
    QuotaWarn,
)
from sealmail.store.errors import MailboxNotFound, StoreError
from sealmail.store.headers import listed_form, searchable_form
from sealmail.store.postgres.database import Connection, Database, MailboxRow
from sealmail.store.postgres.flags import expunge_rows
from sealmail.store.postgres.userdata import save_seen, seen_of
from sealmail.store.seen import SEEN, with_seen
from sealmail.store.sorting import sort_fields


def _text(value: str) -> str:
    """PostgreSQL text cannot hold NUL (a decoded header can)."""
    return value.replace("\x00", "\ufffd")


class Delivery:
    def __init__(self, db: Database) -> None:
        self._db = db

    def deliver(
        self,
        content: bytes,
        targets: Sequence[DeliveryTarget],
        internaldate: float | None = None,
    ) -> list[AppendedMessage | StoreError]:
        """Append `content` to every target, one transaction each; one result per target."""
        if not targets:
            return []
        when = self._db.clock() if internaldate is None else internaldate
        guid = hashlib.sha1(content).hexdigest()
        try:
            message_id = self._db.write(lambda conn: self._store_message(conn, content, when, guid))
        except StoreError as exc:
            return [exc for _ in targets]
        results: list[AppendedMessage | StoreError] = []
        for target in targets:
            try:
                results.append(self._db.write(
                    partial(self._append, message_id=message_id, size=len(content), guid=guid,
                            target=target)
                ))
            except StoreError as exc:
                results.append(exc)
        return results

    def _store_message(self, conn: Connection, content: bytes, when: float, guid: str) -> int:
        # No WAL flush of its own: the first recipient's COMMIT flushes the WAL up to its
        # record, which lies after these rows; a crash before it loses only rows nothing names.
        conn.execute("SET LOCAL synchronous_commit = off")
        digest = hashlib.sha256(content).digest()
        self._db.blobs.put(conn, digest, content)
        fields = sort_fields(content)
        row = conn.execute(
            "INSERT INTO messages (blob, guid, size, internaldate, headers, listed, sentdate,"
            " subject, base_subject, from_mailbox, from_display, to_mailbox, to_display,"
            " cc_mailbox, message_id, refs, in_reply_to)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
            " RETURNING id",
            (digest, guid, len(content), when, searchable_form(content), listed_form(content),
             fields.sentdate, *(_text(value) for value in fields[1:])),
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _lock_with_root(
        self, conn: Connection, name: str, ignore_quota: bool = False, *also: int
    ) -> tuple[MailboxRow, dict[int, MailboxRow], tuple[int, str] | None]:
        """Lock mailbox `name`, the rows `also` and its quota root's row, in id order: every
        change to the root's usage from this subtree waits on the root's lock."""
        found = self._db.require(conn, name)
        root = None if ignore_quota else self._db.quota_root(conn, name)
        ids = [found.id, *also] + ([] if root is None else [root[0]])
        locked = self._db.lock(conn, ids)
        mailbox = locked.get(found.id)
        if mailbox is None:
            raise MailboxNotFound(f"mailbox {name!r} does not exist")
        if root is not None and root[0] not in locked:
            root = None  # the root was deleted meanwhile
        return mailbox, locked, root

    def _append(
        self, conn: Connection, message_id: int, size: int, guid: str, target: DeliveryTarget
    ) -> AppendedMessage:
        mailbox, _, root = self._lock_with_root(conn, target.mailbox, target.ignore_quota)
        warning = None
        if root is not None:
            usage = self._db.usage_of_root(conn, *root)
            if target.strict_quota:
                quota.enforce(usage, size, 1)
            else:
                quota.enforce(usage, 0, 0)
            if usage is not None and target.quota_warn is not None:
                warning = self._note_append(conn, root[0], usage, size, target.quota_warn)
        uid, modseq = mailbox.uidnext, mailbox.highestmodseq + 1
        wanted = list(dict.fromkeys(target.flags))
        seen = seen_of(conn, mailbox, target.reader) if SEEN in wanted else None
        if seen is not None:
            assert target.reader is not None
            wanted.remove(SEEN)  # the appending user does not own this mailbox
            save_seen(conn, mailbox.id, target.reader, seen.union([uid]))
        conn.execute(
            "INSERT INTO mailbox_message (mailbox_id, uid, message_id, modseq, flags)"
            " VALUES (%s, %s, %s, %s, %s)",
            (mailbox.id, uid, message_id, modseq, wanted),
        )
        if target.kept is not None:
            conn.execute("UPDATE messages SET structure = %s WHERE id = %s",
                         (target.kept, message_id))
        conn.execute(
            "UPDATE mailboxes SET uidnext = %s, highestmodseq = %s,"
            " size_bytes = size_bytes + %s, exists_count = exists_count + 1 WHERE id = %s",
            (uid + 1, modseq, size, mailbox.id),
        )
        self._db.changed(mailbox.name, modseq)
        return AppendedMessage(mailbox.name, mailbox.uidvalidity, uid, modseq, guid, size,
                               warning, mailbox.uniqueid, tuple(wanted))

    @staticmethod
    def _note_append(
        conn: Connection, root_id: int, before: QuotaUsage, size: int, warn: QuotaWarn
    ) -> QuotaUsage | None:
        """The disk store's quota.BatchUsages.note_append on the locked root's `warned` column."""
        row = conn.execute(
            "SELECT warned FROM quota_roots WHERE mailbox_id = %s", (root_id,)
        ).fetchone()
        if row is None:
            return None
        warned = bool(row[0])
        after = quota.after_append(before, size)
        level = quota.at_warning_level(after, warn)
        if level != warned:
            conn.execute(
                "UPDATE quota_roots SET warned = %s WHERE mailbox_id = %s", (level, root_id)
            )
        return after if quota.warning_due(before, size, warn, warned) else None

    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """Copy messages with their flags and internal dates, all or nothing (RFC 9051 6.4.7;
        the target's quota counts the copies); \\Seen as the other backends carry it. The copies
        name the same `messages` rows: no byte is written twice."""
        return self._db.write(partial(self._copy, source=source, uids=uids, target=target,
                                      reader=reader))

    def move_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """MOVE (RFC 6851): the copies and the expunge of the originals in ONE transaction,
        so a crash leaves the messages in one of the two mailboxes, never both or neither."""
        def work(conn: Connection) -> CopiedMessages:
            moved = self._copy(conn, source, uids, target, reader)
            expunge_rows(self._db, conn, source, [s for s, _ in moved.pairs])
            return moved

        return self._db.write(work)

    def _copy(
        self, conn: Connection, source: str, uids: Sequence[int], target: str,
        reader: str | None,
    ) -> CopiedMessages:
        """Inside a write: the copies' rows and the target's counters."""
        src = self._db.require(conn, source)
        dst, locked, root = self._lock_with_root(conn, target, False, src.id)
        src = locked.get(src.id) or self._db.require(conn, source)
        result = CopiedMessages(dst.uidvalidity, [])
        chosen = conn.execute(
            "SELECT mm.uid, mm.message_id, mm.flags, m.size FROM mailbox_message mm"
            " JOIN messages m ON m.id = mm.message_id"
            " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s) ORDER BY mm.uid",
            (src.id, sorted(set(uids))),
        ).fetchall()
        if not chosen:
            return result
        total = sum(int(r[3]) for r in chosen)
        if root is not None:
            quota.enforce(self._db.usage_of_root(conn, *root), total, len(chosen))
        src_seen, dst_seen = seen_of(conn, src, reader), seen_of(conn, dst, reader)
        seen_copies: list[int] = []
        rows = []
        for offset, (uid, message_id, flags, _) in enumerate(chosen):
            new_uid, modseq = dst.uidnext + offset, dst.highestmodseq + 1 + offset
            kept = tuple(flags)
            if src_seen is not None or dst_seen is not None:
                was_seen = SEEN in kept if src_seen is None else uid in src_seen
                kept = with_seen(kept, was_seen and dst_seen is None)
                if was_seen and dst_seen is not None:
                    seen_copies.append(new_uid)
            rows.append((dst.id, new_uid, message_id, modseq, list(kept)))
            result.pairs.append((int(uid), new_uid))
        with conn.cursor() as cursor:
            cursor.executemany(
                "INSERT INTO mailbox_message (mailbox_id, uid, message_id, modseq, flags)"
                " VALUES (%s, %s, %s, %s, %s)",
                rows,
            )
        conn.execute(
            "UPDATE mailboxes SET uidnext = %s, highestmodseq = %s,"
            " size_bytes = size_bytes + %s, exists_count = exists_count + %s WHERE id = %s",
            (dst.uidnext + len(rows), dst.highestmodseq + len(rows), total, len(rows), dst.id),
        )
        self._db.changed(dst.name, dst.highestmodseq + len(rows))
        if dst_seen is not None and seen_copies:
            assert reader is not None
            save_seen(conn, dst.id, reader, dst_seen.union(seen_copies))
        return result
