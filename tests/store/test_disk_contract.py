"""Contract of the store, on every backend (tests/store/conftest.py): every MessageStore method,
its results and its errors; the disk store's files besides where `on_disk`."""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.store.conftest import make_config, on_disk

from sealmail.config.imapd_conf import ConfigError, parse_imapd_conf
from sealmail.store.api import ALL_RIGHTS, AppendedMessage, DeliveryTarget, MessageStore
from sealmail.store.disk import HEADER_NAME, DiskStore, reading
from sealmail.store.errors import (
    InvalidMailboxName,
    InvalidQuota,
    InvalidRights,
    MailboxCorrupt,
    MailboxExists,
    MailboxNotFound,
    NoSuchMessage,
    OverQuota,
    PartitionNotFound,
)

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def test_is_a_message_store(store: DiskStore) -> None:
    def accepts(s: MessageStore) -> MessageStore:
        return s

    assert accepts(store) is store


def test_needs_its_default_partition(tmp_path: Path) -> None:
    config = parse_imapd_conf(f"configdirectory: {tmp_path}\n")
    with pytest.raises(ConfigError, match="defaultpartition"):
        DiskStore.from_config(config)


def test_create_and_look_up(store: DiskStore) -> None:
    info = store.create_mailbox("user.alice")
    assert info.name == "user.alice" and info.partition == "default"
    assert info.uidnext == 1 and info.exists == 0
    assert info.acl == {"alice": ALL_RIGHTS}
    assert store.mailbox("user.alice") == info
    assert store.mailbox("user.nobody") is None
    if on_disk(store):
        path = store.mailbox_path("user.alice")
        assert path.is_dir() and path.name == info.uniqueid
        assert path.parent.parent.parent == store.partitions["default"] / "uuid"
        assert (path / HEADER_NAME).is_file()


def test_create_errors(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    with pytest.raises(MailboxExists):
        store.create_mailbox("user.alice")
    with pytest.raises(InvalidMailboxName):
        store.create_mailbox("user..x")
    with pytest.raises(PartitionNotFound):
        store.create_mailbox("user.bob", partition="nowhere")
    with pytest.raises(MailboxNotFound):
        store.create_mailbox("user.carol.Lists")  # needs user.carol
    with pytest.raises(InvalidRights):
        store.create_mailbox("shared", acl={"anyone": "lz"})


def test_default_acls_follow_cyrus(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.set_acl("user.alice", "bob", "lr")
    assert store.create_mailbox("user.alice.Lists").acl == {"alice": ALL_RIGHTS, "bob": "lr"}
    assert store.create_mailbox("example.com!user.dave").acl == {"dave@example.com": ALL_RIGHTS}
    assert store.create_mailbox("Projects").acl == {"anyone": "lrs"}
    store.set_acl("Projects", "staff", "lrswi")
    assert store.create_mailbox("Projects.Web").acl == {"anyone": "lrs", "staff": "lrswi"}
    assert store.create_mailbox("Given", acl={"x": "lr"}).acl == {"x": "lr"}


def test_uidvalidity_strictly_increases_with_a_stuck_clock(
    config: object, open_store: Callable[..., DiskStore]
) -> None:
    disk = open_store(config, clock=lambda: 1_000_000.0)
    first = disk.create_mailbox("user.alice").uidvalidity
    disk.delete_mailbox("user.alice")
    second = disk.create_mailbox("user.alice").uidvalidity
    assert first == 1_000_000 and second == 1_000_001
    disk.close()


def test_delete_user_takes_subtree_and_files(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Lists")
    store.create_mailbox("user.alicex")
    store.set_quota("user.alice", 100, None)
    paths = [store.mailbox_path(n) for n in ("user.alice", "user.alice.Lists") if on_disk(store)]
    store.deliver(MESSAGE, [DeliveryTarget("user.alice.Lists")])
    store.delete_mailbox("user.alice")
    assert [m.name for m in store.list_mailboxes()] == ["user.alicex"]
    assert not any(p.exists() for p in paths)
    store.create_mailbox("user.alice")
    assert store.quota_for("user.alice") is None
    with pytest.raises(MailboxNotFound):
        store.delete_mailbox("user.nobody")


def test_delete_of_a_folder_keeps_its_children(store: DiskStore) -> None:
    store.create_mailbox("Projects")
    store.create_mailbox("Projects.Web")
    store.delete_mailbox("Projects")
    assert [m.name for m in store.list_mailboxes()] == ["Projects.Web"]


def test_rename_moves_subtree_quota_and_keeps_files(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Lists")
    store.create_mailbox("user.alice.Lists.Python")
    store.set_quota("user.alice.Lists", 10, 5)
    store.deliver(MESSAGE, [DeliveryTarget("user.alice.Lists")])
    path = store.mailbox_path("user.alice.Lists") if on_disk(store) else None
    store.rename_mailbox("user.alice.Lists", "user.alice.Archive")
    names = [m.name for m in store.list_mailboxes("user.alice")]
    assert names == ["user.alice", "user.alice.Archive", "user.alice.Archive.Python"]
    if path is not None:
        assert store.mailbox_path("user.alice.Archive") == path
    assert store.message_bytes("user.alice.Archive", 1) == MESSAGE
    usage = store.quota_for("user.alice.Archive.Python")
    assert usage is not None and usage.root == "user.alice.Archive" and usage.messages_used == 1
    if path is not None:
        assert b'"user.alice.Archive"' in (path / HEADER_NAME).read_bytes()


def test_rename_errors(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.A")
    store.create_mailbox("user.alice.B")
    with pytest.raises(MailboxExists):
        store.rename_mailbox("user.alice.A", "user.alice.B")
    with pytest.raises(MailboxNotFound):
        store.rename_mailbox("user.alice.Z", "user.alice.Y")
    with pytest.raises(InvalidMailboxName):
        store.rename_mailbox("user.alice.A", "user.alice.A.Inner")
    with pytest.raises(MailboxNotFound):
        store.rename_mailbox("user.alice.A", "user.bob.A")  # no user.bob


def test_list_by_prefix(store: DiskStore) -> None:
    for name in ("user.a", "user.a.x", "user.b", "shared"):
        store.create_mailbox(name)
    assert [m.name for m in store.list_mailboxes()] == ["shared", "user.a", "user.a.x", "user.b"]
    assert [m.name for m in store.list_mailboxes("user.a")] == ["user.a", "user.a.x"]
    if on_disk(store):
        with pytest.raises(MailboxNotFound):
            store.mailbox_path("nothing")


def test_set_acl(store: DiskStore) -> None:
    store.create_mailbox("Projects")
    store.set_acl("Projects", "bob", "lr")
    store.set_acl("Projects", "bob", "+w")
    store.set_acl("Projects", "anyone", "-s")
    store.set_acl("Projects", "-eve", "r")
    assert store.mailbox("Projects").acl == {  # type: ignore[union-attr]
        "anyone": "lr",
        "bob": "lrw",
        "-eve": "r",
    }
    store.set_acl("Projects", "bob", "")
    assert "bob" not in store.mailbox("Projects").acl  # type: ignore[union-attr]
    with pytest.raises(InvalidRights):
        store.set_acl("Projects", "bob", "+Q")
    with pytest.raises(MailboxNotFound):
        store.set_acl("Nope", "bob", "l")


def test_deliver_results_in_order_with_failures(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.bob")
    results = store.deliver(
        MESSAGE,
        [
            DeliveryTarget("user.alice", flags=("\\Seen", "\\Seen")),
            DeliveryTarget("user.nope"),
            DeliveryTarget("user.bob"),
            DeliveryTarget("user.alice"),
        ],
        internaldate=1234.5,
    )
    first, missing, bob, again = results
    assert isinstance(missing, MailboxNotFound)
    assert isinstance(first, AppendedMessage) and isinstance(again, AppendedMessage)
    assert (first.uid, again.uid) == (1, 2)  # the same mailbox twice gets two messages
    assert isinstance(bob, AppendedMessage) and bob.uid == 1
    assert first.size == len(MESSAGE)
    import hashlib

    assert first.guid == hashlib.sha1(MESSAGE).hexdigest()
    records = store.messages("user.alice")
    assert [(r.uid, r.flags, r.internaldate, r.size) for r in records] == [
        (1, ("\\Seen",), 1234.5, len(MESSAGE)),
        (2, (), 1234.5, len(MESSAGE)),
    ]
    info = store.mailbox("user.alice")
    assert info is not None and info.uidnext == 3 and info.exists == 2
    assert info.highestmodseq == again.modseq
    # What the auditlog's append line needs, with no second read: uniqueid and stored flags.
    assert (first.uniqueid, first.flags) == (info.uniqueid, ("\\Seen",))
    assert (again.uniqueid, again.flags) == (info.uniqueid, ())
    assert store.deliver(MESSAGE, []) == []
    if on_disk(store):
        store.sync_directories()  # the stage file stays until its directory fsyncs are done
        stage = store.partitions["default"] / "stage."
        assert list(stage.iterdir()) == []


def test_message_errors(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    with pytest.raises(NoSuchMessage):
        store.message_bytes("user.alice", 1)
    with pytest.raises(MailboxNotFound):
        store.messages("user.nope")
    with pytest.raises(MailboxNotFound):
        store.message_bytes("user.nope", 1)


def test_set_flags_bumps_modseq_of_changed_messages_only(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")] * 3)
    before = {r.uid: r.modseq for r in store.messages("user.alice")}
    assert store.set_flags("user.alice", [1, 2, 99], ["\\Seen"]) == 2
    after = {r.uid: r for r in store.messages("user.alice")}
    assert after[1].flags == ("\\Seen",) and after[1].modseq > before[1]
    assert after[3].modseq == before[3]
    unchanged = store.mailbox("user.alice").highestmodseq  # type: ignore[union-attr]
    assert store.set_flags("user.alice", [1], ["\\Seen"]) == 1
    assert store.mailbox("user.alice").highestmodseq == unchanged  # type: ignore[union-attr]
    assert store.set_flags("user.alice", [2], []) == 1
    assert store.messages("user.alice")[1].flags == ()


def test_expunge_removes_rows_and_files(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")] * 3)
    path = store.mailbox_path("user.alice") if on_disk(store) else None
    assert store.expunge("user.alice", [3, 1, 7, 1]) == [1, 3]
    assert [r.uid for r in store.messages("user.alice")] == [2]
    if path is not None:
        assert not (path / "1.").exists() and (path / "2.").exists()
    info = store.mailbox("user.alice")
    assert info is not None and info.exists == 1 and info.uidnext == 4
    usage_after = store.deliver(MESSAGE, [DeliveryTarget("user.alice")])[0]
    assert isinstance(usage_after, AppendedMessage) and usage_after.uid == 4  # never reused


def test_expunge_gives_each_message_its_own_modseq(store: DiskStore) -> None:
    """RFC 7162 3.2.10 (VANISHED (EARLIER) by modseq): an expunge of several scattered UIDs,
    some not there, gives each removed message its own modseq, ascending with its UID; the
    mailbox's counters and quota usage lose exactly what went."""
    store.create_mailbox("user.alice")
    bodies = [MESSAGE + b"x" * n for n in range(6)]
    for body in bodies:
        store.deliver(body, [DeliveryTarget("user.alice")])
    store.set_quota("user.alice", 10**6, None)
    before, usage = store.mailbox("user.alice"), store.quota_for("user.alice")
    assert before is not None and usage is not None
    assert store.expunge("user.alice", [5, 2, 9, 4, 2]) == [2, 4, 5]
    after = store.mailbox("user.alice")
    assert after is not None and after.exists == 3
    assert after.highestmodseq == before.highestmodseq + 3
    base = before.highestmodseq
    assert store.expunged_since("user.alice", base) == [2, 4, 5]
    assert store.expunged_since("user.alice", base + 1) == [4, 5]
    assert store.expunged_since("user.alice", base + 2) == [5]
    assert store.expunged_since("user.alice", base + 3) == []
    gone = sum(len(bodies[uid - 1]) for uid in (2, 4, 5))
    usage_after = store.quota_for("user.alice")
    assert usage_after is not None and usage_after.storage_used == usage.storage_used - gone
    assert store.expunge("user.alice", [2, 9]) == []
    assert store.mailbox("user.alice") == after  # nothing there: nothing changed


def test_quota_storage_and_messages(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Lists")
    assert store.quota_for("user.alice") is None
    store.check_quota("user.alice", 10**9)  # no quota, no limit
    store.set_quota("user.alice", 1, None)  # 1 KiB
    big = b"x" * 600
    first, second, forced = store.deliver(
        big,
        [
            DeliveryTarget("user.alice"),
            DeliveryTarget("user.alice.Lists"),
            DeliveryTarget("user.alice.Lists", ignore_quota=True),
        ],
    )
    assert isinstance(first, AppendedMessage)
    assert isinstance(second, OverQuota)  # the subtree shares the root
    assert isinstance(forced, AppendedMessage)
    usage = store.quota_for("user.alice.Lists")
    assert usage is not None and usage.storage_used == 1200 and usage.messages_used == 2
    with pytest.raises(OverQuota):
        store.check_quota("user.alice", 0)  # already over
    store.set_quota("user.alice", 10, 3)
    store.check_quota("user.alice", 0)
    store.check_quota("user.alice", 600)
    with pytest.raises(OverQuota):
        store.check_quota("user.alice", 20 * 1024)  # would exceed storage
    assert isinstance(store.deliver(big, [DeliveryTarget("user.alice")])[0], AppendedMessage)
    with pytest.raises(OverQuota):
        store.check_quota("user.alice", 0)  # at the message limit
    store.set_quota("user.alice.Lists", None, 100)  # a nearer root wins
    store.check_quota("user.alice.Lists", 0)
    store.set_quota("user.alice", None, None)
    assert store.quota_for("user.alice") is None
    with pytest.raises(InvalidQuota):
        store.set_quota("user.alice", -1, None)
    with pytest.raises(MailboxNotFound):
        store.set_quota("user.nobody", 1, 1)


def test_other_partition(store: DiskStore) -> None:
    store.create_mailbox("user.alice", partition="second")
    if on_disk(store):
        assert store.mailbox_path("user.alice").is_relative_to(store.partitions["second"])
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")])
    assert store.message_bytes("user.alice", 1) == MESSAGE


def test_reopen_sees_everything(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    with DiskStore.from_config(config) as first:
        first.create_mailbox("user.alice")
        first.deliver(MESSAGE, [DeliveryTarget("user.alice")])
    with DiskStore.from_config(config) as second:
        assert second.message_bytes("user.alice", 1) == MESSAGE
        assert os.path.exists(tmp_path / "config" / "mailboxes.db")


def test_flag_snapshot_records_and_contents(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    flags = [(), ("\\Seen",), ("\\Seen", "$Work"), ("\\Seen",), ()]
    for n, wanted in enumerate(flags):
        store.deliver(MESSAGE + b"%d\r\n" % n, [DeliveryTarget("user.alice", wanted)],
                      internaldate=1e9 + n)
    store.expunge("user.alice", [2])
    snapshot = store.flag_snapshot("user.alice")
    records = store.messages("user.alice")
    assert snapshot.mailbox == store.mailbox("user.alice")
    assert snapshot.uids == [r.uid for r in records] == [1, 3, 4, 5]
    assert snapshot.modseqs == [r.modseq for r in records]
    assert [snapshot.flag_sets[i] for i in snapshot.flag_ids] == [r.flags for r in records]
    assert len(snapshot.flag_sets) == 3  # one per distinct set
    store.create_mailbox("user.alice.Empty")
    empty = store.flag_snapshot("user.alice.Empty")
    assert (empty.uids, empty.modseqs, empty.flag_ids, empty.flag_sets) == ([], [], [], [])
    with pytest.raises(MailboxNotFound):
        store.flag_snapshot("user.nobody")

    assert store.message_records("user.alice", [5, 2, 1, 99]) == [records[0], records[3]]
    many = store.message_records("user.alice", list(range(1, 400)))  # the range-scan way
    assert many == records
    assert store.message_records("user.alice", []) == []

    contents = store.message_contents("user.alice", [4, 1])
    assert next(contents) == MESSAGE + b"3\r\n"  # read as drawn: files one at a time
    assert list(contents) == [MESSAGE + b"0\r\n"]
    assert list(store.message_contents("user.alice", [1, 2, 4], limit=5)) == [
        MESSAGE[:5], None, MESSAGE[:5]]  # UID 2 is gone; the start of each file only
    if on_disk(store):
        # A size the index got wrong (reconstruct repairs it) still gives the whole file.
        (store.mailbox_path("user.alice") / "5.").write_bytes(b"x" * 100_000)
        assert list(store.message_contents("user.alice", [5])) == [b"x" * 100_000]


def test_update_flags_writes_only_changes(store: DiskStore) -> None:
    store.create_mailbox("user.alice")
    for wanted in [("\\Seen",), ()]:
        store.deliver(MESSAGE, [DeliveryTarget("user.alice", wanted)])
    before = store.mailbox("user.alice")
    assert before is not None
    update = store.update_flags("user.alice", [1, 2], ["\\Seen"], "add")
    after = store.mailbox("user.alice")
    assert after is not None and after.highestmodseq == before.highestmodseq + 1
    assert [(r.uid, r.flags) for r in update.records] == [(1, ("\\Seen",)), (2, ("\\Seen",))]
    update = store.update_flags("user.alice", [1, 2], ["\\SEEN"], "remove")
    assert [r.flags for r in update.records] == [(), ()]
    unchanged = store.mailbox("user.alice")
    store.update_flags("user.alice", [1, 2], ["\\Seen"], "remove")
    assert store.mailbox("user.alice") == unchanged
    with pytest.raises(ValueError):
        store.update_flags("user.alice", [1], [], "toggle")


@pytest.mark.disk_only("the flags column of the SQLite index")
def test_flag_snapshot_survives_a_newline_in_a_flags_column(store: DiskStore) -> None:
    import sqlite3

    store.create_mailbox("user.alice")
    for _ in range(3):
        store.deliver(MESSAGE, [DeliveryTarget("user.alice", ("\\Seen",))])
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    conn.execute("UPDATE messages SET flags = 'a\nb' WHERE uid = 2")  # not an IMAP atom
    conn.close()
    snapshot = store.flag_snapshot("user.alice")
    assert snapshot.uids == [1, 2, 3]
    assert [snapshot.flag_sets[i] for i in snapshot.flag_ids] == [r.flags for r in
                                                                  store.messages("user.alice")]


def test_reading_a_message_another_session_expunges_meanwhile(store: DiskStore) -> None:
    """A FETCH reads the index, then the files: an expunge committing in between removes the
    file. That message is gone (bytes read before, or None / NoSuchMessage), never damage."""
    store.create_mailbox("user.alice")
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")] * 2)
    contents = store.message_contents("user.alice", [1, 2])  # the index is read here
    store.expunge("user.alice", [1])
    assert next(contents) in (None, MESSAGE) and next(contents) == MESSAGE
    with pytest.raises(NoSuchMessage):
        store.message_bytes("user.alice", 1)


@pytest.mark.disk_only("the window between the index read and the file read")
def test_expunged_between_row_and_file_is_no_corruption(
    store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race imaptest's stress run met as a false NO [CORRUPTION] (issue 17)."""
    store.create_mailbox("user.alice")
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")] * 2)
    path = store.mailbox_path("user.alice")
    read_file = reading._read_file

    def expunged_first(filename: str, directory_fd: int | None, size: int) -> bytes:
        if Path(filename).name == "1.":  # another session's EXPUNGE commits right before
            store.expunge("user.alice", [1])
        return read_file(filename, directory_fd, size)

    monkeypatch.setattr(reading, "_read_file", expunged_first)
    with pytest.raises(NoSuchMessage):
        store.message_bytes("user.alice", 1)
    monkeypatch.undo()
    (path / "2.").unlink()  # a file lost while its row stays: that is damage
    with pytest.raises(MailboxCorrupt, match="run reconstruct"):
        store.message_bytes("user.alice", 2)
    with pytest.raises(MailboxCorrupt):
        list(store.message_contents("user.alice", [2]))


def test_a_delivery_stores_the_kept_parse_it_is_given(store: DiskStore) -> None:
    """IMAP APPEND hands its parse of the message to the delivery (DeliveryTarget.kept): it is
    the message's kept structure from the same commit, as `save_message_structures` would
    have stored it, for a lone delivery and a MULTIAPPEND alike; without one, none is kept."""
    store.create_mailbox("user.a")
    [one] = store.deliver(MESSAGE, [DeliveryTarget("user.a", kept=b"parse one")])
    [two] = store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    assert isinstance(one, AppendedMessage) and isinstance(two, AppendedMessage)
    assert store.message_structures("user.a", [one.uid, two.uid]) == {one.uid: b"parse one"}
    if hasattr(store, "deliver_all"):
        three, four = store.deliver_all([
            (MESSAGE, DeliveryTarget("user.a", kept=b"parse three"), None),
            (MESSAGE, DeliveryTarget("user.a", kept=b"parse four"), None)])
        assert store.message_structures("user.a", [three.uid, four.uid]) == {
            three.uid: b"parse three", four.uid: b"parse four"}


def test_a_copy_across_filesystems_is_fsynced_before_the_commit(
        store: DiskStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """COPY hard-links within a filesystem; to a partition on another one (EXDEV) it writes a
    copy of the file, which must be as durable as a link before the COMMIT names it."""
    from sealmail.store.disk import copying, layout

    if not on_disk(store):
        pytest.skip("disk store only")
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Other", partition="second")
    store.deliver(MESSAGE, [DeliveryTarget("user.alice")])

    def no_link(source: object, target: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    synced: list[str] = []
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(copying.os, "link", no_link)
    monkeypatch.setattr(layout.os, "fsync", fsync)
    copied = store.copy_messages("user.alice", [1], "user.alice.Other")
    target = store.mailbox_path("user.alice.Other") / f"{copied.pairs[0][1]}."
    assert str(target) in synced
    assert store.message_bytes("user.alice.Other", copied.pairs[0][1]) == MESSAGE
