"""Flags, modseqs and expunge in the disk store (RFC 7162: every change of metadata gets a
new modseq; a reader's \\Seen goes to their own seen state, sealmail.store.seen).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

from sealmail.store.api import FLAG_MODES, FlagUpdate, MessageRecord, flags_after
from sealmail.store.disk.changes import ChangeGroup, FileEffects
from sealmail.store.disk.layout import Spool, header_key, require_mailbox
from sealmail.store.disk.reading import FlagTexts, rows_for
from sealmail.store.disk.userdata import save_seen, seen_of
from sealmail.store.seen import SEEN, UidSet, with_seen


class Flags:
    """STORE and EXPUNGE: flag changes in one transaction, expunges with their files after it.

    Both go through the group commit of IMAP changes (sealmail.store.disk.changes): concurrent
    sessions of one process share a transaction and its fsync, each answered after it.
    """

    def __init__(self, spool: Spool, group: ChangeGroup) -> None:
        self._spool = spool
        self._group = group

    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int:
        """Replace the flags of the given messages; returns how many of them exist.

        Each message whose flags change gets a new modseq (RFC 7162 3.1: every change of
        metadata MUST increase the mod-sequence); unchanged messages keep theirs.
        """
        wanted = " ".join(dict.fromkeys(flags))

        def change(conn: sqlite3.Connection, effects: FileEffects) -> int:
            matched = 0
            row = require_mailbox(conn, name)
            mailbox_id, modseq = row[0], row[6]
            for uid in sorted(set(uids)):
                current = conn.execute(
                    "SELECT flags FROM messages WHERE mailbox_id = ? AND uid = ?",
                    (mailbox_id, uid),
                ).fetchone()
                if current is None:
                    continue
                matched += 1
                if current[0] == wanted:
                    continue
                modseq += 1
                conn.execute(
                    "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                    (wanted, modseq, mailbox_id, uid),
                )
            conn.execute(
                "UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id)
            )
            return matched

        return self._group.apply(change)

    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate:
        """Set, add or remove flags of many messages in one transaction, as `reader` sees them.

        Only a message whose flags really change gets a new modseq (RFC 7162 3.1); the others
        are not written at all. With `unchanged_since`, a message whose modseq is above it is
        left alone and reported in `refused` (RFC 7162 3.1.3: the conditional STORE fails for
        it). For a reader with their own seen state (sealmail.store.seen) \\Seen changes that
        state, the index's \\Seen (the owner's) stays as it is, and the message still gets a new
        modseq, as Cyrus gives it: the reader's other sessions, and CONDSTORE clients, learn of
        the change through the modseq like of any other.
        """
        if mode not in FLAG_MODES:
            raise ValueError(f"mode must be one of {FLAG_MODES}")
        texts = FlagTexts()

        def change(conn: sqlite3.Connection, effects: FileEffects) -> FlagUpdate:
            records: list[MessageRecord] = []
            refused: list[int] = []
            changes: list[tuple[str, int, int, int]] = []
            row = require_mailbox(conn, name)
            mailbox_id, modseq = row[0], row[6]
            rows = rows_for(
                conn, "uid, modseq, internaldate, size, guid, flags", mailbox_id, uids
            )
            seen = seen_of(conn, mailbox_id, name, reader)
            seen_now: list[int] = []
            unseen_now: list[int] = []
            for uid, mseq, internaldate, size, guid, text in rows:
                stored = current = texts[text]
                if seen is not None:
                    current = with_seen(stored, uid in seen)
                if unchanged_since is not None and mseq > unchanged_since:
                    refused.append(uid)
                    records.append(MessageRecord(uid, mseq, internaldate, size, guid, current))
                    continue
                new = flags_after(current, flags, mode)
                if set(new) != set(current):
                    modseq += 1
                    mseq = modseq
                    if seen is None:
                        new_text = " ".join(new)
                        current = texts[new_text]
                    else:
                        if (SEEN in new) != (SEEN in current):
                            (seen_now if SEEN in new else unseen_now).append(uid)
                        kept = [f for f in new if f != SEEN]
                        if SEEN in stored:
                            kept.append(SEEN)  # the owner's: not this reader's to change
                        new_text = text if set(kept) == set(stored) else " ".join(kept)
                        current = tuple(new)
                    changes.append((new_text, mseq, mailbox_id, uid))
                records.append(MessageRecord(uid, mseq, internaldate, size, guid, current))
            if changes:
                conn.executemany(
                    "UPDATE messages SET flags = ?, modseq = ? WHERE mailbox_id = ? AND uid = ?",
                    changes,
                )
                conn.execute(
                    "UPDATE mailboxes SET highestmodseq = ? WHERE id = ?", (modseq, mailbox_id)
                )
            if seen is not None and (seen_now or unseen_now):
                save_seen(
                    conn, mailbox_id, reader, seen.union(seen_now).difference(unseen_now)
                )
            return FlagUpdate(records, refused)

        return self._group.apply(change)

    def expunge(self, name: str, uids: Sequence[int]) -> list[int]:
        """Remove messages; returns the UIDs that were there, ascending. Files go after COMMIT."""
        files: list[Path] = []

        def change(conn: sqlite3.Connection, effects: FileEffects) -> list[int]:
            files.clear()  # this attempt's only
            return expunge_rows(self._spool, conn, name, uids, files)

        removed = self._group.apply(change)
        remove_files(files)
        return removed


def expunge_rows(
    spool: Spool, conn: sqlite3.Connection, name: str, uids: Sequence[int], files: list[Path]
) -> list[int]:
    """Inside a change (EXPUNGE, MOVE): remove the rows of those of `uids` that are there, each
    with its own modseq and a tombstone for VANISHED; their files are added to `files`, for the
    caller to remove after the COMMIT (remove_files). The UIDs removed, ascending."""
    row = require_mailbox(conn, name)
    mailbox_id, modseq = row[0], row[6]
    directory = spool.directory(row[3], row[2])
    # Set-wise, a statement per kind rather than five per message (EXPUNGE and MOVE usually
    # remove a few messages, and each statement was most of the cost); each message still gets
    # its own modseq, ascending with its UID.
    found = rows_for(conn, "uid, size, filename", mailbox_id, uids)
    removed = [uid for uid, _, _ in found]
    if found:
        keys = [(mailbox_id, uid) for uid in removed]
        conn.executemany("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", keys)
        conn.executemany("DELETE FROM header_index WHERE id = ?",
                         [(header_key(mailbox_id, uid),) for uid in removed])
        conn.executemany(
            "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
            [(mailbox_id, uid, modseq + n) for n, uid in enumerate(removed, 1)],
        )
        modseq += len(removed)
        files.extend(directory / filename for _, _, filename in found)
    conn.execute(
        "UPDATE mailboxes SET highestmodseq = ?, exists_count = exists_count - ?,"
        " size_bytes = size_bytes - ? WHERE id = ?",
        (modseq, len(removed), sum(size for _, size, _ in found), mailbox_id),
    )
    if removed:
        # UIDs are never reused, so a stale seen entry would do no harm; dropped all
        # the same, so a seen state names only messages that are there.
        for userid, text in conn.execute(
            "SELECT userid, uids FROM seen WHERE mailbox_id = ? AND uids != ''",
            (mailbox_id,),
        ).fetchall():
            seen = UidSet.parse(text)
            pruned = seen.difference(removed)
            if pruned != seen:
                save_seen(conn, mailbox_id, userid, pruned)
    return removed


def remove_files(files: list[Path]) -> None:
    """The files of expunged messages, once the COMMIT that removed their rows is done."""
    for path in files:
        with suppress(OSError):  # an expunged uid's file is debris reconstruct removes
            path.unlink()
