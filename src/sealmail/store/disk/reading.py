"""Reading messages from the disk store: records, flag snapshots, changes since a modseq,
message files (FETCH) and the stored parses.
"""

from __future__ import annotations

import itertools
import operator
import os
import sqlite3
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from sealmail.store.api import FlagSnapshot, MessageRecord
from sealmail.store.disk.layout import (
    Spool,
    header_key,
    mailbox_info,
    missing_file,
    os_error,
    require_mailbox,
)
from sealmail.store.disk.userdata import seen_of
from sealmail.store.errors import MailboxCorrupt, NoSuchMessage
from sealmail.store.index import sqlite_error
from sealmail.store.seen import UidSet, with_seen

# UIDs expunged after a modseq, in no order (the caller sorts the few there are): with ORDER BY
# uid SQLite walks the primary key, every row of the mailbox's past expunges, rather than the
# (mailbox_id, modseq) index that finds just these (sealmail.store.index, _INDEXES).
EXPUNGED_SINCE = "SELECT uid FROM expunged WHERE mailbox_id = ? AND modseq > ?"
CHANGED_SINCE = ("SELECT uid, modseq, internaldate, size, guid, flags FROM messages"
                 " WHERE mailbox_id = ? AND modseq > ?")


def changed_since(conn: sqlite3.Connection, mailbox_id: int, modseq: int) -> list[Any]:
    """The (uid, modseq, internaldate, size, guid, flags) rows of the messages changed or
    added after `modseq`, in UID order. Sorted here: with ORDER BY uid SQLite walks every
    row of the mailbox in UID order instead of the few past `modseq` in the index
    messages_modseq (the sync after every command with news, sealmail.store.disk.syncing)."""
    rows = conn.execute(CHANGED_SINCE, (mailbox_id, modseq)).fetchall()
    rows.sort()  # by UID, which is unique
    return rows


class Reading:
    """FETCH's side of the store: records, flags and message files, read through the index."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]:
        """Every message, in UID order, with its flags as `reader` sees them."""
        with self._spool.reading() as conn:
            conn.execute("BEGIN")  # the rows and the seen state of one moment
            try:
                mailbox_id = require_mailbox(conn, name)[0]
                rows = conn.execute(
                    "SELECT uid, modseq, internaldate, size, guid, flags FROM messages"
                    " WHERE mailbox_id = ? ORDER BY uid",
                    (mailbox_id,),
                ).fetchall()
                seen = seen_of(conn, mailbox_id, name, reader)
            finally:
                conn.execute("COMMIT")
        return records_of(rows, seen)

    def message_bytes(self, name: str, uid: int) -> bytes:
        """One message's octets: one index query (the mailbox's row joined), one open and read
        (FETCH of a body part, once per command of imaptest's second FETCH)."""
        with self._spool.reading() as conn:
            message = conn.execute(
                "SELECT b.partition, b.uniqueid, m.filename, m.size FROM mailboxes AS b"
                " JOIN messages AS m ON m.mailbox_id = b.id WHERE b.name = ? AND m.uid = ?",
                (name, uid),
            ).fetchone()
            if message is None:
                require_mailbox(conn, name)  # MailboxNotFound if that is why
        if message is None:
            raise NoSuchMessage(f"no message with UID {uid} in {name!r}")
        partition, uniqueid, filename, size = message
        path = os.path.join(self._spool.directory_name(partition, uniqueid), filename)
        try:
            return _read_file(path, None, size)
        except FileNotFoundError:
            raise self._file_gone(name, uid) from None
        except OSError as exc:
            raise os_error(exc, f"cannot read UID {uid} of {name}") from exc

    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]:
        """The bytes of several messages, in the order of `uids`, read as the caller iterates:
        one index query first, then one open and read per file (FETCH of many bodies, which
        sends each batch while reading the next). With `limit`, at most that many octets from
        the start of each (a FETCH of headers). None for a UID the mailbox no longer has
        (another session expunged it: RFC 2180 4.1.1 leaves it out of the FETCH)."""
        with self._spool.reading() as conn:
            row = require_mailbox(conn, name)
            files = {uid: (filename, size) for uid, filename, size
                     in rows_for(conn, "uid, filename, size", row[0], uids)}
        return self._read_messages(name, self._spool.directory(row[3], row[2]), uids, files, limit)

    def _read_messages(
        self,
        name: str,
        directory: Path,
        uids: Sequence[int],
        files: dict[int, tuple[str, int]],
        limit: int | None = None,
    ) -> Iterator[bytes | None]:
        try:
            directory_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise os_error(exc, f"cannot open the directory of {name}") from exc
        try:
            for uid in uids:
                file = files.get(uid)
                if file is None:
                    yield None
                    continue
                try:
                    data = _read_file(file[0], directory_fd, file[1], limit)
                except FileNotFoundError:
                    if isinstance(self._file_gone(name, uid), NoSuchMessage):
                        yield None  # expunged since the query, as if it had been before
                        continue
                    raise missing_file(name, uid) from None
                except OSError as exc:
                    raise os_error(exc, f"cannot read UID {uid} of {name}") from exc
                yield data
        finally:
            os.close(directory_fd)

    def _file_gone(self, name: str, uid: int) -> NoSuchMessage | MailboxCorrupt:
        """What a message file not found means. The row was read first and the file after: an
        expunge by another session may have committed in between and removed the file (files
        go after COMMIT), and then the row is gone too. Only a row without its file is damage
        for reconstruct; an expunged message is no corruption (RFC 2180 4.1: a FETCH of it
        may answer NO, or leave it out)."""
        with self._spool.reading() as conn:
            mailbox = conn.execute("SELECT id FROM mailboxes WHERE name = ?", (name,)).fetchone()
            still = mailbox is not None and conn.execute(
                "SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox[0], uid)
            ).fetchone()
        if still:
            return missing_file(name, uid)
        return NoSuchMessage(f"UID {uid} of {name!r} was expunged meanwhile")

    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]:
        """The records of those of `uids` that exist, in UID order (flags as `reader` sees
        them)."""
        with self._spool.reading() as conn:
            mailbox_id = require_mailbox(conn, name)[0]
            rows = rows_for(conn, "uid, modseq, internaldate, size, guid, flags", mailbox_id, uids)
            seen = seen_of(conn, mailbox_id, name, reader)
        return records_of(rows, seen)

    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot:
        """The mailbox row and every message's UID, modseq and flags (as `reader` sees them)
        in one read transaction, so the rows are exactly those of the mailbox's highestmodseq
        (an IMAP view can then catch up with `messages_since(highestmodseq)` without missing a
        change).

        The columns come back as three concatenated strings from one scan: a Python object
        per row and column is what a SELECT of a large mailbox would otherwise spend its time
        on. A newline separates the flags of two messages (flags are IMAP atoms: none has one;
        should one ever, the rows are read one by one instead).
        """
        with self._spool.reading() as conn:
            conn.execute("BEGIN")
            try:
                row = require_mailbox(conn, name)
                uid_text, modseq_text, flag_text = conn.execute(
                    "SELECT group_concat(uid), group_concat(modseq), group_concat(flags, char(10))"
                    " FROM (SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ?"
                    " ORDER BY uid)",
                    (row[0],),
                ).fetchone()
                if uid_text is not None:
                    uids = list(map(int, uid_text.split(",")))
                    texts = flag_text.split("\n")
                    modseqs = list(map(int, modseq_text.split(",")))
                    if len(texts) != len(uids):
                        uids, modseqs, texts = map(list, zip(*conn.execute(
                            "SELECT uid, modseq, flags FROM messages WHERE mailbox_id = ?",
                            (row[0],),
                        ).fetchall(), strict=True))
                seen = seen_of(conn, row[0], name, reader)
            finally:
                conn.execute("COMMIT")
        if uid_text is None:
            return FlagSnapshot(mailbox_info(row), [], [], [], [])
        sets = _FlagSetIds()
        flag_ids = list(map(sets.__getitem__, texts))
        if any(map(operator.ge, uids, itertools.islice(uids, 1, None))):
            # group_concat's order follows the subquery's in practice, not by contract; the
            # three lists are aligned in any case (one pass feeds all three).
            uids, modseqs, flag_ids = map(list, zip(*sorted(zip(uids, modseqs, flag_ids,
                                                                strict=True)), strict=True))
        if seen is not None:
            flag_ids, flag_sets = _overlay_seen(uids, flag_ids, sets.flag_sets, seen)
            return FlagSnapshot(mailbox_info(row), uids, modseqs, flag_ids, flag_sets)
        return FlagSnapshot(mailbox_info(row), uids, modseqs, flag_ids, sets.flag_sets)

    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]:
        """Messages added or changed after `modseq` (RFC 7162 CHANGEDSINCE; session sync),
        flags as `reader` sees them. A change of a reader's own \\Seen gives the message a new
        modseq too (as Cyrus), so it is among these."""
        with self._spool.reading() as conn:
            conn.execute("BEGIN")
            try:
                mailbox_id = require_mailbox(conn, name)[0]
                rows = changed_since(conn, mailbox_id, modseq)
                seen = seen_of(conn, mailbox_id, name, reader)
            finally:
                conn.execute("COMMIT")
        return records_of(rows, seen)

    def expunged_since(self, name: str, modseq: int) -> list[int]:
        """UIDs expunged after `modseq`, ascending (RFC 7162 3.2.10 VANISHED)."""
        with self._spool.reading() as conn:
            mailbox_id = require_mailbox(conn, name)[0]
            rows = conn.execute(
                EXPUNGED_SINCE,
                (mailbox_id, modseq),
            ).fetchall()
        return sorted(uid for (uid,) in rows)

    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        """The stored parses (the IMAP layer's blobs) of those messages that have one, those
        still waiting to be written included (sealmail.store.disk.structures)."""
        with self._spool.reading() as conn:
            mailbox_id = require_mailbox(conn, name)[0]
            found = _structures(conn, mailbox_id, uids)
        if self._spool.structures:
            found.update(self._spool.structures.get(mailbox_id, uids))
        return found

    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None:
        """Keep parses: not a change a client sees, so no modseq, and a cache (lost, it is
        parsed again), so written by the next group commit of IMAP changes, or now if the
        write lock is free this moment, never waited for (sealmail.store.disk.structures)."""
        if not structures:
            return
        with self._spool.reading() as conn:
            mailbox_id = require_mailbox(conn, name)[0]
        self._spool.structures.add(mailbox_id, structures)
        self.write_structures()

    def write_structures(self) -> None:
        """Write the waiting parses in a relaxed transaction of their own if the write lock is
        free this moment; if not, a later group commit or save takes them."""
        if not self._spool.structures:
            return
        with self._spool.index.writing_now(durable=False) as now:
            if now is None:
                return
            try:
                self._spool.structures.write_into(now, alone=True)
                now.execute("COMMIT")
            except sqlite3.Error as exc:
                raise sqlite_error(exc, "kept parses") from exc


class _FlagSetIds(dict[str, int]):
    """Flags column text -> index of its flag set in `flag_sets`, each text split once."""

    def __init__(self) -> None:
        super().__init__()
        self.flag_sets: list[tuple[str, ...]] = []
        self._by_set: dict[tuple[str, ...], int] = {}

    def __missing__(self, text: str) -> int:
        flags = tuple(text.split())
        known = self._by_set.get(flags)
        if known is None:
            known = self._by_set[flags] = len(self.flag_sets)
            self.flag_sets.append(flags)
        self[text] = known
        return known


class FlagTexts(dict[str, tuple[str, ...]]):
    """Flags column text -> tuple, each distinct text split once and its tuple shared."""

    def __missing__(self, text: str) -> tuple[str, ...]:
        flags = self[text] = tuple(text.split())
        return flags


def records_of(rows: Sequence[tuple[Any, ...]], seen: UidSet | None) -> list[MessageRecord]:
    """MessageRecords of (uid, modseq, internaldate, size, guid, flags) rows, with a reader's
    own seen state applied when they have one."""
    texts = FlagTexts()
    if seen is None:
        return [MessageRecord(uid, modseq, internaldate, size, guid, texts[flags])
                for uid, modseq, internaldate, size, guid, flags in rows]
    marks = seen.members([r[0] for r in rows])
    return [MessageRecord(uid, modseq, internaldate, size, guid, with_seen(texts[flags], mark))
            for (uid, modseq, internaldate, size, guid, flags), mark
            in zip(rows, marks, strict=True)]


def _overlay_seen(
    uids: list[int], flag_ids: list[int], flag_sets: list[tuple[str, ...]], seen: UidSet
) -> tuple[list[int], list[tuple[str, ...]]]:
    """A snapshot's flag set ids renumbered for a reader with their own seen state: one new
    set per distinct (index flag set, seen by the reader) pair."""
    sets: list[tuple[str, ...]] = []
    by_set: dict[tuple[str, ...], int] = {}
    by_pair: dict[tuple[int, bool], int] = {}
    out: list[int] = []
    for flag_id, mark in zip(flag_ids, seen.members(uids), strict=True):
        known = by_pair.get((flag_id, mark))
        if known is None:
            flags = with_seen(flag_sets[flag_id], mark)
            known = by_set.get(flags)
            if known is None:
                known = by_set[flags] = len(sets)
                sets.append(flags)
            by_pair[(flag_id, mark)] = known
        out.append(known)
    return out, sets


def rows_for(
    conn: sqlite3.Connection, columns: str, mailbox_id: int, uids: Sequence[int]
) -> list[tuple[Any, ...]]:
    """`columns` of those of `uids` that exist, in UID order: one IN query for a few scattered
    UIDs, else one range scan (filtered here), which SQLite does faster."""
    wanted = sorted(set(uids))
    if not wanted:
        return []
    if _few_and_scattered(wanted):
        marks = ",".join("?" * len(wanted))
        rows: list[tuple[Any, ...]] = conn.execute(
            f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND uid IN ({marks})"
            " ORDER BY uid",
            (mailbox_id, *wanted),
        ).fetchall()
        return rows
    return _within(conn.execute(
        f"SELECT {columns} FROM messages WHERE mailbox_id = ? AND uid BETWEEN ? AND ?"
        " ORDER BY uid",
        (mailbox_id, wanted[0], wanted[-1]),
    ).fetchall(), wanted)


def _structures(conn: sqlite3.Connection, mailbox_id: int, uids: Sequence[int]
                ) -> dict[int, bytes]:
    """The kept parses of those of `uids` that have one (store.index, version 12), chosen as
    `rows_for` chooses: by IN or by a range scan of the mailbox's keys, filtered here."""
    wanted = sorted(set(uids))
    if not wanted:
        return {}
    base = header_key(mailbox_id, 0)
    if _few_and_scattered(wanted):
        rows = conn.execute(
            f"SELECT id, structure FROM structures WHERE id IN ({','.join('?' * len(wanted))})",
            [base | uid for uid in wanted],
        ).fetchall()
        return {key - base: blob for key, blob in rows}
    rows = conn.execute("SELECT id - ?1, structure FROM structures WHERE id BETWEEN ?1 | ?2"
                        " AND ?1 | ?3", (base, wanted[0], wanted[-1])).fetchall()
    return dict(_within(rows, wanted))


def _few_and_scattered(wanted: list[int]) -> bool:
    """Whether the ascending UIDs `wanted` are better asked by IN than by a range scan."""
    return len(wanted) <= 256 and wanted[-1] - wanted[0] >= 2 * len(wanted)


def _within(rows: list[tuple[Any, ...]], wanted: list[int]) -> list[tuple[Any, ...]]:
    """The rows (UID first) of a range scan from wanted[0] to wanted[-1] that are wanted."""
    if len(rows) == len(wanted) == wanted[-1] - wanted[0] + 1:
        return rows  # the whole range was asked for
    keep = set(wanted)
    return [r for r in rows if r[0] in keep]


def _read_file(filename: str, directory_fd: int | None, size: int, limit: int | None = None
               ) -> bytes:
    """A whole file of the size the index says: one open, one read (more only if the size was
    wrong: reconstruct fixes that), one close. With `limit`, at most that many octets. The
    name is relative to `directory_fd` (None: to the working directory, or absolute)."""
    fd = os.open(filename, os.O_RDONLY | os.O_CLOEXEC, dir_fd=directory_fd)
    try:
        if limit is not None and size > limit:
            return os.read(fd, limit)
        data = os.read(fd, size + 1)
        if len(data) == size:
            return data
        chunks = [data]
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)
