"""reconstruct: make the index and the files of a mailbox agree again, files being the truth.

Policy (docs/store.md says the same for operators):
- a row whose file is missing is removed and its uid recorded as expunged (clients resync);
- a file no row names is debris when its uid is >= uidnext (a delivery that never committed) or
  was expunged (a crash before the unlink): it is removed; any other such file lost its row
  (damaged index) and is re-indexed with no flags and its mtime as internal date;
- size and GUID are recomputed from the file and fixed when they differ;
- the header index row (SEARCH, sealmail.store.headers) is recomputed from the file, added when
  missing, fixed when it differs, removed when its message is gone; so are the listed fields
  kept per content (`header_content`), whose copies the whole-store run recounts (and removes
  those of contents no message has);
- uidnext, highestmodseq, the message count and byte count (hence quota usage) are recomputed;
- per-user seen states (sealmail.store.seen) keep only UIDs still in the mailbox, and no
  `\\Recent` mark stays above the last UID given out; an adopted directory's messages count as
  announced (not `\\Recent`: they were there before the repair);
- a missing or stale `sealmail.header` is rewritten;
- a mailbox directory the index does not know is re-created from its header and files, with a
  new UIDVALIDITY (clients must forget what they cached); a directory of a deleted mailbox
  (tombstoned, or without header) is removed.
Every change that alters what a client sees bumps the mailbox's modseq. The work runs inside one
write transaction: no delivery can be between link and COMMIT meanwhile, so every unindexed file
seen is really debris.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealmail.store import acl as acls
from sealmail.store.disk.layout import (
    HEADER_NAME,
    HEADER_OF_MAILBOX,
    JOIN_HEADER,
    ONE_COPY_MORE,
    MailboxHeader,
    allocate_uidvalidity,
    header_key,
    mailbox_row,
    make_directories,
    os_error,
)
from sealmail.store.disk.recent import RECENT_NAME
from sealmail.store.errors import MailboxCorrupt, MailboxNotFound, StoreError
from sealmail.store.headers import listed_form, searchable_form
from sealmail.store.names import validate_internal
from sealmail.store.seen import UidSet

if TYPE_CHECKING:
    from sealmail.store.disk import DiskStore
    from sealmail.store.index import Index

_MESSAGE_FILE = re.compile(r"^([1-9][0-9]*)\.$")


@dataclass(frozen=True, slots=True)
class _Orphan:
    partition: str
    directory: Path
    header_name: str | None  # None: no readable header


def _message_files(directory: Path) -> dict[int, Path]:
    files: dict[int, Path] = {}
    for entry in directory.iterdir():
        match = _MESSAGE_FILE.match(entry.name)
        if match:
            files[int(match.group(1))] = entry
    return files


def _digest(path: Path) -> tuple[int, str, bytes | None, bytes]:
    """Size, GUID, searchable header form and listed fields of a message file."""
    data = path.read_bytes()
    return len(data), hashlib.sha1(data).hexdigest(), searchable_form(data), listed_form(data)


def reconstruct_mailbox(store: DiskStore, index: Index, name: str) -> list[str]:
    """Repair one mailbox (or adopt its orphan directory); a list of fixes, empty if none."""
    validate_internal(name)
    with store.spool.mailbox_lock(name):
        try:
            with index.transaction() as conn:
                row = mailbox_row(conn, name)
                if row is not None:
                    return _check(store, conn, row)
                for orphan in _orphans(store, conn):
                    if orphan.header_name == name:
                        return _adopt(store, conn, orphan)
        except OSError as exc:
            raise os_error(exc, f"reconstruct {name}") from exc
    raise MailboxNotFound(f"mailbox {name!r} does not exist and no directory of it was found")


def reconstruct_store(
    store: DiskStore, index: Index, checked: Callable[[str, int], None] | None = None
) -> list[str]:
    """Every mailbox, every orphan directory, stale stage files; `checked(name, of)` after each
    mailbox, `of` how many there are."""
    fixes = store.clean_stage_files()
    mailboxes = store.list_mailboxes()
    for info in mailboxes:
        try:
            fixes.extend(reconstruct_mailbox(store, index, info.name))
        except MailboxNotFound:
            pass  # deleted meanwhile
        except StoreError as exc:
            fixes.append(f"{info.name}: cannot check: {exc}")
        if checked is not None:
            checked(info.name, len(mailboxes))
    with index.transaction() as conn:
        fixes.extend(_check_header_content(conn))
        orphans = _orphans(store, conn)
        conn.execute("DELETE FROM tombstones")  # re-added below for directories still there
        for orphan in orphans:
            if orphan.header_name is None:
                conn.execute(
                    "INSERT OR REPLACE INTO tombstones (uniqueid, partition) VALUES (?, ?)",
                    (orphan.directory.name, orphan.partition),
                )
    for orphan in orphans:
        if orphan.header_name is None:
            if store.remove_mailbox_directory(orphan.partition, orphan.directory.name):
                fixes.append(f"removed directory of a deleted mailbox: {orphan.directory}")
        else:
            try:
                fixes.extend(reconstruct_mailbox(store, index, orphan.header_name))
            except StoreError as exc:
                fixes.append(f"left orphan directory {orphan.directory} alone: {exc}")
    return fixes


def _check_listed(conn: sqlite3.Connection, name: str, mailbox_id: int,
                  listed: dict[int, bytes]) -> list[str]:
    """The listed fields of a mailbox's messages (each copy's row, else its content's in
    `header_content`) those its files call for: a wrong content row is fixed, a copy that has
    none right gets them in its own row. Not a change a client sees: no modseq."""
    rows = conn.execute(
        "SELECT m.uid, m.guid, h.listed, c.listed FROM messages AS m"
        f" {JOIN_HEADER} LEFT JOIN header_content AS c ON c.guid = m.guid"
        " WHERE m.mailbox_id = ?",
        (mailbox_id,),
    ).fetchall()
    copies, contents = [], {}
    for uid, guid, own, shared in rows:
        wanted = listed.get(uid)
        if wanted is None or (own if own is not None else shared) == wanted:
            continue
        if shared is not None and shared != wanted:
            contents[guid] = wanted
        if own is not None or shared is None:
            copies.append((wanted, header_key(mailbox_id, uid)))
    conn.executemany("UPDATE header_content SET listed = ? WHERE guid = ?",
                     [(value, guid) for guid, value in contents.items()])
    conn.executemany("UPDATE header_index SET listed = ? WHERE id = ?", copies)
    if not copies and not contents:
        return []
    return [f"{name}: listed fields made again for {len(copies)} messages, {len(contents)}"
            " shared contents"]


def _check_header_content(conn: sqlite3.Connection) -> list[str]:
    """The listed fields kept per content (store.index, version 11): each row's `copies`
    recounted from `messages`, rows of contents no message has removed. First the header_index
    rows of mailboxes no longer there, which a foreign key's cascade removed before version 11
    (a mailbox row deleted by hand, or lost): as silently, the mailbox's loss is what is told."""
    conn.execute("DELETE FROM header_index WHERE (id >> 32) NOT IN (SELECT id FROM mailboxes)")
    counts = dict(conn.execute("SELECT guid, count(*) FROM messages GROUP BY guid").fetchall())
    kept = conn.execute("SELECT guid, copies FROM header_content").fetchall()
    gone = [(guid,) for guid, _ in kept if guid not in counts]
    wrong = [(counts[guid], guid) for guid, copies in kept
             if guid in counts and counts[guid] != copies]
    conn.executemany("DELETE FROM header_content WHERE guid = ?", gone)
    conn.executemany("UPDATE header_content SET copies = ? WHERE guid = ?", wrong)
    if not gone and not wrong:
        return []
    return [f"listed fields kept per content: {len(wrong)} copy counts corrected,"
            f" {len(gone)} rows of contents no message has removed"]


def _orphans(store: DiskStore, conn: sqlite3.Connection) -> list[_Orphan]:
    """Mailbox directories the index does not list; tombstoned ones count as header-less."""
    known = {uniqueid for (uniqueid,) in conn.execute("SELECT uniqueid FROM mailboxes")}
    tombstoned = {uniqueid for (uniqueid,) in conn.execute("SELECT uniqueid FROM tombstones")}
    found: list[_Orphan] = []
    for partition, path in sorted(store.partitions.items()):
        for directory in sorted(path.glob("uuid/*/*/*")):
            if not directory.is_dir() or directory.name in known:
                continue
            header_name: str | None = None
            if directory.name not in tombstoned:
                try:
                    header = MailboxHeader.parse((directory / HEADER_NAME).read_bytes())
                    if header.uniqueid == directory.name:
                        header_name = header.name
                except (OSError, MailboxCorrupt):
                    header_name = None
            found.append(_Orphan(partition, directory, header_name))
    return found


def _check(store: DiskStore, conn: sqlite3.Connection, row: tuple[object, ...]) -> list[str]:
    mailbox_id, name, uniqueid, partition, uidvalidity, uidnext, highestmodseq, acl_text, _ = row
    assert isinstance(name, str) and isinstance(uniqueid, str) and isinstance(partition, str)
    assert isinstance(uidnext, int) and isinstance(highestmodseq, int)
    assert isinstance(uidvalidity, int) and isinstance(acl_text, str)
    assert isinstance(mailbox_id, int)
    fixes: list[str] = []
    directory = store.spool.directory(partition, uniqueid)
    if not directory.is_dir():
        make_directories(directory)
        fixes.append(f"{name}: re-created missing directory {directory}")
    expected = MailboxHeader(name, uniqueid, uidvalidity, acls.parse_acl(acl_text))
    try:
        current: MailboxHeader | None = MailboxHeader.parse((directory / HEADER_NAME).read_bytes())
    except (OSError, MailboxCorrupt):
        current = None
    if current != expected:
        store.spool.write_header(directory, expected)
        fixes.append(f"{name}: rewrote {HEADER_NAME}")
    stale_temporary = directory / (HEADER_NAME + ".tmp")
    if stale_temporary.exists():
        stale_temporary.unlink()
        fixes.append(f"{name}: removed {stale_temporary.name}")

    files = _message_files(directory)
    rows = {
        uid: (size, guid, filename)
        for uid, size, guid, filename in conn.execute(
            "SELECT uid, size, guid, filename FROM messages WHERE mailbox_id = ?", (mailbox_id,)
        )
    }
    expunged = {
        uid
        for (uid,) in conn.execute("SELECT uid FROM expunged WHERE mailbox_id = ?", (mailbox_id,))
    }
    modseq = highestmodseq
    forms: dict[int, bytes | None] = {}  # the header index rows the files call for
    listed: dict[int, bytes] = {}  # uid -> the listed fields its file calls for
    for uid, (size, guid, filename) in sorted(rows.items()):
        path = files.get(uid)
        if path is None or path.name != filename:
            modseq += 1
            conn.execute("DELETE FROM messages WHERE mailbox_id = ? AND uid = ?", (mailbox_id, uid))
            conn.execute("DELETE FROM header_index WHERE id = ?", (header_key(mailbox_id, uid),))
            conn.execute(
                "INSERT OR REPLACE INTO expunged (mailbox_id, uid, modseq) VALUES (?, ?, ?)",
                (mailbox_id, uid, modseq),
            )
            fixes.append(f"{name}: UID {uid} has no file; removed from the index")
            continue
        real_size, real_guid, forms[uid], listed[uid] = _digest(path)
        if (real_size, real_guid) != (size, guid):
            modseq += 1
            conn.execute(
                "UPDATE messages SET size = ?, guid = ?, modseq = ?"
                " WHERE mailbox_id = ? AND uid = ?",
                (real_size, real_guid, modseq, mailbox_id, uid),
            )
            # Listed fields kept under either content may be this file's or another's: made
            # again from the files by the next listing.
            conn.execute("DELETE FROM header_content WHERE guid IN (?, ?)", (guid, real_guid))
            fixes.append(f"{name}: UID {uid} size/GUID corrected from its file")
    for uid, path in sorted(files.items()):
        if uid in rows:
            continue
        if uid >= uidnext or uid in expunged:
            path.unlink()
            fixes.append(f"{name}: removed uncommitted or expunged file {path.name}")
            continue
        size, guid, forms[uid], listed[uid] = _digest(path)
        modseq += 1
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid, flags,"
            " filename) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
            (mailbox_id, uid, modseq, path.stat().st_mtime, size, guid, path.name),
        )
        conn.execute(ONE_COPY_MORE, (guid,))
        fixes.append(f"{name}: re-indexed file {path.name} that had lost its index row")
    fixes.extend(_check_header_index(conn, name, mailbox_id, forms))
    fixes.extend(_check_listed(conn, name, mailbox_id, listed))
    fixes.extend(_check_seen(conn, name, mailbox_id))

    count, total, max_uid, max_modseq = conn.execute(
        "SELECT count(*), coalesce(sum(size), 0), coalesce(max(uid), 0), coalesce(max(modseq), 0)"
        " FROM messages WHERE mailbox_id = ?",
        (mailbox_id,),
    ).fetchone()
    (max_expunged,) = conn.execute(
        "SELECT coalesce(max(modseq), 0) FROM expunged WHERE mailbox_id = ?", (mailbox_id,)
    ).fetchone()
    new_uidnext = max(uidnext, max_uid + 1)
    new_modseq = max(modseq, max_modseq, max_expunged)
    stored = conn.execute(
        "SELECT uidnext, highestmodseq, exists_count, size_bytes FROM mailboxes WHERE id = ?",
        (mailbox_id,),
    ).fetchone()
    if tuple(stored) != (new_uidnext, new_modseq, count, total):
        if stored[0] != new_uidnext:
            fixes.append(f"{name}: uidnext {stored[0]} -> {new_uidnext}")
        if stored[2] != count or stored[3] != total:
            fixes.append(f"{name}: usage recounted: {count} messages, {total} bytes")
        conn.execute(
            "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?, exists_count = ?,"
            " size_bytes = ? WHERE id = ?",
            (new_uidnext, new_modseq, count, total, mailbox_id),
        )
    for table, column in (("mailboxes", "id"), ("seen", "mailbox_id")):
        cursor = conn.execute(
            f"UPDATE {table} SET recentuid = ? WHERE {column} = ? AND recentuid > ?",
            (new_uidnext - 1, mailbox_id, new_uidnext - 1),
        )
        if cursor.rowcount:
            fixes.append(f"{name}: \\Recent mark above the last UID lowered in {table}")
    if store.spool.recent.lower(uniqueid, new_uidnext - 1):
        fixes.append(f"{name}: \\Recent mark above the last UID lowered in {RECENT_NAME}")
    return fixes


def _check_seen(conn: sqlite3.Connection, name: str, mailbox_id: int) -> list[str]:
    """Per-user seen states name only messages that are there (not a change a client sees:
    the UIDs dropped are gone)."""
    present = [uid for (uid,) in conn.execute(
        "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
    )]
    fixes: list[str] = []
    for userid, text in conn.execute(
        "SELECT userid, uids FROM seen WHERE mailbox_id = ?", (mailbox_id,)
    ).fetchall():
        try:
            seen = UidSet.parse(text)
        except MailboxCorrupt:
            seen = UidSet()
        kept = seen.restricted_to(present)
        if kept.render() != text:
            conn.execute(
                "UPDATE seen SET uids = ? WHERE mailbox_id = ? AND userid = ?",
                (kept.render(), mailbox_id, userid),
            )
            fixes.append(f"{name}: seen state of {userid} trimmed to the messages there")
    return fixes


def _check_header_index(conn: sqlite3.Connection, name: str, mailbox_id: int,
                        forms: dict[int, bytes | None]) -> list[str]:
    """Make the header index rows of a mailbox those its files call for (not a change a
    client sees: no modseq)."""
    stored = dict(conn.execute(
        f"SELECT uid, fields FROM header_index WHERE {HEADER_OF_MAILBOX}", (mailbox_id,)
    ).fetchall())
    wrong = [(header_key(mailbox_id, uid), mailbox_id, uid, form) for uid, form in forms.items()
             if uid not in stored or stored[uid] != form]
    extra = [(header_key(mailbox_id, uid),) for uid in stored if uid not in forms]
    conn.executemany(
        "INSERT OR REPLACE INTO header_index (id, mailbox_id, uid, fields) VALUES (?, ?, ?, ?)",
        wrong,
    )
    conn.executemany("DELETE FROM header_index WHERE id = ?", extra)
    if not wrong and not extra:
        return []
    return [f"{name}: header index rebuilt for {len(wrong)} messages, {len(extra)} stale rows"
            " removed"]


def _adopt(store: DiskStore, conn: sqlite3.Connection, orphan: _Orphan) -> list[str]:
    """Re-create the index entry of an orphan directory from its header and files."""
    header = MailboxHeader.parse((orphan.directory / HEADER_NAME).read_bytes())
    validate_internal(header.name)
    uidvalidity = allocate_uidvalidity(conn, store.spool.clock)
    files = _message_files(orphan.directory)
    conn.execute(
        "INSERT INTO mailboxes (name, uniqueid, partition, uidvalidity, uidnext, highestmodseq,"
        " acl, recentuid) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (
            header.name,
            header.uniqueid,
            orphan.partition,
            uidvalidity,
            max(files, default=0) + 1,
            len(files) + 1,
            acls.render_acl(header.acl),
            max(files, default=0),
        ),
    )
    (mailbox_id,) = conn.execute(
        "SELECT id FROM mailboxes WHERE uniqueid = ?", (header.uniqueid,)
    ).fetchone()
    total = 0
    for modseq, (uid, path) in enumerate(sorted(files.items()), start=2):
        size, guid, form, listed = _digest(path)
        total += size
        conn.execute(
            "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid, flags,"
            " filename) VALUES (?, ?, ?, ?, ?, ?, '', ?)",
            (mailbox_id, uid, modseq, os.stat(path).st_mtime, size, guid, path.name),
        )
        conn.execute(ONE_COPY_MORE, (guid,))
        conn.execute(
            "INSERT INTO header_index (id, mailbox_id, uid, fields, listed)"
            " VALUES (?, ?, ?, ?, ?)",
            (header_key(mailbox_id, uid), mailbox_id, uid, form, listed),
        )
    conn.execute(
        "UPDATE mailboxes SET exists_count = ?, size_bytes = ? WHERE id = ?",
        (len(files), total, mailbox_id),
    )
    store.spool.write_header(
        orphan.directory, MailboxHeader(header.name, header.uniqueid, uidvalidity, header.acl)
    )
    return [
        f"{header.name}: re-created from {orphan.directory} with {len(files)} messages"
        f" (new UIDVALIDITY {uidvalidity})"
    ]
