"""STORE and EXPUNGE on PostgreSQL: under the mailbox row's lock, each real change takes the
next modseq (RFC 7162 3.1), so highestmodseq and the rows move together; an expunge leaves a
tombstone (uid, modseq) for QRESYNC's VANISHED."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from sealmail.store.api import FLAG_MODES, FlagUpdate, MessageRecord, flags_after
from sealmail.store.postgres.database import Connection, Database, MailboxRow
from sealmail.store.postgres.userdata import save_seen, seen_of
from sealmail.store.seen import SEEN, UidSet, with_seen


class Flags:
    def __init__(self, db: Database) -> None:
        self._db = db

    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int:
        """Replace the flags; a message whose flags change gets a new modseq (RFC 7162 3.1)."""
        wanted = list(dict.fromkeys(flags))

        def work(conn: Connection) -> int:
            row = self._db.require(conn, name, lock=True)
            chosen = conn.execute(
                "SELECT uid, flags FROM mailbox_message WHERE mailbox_id = %s AND uid = ANY(%s)"
                " ORDER BY uid", (row.id, sorted(set(uids))),
            ).fetchall()
            changed = [int(uid) for uid, current in chosen if list(current) != wanted]
            self._write(conn, row, [(uid, wanted) for uid in changed])
            return len(chosen)

        return self._db.write(work)

    def _write(
        self, conn: Connection, row: MailboxRow, changes: list[tuple[int, list[str]]]
    ) -> list[int]:
        """Give each change the next modseq, in order; the modseqs given."""
        mailbox_id = row.id
        modseqs = [row.highestmodseq + 1 + i for i in range(len(changes))]
        if changes:
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE mailbox_message SET flags = %s, modseq = %s"
                    " WHERE mailbox_id = %s AND uid = %s",
                    [(flags, modseq, mailbox_id, uid)
                     for (uid, flags), modseq in zip(changes, modseqs, strict=True)],
                )
            conn.execute("UPDATE mailboxes SET highestmodseq = %s WHERE id = %s",
                         (modseqs[-1], mailbox_id))
            self._db.changed(row.name, modseqs[-1])
        return modseqs

    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate:
        """As the other backends: only real changes get a modseq; a reader's \\Seen goes to
        their own seen state, the owner's stays in the index."""
        if mode not in FLAG_MODES:
            raise ValueError(f"mode must be one of {FLAG_MODES}")

        def work(conn: Connection) -> FlagUpdate:
            row = self._db.require(conn, name, lock=True)
            seen = seen_of(conn, row, reader)
            chosen = conn.execute(
                "SELECT mm.uid, mm.modseq, m.internaldate, m.size, m.guid, mm.flags"
                " FROM mailbox_message mm JOIN messages m ON m.id = mm.message_id"
                " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s) ORDER BY mm.uid",
                (row.id, sorted(set(uids))),
            ).fetchall()
            refused: list[int] = []
            changes: list[tuple[int, list[str]]] = []
            views: list[tuple[int, float, int, str, tuple[str, ...], int | None]] = []
            seen_now: list[int] = []
            unseen_now: list[int] = []
            for uid, modseq, internaldate, size, guid, stored in chosen:
                index_flags = tuple(stored)
                current = index_flags if seen is None else with_seen(index_flags, uid in seen)
                if unchanged_since is not None and modseq > unchanged_since:
                    refused.append(int(uid))
                    views.append((int(uid), float(internaldate), int(size), str(guid), current,
                                  int(modseq)))
                    continue
                new = flags_after(current, flags, mode)
                if set(new) == set(current):
                    views.append((int(uid), float(internaldate), int(size), str(guid), current,
                                  int(modseq)))
                    continue
                kept = list(new)
                if seen is not None:
                    if (SEEN in new) != (SEEN in current):
                        (seen_now if SEEN in new else unseen_now).append(int(uid))
                    kept = [f for f in new if f != SEEN]
                    if SEEN in index_flags:
                        kept.append(SEEN)  # the owner's: not this reader's to change
                    if set(kept) == set(index_flags):
                        kept = list(index_flags)
                changes.append((int(uid), kept))
                views.append((int(uid), float(internaldate), int(size), str(guid), tuple(new),
                              None))
            modseqs = iter(self._write(conn, row, changes))
            if seen is not None and (seen_now or unseen_now):
                assert reader is not None
                save_seen(conn, row.id, reader, seen.union(seen_now).difference(unseen_now))
            records = [MessageRecord(uid, next(modseqs) if modseq is None else modseq,
                                     internaldate, size, guid, view)
                       for uid, internaldate, size, guid, view, modseq in views]
            return FlagUpdate(records, refused)

        return self._db.write(work)

    def expunge(self, name: str, uids: Sequence[int]) -> list[int]:
        """Remove messages; the UIDs that were there, ascending, each with its own modseq."""
        return self._db.write(partial(expunge_rows, self._db, name=name, uids=uids))


def expunge_rows(db: Database, conn: Connection, name: str, uids: Sequence[int]) -> list[int]:
    """Inside a write (EXPUNGE, MOVE): remove those of `uids` that are there under the mailbox
    row's lock, a modseq and a tombstone each, in UID order; the UIDs removed, ascending."""
    row = db.require(conn, name, lock=True)
    removed = conn.execute(
        "DELETE FROM mailbox_message mm USING messages m"
        " WHERE m.id = mm.message_id AND mm.mailbox_id = %s AND mm.uid = ANY(%s)"
        " RETURNING mm.uid, m.size",
        (row.id, sorted(set(uids))),
    ).fetchall()
    if not removed:
        return []
    gone = sorted((int(uid), int(size)) for uid, size in removed)
    tombstones = [(row.id, uid, row.highestmodseq + 1 + i)
                  for i, (uid, _) in enumerate(gone)]
    with conn.cursor() as cursor:
        cursor.executemany(
            "INSERT INTO expunged (mailbox_id, uid, modseq) VALUES (%s, %s, %s)",
            tombstones,
        )
    conn.execute(
        "UPDATE mailboxes SET highestmodseq = %s, size_bytes = size_bytes - %s,"
        " exists_count = exists_count - %s WHERE id = %s",
        (tombstones[-1][2], sum(size for _, size in gone), len(gone), row.id),
    )
    db.changed(row.name, tombstones[-1][2])
    expunged = [uid for uid, _ in gone]
    states = conn.execute("SELECT userid, uids FROM seen_states WHERE mailbox_id = %s",
                          (row.id,)).fetchall()
    for userid, text in states:
        save_seen(conn, row.id, str(userid), UidSet.parse(str(text)).difference(expunged))
    return expunged
