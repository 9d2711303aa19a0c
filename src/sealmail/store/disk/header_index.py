"""SEARCH, SORT and THREAD from the index's header rows (sealmail.store.headers and
sealmail.store.sorting); a message without its row gets it from the first query that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from sealmail.store.api import HeaderMatches
from sealmail.store.disk.layout import (
    HEADER_OF_MAILBOX,
    JOIN_HEADER,
    LISTED,
    ROW_LIST,
    ROW_PLACES,
    Spool,
    header_key,
    require_mailbox,
)
from sealmail.store.headers import (
    FIELD_SEPARATOR,
    INDEXED_FIELDS,
    LENGTH_DIGITS,
    NAME_SEPARATOR,
    VALUE_SEPARATOR,
    encode,
    listed_form,
    searchable_form,
)
from sealmail.store.sorting import SortValue, ThreadFields, sort_fields

# RFC 5256 3 and RFC 5957 sort keys over `messages AS m` joined with `header_index AS h`.
_SORT_EXPRESSIONS = {
    "ARRIVAL": "m.internaldate",
    "DATE": "coalesce(h.sentdate, m.internaldate)",  # RFC 5256 2.2: else the internal date
    "SIZE": "m.size",
    "SUBJECT": "h.base_subject",
    "FROM": "h.from_mailbox",
    "TO": "h.to_mailbox",
    "CC": "h.cc_mailbox",
    "DISPLAYFROM": "h.from_display",
    "DISPLAYTO": "h.to_display",
}



class HeaderIndex:
    """Header searches, sort orders and thread fields, answered from `header_index`."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool

    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches:
        """UIDs whose header field `field` (any occurrence) contains `needle`, compared
        casefolded on the decoded value (RFC 9051 6.4.4), from `header_index` alone.

        Messages without a row yet (stored before the index had the table) are indexed first,
        once. `unanswered`: the UIDs whose header has no searchable form, or every UID when the
        field is not one the index keeps (sealmail.store.headers.INDEXED_FIELDS) or the needle
        could match across two occurrences of the field.
        """
        field = field.lower()
        wanted = encode(needle.casefold())
        with self._spool.reading() as conn:
            row = require_mailbox(conn, name)
            mailbox_id = row[0]
            if field not in INDEXED_FIELDS or VALUE_SEPARATOR in wanted:
                uids = conn.execute(
                    "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (mailbox_id,)
                ).fetchall()
                return HeaderMatches([], [uid for (uid,) in uids])
            indexed, exists = conn.execute(
                f"SELECT (SELECT count(*) FROM header_index WHERE {HEADER_OF_MAILBOX}),"
                " exists_count"
                " FROM mailboxes WHERE id = ?1",
                (mailbox_id,),
            ).fetchone()
        if indexed != exists:
            self._index_headers(name, mailbox_id, self._spool.directory(row[3], row[2]))
        key = FIELD_SEPARATOR + field.encode() + NAME_SEPARATOR
        # The value: after "RS name US", `length` octets announced by the digits there. Only
        # octets up to the field's own are looked at: the common fields come first.
        at = "instr(fields, ?2) + ?3"
        value = f"substr(fields, {at} + {LENGTH_DIGITS}, CAST(substr(fields, {at}, {LENGTH_DIGITS})"
        with self._spool.reading() as conn:
            rows = conn.execute(
                f"SELECT uid, fields IS NULL FROM header_index WHERE {HEADER_OF_MAILBOX}"
                " AND (fields IS NULL OR (instr(fields, ?2) > 0"
                f" AND instr({value} AS INTEGER)), ?4) > 0))"
                " ORDER BY id",
                (mailbox_id, key, len(key), wanted),
            ).fetchall()
        matched = [uid for uid, unknown in rows if not unknown]
        return HeaderMatches(matched, [uid for uid, unknown in rows if unknown])

    def listed_headers(self, name: str, uids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        """The size and the fields clients list folders with (sealmail.store.headers.
        listed_form) of those of `uids` that exist, from the index alone, in one query (the
        copy's row, else its content's: `header_content`); rows without them (older than index
        version 6, or a content's row dropped early) are filled first, for the whole mailbox,
        reading each file once."""
        wanted = set(uids)
        if not wanted:
            return {}
        found: dict[int, tuple[int, bytes | None]] = {}
        for attempt in range(2):
            with self._spool.reading() as conn:
                row = require_mailbox(conn, name)
                rows = conn.execute(
                    f"SELECT m.uid, m.size, {LISTED} FROM messages AS m {JOIN_HEADER}"
                    " WHERE m.mailbox_id = ? AND m.uid BETWEEN ? AND ?",
                    (row[0], min(wanted), max(wanted)),
                ).fetchall()
            if len(rows) == len(wanted) == max(wanted) - min(wanted) + 1:
                found = {uid: (size, listed) for uid, size, listed in rows}  # all of a range
            else:
                found = {uid: (size, listed) for uid, size, listed in rows if uid in wanted}
            missing = any(listed is None for _, listed in found.values())
            if not missing:
                return cast(dict[int, tuple[int, bytes]], found)  # no None left in it
            if attempt:
                break
            self._index_headers(name, row[0], self._spool.directory(row[3], row[2]))
        return {uid: (size, listed) for uid, (size, listed) in found.items()
                if listed is not None}

    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Every UID of `name`, ordered by `keys` ((RFC 5256 / RFC 5957 sort key, reverse),
        most significant first); messages equal on all keys stay in UID order (RFC 5256 3).

        From the sortable form in the index (sealmail.store.sorting), filled first for the
        messages that lack it; SQLite orders the mailbox, no file is opened.
        """
        order = "".join(f"{_SORT_EXPRESSIONS[key]}{' DESC' if reverse else ''}, "
                        for key, reverse in keys)
        rows = self._sortable(
            name,
            f"SELECT m.uid, h.base_subject IS NULL FROM messages AS m {JOIN_HEADER}"
            " WHERE m.mailbox_id = ?"
            f" ORDER BY {order}m.uid",
        )
        return [row[0] for row in rows]

    def sort_values(self, name: str, keys: Sequence[tuple[str, bool]],
                    uids: Sequence[int]) -> dict[int, tuple[SortValue, ...]]:
        """The values of `keys` (as `sorted_uids` orders by them; None for a message whose
        sortable form could not be made) of the messages `uids` that exist: what a kept order
        needs to place new messages (sealmail.imap.orders) without ordering the mailbox."""
        if not uids:
            return {}
        columns = "".join(f", {_SORT_EXPRESSIONS[key]}" for key, _ in keys)
        listed = ",".join(str(int(uid)) for uid in sorted(set(uids)))
        rows = self._sortable(
            name,
            f"SELECT m.uid, h.base_subject IS NULL{columns} FROM messages AS m {JOIN_HEADER}"
            f" WHERE m.mailbox_id = ? AND m.uid IN ({listed})",
        )
        return {row[0]: tuple(row[2:]) for row in rows}

    def thread_fields(self, name: str, since: int = 0) -> list[ThreadFields]:
        """What THREAD needs of every message of `name` with a UID above `since`, in UID order
        (sortable form, as for `sorted_uids`)."""
        rows = self._sortable(
            name,
            "SELECT m.uid, h.base_subject IS NULL, ifnull(h.message_id, ''), ifnull(h.refs, ''),"
            " ifnull(h.in_reply_to, ''), ifnull(h.subject, ''), ifnull(h.base_subject, ''),"
            " coalesce(h.sentdate, m.internaldate) FROM messages AS m"
            f" {JOIN_HEADER} WHERE m.mailbox_id = ? AND m.uid > {int(since)} ORDER BY m.uid",
        )
        return [ThreadFields(row[0], *row[2:]) for row in rows]

    def _sortable(self, name: str, query: str) -> list[tuple[Any, ...]]:
        """The rows of `query` (its second column: whether the message lacks its sortable
        form) once every message has its sortable form: filled first when one lacks it."""
        for _ in range(2):
            with self._spool.reading() as conn:
                row = require_mailbox(conn, name)
                rows = conn.execute(query, (row[0],)).fetchall()
            if not any(row[1] for row in rows):
                break
            self._index_headers(name, row[0], self._spool.directory(row[3], row[2]))
        return rows  # still lacking only where a file could not be read: sorted as empty

    def _index_headers(self, name: str, mailbox_id: int, directory: Path) -> None:
        """Give every message of a mailbox its header_index row, with its searchable and its
        sortable form (a backfill after a migration or a repair); drop rows of messages that
        are gone."""
        with self._spool.reading() as conn:
            missing = [
                (uid, filename)
                for uid, filename in conn.execute(
                    f"SELECT m.uid, m.filename FROM messages AS m {JOIN_HEADER}"
                    f" WHERE m.mailbox_id = ? AND (h.base_subject IS NULL OR {LISTED} IS NULL)",
                    (mailbox_id,),
                )
            ]
        rows: list[tuple[object, ...]] = []
        for uid, filename in missing:
            try:
                data = (directory / filename).read_bytes()
            except OSError:
                continue  # searched from the file (and reported) by the caller
            rows.append((header_key(mailbox_id, uid), mailbox_id, uid, searchable_form(data),
                         listed_form(data), *sort_fields(data), mailbox_id, uid))
        with self._spool.index.transaction() as conn:
            # Only for messages still there: an expunge may have come in between.
            conn.executemany(
                f"INSERT OR REPLACE INTO header_index (id, mailbox_id, uid, {ROW_LIST})"
                f" SELECT ?, ?, ?, {ROW_PLACES}"
                " WHERE EXISTS (SELECT 1 FROM messages WHERE mailbox_id = ? AND uid = ?)",
                rows,
            )
            conn.execute(
                f"DELETE FROM header_index WHERE {HEADER_OF_MAILBOX} AND uid NOT IN"
                " (SELECT uid FROM messages WHERE mailbox_id = ?1)",
                (mailbox_id,),
            )
