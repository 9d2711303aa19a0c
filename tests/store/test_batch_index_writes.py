"""One batch's index writes gathered per batch (sealmail.store.disk.index_writes): uids and
counts as if written one by one, a copy refused in the middle of a batch costs no one else a uid,
and quota checks inside a batch see the copies before them."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.store.conftest import make_config

from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.errors import OverQuota, StoreError

pytestmark = pytest.mark.disk_only("the SQLite index's rows")

MESSAGE = b"From: a@example.com\r\nSubject: batch\r\n\r\n" + b"body\r\n" * 20


def _index_rows(tmp_path: Path, name: str) -> tuple[tuple[int, ...], list[int], list[int]]:
    with sqlite3.connect(tmp_path / "config" / "mailboxes.db") as conn:
        row = conn.execute("SELECT id, uidnext, highestmodseq, exists_count, size_bytes"
                           " FROM mailboxes WHERE name = ?", (name,)).fetchone()
        uids = [u for (u,) in conn.execute(
            "SELECT uid FROM messages WHERE mailbox_id = ? ORDER BY uid", (row[0],))]
        headers = [u for (u,) in conn.execute(
            "SELECT uid FROM header_index WHERE mailbox_id = ? ORDER BY uid", (row[0],))]
    return tuple(row[1:]), uids, headers


def test_a_copy_refused_mid_batch_leaves_the_others_uids_and_counts_exact(
    tmp_path: Path,
) -> None:
    disk = DiskStore.from_config(make_config(tmp_path))
    with disk:
        for name in ("user.a", "user.b", "user.c"):
            disk.create_mailbox(name)

        def move_c(point: str) -> None:
            if point == "staged":  # staged on "default"; now user.c lives on "second"
                disk.spool._fault_hook = None
                disk.delete_mailbox("user.c")
                disk.create_mailbox("user.c", partition="second")

        disk.spool._fault_hook = move_c
        names = ["user.a", "user.c", "user.a", "user.b", "user.a"]
        results = disk.deliver(MESSAGE, [DeliveryTarget(n) for n in names])
        assert [r.uid if isinstance(r, AppendedMessage) else None for r in results] == [
            1, None, 2, 1, 3
        ]
        assert isinstance(results[1], StoreError) and "moved" in str(results[1])
        assert [r.modseq for r in results if isinstance(r, AppendedMessage)] == [2, 3, 2, 4]
        [again] = disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
        assert isinstance(again, AppendedMessage) and (again.uid, again.modseq) == (4, 5)
        assert disk.message_bytes("user.a", 3).endswith(MESSAGE)
    size = len(MESSAGE)
    assert _index_rows(tmp_path, "user.a") == ((5, 5, 4, 4 * size), [1, 2, 3, 4], [1, 2, 3, 4])
    assert _index_rows(tmp_path, "user.b") == ((2, 2, 1, size), [1], [1])
    assert _index_rows(tmp_path, "user.c") == ((1, 1, 0, 0), [], [])


def test_a_quota_check_inside_a_batch_counts_the_copies_before_it(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.a.sub")
        disk.set_quota("user.a", None, 2)
        results = disk.deliver(
            MESSAGE, [DeliveryTarget(n) for n in ("user.a", "user.a.sub", "user.a", "user.a")]
        )
        assert [type(r) for r in results] == [
            AppendedMessage, AppendedMessage, OverQuota, OverQuota
        ]
    assert _index_rows(tmp_path, "user.a")[1:] == ([1], [1])
    assert _index_rows(tmp_path, "user.a.sub")[1:] == ([1], [1])


def test_a_copy_that_fails_after_its_link_fails_the_batch_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step after a copy's link (its quota warning mark) refusing it must not leave the copy
    committed while its recipient hears an error (a duplicate on the sender's retry): the
    batch fails, every file it linked goes, and a retry delivers once."""
    from sealmail.store import quota
    from sealmail.store.api import QuotaWarn

    def refuse(*args: object) -> None:
        raise StoreError("the warning mark could not be written")

    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.b")
        disk.set_quota("user.a", 1000, None)
        targets = [DeliveryTarget("user.b"), DeliveryTarget("user.a", quota_warn=QuotaWarn(90))]
        monkeypatch.setattr(quota.BatchUsages, "note_append", refuse)
        results = disk.deliver(MESSAGE, targets)
        assert all(isinstance(r, StoreError) for r in results), results
        monkeypatch.undo()
        assert all(isinstance(r, AppendedMessage) and r.uid == 1
                   for r in disk.deliver(MESSAGE, targets))
    assert _index_rows(tmp_path, "user.a")[1:] == ([1], [1])
    assert _index_rows(tmp_path, "user.b")[1:] == ([1], [1])
    files = sorted(p.name for p in tmp_path.rglob("1.") if p.is_file())
    assert files == ["1.", "1."]  # one per mailbox: nothing left of the failed batch


def test_a_quota_check_inside_a_batch_counts_earlier_copies_under_nested_roots(
    tmp_path: Path,
) -> None:
    """A copy below a nested root counts toward the outer root too (its subtree holds it)."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        for name in ("user.a", "user.a.sub", "user.a.sub.x", "user.ab"):
            disk.create_mailbox(name)
        disk.set_quota("user.a", None, 2)
        disk.set_quota("user.a.sub", None, 10)
        disk.set_quota("user.ab", None, 1)  # a name sharing the prefix, not the subtree
        names = ("user.a.sub.x", "user.ab", "user.a.sub", "user.a", "user.ab")
        results = disk.deliver(MESSAGE, [DeliveryTarget(n) for n in names])
        assert [type(r) for r in results] == [
            AppendedMessage, AppendedMessage, AppendedMessage, OverQuota, OverQuota
        ]


def test_a_batch_warns_once_at_the_copy_that_crosses_the_level(tmp_path: Path) -> None:
    from sealmail.store.api import QuotaWarn

    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.a.sub")
        disk.set_quota("user.a", None, 4)
        warn = QuotaWarn(50)
        results = disk.deliver(MESSAGE, [
            DeliveryTarget(n, quota_warn=warn) for n in ("user.a", "user.a.sub", "user.a")
        ])
        assert [r.quota_warning is not None for r in results  # type: ignore[union-attr]
                ] == [False, True, False]
        [again] = disk.deliver(MESSAGE, [DeliveryTarget("user.a", quota_warn=warn)])
        assert isinstance(again, AppendedMessage) and again.quota_warning is None  # warned


def test_the_governing_usage_in_one_statement_is_the_roots_usage(tmp_path: Path) -> None:
    """store.quota.governing_usage (quota_for, every RCPT under a root) against quota_root_of
    and usage_of, on nested roots, a name sharing a root's prefix and a domain's mailboxes."""
    from sealmail.store import quota

    names = ("user.a", "user.a.sub", "user.a.sub.x", "user.ab", "user.b", "shared",
             "shared.x", "example.com!user.c", "example.com!user.c.y")
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        for name in names:
            disk.create_mailbox(name)
        for root, kb, count in (("user.a", 10, None), ("user.a.sub", None, 5), ("shared", 1, 1),
                                ("example.com!user.c", None, 3)):
            disk.set_quota(root, kb, count)
        for n, name in enumerate(names):
            disk.deliver(MESSAGE * (n + 1), [DeliveryTarget(name, ignore_quota=True)])
        conn = disk.spool.index.connection()
        for name in names:
            root = quota.quota_root_of(conn, name)
            expected = None if root is None else quota.usage_of(conn, root)
            assert quota.governing_usage(conn, name) == expected, name
            assert disk.quota_for(name) == expected
