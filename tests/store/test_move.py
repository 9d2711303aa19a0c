"""MOVE as one store operation (move_messages, RFC 6851) on every backend: the copies' UIDs for
COPYUID, the originals expunged with a modseq and a tombstone each (VANISHED), all or nothing;
and on the disk store, a process killed before or after the commit leaves the messages in one
mailbox, never in both or in neither."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import make_config

from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.errors import OverQuota

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\nMessage-ID: <m@x>\r\n\r\nbody\r\n"


def deliver(store: Any, mailbox: str, count: int, flags: tuple[str, ...] = ()) -> None:
    for _ in range(count):
        store.deliver(MESSAGE, [DeliveryTarget(mailbox, flags)])


@pytest.fixture
def boxes(store: Any) -> Any:
    """alice's INBOX with four messages (the second \\Flagged) and an empty Archive."""
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Archive")
    deliver(store, "user.alice", 1)
    deliver(store, "user.alice", 1, ("\\Flagged",))
    deliver(store, "user.alice", 2)
    return store


def test_move_copies_then_expunges_in_one_operation(boxes: Any) -> None:
    store = boxes
    before = store.mailbox("user.alice")
    moved = store.move_messages("user.alice", [2, 3, 99], "user.alice.Archive")
    assert moved.uidvalidity == store.mailbox("user.alice.Archive").uidvalidity
    assert moved.pairs == [(2, 1), (3, 2)]
    assert [(r.uid, r.flags) for r in store.messages("user.alice.Archive")] == [
        (1, ("\\Flagged",)), (2, ())]
    assert [r.uid for r in store.messages("user.alice")] == [1, 4]
    after = store.mailbox("user.alice")
    assert after.exists == 2 and after.highestmodseq == before.highestmodseq + 2
    assert store.expunged_since("user.alice", before.highestmodseq) == [2, 3]
    news = store.mailbox_changes("user.alice", before.highestmodseq)
    assert news.expunged == [2, 3] and news.changed == []
    # Nothing there to move: nothing changes.
    assert store.move_messages("user.alice", [2, 3], "user.alice.Archive").pairs == []
    assert store.mailbox("user.alice").highestmodseq == after.highestmodseq


def test_move_within_one_mailbox_gives_new_uids(boxes: Any) -> None:
    store = boxes
    moved = store.move_messages("user.alice", [1], "user.alice")
    assert moved.pairs == [(1, 5)]
    assert [r.uid for r in store.messages("user.alice")] == [2, 3, 4, 5]


def test_a_move_the_target_quota_refuses_moves_nothing(boxes: Any) -> None:
    store = boxes
    store.set_quota("user.alice.Archive", None, 1)
    modseq = store.mailbox("user.alice").highestmodseq
    with pytest.raises(OverQuota):
        store.move_messages("user.alice", [1, 2], "user.alice.Archive")
    assert [r.uid for r in store.messages("user.alice")] == [1, 2, 3, 4]
    assert store.messages("user.alice.Archive") == []
    assert store.mailbox("user.alice").highestmodseq == modseq


def test_a_reader_moves_their_own_seen(store: Any) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.bob")
    store.set_acl("user.alice", "bob", "lrswite")
    deliver(store, "user.alice", 2)
    store.update_flags("user.alice", [1], ["\\Seen"], "add", reader="bob")
    moved = store.move_messages("user.alice", [1, 2], "user.bob", reader="bob")
    assert moved.pairs == [(1, 1), (2, 2)]
    assert [r.flags for r in store.messages("user.bob")] == [("\\Seen",), ()]  # bob owns it
    assert store.messages("user.alice") == []


# -- crashes (disk) -----------------------------------------------------------------------------


_CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from pathlib import Path
import sealmail.store.disk.copying as copying
from sealmail.store.disk import DiskStore
from tests.store.conftest import make_config

def kill(*args):
    os.kill(os.getpid(), signal.SIGKILL)

point = sys.argv[1]
if point == "committed":
    copying.remove_files = kill  # after the COMMIT, before the originals' files go
disk = DiskStore.from_config(make_config(Path({tmp!r})),
                             fault_hook=lambda at: kill() if at == point else None)
disk.move_messages("user.alice", [1, 2], "user.alice.Archive")
print("survived")
"""


@pytest.mark.disk_only("a process killed inside a MOVE, and reconstruct")
@pytest.mark.parametrize("point", ["changes", "committed"])
def test_a_move_killed_midway_leaves_the_messages_in_one_mailbox(
    tmp_path: Path, point: str
) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.alice")
        disk.create_mailbox("user.alice.Archive")
        deliver(disk, "user.alice", 3)
    code = textwrap.dedent(_CHILD).format(root=str(Path(__file__).resolve().parents[2]),
                                           tmp=str(tmp_path))
    child = subprocess.run([sys.executable, "-c", code, point], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == -signal.SIGKILL, child.stderr
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        source = [r.uid for r in disk.messages("user.alice")]
        target = [r.uid for r in disk.messages("user.alice.Archive")]
        if point == "changes":  # killed before the COMMIT: not moved
            assert (source, target) == ([1, 2, 3], [])
            debris = [disk.mailbox_path("user.alice.Archive") / f"{uid}." for uid in (1, 2)]
        else:  # killed after it: moved, the originals' files left behind
            assert (source, target) == ([3], [1, 2])
            debris = [disk.mailbox_path("user.alice") / f"{uid}." for uid in (1, 2)]
        assert all(path.exists() for path in debris)
        assert len(disk.reconstruct_all()) == 2
        assert not any(path.exists() for path in debris)
        assert [len(disk.message_bytes("user.alice", uid)) for uid in source] == \
            [len(MESSAGE)] * len(source)
        assert [len(disk.message_bytes("user.alice.Archive", uid)) for uid in target] == \
            [len(MESSAGE)] * len(target)
