"""The one SQLite index of the whole store: `configdirectory/mailboxes.db`.

WAL mode so readers never block the writer and a commit is visible to every process as soon as
it returns; synchronous=FULL so a COMMIT is on disk before it returns (a 250 depends on it); a
busy_timeout so concurrent readers wait out a checkpoint or a recovery instead of failing. Each
thread gets its own connection: the store runs in asyncio executor threads and sqlite3
connections must not be shared between threads mid-statement. Group commits write through one
connection per process instead (`Index.writer`, one committer at a time), which keeps its page
cache warm.

Writers (`Index.writing`) queue in two places: within a process on a thread lock, which hands
the turn on the moment it is released; across processes on SQLite's write lock, taken by
BEGIN IMMEDIATE retried in naps of at most 2 ms. SQLite's own busy handler sleeps 1, 2, 5, ...
then 100 ms per try, so with two imapd processes the lock sat free while the waiters slept
(docs/benchmarks.md, imaptest stress).

Per-mailbox usage (`exists_count`, `size_bytes`) is kept in the mailbox row by the same
transaction that adds or removes messages; quota usage of a root is the sum over its subtree.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from pathlib import Path

from sealmail.store.errors import DiskFull, MailboxBusy, MailboxCorrupt, StoreError
from sealmail.store.forks import FORKS
from sealmail.store.wal import switch_to_wal

SCHEMA_VERSION = 12

_NAP_FIRST = 0.0002  # seconds: a commit holds the write lock for about one fsync (~1 ms)
_NAP_MOST = 0.002

_SCHEMA = (
    # AUTOINCREMENT: an id is never reused, so rows left by a damaged index never attach
    # themselves to a mailbox created later.
    """CREATE TABLE mailboxes (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        uniqueid TEXT NOT NULL UNIQUE,
        partition TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uidnext INTEGER NOT NULL,
        highestmodseq INTEGER NOT NULL,
        acl TEXT NOT NULL,
        exists_count INTEGER NOT NULL DEFAULT 0,
        size_bytes INTEGER NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE messages (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        internaldate REAL NOT NULL,
        size INTEGER NOT NULL,
        guid TEXT NOT NULL,
        flags TEXT NOT NULL,
        filename TEXT NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID""",
    # RFC 7162 (QRESYNC) needs the modseq at which each uid vanished.
    """CREATE TABLE expunged (
        mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
        uid INTEGER NOT NULL,
        modseq INTEGER NOT NULL,
        PRIMARY KEY (mailbox_id, uid)
    ) WITHOUT ROWID""",
    """CREATE TABLE quotaroots (
        root TEXT PRIMARY KEY,
        storage_limit INTEGER,
        messages_limit INTEGER
    ) WITHOUT ROWID""",
    # Directories of deleted mailboxes whose files may still be on disk: reconstruct removes
    # them instead of resurrecting the mailbox from its metadata file.
    """CREATE TABLE tombstones (
        uniqueid TEXT PRIMARY KEY,
        partition TEXT NOT NULL
    ) WITHOUT ROWID""",
    "CREATE TABLE settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID",
)

# Migrations: _MIGRATIONS[v] takes a version-v index to v+1; a new index gets _SCHEMA and every
# migration, so both paths end at the same tables.
_MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        # IMAP: ENVELOPE and BODYSTRUCTURE parsed once per message and kept here (a cache: NULL
        # until the first FETCH that needs it; the bytes never change, so it never goes stale).
        "ALTER TABLE messages ADD COLUMN structure BLOB",
        # IMAP SUBSCRIBE / LSUB (RFC 9051 6.3.7): internal names, per authenticated identity;
        # a name may be subscribed that does not exist (RFC 9051 6.3.8).
        """CREATE TABLE subscriptions (
            userid TEXT NOT NULL,
            mailbox TEXT NOT NULL,
            PRIMARY KEY (userid, mailbox)
        ) WITHOUT ROWID""",
        # CREATE-SPECIAL-USE (RFC 6154): the special use of a mailbox, e.g. "\\Sent".
        "ALTER TABLE mailboxes ADD COLUMN special_use TEXT NOT NULL DEFAULT ''",
    ),
    2: (
        # IMAP SEARCH on header fields answered from the index (sealmail.store.headers): one
        # small row per message, written with it (delivery, COPY, reconstruct) and removed
        # with it. Apart from `messages` so that scanning a mailbox's flags stays cheap; per
        # (mailbox, uid) rather than per content so that a search reads one contiguous range
        # (a join on the content measured ten times slower) and a delivery to many mailboxes
        # adds one row each. Messages stored before this version get their row from the first
        # search that needs it, or from reconstruct. `fields` NULL: no searchable form.
        """CREATE TABLE header_index (
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            fields BLOB,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID""",
    ),
    3: (
        # IMAP \Recent (RFC 3501 2.3.2) and per-user \Seen, as Cyrus keeps them (see
        # sealmail.store.seen). `recentuid`: the highest UID a read-write session of the
        # mailbox's owner has been told about (Cyrus's index header field); messages already
        # there when the index is upgraded count as announced.
        "ALTER TABLE mailboxes ADD COLUMN recentuid INTEGER NOT NULL DEFAULT 0",
        "UPDATE mailboxes SET recentuid = uidnext - 1",
        # Everyone else's: the UIDs they have seen (a sequence set, Cyrus's `seenuids`) and
        # their own recent mark (Cyrus's `lastuid`), per mailbox and user.
        """CREATE TABLE seen (
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            userid TEXT NOT NULL,
            uids TEXT NOT NULL DEFAULT '',
            recentuid INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (mailbox_id, userid)
        ) WITHOUT ROWID""",
    ),
    4: (
        # IMAP SORT and THREAD from the index (sealmail.store.sorting): the sortable form of
        # each message beside its searchable form, written with it; NULL until the first SORT
        # or THREAD of the mailbox fills it (rows older than this version, or reconstructed).
        "ALTER TABLE header_index ADD COLUMN sentdate REAL",
        *(f"ALTER TABLE header_index ADD COLUMN {column} TEXT"
          for column in ("subject", "base_subject", "from_mailbox", "from_display", "to_mailbox",
                         "to_display", "cc_mailbox", "message_id", "refs", "in_reply_to")),
    ),
    5: (
        # IMAP FETCH BODY[HEADER.FIELDS (...)] of the fields clients list a folder with, from
        # the index (sealmail.store.headers.LISTED_FIELDS): those fields as sent, written with
        # the row; NULL until filled (older rows), and then read from the message file.
        "ALTER TABLE header_index ADD COLUMN listed BLOB",
    ),
    6: (
        # The searchable form gained the addresses of address fields as ENVELOPE parses them,
        # and the sortable form RFC 5256's base subject and collation and group addresses
        # (sealmail.store.headers, sealmail.store.sorting): every row is made again, by the
        # first SEARCH, SORT, THREAD or listing FETCH of each mailbox (as for older rows).
        "DELETE FROM header_index",
    ),
    7: (
        # imapd.conf quotawarn: 1 once a delivery took the root to the warning level and its
        # user was warned; cleared when a delivery finds it below (sealmail.store.quota).
        "ALTER TABLE quotaroots ADD COLUMN warned INTEGER NOT NULL DEFAULT 0",
    ),
    8: (
        # The namespace stamp (NAMESPACE_STAMP): bumped in the same transaction as any change
        # to which mailboxes exist, where they live, who may post to them or which quota roots
        # there are, by any process and any code path; never by a delivery. lmtpd keeps what a
        # RCPT looks up while the stamp holds (sealmail.delivery.recipient.StableLookups).
        "CREATE TABLE IF NOT EXISTS namespace (stamp INTEGER NOT NULL)",
        # From a random start: an index made again (reconstruct) never meets a stamp a
        # process still remembers from the old one.
        "INSERT INTO namespace SELECT abs(random() / 2) WHERE NOT EXISTS (SELECT 1 FROM namespace)",
        *(
            f"CREATE TRIGGER IF NOT EXISTS namespace_{name} AFTER {event} BEGIN"
            " UPDATE namespace SET stamp = stamp + 1; END"
            for name, event in (
                ("mailbox_added", "INSERT ON mailboxes"),
                ("mailbox_removed", "DELETE ON mailboxes"),
                ("mailbox_changed", "UPDATE OF name, uniqueid, partition, acl ON mailboxes"),
                ("root_added", "INSERT ON quotaroots"),
                ("root_removed", "DELETE ON quotaroots"),
                ("root_renamed", "UPDATE OF root ON quotaroots"),
            )
        ),
    ),
    9: (
        # Copies a batch delivery COMMITted while its stage files' fsync round still ran
        # (sealmail.store.disk.unconfirmed): `owner` the delivering process (boot id, pid,
        # start time), `round` its round. The owner deletes them once the round is done; the
        # next open after the owner died checks those left against their files.
        """CREATE TABLE IF NOT EXISTS unconfirmed (
            mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL,
            owner TEXT NOT NULL,
            round INTEGER NOT NULL,
            PRIMARY KEY (mailbox_id, uid)
        ) WITHOUT ROWID""",
    ),
    10: (
        # The listed fields (version 5's `header_index.listed`) of a message delivered to many
        # mailboxes, once for its content instead of in every copy's row (NULL there): only
        # point readers want them (FETCH of a listing: sealmail.store.disk.header_index.
        # listed_headers), for which a lookup by guid costs little, while a delivery to 50
        # mailboxes wrote them 50 times (docs/benchmarks.md, issue 18). What SEARCH, SORT and
        # THREAD scan stays per copy (see version 2), and so do the listed fields of a message
        # with few copies (sealmail.store.disk.index_writes.SHARED_FROM). `copies`: how many
        # `messages` rows name the guid, kept by the writers that add rows (delivery, COPY) and
        # by the trigger below for every row removed (expunge, a mailbox deleted with its rows):
        # the row goes with the last copy. A cache: a row missing (or gone early, a count too
        # low) is made again, in the copies' rows, by the first listing that wants it; one left
        # (a count too high) only takes room until reconstruct recounts.
        """CREATE TABLE IF NOT EXISTS header_content (
            guid TEXT PRIMARY KEY,
            copies INTEGER NOT NULL,
            listed BLOB NOT NULL
        ) WITHOUT ROWID""",
        "CREATE TRIGGER IF NOT EXISTS header_content_copies AFTER DELETE ON messages BEGIN"
        " DELETE FROM header_content WHERE guid = old.guid AND copies <= 1;"
        " UPDATE header_content SET copies = copies - 1 WHERE guid = old.guid; END",
        # header_index keyed by one integer, `mailbox_id << 32 | uid` (sealmail.store.disk.
        # layout.header_key), instead of WITHOUT ROWID on (mailbox_id, uid): the same order, so
        # a mailbox's rows stay one contiguous range (see version 2), but the B-tree's interior
        # cells hold an integer rather than a whole row, and a copy appended in the middle of
        # the tree rewrites fewer pages (2.46 -> 2.04 a copy at 50 recipients; docs/
        # benchmarks.md, copy18). A row inserted without its id (by hand) gets it from the
        # trigger. No foreign key (its cascade would want an index on mailbox_id): deleting a
        # mailbox deletes its range (sealmail.store.disk.mailboxes), and `reconstruct_all` the
        # rows of mailboxes gone otherwise (ids are never reused).
        """CREATE TABLE header_index_keyed (
            id INTEGER PRIMARY KEY,
            mailbox_id INTEGER NOT NULL,
            uid INTEGER NOT NULL,
            fields BLOB,
            sentdate REAL, subject TEXT, base_subject TEXT, from_mailbox TEXT, from_display TEXT,
            to_mailbox TEXT, to_display TEXT, cc_mailbox TEXT, message_id TEXT, refs TEXT,
            in_reply_to TEXT,
            listed BLOB
        )""",
        "INSERT INTO header_index_keyed SELECT (mailbox_id << 32) | uid, mailbox_id, uid, fields,"
        " sentdate, subject, base_subject, from_mailbox, from_display, to_mailbox, to_display,"
        " cc_mailbox, message_id, refs, in_reply_to, listed FROM header_index",
        "DROP TABLE header_index",
        "ALTER TABLE header_index_keyed RENAME TO header_index",
        "CREATE TRIGGER IF NOT EXISTS header_index_key AFTER INSERT ON header_index"
        " WHEN NEW.id != ((NEW.mailbox_id << 32) | NEW.uid) BEGIN"
        " UPDATE OR REPLACE header_index SET id = (NEW.mailbox_id << 32) | NEW.uid"
        " WHERE id = NEW.id; END",
        # Version 10's `unconfirmed` packed: one row per batch's round (COPY of such copies adds
        # one more) rather than one per copy, its copies in one value ("mailbox_id:uid ...").
        # The table is nearly always empty (a round's row goes with the process's next
        # transaction), so the few readers (COPY's `inherit`, recovery at open) read it whole
        # and unpack it (sealmail.store.disk.unconfirmed); a deleted mailbox's copies stay in
        # it until then, naming an id no mailbox has any more (ids are never reused).
        """CREATE TABLE IF NOT EXISTS unconfirmed_rounds (
            owner TEXT NOT NULL,
            round INTEGER NOT NULL,
            copies TEXT NOT NULL
        )""",
        "INSERT INTO unconfirmed_rounds (owner, round, copies)"
        " SELECT owner, round, group_concat(mailbox_id || ':' || uid, ' ') FROM unconfirmed"
        " GROUP BY owner, round",
        "DROP TABLE unconfirmed",
    ),
    11: (
        # The kept parses (version 1's `messages.structure`, ~0.5-1 KiB each) in a table of
        # their own, keyed as header_index is (sealmail.store.disk.layout.header_key). In the
        # WITHOUT ROWID `messages` every interior cell holds a whole row, so with the parse in
        # it a page held ~4 rows at every level: 65 leaves under 17 interior pages at 331
        # messages, a lookup 4 levels deep, an APPEND writing 2.4 pages of it and a STORE 1.5,
        # a SELECT's scan of the flags reading the parses' pages too. Without it a row is ~100
        # octets (the 1/20 of a page SQLite advises for WITHOUT ROWID), and the parses sit in
        # an integer-keyed B-tree whose interior cells are integers (docs/benchmarks.md,
        # append17b). A row goes with its message (the trigger: EXPUNGE, MOVE, a mailbox's
        # delete, reconstruct); written only for a message that is there (a cache, as before).
        """CREATE TABLE IF NOT EXISTS structures (
            id INTEGER PRIMARY KEY,
            structure BLOB NOT NULL
        )""",
        "INSERT OR REPLACE INTO structures (id, structure) SELECT (mailbox_id << 32) | uid,"
        " structure FROM messages WHERE structure IS NOT NULL",
        "ALTER TABLE messages DROP COLUMN structure",
        "CREATE TRIGGER IF NOT EXISTS structures_gone AFTER DELETE ON messages BEGIN"
        " DELETE FROM structures WHERE id = (old.mailbox_id << 32) | old.uid; END",
    ),
}

NAMESPACE_STAMP = "SELECT stamp FROM namespace"


def sqlite_error(exc: sqlite3.Error, what: str) -> StoreError:
    """The StoreError for an SQLite failure."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and ("locked" in text or "busy" in text):
        return MailboxBusy(f"{what}: index busy: {text}")
    if "full" in text:
        return DiskFull(f"{what}: {text}")
    if isinstance(exc, sqlite3.DatabaseError) and "malformed" in text:
        return MailboxCorrupt(f"{what}: {text}")
    return StoreError(f"{what}: {text}")


class _Connection(sqlite3.Connection):
    """A connection to the index that remembers the two settings its writers switch, so a
    transaction switches them only when they differ (a relaxed transaction cost four PRAGMAs,
    a durable one two, docs/benchmarks.md): `waits` is the long busy_timeout (readers wait out a
    checkpoint or a recovery), off while BEGIN IMMEDIATE naps instead (Index.begin) and put
    back before the connection next reads; `durable` is synchronous=FULL, off (NORMAL) for a
    relaxed transaction and put back by the next durable one (Index.transaction)."""

    waits = True
    durable = True


# Indexes that change no table, only how fast a query finds its rows: made if missing at every
# open, apart from the numbered migrations (an older sealmail reading the index keeps them up to
# date as SQLite does any index). `expunged` keeps a row per message ever expunged (RFC 7162
# VANISHED needs the modseq of each), so without its own index the sync's "expunged since
# modseq m" read every row of the mailbox's past: ~70 us per 1,000, after every command with
# news (imaptest expunges thousands a minute; docs/benchmarks.md, "... and the expunged table").
# `messages (mailbox_id, modseq)` serves the same sync's "changed since modseq m" (the messages
# of another session's STORE or delivery): without it every row of the mailbox was read, ~0.4 us
# each (a row carries its kept structure), at the price of one index entry per delivery, moved
# by each flag change. Queries that want UID order keep the primary key (ORDER BY uid).
_INDEXES = (
    "CREATE INDEX IF NOT EXISTS expunged_modseq ON expunged (mailbox_id, modseq)",
    "CREATE INDEX IF NOT EXISTS messages_modseq ON messages (mailbox_id, modseq)",
)


class Index:
    """Thread-local connections to the index, and short write transactions."""

    def __init__(self, path: Path, busy_timeout: float = 60.0) -> None:
        self.path = path
        self._busy_timeout = busy_timeout
        self._local = threading.local()
        self._writer = threading.Lock()  # this process's writers, one at a time
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        self._writer_conn: sqlite3.Connection | None = None
        self._writer_forks = -1
        self._migrate()

    def connection(self) -> sqlite3.Connection:
        """This thread's connection, with its long busy_timeout (a reader's)."""
        conn = self._own_connection()
        if not conn.waits:
            self._wait(conn, True)
        return conn

    def _own_connection(self) -> _Connection:
        """This thread's connection as a writer left it (see _Connection)."""
        conn: _Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = self.open_connection()
        return conn

    def writer(self) -> sqlite3.Connection:
        """This process's one connection for group commits, used only with `turn()` held.

        One connection rather than the committing thread's own: in WAL mode a connection drops
        its page cache whenever another connection committed since its last transaction, so
        with the leader role passing between threads every commit read the index pages again
        (17 preads per delivery, docs/benchmarks.md). Its checkpoints move to a thread of their
        own once the process is busy (sealmail.store.checkpoints).
        """
        if self._writer_conn is None or self._writer_forks != FORKS.count:
            # A forked child's own: the parent's stays the parent's.
            self._writer_conn, self._writer_forks = self.open_connection(), FORKS.count
        return self._writer_conn

    def open_connection(self) -> _Connection:
        """A new connection (WAL, synchronous=FULL), closed by close()."""
        if self._closed:
            raise StoreError("the store is closed")
        try:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_timeout,
                isolation_level=None,  # we issue BEGIN IMMEDIATE / COMMIT ourselves
                # So close() can close it, and the writer() pass between threads (under turn()).
                check_same_thread=False,
                factory=_Connection,
            )
            switch_to_wal(conn, self._busy_timeout)
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.path)) from exc
        with self._all_lock:
            self._all.append(conn)
        return conn

    @contextmanager
    def transaction(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock at once, so no upgrade deadlock.

        `durable=False` is for state nothing is promised about (a cached parse): its COMMIT
        does not wait for an fsync of the WAL (synchronous=NORMAL for this transaction, left
        so until the connection's next durable one). SQLite keeps the index consistent either
        way (WAL mode with NORMAL is safe from corruption); a power failure may only drop such
        commits made since the last durable one, whose fsync also covers every frame written
        before it.
        """
        with self.writing(durable) as conn:
            yield from self._committed(conn)

    def _committed(self, conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
        try:
            yield conn
        except BaseException as exc:
            self._rollback(conn)
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, str(self.path)) from exc
            raise
        try:
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            self._rollback(conn)
            raise sqlite_error(exc, str(self.path)) from exc

    @contextmanager
    def writing(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """This thread's connection inside a write transaction (BEGIN IMMEDIATE done), with
        this process's writer turn held; the caller COMMITs (fsynced unless not `durable`:
        see `transaction`). Whatever is left open on the way out is rolled back, and the turn
        handed on."""
        conn = self._own_connection()
        if conn.durable != durable:
            try:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
            except sqlite3.Error as exc:
                raise sqlite_error(exc, str(self.path)) from exc
            conn.durable = durable
        with self.turn():
            self.begin(conn)
            try:
                yield conn
            finally:
                self._rollback(conn)

    @contextmanager
    def writing_now(self, durable: bool = True) -> Iterator[sqlite3.Connection | None]:
        """As `writing`, if this process's writer turn and SQLite's write lock are both free
        this moment; None (and nothing held) if not: for writes that can wait for a later
        transaction rather than make their caller wait (sealmail.store.disk.structures)."""
        if not self._writer.acquire(blocking=False):
            yield None
            return
        try:
            conn = self._begun_now(durable)
            try:
                yield conn
            finally:
                if conn is not None:
                    self._rollback(conn)
        finally:
            self._writer.release()

    def _begun_now(self, durable: bool) -> _Connection | None:
        """This thread's connection in BEGIN IMMEDIATE, or None when another process writes."""
        conn = self._own_connection()
        try:
            if conn.durable != durable:
                conn.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
                conn.durable = durable
            if conn.waits:
                self._wait(conn, False)
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode & 0xFF == sqlite3.SQLITE_BUSY:
                return None
            raise sqlite_error(exc, str(self.path)) from exc
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.path)) from exc
        return conn

    def turn(self) -> AbstractContextManager[object]:
        """This process's writers, one at a time (see the top): held from before BEGIN
        IMMEDIATE until after COMMIT or ROLLBACK."""
        return self._writer

    def begin(self, conn: sqlite3.Connection) -> None:
        """BEGIN IMMEDIATE, retried in short naps while another process writes (see top);
        MailboxBusy after the busy timeout. The caller holds `turn()`. The connection's
        busy_timeout is 0 from here on (a writer's: `writer()`'s for good, the thread's until
        `connection()` hands it to a reader again)."""
        nap = _NAP_FIRST
        deadline: float | None = None
        try:
            if not isinstance(conn, _Connection) or conn.waits:
                self._wait(conn, False)
            while True:
                try:
                    conn.execute("BEGIN IMMEDIATE")
                    return
                except sqlite3.OperationalError as exc:
                    if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                        raise
                    now = time.monotonic()
                    if deadline is None:
                        deadline = now + self._busy_timeout
                    elif now >= deadline:
                        raise
                time.sleep(nap)
                nap = min(nap * 2, _NAP_MOST)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.path)) from exc

    def _wait(self, conn: sqlite3.Connection, waits: bool) -> None:
        """The long busy_timeout (a reader's) or none (a writer's, which naps: `begin`)."""
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000) if waits else 0}")
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.path)) from exc
        if isinstance(conn, _Connection):
            conn.waits = waits

    @staticmethod
    def _rollback(conn: sqlite3.Connection) -> None:
        if conn.in_transaction:
            with suppress(sqlite3.Error):  # SQLite already rolled back (e.g. after SQLITE_FULL)
                conn.execute("ROLLBACK")

    def _migrate(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        try:
            with self.transaction() as conn:
                (version,) = conn.execute("PRAGMA user_version").fetchone()
                if version == 0:
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    version = 1
                if 1 <= version < SCHEMA_VERSION:
                    for step in range(version, SCHEMA_VERSION):
                        for statement in _MIGRATIONS[step]:
                            conn.execute(statement)
                    conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
                elif version != SCHEMA_VERSION:
                    raise StoreError(
                        f"{self.path}: index schema version {version}, this sealmail knows "
                        f"{SCHEMA_VERSION}"
                    )
                for statement in _INDEXES:
                    conn.execute(statement)
        except sqlite3.Error as exc:
            raise sqlite_error(exc, str(self.path)) from exc

    def close(self) -> None:
        self._closed = True
        with self._all_lock:
            connections, self._all = self._all, []
        for conn in connections:
            conn.close()
        self._local = threading.local()
        self._writer_conn = None
