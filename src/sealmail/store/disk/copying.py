"""COPY and MOVE in the disk store: hard links, made durable before the commit that publishes
them, as a delivery's; a MOVE removes the originals in the same transaction.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Sequence
from pathlib import Path

from sealmail.store import quota
from sealmail.store.api import CopiedMessages
from sealmail.store.disk import unconfirmed
from sealmail.store.disk.changes import ChangeGroup, FileEffects
from sealmail.store.disk.flags import expunge_rows, remove_files
from sealmail.store.disk.layout import (
    ONE_COPY_MORE,
    ROW_LIST,
    Spool,
    header_key,
    missing_file,
    os_error,
    require_mailbox,
    write_synced,
)
from sealmail.store.disk.userdata import save_seen, seen_of
from sealmail.store.seen import SEEN, with_seen


class Copying:
    """IMAP COPY between two mailboxes of the store, in the group commit of IMAP changes
    (sealmail.store.disk.changes)."""

    def __init__(self, spool: Spool, group: ChangeGroup) -> None:
        self._spool = spool
        self._group = group

    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """Copy messages with their flags and internal dates (IMAP COPY, RFC 9051 6.4.7).

        All or nothing, in one transaction: the files are hard-linked (copied across
        partitions), fsynced through their directory before COMMIT, like a delivery; the quota
        of the target counts the copies (RFC 9051 6.4.7: COPY fails with OVERQUOTA). Each copy
        has \\Seen as `reader` sees the original, kept where the target keeps `reader`'s \\Seen
        (the index when they own it, else their own seen state: sealmail.store.seen).
        """

        def change(conn: sqlite3.Connection, effects: FileEffects) -> CopiedMessages:
            return self._copy(conn, effects, source, uids, target, reader)

        return self._group.apply(change)

    def move_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """MOVE (RFC 6851): the COPY above and the EXPUNGE of the originals in ONE change of
        the group commit, so one transaction, one directory fsync, one COMMIT. RFC 6851 3.3:
        the server "SHOULD" not leave the messages in both mailboxes or in neither; with one
        transaction a crash leaves one of the two states, never both or neither (the new links
        of an uncommitted MOVE are debris at uid >= uidnext, as a COPY's; the original files
        of a committed one go after the COMMIT, debris for reconstruct should a crash come
        first)."""
        files: list[Path] = []

        def change(conn: sqlite3.Connection, effects: FileEffects) -> CopiedMessages:
            files.clear()  # this attempt's only
            copied = self._copy(conn, effects, source, uids, target, reader)
            expunge_rows(self._spool, conn, source, [s for s, _ in copied.pairs], files)
            return copied

        moved = self._group.apply(change)
        remove_files(files)
        return moved

    def _copy(
        self,
        conn: sqlite3.Connection,
        effects: FileEffects,
        source: str,
        uids: Sequence[int],
        target: str,
        reader: str | None,
    ) -> CopiedMessages:
        """Inside a change: the copies' links, rows and counters."""
        src = require_mailbox(conn, source)
        dst = require_mailbox(conn, target)
        src_dir = self._spool.directory(src[3], src[2])
        dst_dir = self._spool.directory(dst[3], dst[2])
        dst_id, uidnext, modseq = dst[0], dst[5], dst[6]
        src_seen = seen_of(conn, src[0], source, reader)
        dst_seen = seen_of(conn, dst_id, target, reader)
        seen_copies: list[int] = []
        rows = [
            found
            for uid in sorted(set(uids))
            if (
                found := conn.execute(
                    "SELECT uid, internaldate, size, guid, flags, filename FROM messages"
                    " WHERE mailbox_id = ? AND uid = ?",
                    (src[0], uid),
                ).fetchone()
            )
            is not None
        ]
        result = CopiedMessages(dst[4], [])
        if not rows:
            return result
        root = quota.quota_root_of(conn, target)
        usage = None if root is None else quota.usage_of(conn, root)
        if usage is not None:
            quota.enforce(usage, sum(r[2] for r in rows), len(rows))
        pairs = result.pairs
        total = 0
        for uid, internaldate, size, guid, flags, filename in rows:
            new_uid = uidnext
            uidnext += 1
            modseq += 1
            if src_seen is not None or dst_seen is not None:
                stored = flags.split()
                was_seen = SEEN in stored if src_seen is None else uid in src_seen
                flags = " ".join(with_seen(stored, was_seen and dst_seen is None))
                if was_seen and dst_seen is not None:
                    seen_copies.append(new_uid)
            path = dst_dir / f"{new_uid}."
            try:
                path.unlink(missing_ok=True)  # debris of an uncommitted delivery
                try:
                    os.link(src_dir / filename, path)
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    # Another partition's filesystem: a copy of the file, durable before the
                    # COMMIT names it, as a link is (its directory is fsynced with the others).
                    write_synced(path, (src_dir / filename).read_bytes(), os.O_TRUNC)
            except FileNotFoundError:
                raise missing_file(source, uid) from None
            except OSError as exc:
                raise os_error(exc, f"cannot copy UID {uid} to {target}") from exc
            effects.links.append(os.fspath(path))  # removed if rolled back
            conn.execute(
                "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid,"
                " flags, filename) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (dst_id, new_uid, modseq, internaldate, size, guid, flags, path.name),
            )
            conn.execute(
                "INSERT OR REPLACE INTO structures (id, structure)"
                " SELECT ?, structure FROM structures WHERE id = ?",
                (header_key(dst_id, new_uid), header_key(src[0], uid)),
            )
            conn.execute(
                "INSERT OR REPLACE INTO header_index"
                f" (id, mailbox_id, uid, {ROW_LIST})"
                f" SELECT ?, ?, ?, {ROW_LIST} FROM header_index WHERE id = ?",
                (header_key(dst_id, new_uid), dst_id, new_uid, header_key(src[0], uid)),
            )
            pairs.append((uid, new_uid))
            total += size
        conn.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?,"
            " exists_count = exists_count + ?, size_bytes = size_bytes + ? WHERE id = ?",
            (uidnext, modseq, len(pairs), total, dst_id),
        )
        if dst_seen is not None and seen_copies:
            save_seen(conn, dst_id, reader, dst_seen.union(seen_copies))
        conn.executemany(ONE_COPY_MORE, [(row[3],) for row in rows])
        unconfirmed.inherit(conn, src[0], dst_id, pairs)  # a copy of a delivery not yet durable
        effects.directories.add(os.fspath(dst_dir))  # fsynced before the COMMIT
        return result
