"""The mailbox list on PostgreSQL: create, rename, delete, list; ACLs, quotas, special uses
(sealmail.store.api.MailboxAdmin), with the rules of the other backends (default ACLs after
Cyrus, a user's INBOX before anything below it, UIDVALIDITY strictly increasing)."""

from __future__ import annotations

import uuid

from psycopg import errors as pg_errors

from sealmail.store import acl as acls
from sealmail.store import quota
from sealmail.store.api import MailboxInfo, QuotaUsage
from sealmail.store.errors import (
    InvalidMailboxName,
    InvalidQuota,
    MailboxExists,
    MailboxNotFound,
    PartitionNotFound,
)
from sealmail.store.names import owner_of, user_inbox, validate_internal
from sealmail.store.postgres.database import Connection, Database
from sealmail.store.postgres.notify import GONE


class Mailboxes:
    def __init__(self, db: Database) -> None:
        self._db = db

    def mailbox(self, name: str) -> MailboxInfo | None:
        def work(conn: Connection) -> MailboxInfo | None:
            row = self._db.row(conn, name)
            return None if row is None else self._db.info(conn, row)

        return self._db.read(work)

    def _exists(self, conn: Connection, name: str) -> bool:
        found = conn.execute("SELECT 1 FROM mailboxes WHERE name = %s", (name,)).fetchone()
        return found is not None

    def _require_owner_inbox(self, conn: Connection, name: str, doing: str) -> None:
        owner = owner_of(name)
        if owner is not None:
            inbox = user_inbox(owner.user, owner.domain)
            if name != inbox and not self._exists(conn, inbox):
                raise MailboxNotFound(f"{doing}user mailbox {inbox!r} does not exist")

    def create_mailbox(
        self, name: str, partition: str | None = None, acl: dict[str, str] | None = None
    ) -> MailboxInfo:
        validate_internal(name)
        partition = partition or self._db.settings.default_partition
        if partition not in self._db.settings.partitions:
            raise PartitionNotFound(f"no partition {partition!r} in imapd.conf")
        initial = None if acl is None else acls.acl_of_entries(acl)

        def work(conn: Connection) -> MailboxInfo:
            if self._exists(conn, name):
                raise MailboxExists(f"mailbox {name!r} already exists")
            self._require_owner_inbox(conn, name, f"cannot create {name!r}: ")
            entries = initial
            if entries is None:
                entries = acls.default_acl(name, lambda n: self._acl_of(conn, n))
            # RFC 3501 2.3.1.1: a re-created mailbox gets a greater UIDVALIDITY, on every node.
            found = conn.execute(
                "INSERT INTO counters (name, value) VALUES ('uidvalidity', %s)"
                " ON CONFLICT (name) DO UPDATE"
                " SET value = greatest(excluded.value, counters.value + 1) RETURNING value",
                (int(self._db.clock()),),
            ).fetchone()
            assert found is not None
            try:
                with conn.transaction():
                    inserted = conn.execute(
                        "INSERT INTO mailboxes (name, uniqueid, partition, uidvalidity)"
                        " VALUES (%s, %s, %s, %s) RETURNING id",
                        (name, uuid.uuid4().hex, partition, int(found[0])),
                    ).fetchone()
            except pg_errors.UniqueViolation:
                raise MailboxExists(f"mailbox {name!r} already exists") from None
            assert inserted is not None
            self._db.write_acl(conn, int(inserted[0]), entries)
            return self._db.info(conn, self._db.require(conn, name))

        return self._db.write(work)

    def _acl_of(self, conn: Connection, name: str) -> dict[str, str] | None:
        row = self._db.row(conn, name)
        return None if row is None else self._db.acl(conn, row.id)

    def delete_mailbox(self, name: str) -> None:
        """A user's INBOX takes its whole subtree and the user's seen states with it."""
        validate_internal(name)
        owner = owner_of(name)
        whole_user = owner is not None and name == user_inbox(owner.user, owner.domain)

        def work(conn: Connection) -> None:
            self._db.require(conn, name, lock=True)
            if whole_user:
                assert owner is not None
                low, high = quota.subtree_bounds(name)
                gone = conn.execute(
                    "DELETE FROM mailboxes WHERE name = %s OR (name >= %s AND name < %s)"
                    " RETURNING name", (name, low, high)).fetchall()
                for (deleted,) in gone:
                    self._db.changed(str(deleted), GONE)
                conn.execute("DELETE FROM seen_states WHERE userid = %s", (owner.userid,))
                conn.execute("DELETE FROM recent_marks WHERE userid = %s", (owner.userid,))
            else:
                conn.execute("DELETE FROM mailboxes WHERE name = %s", (name,))
                self._db.changed(name, GONE)

        self._db.write(work)

    def rename_mailbox(self, old: str, new: str) -> None:
        """Rename a mailbox and its inferiors (RFC 3501 6.3.5); quota roots and ACLs go with
        them (they hang on the mailbox id)."""
        validate_internal(old)
        validate_internal(new)
        if new == old or new.startswith(old + "."):
            raise InvalidMailboxName(f"cannot rename {old!r} to {new!r} (inside itself)")

        def work(conn: Connection) -> None:
            self._db.require(conn, old)  # locked below with its subtree, in id order
            if self._exists(conn, new):
                raise MailboxExists(f"mailbox {new!r} already exists")
            self._require_owner_inbox(conn, new, "")
            low, high = quota.subtree_bounds(old)
            rows = conn.execute(
                "SELECT id, name FROM mailboxes WHERE name = %s OR (name >= %s AND name < %s)"
                " ORDER BY id FOR UPDATE",
                (old, low, high),
            ).fetchall()
            if old not in (str(n) for _, n in rows):
                raise MailboxNotFound(f"mailbox {old!r} does not exist")  # deleted meanwhile
            renames = [(int(i), new + str(n)[len(old):]) for i, n in rows]
            for _, target in renames:
                validate_internal(target)
                if target != new and self._exists(conn, target):
                    raise MailboxExists(f"mailbox {target!r} already exists")
            with conn.cursor() as cursor:
                cursor.executemany("UPDATE mailboxes SET name = %s WHERE id = %s",
                                   [(target, i) for i, target in renames])
            for _, was in rows:
                self._db.changed(str(was), GONE)

        self._db.write(work)

    def list_mailboxes(self, prefix: str = "") -> list[MailboxInfo]:
        def work(conn: Connection) -> list[MailboxInfo]:
            rows = conn.execute(
                "SELECT m.id, m.name, m.uniqueid, m.partition, m.uidvalidity, m.uidnext,"
                " m.highestmodseq, m.exists_count,"
                " coalesce(array_agg(a.identifier ORDER BY a.position)"
                "          FILTER (WHERE a.identifier IS NOT NULL), '{}'),"
                " coalesce(array_agg(a.rights ORDER BY a.position)"
                "          FILTER (WHERE a.identifier IS NOT NULL), '{}')"
                " FROM mailboxes m LEFT JOIN mailbox_acl a ON a.mailbox_id = m.id"
                " WHERE starts_with(m.name, %s) GROUP BY m.id ORDER BY m.name",
                (prefix,),
            ).fetchall()
            return [MailboxInfo(str(r[1]), str(r[2]), str(r[3]), int(r[4]), int(r[5]), int(r[6]),
                                int(r[7]), dict(zip(r[8], r[9], strict=True))) for r in rows]

        return self._db.read(work)

    def set_acl(self, name: str, identifier: str, rights: str) -> None:
        """SETACL (RFC 4314 3.1): '+r'/'-r' modify, plain rights replace, empty removes."""
        def work(conn: Connection) -> None:
            row = self._db.require(conn, name, lock=True)
            acl = acls.set_entry(self._db.acl(conn, row.id), identifier, rights)
            self._db.write_acl(conn, row.id, acl)

        self._db.write(work)

    def set_quota(self, root: str, storage_kb: int | None, messages: int | None) -> None:
        for value in (storage_kb, messages):
            if value is not None and (isinstance(value, bool) or value < 0):
                raise InvalidQuota(f"quota limits must be non-negative, got {value!r}")

        def work(conn: Connection) -> None:
            row = self._db.require(conn, root, lock=True)
            if storage_kb is None and messages is None:
                conn.execute("DELETE FROM quota_roots WHERE mailbox_id = %s", (row.id,))
            else:
                conn.execute(
                    "INSERT INTO quota_roots (mailbox_id, storage_kb, messages) VALUES (%s, %s, %s)"
                    " ON CONFLICT (mailbox_id) DO UPDATE"
                    " SET storage_kb = excluded.storage_kb, messages = excluded.messages,"
                    " warned = false",  # a new limit: warn at its level (the disk store's way)
                    (row.id, storage_kb, messages),
                )

        self._db.write(work)

    def quota_for(self, name: str) -> QuotaUsage | None:
        return self._db.read(lambda conn: self._db.usage(conn, name))

    def check_quota(self, name: str, incoming_size: int) -> None:
        usage = self.quota_for(name)
        if usage is not None:
            quota.enforce_at_rcpt(usage, incoming_size)

    def special_uses(self) -> dict[str, str]:
        rows = self._db.read(lambda conn: conn.execute(
            "SELECT name, special_use FROM mailboxes WHERE special_use <> ''").fetchall())
        return {str(name): str(use) for name, use in rows}

    def set_special_use(self, name: str, use: str) -> None:
        def work(conn: Connection) -> None:
            row = self._db.require(conn, name, lock=True)
            conn.execute("UPDATE mailboxes SET special_use = %s WHERE id = %s", (use, row.id))

        self._db.write(work)
