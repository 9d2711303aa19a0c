"""One group commit's index writes, gathered and issued per batch rather than per message.

A delivery used to run four statements per copy inside the batch's transaction (the mailbox row,
INSERT into messages, INSERT into header_index, UPDATE of the mailbox row): for 50 recipients
200 statements, each a round through the sqlite3 module. Here the batch's mailbox rows are read
in one query, each copy's uid and modseq drawn from the row kept in memory (the transaction holds
SQLite's write lock, so no one else draws them meanwhile), and the rows written with four
`executemany` at the end, before the directory fsync and the COMMIT. A message delivered to
`SHARED_FROM` mailboxes or more has its listed fields written once (`header_content`: store.index,
version 11) instead of in each copy's row; below that, a new row in that table (a random place in
its B-tree: ~2 index pages) costs more than the copies' octets it saves (docs/benchmarks.md,
copy18). Quota checks do not read these rows before the end: the batch's usage is kept in memory
from its start (store.quota.BatchUsages).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from typing import Any

from sealmail.store.disk.layout import (
    ADD_CONTENT,
    INSERT_STRUCTURE,
    MAILBOX_COLUMNS,
    ROW_LIST,
    ROW_PLACES,
    header_key,
)

NAMES_PER_QUERY = 500  # under SQLite's bound on host parameters (999 before 3.32)
SHARED_FROM = 6  # copies of a message from which its listed fields are kept once (see above)
_COLUMNS = f"{MAILBOX_COLUMNS}, recentuid"
_RECENT = 11  # a kept row: MAILBOX_COLUMNS (0-8), messages and bytes added (9, 10), recentuid


def _kept(found: tuple[Any, ...]) -> list[Any]:
    """A mailbox row as the batch keeps it (see _RECENT), from a row of _COLUMNS."""
    return [*found[:9], 0, 0, found[9]]


class IndexWrites:
    """The mailbox rows a batch touches and the rows it adds, until `flush`."""

    def __init__(self, conn: sqlite3.Connection, names: Iterable[str]) -> None:
        self._conn = conn
        self._rows: dict[str, list[Any] | None] = {}  # None: no such mailbox
        self._messages: list[tuple[Any, ...]] = []
        self._structures: list[tuple[int, bytes]] = []  # (header_key, the kept parse)
        self._headers: list[tuple[Any, ...]] = []
        self._contents: dict[str, list[Any]] = {}  # guid -> [copies added, listed fields]
        self._added: dict[int, list[Any]] = {}  # mailbox id -> its row, with its added count/bytes
        # Whether any quota root exists (store.quota.BatchUsages is needed), from the same
        # query as the rows: one statement less per commit. No row found: nothing to append.
        self.quota_roots = False
        distinct = list(dict.fromkeys(names))
        for start in range(0, len(distinct), NAMES_PER_QUERY):
            chunk = distinct[start : start + NAMES_PER_QUERY]
            for row in conn.execute(
                f"SELECT {_COLUMNS}, EXISTS (SELECT 1 FROM quotaroots) FROM mailboxes"
                f" WHERE name IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                self._rows[row[1]] = _kept(row)
                self.quota_roots = bool(row[-1])

    def mailbox(self, name: str) -> list[Any] | None:
        """The row of `name` as this batch leaves it (MAILBOX_COLUMNS, then the messages and
        bytes added, then the index's \\Recent mark); None when there is no such mailbox."""
        row = self._rows.get(name)
        if row is None and name not in self._rows:
            found = self._conn.execute(
                f"SELECT {_COLUMNS} FROM mailboxes WHERE name = ?", (name,)
            ).fetchone()
            row = self._rows[name] = None if found is None else _kept(found)
        return row

    def add(self, row: list[Any], message: tuple[Any, ...], header: tuple[Any, ...],
            shared: bool) -> None:
        """Note a message appended to the mailbox of `row` at its uidnext and highestmodseq + 1
        (read them from `row` first): `message` is its messages row after (mailbox_id, uid,
        modseq) and then its kept parse or None (a `structures` row), `header` its header_index
        row after (mailbox_id, uid); `shared`: its listed fields (header[1]) kept once for the
        content rather than in this row."""
        mailbox_id, uid, modseq = row[0], row[5], row[6] + 1
        key = header_key(mailbox_id, uid)
        self._messages.append((mailbox_id, uid, modseq, *message[:5]))
        if message[5] is not None:
            self._structures.append((key, message[5]))
        if shared:
            guid = message[2]
            content = self._contents.get(guid)
            if content is None:
                self._contents[guid] = [1, header[1]]
            else:
                content[0] += 1
            self._headers.append((key, mailbox_id, uid, header[0], None, *header[2:]))
        else:
            self._headers.append((key, mailbox_id, uid, *header))
        row[5], row[6] = uid + 1, modseq
        row[9] += 1
        row[10] += message[1]  # size
        self._added[mailbox_id] = row

    def claim_recent(self, row: list[Any], uid: int, stored_mark: Callable[[], int]) -> bool:
        """Raise the index's \\Recent mark of the mailbox of `row` to `uid`, a copy `add`ed
        just now, if every UID below it is claimed already (the index's mark or, read only when
        that is behind, `stored_mark()`, the marks file's: sealmail.store.disk.recent); whether
        it was. The mark commits with the copy, in the same row: no session can see the copy
        unclaimed, nor claim an older UID meanwhile (they are all claimed, and a mark never goes
        down), so the copy is \\Recent for the appender alone, without a claim of its own."""
        if row[_RECENT] < uid - 1 and stored_mark() < uid - 1:
            return False
        row[_RECENT] = uid
        return True

    def flush(self) -> None:
        """Write what was noted (inside the batch's transaction)."""
        conn = self._conn
        if self._messages:
            conn.executemany(
                "INSERT INTO messages (mailbox_id, uid, modseq, internaldate, size, guid, flags,"
                " filename) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                self._messages,
            )
            if self._structures:
                conn.executemany(INSERT_STRUCTURE, self._structures)
            conn.executemany(
                f"INSERT OR REPLACE INTO header_index (id, mailbox_id, uid, {ROW_LIST})"
                f" VALUES (?, ?, ?, {ROW_PLACES})",
                self._headers,
            )
            if self._contents:
                conn.executemany(
                    ADD_CONTENT,
                    [(guid, copies, listed) for guid, (copies, listed) in self._contents.items()],
                )
        if self._added:
            conn.executemany(
                "UPDATE mailboxes SET uidnext = ?, highestmodseq = ?, exists_count ="
                " exists_count + ?, size_bytes = size_bytes + ?, recentuid = ? WHERE id = ?",
                [(row[5], row[6], row[9], row[10], row[_RECENT], mailbox_id)
                 for mailbox_id, row in self._added.items()],
            )
            for row in self._added.values():
                row[9] = row[10] = 0
        self._messages, self._headers, self._contents, self._added = [], [], {}, {}
        self._structures = []
