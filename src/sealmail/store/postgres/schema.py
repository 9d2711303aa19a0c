"""The PostgreSQL store's tables, as numbered migrations applied in order.

`migrate` brings a database up to the last version under a transaction-scoped advisory lock, so
nodes starting at once apply each step exactly once; a node that finds a newer version than it
knows refuses to run rather than write rows it does not understand.

Names are compared as Python compares text (by code point): every name column is COLLATE "C",
whatever the database's locale, so that the subtree ranges of sealmail.store.quota
(`name.` <= x < `name/`) and LIST order mean the same as in the other backends.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealmail.store.errors import StoreUnavailable

if TYPE_CHECKING:
    import psycopg

# Any constant the nodes agree on: pg_advisory_xact_lock's key for "a migration is running".
_MIGRATION_LOCK = 0x5EA1_0001

MIGRATIONS: tuple[str, ...] = (
    # 1: the whole store.
    """
    CREATE TABLE counters (
        name text PRIMARY KEY,
        value bigint NOT NULL
    );
    -- Mailboxes: the counters a delivery bumps live on the row it locks.
    CREATE TABLE mailboxes (
        id bigserial PRIMARY KEY,
        name text COLLATE "C" NOT NULL UNIQUE,
        uniqueid text NOT NULL UNIQUE,
        partition text NOT NULL,
        uidvalidity bigint NOT NULL,
        uidnext bigint NOT NULL DEFAULT 1,
        highestmodseq bigint NOT NULL DEFAULT 1,
        recentuid bigint NOT NULL DEFAULT 0,   -- the owner's \\Recent mark
        special_use text NOT NULL DEFAULT '',
        size_bytes bigint NOT NULL DEFAULT 0,  -- quota usage, kept under the row lock
        exists_count bigint NOT NULL DEFAULT 0
    );
    CREATE TABLE mailbox_acl (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        position integer NOT NULL,
        identifier text NOT NULL,
        rights text NOT NULL,
        PRIMARY KEY (mailbox_id, identifier)
    );
    -- Quota roots (Cyrus's): a mailbox with limits governs its whole subtree.
    CREATE TABLE quota_roots (
        mailbox_id bigint PRIMARY KEY REFERENCES mailboxes ON DELETE CASCADE,
        storage_kb bigint,
        messages bigint
    );
    -- Message bytes by SHA-256, once for the whole site, in chunks (sealmail.store.postgres.blobs).
    CREATE TABLE blob_chunks (
        sha256 bytea NOT NULL,
        seq integer NOT NULL,
        data bytea NOT NULL,
        PRIMARY KEY (sha256, seq)
    );
    CREATE TABLE blobs (
        sha256 bytea PRIMARY KEY,
        size bigint NOT NULL,
        created timestamptz NOT NULL DEFAULT now()
    );
    -- One row per delivery (or APPEND): what was worked out from the bytes once.
    CREATE TABLE messages (
        id bigserial PRIMARY KEY,
        blob bytea NOT NULL,
        guid text NOT NULL,
        size bigint NOT NULL,
        internaldate double precision NOT NULL,
        headers bytea,
        listed bytea NOT NULL,
        structure bytea,
        sentdate double precision,
        subject text COLLATE "C" NOT NULL,
        base_subject text COLLATE "C" NOT NULL,
        from_mailbox text COLLATE "C" NOT NULL,
        from_display text COLLATE "C" NOT NULL,
        to_mailbox text COLLATE "C" NOT NULL,
        to_display text COLLATE "C" NOT NULL,
        cc_mailbox text COLLATE "C" NOT NULL,
        message_id text NOT NULL,
        refs text NOT NULL,
        in_reply_to text NOT NULL
    );
    CREATE INDEX messages_blob ON messages (blob);
    CREATE TABLE mailbox_message (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        message_id bigint NOT NULL REFERENCES messages,
        modseq bigint NOT NULL,
        flags text[] NOT NULL,  -- system flags and keywords, in the order they were set
        PRIMARY KEY (mailbox_id, uid)
    );
    CREATE INDEX mailbox_message_modseq ON mailbox_message (mailbox_id, modseq);
    CREATE INDEX mailbox_message_message ON mailbox_message (message_id);
    -- Expunged UIDs with the modseq of their expunge (RFC 7162 QRESYNC VANISHED).
    CREATE TABLE expunged (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        uid bigint NOT NULL,
        modseq bigint NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    );
    -- Readers who do not own a mailbox keep their own \\Seen and \\Recent (sealmail.store.seen).
    CREATE TABLE seen_states (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        userid text NOT NULL,
        uids text NOT NULL,
        PRIMARY KEY (mailbox_id, userid)
    );
    CREATE TABLE recent_marks (
        mailbox_id bigint NOT NULL REFERENCES mailboxes ON DELETE CASCADE,
        userid text NOT NULL,
        uid bigint NOT NULL,
        PRIMARY KEY (mailbox_id, userid)
    );
    CREATE TABLE subscriptions (
        userid text NOT NULL,
        name text COLLATE "C" NOT NULL,
        PRIMARY KEY (userid, name)
    );
    """,
    # 2: leases, what one node holds for a while against every other (a delivery slot of a
    # user, later the POP lock and the cleanup leader); a crashed holder's lease runs out.
    """
    CREATE TABLE leases (
        name text PRIMARY KEY,
        holder text NOT NULL,
        expires timestamptz NOT NULL
    );
    """,
    # 3: imapd.conf quotawarn: true once a delivery took the root to the warning level and its
    # user was warned; false again when a delivery finds it below (sealmail.store.quota).
    """
    ALTER TABLE quota_roots ADD COLUMN warned boolean NOT NULL DEFAULT false;
    """,
    # 4: what was per node before: duplicatesuppression's deliveries (every node must see the
    # others'), and when each maildrop's last POP session ended (popminpoll), beside the
    # POP lock's lease.
    """
    CREATE TABLE duplicate_deliveries (
        message_id text NOT NULL,
        mailbox text NOT NULL,
        marked double precision NOT NULL,
        PRIMARY KEY (message_id, mailbox)
    );
    CREATE INDEX duplicate_deliveries_marked ON duplicate_deliveries (marked);
    CREATE TABLE pop_logins (
        mailbox text PRIMARY KEY,
        last_login double precision NOT NULL
    );
    """,
    # 5: when a message row was written, for the sweeper's grace period (rows already there
    # count as written now).
    """
    ALTER TABLE messages ADD COLUMN created timestamptz NOT NULL DEFAULT now();
    CREATE INDEX blobs_created ON blobs (created);
    """,
)

VERSION = len(MIGRATIONS)


def migrate(conn: psycopg.Connection[tuple[object, ...]]) -> int:
    """Apply the missing migrations in one transaction; the version the database is at."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
            " applied timestamptz NOT NULL DEFAULT now())"
        )
        row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()
        current = int(row[0]) if row is not None else 0  # type: ignore[call-overload]
        if current > VERSION:
            raise StoreUnavailable(
                f"the database is at schema version {current}; this sealmail knows {VERSION}"
            )
        for version in range(current + 1, VERSION + 1):
            conn.execute(MIGRATIONS[version - 1].encode())
            conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (version,))
    return VERSION
