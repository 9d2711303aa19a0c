"""Reading a mailbox on PostgreSQL: records, snapshots, contents, and SEARCH / SORT / THREAD
from the forms worked out at delivery (sealmail.store.headers, sealmail.store.sorting: the same
functions as the other backends). Each call reads one snapshot (Database.read)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial

from sealmail.store.api import FlagSnapshot, HeaderMatches, MailboxChanges, MessageRecord
from sealmail.store.errors import NoSuchMessage
from sealmail.store.headers import INDEXED_FIELDS, VALUE_SEPARATOR, encode, indexed_value
from sealmail.store.postgres.database import Connection, Database, MailboxRow
from sealmail.store.postgres.userdata import recent_mark, seen_of
from sealmail.store.seen import UidSet, with_seen
from sealmail.store.sorting import SORT_KEYS, SortValue, ThreadFields

_RECORD = ("SELECT mm.uid, mm.modseq, m.internaldate, m.size, m.guid, mm.flags"
           " FROM mailbox_message mm JOIN messages m ON m.id = mm.message_id"
           " WHERE mm.mailbox_id = %s")

# SORT keys (RFC 5256 3, RFC 5957) as SQL over the messages columns: what
# sealmail.store.sorting.sort_value computes; text columns are COLLATE "C" (code point order).
_SORT_SQL = {
    "ARRIVAL": "m.internaldate",
    "DATE": "coalesce(m.sentdate, m.internaldate)",
    "SIZE": "m.size",
    "SUBJECT": "m.base_subject",
    "FROM": "m.from_mailbox",
    "TO": "m.to_mailbox",
    "CC": "m.cc_mailbox",
    "DISPLAYFROM": "m.from_display",
    "DISPLAYTO": "m.to_display",
}
assert frozenset(_SORT_SQL) == SORT_KEYS


def _record(row: Sequence[object], seen: UidSet | None) -> MessageRecord:
    uid, modseq, internaldate, size, guid, flags = row
    assert isinstance(flags, list)
    kept = tuple(str(f) for f in flags)
    if seen is not None:
        kept = with_seen(kept, uid in seen)
    return MessageRecord(int(uid), int(modseq), float(internaldate), int(size),  # type: ignore[call-overload, arg-type]
                         str(guid), kept)


class Reading:
    def __init__(self, db: Database) -> None:
        self._db = db

    def _records(
        self, name: str, reader: str | None, where: str = "", params: tuple[object, ...] = ()
    ) -> list[MessageRecord]:
        def work(conn: Connection) -> list[MessageRecord]:
            row = self._db.require(conn, name)
            seen = seen_of(conn, row, reader)
            rows = conn.execute((_RECORD + where + " ORDER BY mm.uid").encode(),
                                (row.id, *params)).fetchall()
            return [_record(r, seen) for r in rows]

        return self._db.read(work)

    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]:
        return self._records(name, reader)

    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]:
        return self._records(name, reader, " AND mm.uid = ANY(%s)", (sorted(set(uids)),))

    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]:
        return self._records(name, reader, " AND mm.modseq > %s", (modseq,))

    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot:
        def work(conn: Connection) -> FlagSnapshot:
            row = self._db.require(conn, name)
            seen = seen_of(conn, row, reader)
            rows = conn.execute(
                "SELECT uid, modseq, flags FROM mailbox_message WHERE mailbox_id = %s"
                " ORDER BY uid", (row.id,)
            ).fetchall()
            ids: dict[tuple[str, ...], int] = {}
            uids, modseqs, flag_ids = [], [], []
            for uid, modseq, flags in rows:
                kept = tuple(flags) if seen is None else with_seen(flags, uid in seen)
                uids.append(int(uid))
                modseqs.append(int(modseq))
                flag_ids.append(ids.setdefault(kept, len(ids)))
            return FlagSnapshot(self._db.info(conn, row), uids, modseqs, flag_ids, list(ids))

        return self._db.read(work)

    def expunged_since(self, name: str, modseq: int) -> list[int]:
        def work(conn: Connection) -> list[int]:
            row = self._db.require(conn, name)
            return [int(r[0]) for r in conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                (row.id, modseq),
            ).fetchall()]

        return self._db.read(work)

    def mailbox_changes(
        self, name: str, modseq: int, reader: str | None = None
    ) -> MailboxChanges | None:
        """One read-only transaction: the mailbox row, and only when it moved past `modseq`
        the changed records, the expunged UIDs and the reader's \\Recent mark."""
        def work(conn: Connection) -> MailboxChanges | None:
            row = self._db.row(conn, name)
            if row is None:
                return None
            counters = (row.uidvalidity, row.uidnext, row.highestmodseq, row.exists)
            if row.highestmodseq == modseq:
                return MailboxChanges(*counters)
            seen = seen_of(conn, row, reader)
            changed = [_record(r, seen) for r in conn.execute(
                (_RECORD + " AND mm.modseq > %s ORDER BY mm.uid").encode(), (row.id, modseq)
            ).fetchall()]
            expunged = [int(r[0]) for r in conn.execute(
                "SELECT uid FROM expunged WHERE mailbox_id = %s AND modseq > %s ORDER BY uid",
                (row.id, modseq),
            ).fetchall()]
            return MailboxChanges(*counters, changed, expunged, recent_mark(conn, row, reader))

        return self._db.read(work)

    # ------------------------------------------------------------------ contents

    def message_bytes(self, name: str, uid: int) -> bytes:
        content = next(self.message_contents(name, [uid]))
        if content is None:
            raise NoSuchMessage(f"no message with UID {uid} in {name!r}")
        return content

    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]:
        """Each message's bytes (its first `limit`), None for a UID not there. Which blob each
        UID names is read now, in one snapshot; the bytes one message at a time as the caller
        goes on (a FETCH of many large messages never holds them all), which is safe because a
        blob never changes and outlives an expunge by the sweeper's grace period."""
        def work(conn: Connection) -> dict[int, bytes]:
            row = self._db.require(conn, name)
            return {int(uid): bytes(blob) for uid, blob in conn.execute(
                "SELECT mm.uid, m.blob FROM mailbox_message mm"
                " JOIN messages m ON m.id = mm.message_id"
                " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s)",
                (row.id, sorted(set(uids))),
            ).fetchall()}

        return self._contents(self._db.read(work), list(uids), limit)

    def _contents(
        self, blobs: dict[int, bytes], uids: list[int], limit: int | None
    ) -> Iterator[bytes | None]:
        for uid in uids:
            digest = blobs.get(uid)
            if digest is None:
                yield None
            else:
                yield self._db.read(partial(self._db.blobs.get, digest=digest, limit=limit))

    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        def work(conn: Connection) -> dict[int, bytes]:
            row = self._db.require(conn, name)
            return {int(uid): bytes(structure) for uid, structure in conn.execute(
                "SELECT mm.uid, m.structure FROM mailbox_message mm"
                " JOIN messages m ON m.id = mm.message_id"
                " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s) AND m.structure IS NOT NULL",
                (row.id, sorted(set(uids))),
            ).fetchall()}

        return self._db.read(work)

    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None:
        """The IMAP layer's parse of each message, kept with the message (copies share it)."""
        if not structures:
            return

        def work(conn: Connection) -> None:
            row = self._db.require(conn, name)
            with conn.cursor() as cursor:
                cursor.executemany(
                    "UPDATE messages SET structure = %s FROM mailbox_message mm"
                    " WHERE mm.mailbox_id = %s AND mm.uid = %s AND messages.id = mm.message_id",
                    [(blob, row.id, uid) for uid, blob in structures.items()],
                )

        self._db.write(work)

    # ------------------------------------------------------------------ search, sort, thread

    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches:
        """As the other backends: from the searchable forms (sealmail.store.headers)."""
        field = field.lower()
        wanted = encode(needle.casefold())

        def work(conn: Connection) -> list[tuple[object, ...]]:
            row = self._db.require(conn, name)
            return conn.execute(
                "SELECT mm.uid, m.headers FROM mailbox_message mm"
                " JOIN messages m ON m.id = mm.message_id WHERE mm.mailbox_id = %s"
                " ORDER BY mm.uid", (row.id,)
            ).fetchall()

        rows = self._db.read(work)
        if field not in INDEXED_FIELDS or VALUE_SEPARATOR in wanted:
            return HeaderMatches([], [int(r[0]) for r in rows])  # type: ignore[call-overload]
        matched: list[int] = []
        unanswered: list[int] = []
        for uid, headers in rows:
            if headers is None:
                unanswered.append(int(uid))  # type: ignore[call-overload]
                continue
            assert isinstance(headers, bytes)
            value = indexed_value(headers, field)
            if value is not None and wanted in value:
                matched.append(int(uid))  # type: ignore[call-overload]
        return HeaderMatches(matched, unanswered)

    def listed_headers(self, name: str, uids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        def work(conn: Connection) -> dict[int, tuple[int, bytes]]:
            row = self._db.require(conn, name)
            return {int(uid): (int(size), bytes(listed)) for uid, size, listed in conn.execute(
                "SELECT mm.uid, m.size, m.listed FROM mailbox_message mm"
                " JOIN messages m ON m.id = mm.message_id"
                " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s)",
                (row.id, sorted(set(uids))),
            ).fetchall()}

        return self._db.read(work)

    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Ordered by `keys` (most significant first), ties in UID order (RFC 5256 3)."""
        order = [f"{_SORT_SQL[key]} {'DESC' if reverse else 'ASC'}" for key, reverse in keys]
        query = ("SELECT mm.uid FROM mailbox_message mm JOIN messages m ON m.id = mm.message_id"
                 " WHERE mm.mailbox_id = %s ORDER BY " + ", ".join([*order, "mm.uid"]))

        def work(conn: Connection) -> list[int]:
            row: MailboxRow = self._db.require(conn, name)
            return [int(r[0]) for r in conn.execute(query.encode(), (row.id,)).fetchall()]

        return self._db.read(work)

    def sort_values(self, name: str, keys: Sequence[tuple[str, bool]],
                    uids: Sequence[int]) -> dict[int, tuple[SortValue, ...]]:
        """The values of `keys`, as `sorted_uids` orders by them, of the messages `uids`."""
        columns = "".join(f", {_SORT_SQL[key]}" for key, _ in keys)
        query = (f"SELECT mm.uid{columns} FROM mailbox_message mm"
                 " JOIN messages m ON m.id = mm.message_id"
                 " WHERE mm.mailbox_id = %s AND mm.uid = ANY(%s)")

        def work(conn: Connection) -> dict[int, tuple[SortValue, ...]]:
            row: MailboxRow = self._db.require(conn, name)
            return {int(r[0]): tuple(r[1:]) for r in conn.execute(
                query.encode(), (row.id, sorted(set(uids)))).fetchall()}

        return self._db.read(work) if uids else {}

    def thread_fields(self, name: str, since: int = 0) -> list[ThreadFields]:
        def work(conn: Connection) -> list[ThreadFields]:
            row = self._db.require(conn, name)
            return [ThreadFields(int(uid), str(mid), str(refs), str(irt), str(subject),
                                 str(base), float(internaldate if sent is None else sent))
                    for uid, mid, refs, irt, subject, base, sent, internaldate in conn.execute(
                        "SELECT mm.uid, m.message_id, m.refs, m.in_reply_to, m.subject,"
                        " m.base_subject, m.sentdate, m.internaldate FROM mailbox_message mm"
                        " JOIN messages m ON m.id = mm.message_id WHERE mm.mailbox_id = %s"
                        " AND mm.uid > %s ORDER BY mm.uid", (row.id, since)
                    ).fetchall()]

        return self._db.read(work)
