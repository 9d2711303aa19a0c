from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import HEADER_NAME, DiskStore
from sealmail.store.errors import MailboxNotFound

pytestmark = pytest.mark.disk_only("reconstruct repairs the disk store's files and index")


def _sql(store: DiskStore, statement: str, *args: object) -> None:
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute(statement, args)
    conn.close()


@pytest.fixture
def filled(store: DiskStore) -> DiskStore:
    store.create_mailbox("user.a")
    for body in (b"one\r\n", b"two\r\n", b"three\r\n"):
        store.deliver(body, [DeliveryTarget("user.a")])
    return store


def test_clean_mailbox_needs_nothing(filled: DiskStore) -> None:
    assert filled.reconstruct("user.a") == []
    assert filled.reconstruct_all() == []
    with pytest.raises(MailboxNotFound):
        filled.reconstruct("user.nobody")


def test_missing_file_removes_row_and_recounts(filled: DiskStore) -> None:
    (filled.mailbox_path("user.a") / "2.").unlink()
    modseq = filled.mailbox("user.a").highestmodseq  # type: ignore[union-attr]
    fixes = filled.reconstruct("user.a")
    assert any("UID 2 has no file" in f for f in fixes)
    assert [r.uid for r in filled.messages("user.a")] == [1, 3]
    info = filled.mailbox("user.a")
    assert info is not None and info.exists == 2 and info.highestmodseq > modseq
    assert filled.reconstruct("user.a") == []


def test_changed_file_gets_size_and_guid_fixed(filled: DiskStore) -> None:
    (filled.mailbox_path("user.a") / "1.").write_bytes(b"longer one\r\n")
    assert filled.reconstruct("user.a")
    record = filled.messages("user.a")[0]
    assert record.size == len(b"longer one\r\n")
    usage_bytes = sum(r.size for r in filled.messages("user.a"))
    filled.set_quota("user.a", 100, None)
    assert filled.quota_for("user.a").storage_used == usage_bytes  # type: ignore[union-attr]
    assert filled.reconstruct("user.a") == []


def test_lost_row_is_reindexed_and_expunged_debris_removed(filled: DiskStore) -> None:
    path = filled.mailbox_path("user.a")
    _sql(filled, "DELETE FROM messages WHERE uid = 2")  # a damaged index
    filled.expunge("user.a", [3])
    (path / "3.").write_bytes(b"three\r\n")  # as if the unlink after commit never ran
    fixes = filled.reconstruct("user.a")
    assert len([f for f in fixes if "re-indexed" in f]) == 1
    assert len([f for f in fixes if "removed uncommitted or expunged" in f]) == 1
    assert [r.uid for r in filled.messages("user.a")] == [1, 2]
    assert not (path / "3.").exists()
    assert filled.reconstruct("user.a") == []


def test_orphan_directory_is_adopted_with_new_uidvalidity(filled: DiskStore) -> None:
    old = filled.mailbox("user.a")
    assert old is not None
    _sql(filled, "DELETE FROM mailboxes WHERE name = 'user.a'")  # index entry lost
    assert filled.mailbox("user.a") is None
    fixes = filled.reconstruct("user.a")
    assert len(fixes) == 1 and "re-created" in fixes[0]
    new = filled.mailbox("user.a")
    assert new is not None and new.uniqueid == old.uniqueid
    assert new.uidvalidity > old.uidvalidity and new.uidnext == 4 and new.exists == 3
    assert filled.message_bytes("user.a", 3) == b"three\r\n"
    assert new.acl == old.acl
    assert filled.reconstruct_all() == []


def test_reconstruct_all_adopts_and_removes_deleted_leftovers(filled: DiskStore) -> None:
    filled.create_mailbox("user.b")
    b_path = filled.mailbox_path("user.b")
    _sql(filled, "DELETE FROM mailboxes WHERE name = 'user.a'")
    # A delete that crashed after its commit: row gone, tombstone and directory left.
    _sql(filled, "INSERT INTO tombstones VALUES (?, 'default')", b_path.name)
    _sql(filled, "DELETE FROM mailboxes WHERE name = 'user.b'")
    fixes = filled.reconstruct_all()
    assert len(fixes) == 2, fixes
    assert not b_path.exists()
    assert [m.name for m in filled.list_mailboxes()] == ["user.a"]
    assert filled.reconstruct_all() == []


def test_stale_header_is_rewritten(filled: DiskStore) -> None:
    header = filled.mailbox_path("user.a") / HEADER_NAME
    header.write_bytes(b"garbage")
    assert filled.reconstruct("user.a") == [f"user.a: rewrote {HEADER_NAME}"]
    assert b'"user.a"' in header.read_bytes()


def test_missing_directory_is_recreated(filled: DiskStore, tmp_path: Path) -> None:
    path = filled.mailbox_path("user.a")
    for entry in path.iterdir():
        entry.unlink()
    path.rmdir()
    fixes = filled.reconstruct("user.a")
    assert path.is_dir() and filled.messages("user.a") == []
    assert len(fixes) == 6  # directory, header, three rows, usage
    assert filled.reconstruct("user.a") == []
