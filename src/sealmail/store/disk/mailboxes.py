"""Mailbox administration in the disk store: create, rename, delete (with the directory's
tombstone), list, ACLs, quotas and special uses.
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import suppress
from functools import partial
from pathlib import Path

from sealmail.store import acl as acls
from sealmail.store import quota
from sealmail.store.api import MailboxInfo, QuotaUsage
from sealmail.store.disk.layout import (
    HEADER_NAME,
    HEADER_OF_MAILBOX,
    MAILBOX_COLUMNS,
    MailboxHeader,
    Spool,
    allocate_uidvalidity,
    mailbox_directory,
    mailbox_info,
    mailbox_row,
    make_directories,
    os_error,
    require_mailbox,
)
from sealmail.store.errors import (
    InvalidMailboxName,
    InvalidQuota,
    MailboxExists,
    MailboxNotFound,
    StoreError,
)
from sealmail.store.index import NAMESPACE_STAMP
from sealmail.store.names import owner_of, user_inbox, validate_internal


class Mailboxes:
    """The mailbox list: index rows, directories and their header files."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def mailbox(self, name: str) -> MailboxInfo | None:
        with self._spool.reading() as conn:
            row = mailbox_row(conn, name)
        return None if row is None else mailbox_info(tuple(row))

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo:
        validate_internal(name)
        partition = partition or self._spool.default_partition
        partition_path = self._spool.partition_path(partition)
        initial_acl = None if acl is None else acls.acl_of_entries(acl)
        owner = owner_of(name)
        with self._spool.mailbox_lock(name), self._spool.index.transaction() as conn:
            if mailbox_row(conn, name) is not None:
                raise MailboxExists(f"mailbox {name!r} already exists")
            if owner is not None:
                inbox = user_inbox(owner.user, owner.domain)
                if name != inbox and mailbox_row(conn, inbox) is None:
                    raise MailboxNotFound(
                        f"cannot create {name!r}: user mailbox {inbox!r} does not exist"
                    )
            if initial_acl is None:
                initial_acl = acls.default_acl(name, partial(_acl_of, conn))
            uidvalidity = allocate_uidvalidity(conn, self._spool.clock)
            uniqueid = uuid.uuid4().hex
            directory = mailbox_directory(partition_path, uniqueid)
            try:
                make_directories(directory)
            except OSError as exc:
                raise os_error(exc, f"cannot create directory of {name}") from exc
            self._spool.write_header(
                directory, MailboxHeader(name, uniqueid, uidvalidity, initial_acl)
            )
            conn.execute(
                "INSERT INTO mailboxes (name, uniqueid, partition, uidvalidity, uidnext,"
                " highestmodseq, acl) VALUES (?, ?, ?, ?, 1, 1, ?)",
                (name, uniqueid, partition, uidvalidity, acls.render_acl(initial_acl)),
            )
            row = require_mailbox(conn, name)
        return mailbox_info(row)

    def delete_mailbox(self, name: str) -> None:
        """Delete a mailbox; a user's INBOX takes its whole subtree with it (as Cyrus).

        The index commit comes first; files go afterwards. A tombstone per deleted uniqueid
        tells reconstruct to finish removing a directory a crash left behind.
        """
        validate_internal(name)
        owner = owner_of(name)
        whole_user = owner is not None and name == user_inbox(owner.user, owner.domain)
        with self._spool.mailbox_lock(name):
            with self._spool.index.transaction() as conn:
                require_mailbox(conn, name)
                low, high = quota.subtree_bounds(name)
                if whole_user:
                    doomed = conn.execute(
                        "SELECT id, uniqueid, partition, name FROM mailboxes"
                        " WHERE name = ? OR (name >= ? AND name < ?)",
                        (name, low, high),
                    ).fetchall()
                else:
                    doomed = conn.execute(
                        "SELECT id, uniqueid, partition, name FROM mailboxes WHERE name = ?",
                        (name,),
                    ).fetchall()
                for mailbox_id, uniqueid, partition, doomed_name in doomed:
                    conn.execute(
                        "INSERT OR REPLACE INTO tombstones (uniqueid, partition) VALUES (?, ?)",
                        (uniqueid, partition),
                    )
                    conn.execute(f"DELETE FROM header_index WHERE {HEADER_OF_MAILBOX}",
                                 (mailbox_id,))  # no foreign key (store.index, version 11)
                    conn.execute("DELETE FROM mailboxes WHERE id = ?", (mailbox_id,))
                    conn.execute("DELETE FROM quotaroots WHERE root = ?", (doomed_name,))
                if whole_user:
                    # Cyrus removes the user's seen database with the user: a user created
                    # later under the same name starts with nothing seen anywhere.
                    assert owner is not None
                    conn.execute("DELETE FROM seen WHERE userid = ?", (owner.userid,))
            # After the commit, as the files: a mark left behind names a uniqueid never used
            # again (and a user's are dropped with the user, as their seen states above).
            with suppress(StoreError):
                self._spool.recent.drop([uniqueid for _, uniqueid, _, _ in doomed],
                                        owner.userid if whole_user and owner else None)
            for _, uniqueid, partition, _ in doomed:
                self.remove_mailbox_directory(partition, uniqueid)

    def remove_mailbox_directory(self, partition: str, uniqueid: str) -> bool:
        """Remove a deleted mailbox's directory, then its tombstone. True when done."""
        directory = self._spool.directory(partition, uniqueid)
        try:
            if directory.exists():
                header = directory / HEADER_NAME
                # The header goes first: a directory without one is never resurrected.
                header.unlink(missing_ok=True)
                for entry in directory.iterdir():
                    entry.unlink()
                directory.rmdir()
        except OSError:
            return False
        try:
            with self._spool.index.transaction() as conn:
                conn.execute("DELETE FROM tombstones WHERE uniqueid = ?", (uniqueid,))
        except StoreError:
            return False
        return True

    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its inferiors (RFC 3501 6.3.5); only the index changes."""
        validate_internal(old)
        validate_internal(new)
        if new == old or new.startswith(old + "."):
            raise InvalidMailboxName(f"cannot rename {old!r} to {new!r} (inside itself)")
        owner = owner_of(new)
        with self._spool.mailbox_lock(old, new):
            with self._spool.index.transaction() as conn:
                require_mailbox(conn, old)
                if mailbox_row(conn, new) is not None:
                    raise MailboxExists(f"mailbox {new!r} already exists")
                if owner is not None:
                    inbox = user_inbox(owner.user, owner.domain)
                    if new != inbox and mailbox_row(conn, inbox) is None:
                        raise MailboxNotFound(f"user mailbox {inbox!r} does not exist")
                low, high = quota.subtree_bounds(old)
                names = [old] + [
                    n
                    for (n,) in conn.execute(
                        "SELECT name FROM mailboxes WHERE name >= ? AND name < ? ORDER BY name",
                        (low, high),
                    )
                ]
                renames = [(n, new + n[len(old) :]) for n in names]
                for _, target in renames:
                    validate_internal(target)
                    if target != new and mailbox_row(conn, target) is not None:
                        raise MailboxExists(f"mailbox {target!r} already exists")
                for source, target in renames:
                    conn.execute("UPDATE mailboxes SET name = ? WHERE name = ?", (target, source))
                    conn.execute("UPDATE quotaroots SET root = ? WHERE root = ?", (target, source))
            for _, target in renames:
                self._spool.refresh_header(target)

    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]:
        with self._spool.reading() as conn:
            if prefix:
                upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
                rows = conn.execute(
                    f"SELECT {MAILBOX_COLUMNS} FROM mailboxes WHERE name >= ? AND name < ?"
                    " ORDER BY name",
                    (prefix, upper),
                ).fetchall()
            else:
                rows = conn.execute(
                    f"SELECT {MAILBOX_COLUMNS} FROM mailboxes ORDER BY name"
                ).fetchall()
        return [mailbox_info(tuple(row)) for row in rows]

    def mailbox_path(self, name: str) -> Path:
        with self._spool.reading() as conn:
            row = require_mailbox(conn, name)
        return self._spool.directory(row[3], row[2])

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL (RFC 4314 3.1): '+r'/'-r' modify, plain rights replace, empty removes."""
        with self._spool.index.transaction() as conn:
            row = require_mailbox(conn, name)
            updated = acls.set_entry(acls.parse_acl(row[7]), identifier, rights)
            conn.execute(
                "UPDATE mailboxes SET acl = ? WHERE id = ?", (acls.render_acl(updated), row[0])
            )
        self._spool.refresh_header(name)

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        """Set the limits of a quota root (an existing mailbox); both None removes the root."""
        for value in (storage_kb, messages):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidQuota(f"quota limits must be non-negative, got {value!r}")
        with self._spool.index.transaction() as conn:
            require_mailbox(conn, root)
            if storage_kb is None and messages is None:
                conn.execute("DELETE FROM quotaroots WHERE root = ?", (root,))
            else:
                conn.execute(
                    "INSERT OR REPLACE INTO quotaroots (root, storage_limit, messages_limit)"
                    " VALUES (?, ?, ?)",
                    (root, storage_kb, messages),
                )

    def quota_for(self, name: str) -> QuotaUsage | None:
        with self._spool.reading() as conn:
            return quota.governing_usage(conn, name)

    def used_under(self, root: str) -> tuple[int, int]:
        """sealmail.store.api.NamespaceStamp: bytes and messages in `root` and below, now."""
        with self._spool.reading() as conn:
            return quota.subtree_usage(conn, root)

    def namespace_stamp(self) -> int:
        """sealmail.store.api.NamespaceStamp: kept by triggers in the index (store.index)."""
        with self._spool.reading() as conn:
            return int(conn.execute(NAMESPACE_STAMP).fetchone()[0])

    def check_quota(self, name: str, incoming_size: int) -> None:
        usage = self.quota_for(name)
        if usage is not None:
            quota.enforce_at_rcpt(usage, incoming_size)

    def special_uses(self) -> dict[str, str]:
        """Mailbox name -> its special use ("\\Sent", ...), for mailboxes that have one."""
        with self._spool.reading() as conn:
            rows = conn.execute(
                "SELECT name, special_use FROM mailboxes WHERE special_use != ''"
            ).fetchall()
        return {name: use for name, use in rows}

    def set_special_use(self, name: str, use: str) -> None:
        """RFC 6154: "" removes it."""
        with self._spool.index.transaction() as conn:
            mailbox_id = require_mailbox(conn, name)[0]
            conn.execute("UPDATE mailboxes SET special_use = ? WHERE id = ?", (use, mailbox_id))


def _acl_of(conn: sqlite3.Connection, name: str) -> dict[str, str] | None:
    row = mailbox_row(conn, name)
    return None if row is None else acls.parse_acl(row[7])
