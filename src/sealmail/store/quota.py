"""Quota roots as Cyrus keeps them: a root is a mailbox name and covers its whole subtree.

`user.alice` with a limit governs `user.alice` and every `user.alice.*`; the governing root of a
mailbox is its nearest ancestor-or-self that has a quota. Storage limits are in KiB (IMAP QUOTA,
RFC 9208 5.1: STORAGE is in units of 1024 octets), usage is kept in bytes; message limits count
messages.

Warnings (imapd.conf quotawarn): a delivery that takes a root from below its warning level to at
or above it is reported once, and the root's `warned` mark (kept with its limits, committed with
the delivery) stops every later delivery from reporting it again. A delivery that finds the root
below the level (mail was expunged, a limit raised) clears the mark, so the next crossing warns
again. Deliveries are serialised by the index's write transaction, so of many concurrent
deliveries exactly one crosses.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

from sealmail.store.api import QuotaUsage, QuotaWarn, UsageChange
from sealmail.store.errors import OverQuota
from sealmail.store.names import parent_of


def subtree_bounds(name: str) -> tuple[str, str]:
    """Half-open range of names strictly below `name`: ('name.', 'name/'); '/' follows '.'."""
    return name + ".", name + "/"


def ancestors_or_self(name: str) -> list[str]:
    chain = [name]
    parent = parent_of(name)
    while parent is not None:
        chain.append(parent)
        parent = parent_of(parent)
    return chain


def quota_root_of(conn: sqlite3.Connection, name: str) -> str | None:
    """The nearest ancestor-or-self of `name` that is a quota root."""
    chain = ancestors_or_self(name)
    placeholders = ",".join("?" * len(chain))
    rows = conn.execute(
        f"SELECT root FROM quotaroots WHERE root IN ({placeholders})", chain
    ).fetchall()
    roots = {root for (root,) in rows}
    for candidate in chain:
        if candidate in roots:
            return candidate
    return None


def governing_usage(conn: sqlite3.Connection, name: str) -> QuotaUsage | None:
    """`usage_of(quota_root_of(name))` in one statement: the nearest ancestor-or-self that is a
    root is the longest of them. One read of the index, not three: every RCPT to a mailbox
    under a root asks it (~25 -> ~10 us a recipient on lmtpd's event loop; issue 18)."""
    chain = ancestors_or_self(name)
    in_range = "name = root OR (name >= root || '.' AND name < root || '/')"  # subtree_bounds
    row = conn.execute(
        "SELECT root, storage_limit, messages_limit,"
        f" (SELECT coalesce(sum(size_bytes), 0) FROM mailboxes WHERE {in_range}),"
        f" (SELECT coalesce(sum(exists_count), 0) FROM mailboxes WHERE {in_range})"
        f" FROM quotaroots WHERE root IN ({','.join('?' * len(chain))})"
        " ORDER BY length(root) DESC LIMIT 1",
        chain,
    ).fetchone()
    if row is None:
        return None
    root, storage_limit, messages_limit, used_bytes, used_messages = row
    return QuotaUsage(root, int(used_bytes), storage_limit, int(used_messages), messages_limit)


def usage_of(conn: sqlite3.Connection, root: str) -> QuotaUsage | None:
    limits = conn.execute(
        "SELECT storage_limit, messages_limit FROM quotaroots WHERE root = ?", (root,)
    ).fetchone()
    if limits is None:
        return None
    used_bytes, used_messages = subtree_usage(conn, root)
    return QuotaUsage(root, used_bytes, limits[0], used_messages, limits[1])


def subtree_usage(conn: sqlite3.Connection, root: str) -> tuple[int, int]:
    """Bytes and messages in `root` and every mailbox below it, from their rows."""
    low, high = subtree_bounds(root)
    used_bytes, used_messages = conn.execute(
        "SELECT coalesce(sum(size_bytes), 0), coalesce(sum(exists_count), 0) FROM mailboxes"
        " WHERE name = ? OR (name >= ? AND name < ?)",
        (root, low, high),
    ).fetchone()
    return int(used_bytes), int(used_messages)


class BatchUsages:
    """The quota roots of one delivery batch's mailboxes, inside its write transaction: each
    root's limits, usage and `warned` mark read once, at the start, then kept in memory as the
    batch's copies go in (`appended`, `note_append`). The transaction holds the index's write
    lock, so these are the figures the mailbox rows would give after each copy: a copy no longer
    writes the batch's rows so far and asks four queries before its check (with a quota root
    per user, as Cyrus operators set them, ~45 us of every copy at 50 recipients; issue 18).

    A copy to mailbox M counts toward every root whose subtree holds M, i.e. M itself and each
    prefix of M that ends before a "." (`subtree_bounds`'s range, as `usage_of` sums it)."""

    NAMES_PER_QUERY = 500  # under SQLite's bound on host parameters (999 before 3.32)

    def __init__(self, conn: sqlite3.Connection, names: Iterable[str]) -> None:
        self._conn = conn
        chains = {name: ancestors_or_self(name) for name in dict.fromkeys(names)}
        candidates = list(dict.fromkeys(c for chain in chains.values() for c in chain))
        found: dict[str, tuple[int | None, int | None, int]] = {}
        for start in range(0, len(candidates), self.NAMES_PER_QUERY):
            chunk = candidates[start : start + self.NAMES_PER_QUERY]
            for root, storage, messages, warned in conn.execute(
                "SELECT root, storage_limit, messages_limit, warned FROM quotaroots"
                f" WHERE root IN ({','.join('?' * len(chunk))})",
                chunk,
            ):
                found[root] = (storage, messages, warned)
        # mailbox -> the root governing it (its nearest ancestor-or-self that is a root)
        self._roots = {
            name: next((c for c in chain if c in found), None) for name, chain in chains.items()
        }
        self._usages: dict[str, QuotaUsage] = {}  # root -> its usage as the batch goes
        self._warned: dict[str, bool] = {}
        for root in dict.fromkeys(r for r in self._roots.values() if r is not None):
            storage, messages, warned = found[root]
            used_bytes, used_messages = subtree_usage(conn, root)
            self._usages[root] = QuotaUsage(root, used_bytes, storage, used_messages, messages)
            self._warned[root] = bool(warned)

    def usage(self, name: str) -> QuotaUsage | None:
        """The usage of the root governing mailbox `name` (one of the batch's), or None."""
        root = self._roots[name]
        return None if root is None else self._usages[root]

    def appended(self, name: str, size: int) -> None:
        """A message of `size` bytes went into mailbox `name`: every root above it counts it."""
        usages = self._usages
        if not usages:
            return
        roots = [name]
        at = name.find(".")
        while at >= 0:
            roots.append(name[:at])
            at = name.find(".", at + 1)
        for root in roots:
            usage = usages.get(root)
            if usage is not None:
                usages[root] = after_append(usage, size)

    def note_append(self, before: QuotaUsage, size: int, warn: QuotaWarn) -> QuotaUsage | None:
        """A message of `size` bytes went in under the root at `before`: its `warned` mark
        updated (written with the delivery's transaction, only when it changes); the usage after
        it when a warning is due."""
        warned = self._warned[before.root]
        after = after_append(before, size)
        level = at_warning_level(after, warn)
        if level != warned:
            self._conn.execute(
                "UPDATE quotaroots SET warned = ? WHERE root = ?", (int(level), before.root)
            )
            self._warned[before.root] = level
        return after if warning_due(before, size, warn, warned) else None


def enforce(usage: QuotaUsage, incoming_size: int, incoming_messages: int) -> None:
    """OverQuota when the root is already full, or when the incoming mail would overflow it.

    With incoming_size 0 (lmtp_strict_quota off) only a root at or over its limit refuses, as
    Cyrus does at RCPT time; the final check at delivery passes the real size and count.
    """
    if usage.storage_limit is not None:
        limit = usage.storage_limit * 1024
        if usage.storage_used >= limit or (
            incoming_size > 0 and usage.storage_used + incoming_size > limit
        ):
            raise OverQuota(
                f"quota root {usage.root}: storage {usage.storage_used} + {incoming_size} bytes"
                f" exceeds {usage.storage_limit} KiB"
            )
    if usage.messages_limit is not None and (
        usage.messages_used >= usage.messages_limit
        or usage.messages_used + incoming_messages > usage.messages_limit
    ):
        raise OverQuota(
            f"quota root {usage.root}: {usage.messages_used} messages, limit {usage.messages_limit}"
        )


def enforce_at_rcpt(usage: QuotaUsage, incoming_size: int) -> None:
    """The RCPT-time check (every store's check_quota): `incoming_size` 0 refuses only a root
    already full; a size (lmtp_strict_quota) counts the message too."""
    enforce(usage, incoming_size, 1 if incoming_size > 0 else 0)


def at_warning_level(usage: QuotaUsage, warn: QuotaWarn) -> bool:
    """Cyrus's quotawarn: usage at or above `percent` of a limit; quotawarnkb/quotawarnmsg, when
    set and not above the limit itself, further require that less than that be left."""
    if warn.percent <= 0:
        return False
    storage_limit = None if usage.storage_limit is None else usage.storage_limit * 1024
    return _near(usage.storage_used, storage_limit, warn.percent, warn.storage_kb * 1024) or _near(
        usage.messages_used, usage.messages_limit, warn.percent, warn.messages
    )


def _near(used: int, limit: int | None, percent: int, left_below: int) -> bool:
    if not limit:
        return False  # no limit, or a limit of 0 (everything refused: nothing to warn of)
    if used * 100 < percent * limit:
        return False
    return left_below <= 0 or limit < left_below or limit - used < left_below


def after_append(usage: QuotaUsage, size: int) -> QuotaUsage:
    return QuotaUsage(
        usage.root, usage.storage_used + size, usage.storage_limit, usage.messages_used + 1,
        usage.messages_limit,
    )


def warning_due(before: QuotaUsage, size: int, warn: QuotaWarn, warned: bool) -> bool:
    """Does appending `size` bytes to a root at `before` owe the user a warning?"""
    return at_warning_level(after_append(before, size), warn) and (
        not warned or not at_warning_level(before, warn)
    )


def all_usages(conn: sqlite3.Connection) -> list[QuotaUsage]:
    roots = [root for (root,) in conn.execute("SELECT root FROM quotaroots ORDER BY root")]
    return [usage for root in roots if (usage := usage_of(conn, root)) is not None]


def repair(conn: sqlite3.Connection, root: str) -> list[UsageChange]:
    """Inside a write transaction: recount every mailbox under `root` from its message rows
    (the counters a delivery or an expunge bumps) and say how the root's usage changed.

    Deliveries commit their rows and counters in one transaction, so a recount that holds the
    write lock sees both or neither: repairing while lmtpd delivers loses no message's bytes.
    """
    before = usage_of(conn, root)
    if before is None:
        return []
    low, high = subtree_bounds(root)
    conn.execute(
        "UPDATE mailboxes SET"
        " exists_count = (SELECT count(*) FROM messages m WHERE m.mailbox_id = mailboxes.id),"
        " size_bytes = (SELECT coalesce(sum(size), 0) FROM messages m"
        "               WHERE m.mailbox_id = mailboxes.id)"
        " WHERE name = ? OR (name >= ? AND name < ?)",
        (root, low, high),
    )
    after = usage_of(conn, root)
    assert after is not None
    changes = []
    if before.storage_used != after.storage_used:
        changes.append(UsageChange(root, "STORAGE", before.storage_used, after.storage_used))
    if before.messages_used != after.messages_used:
        changes.append(UsageChange(root, "MESSAGE", before.messages_used, after.messages_used))
    return changes
