"""Mailbox directory fsyncs after the reply (sealmail.store.disk.deferred): a process killed
after COMMIT, before those fsyncs, loses no message, even when the kill comes with the loss of
every directory entry not yet fsynced (a power failure)."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from tests.store.conftest import make_config

from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore, deferred
from sealmail.store.disk.deferred import stage_guid

pytestmark = pytest.mark.disk_only("files, hard links, fsync and crashes of the disk store")

NAMES = ("user.a", "user.b", "user.c")  # user.c on the second partition: two stage files


def _child(
    tmp_path: Path, code: str, *args: str, **options: str
) -> subprocess.CompletedProcess[str]:
    prelude = f"""
        import os, signal, sys, threading
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from sealmail.store.api import DeliveryTarget
        from sealmail.store.disk import DiskStore
        from tests.store.conftest import make_config
        config = make_config(Path({str(tmp_path)!r}), **{options!r})
        """
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(prelude) + textwrap.dedent(code), *args],
        capture_output=True, text=True, timeout=120,
    )


def _stage_files(tmp_path: Path) -> list[Path]:
    return [*(tmp_path / "spool" / "stage.").iterdir(), *(tmp_path / "spool2" / "stage.").iterdir()]


def _prepare(tmp_path: Path) -> dict[str, Path]:
    """The mailboxes, and their directories (an open would recover the stage files)."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.b")
        disk.create_mailbox("user.c", partition="second")
        disk.deliver(b"first\r\n", [DeliveryTarget("user.a")])
        return {name: disk.mailbox_path(name) for name in NAMES}


# The child delivers one message to three mailboxes on two partitions and dies: at "committed"
# (after COMMIT, before the reply) or at "deferred" (after the reply, as the directory fsyncs
# begin); the hook waits there until the main thread has its results.
_KILLED_AFTER_COMMIT = """
    replied = threading.Event()
    def crash(at):
        if at == sys.argv[1]:
            if at == "deferred":
                replied.wait(60)
            os.kill(os.getpid(), signal.SIGKILL)
    disk = DiskStore.from_config(config, fault_hook=crash)
    targets = [DeliveryTarget(n) for n in ("user.a", "user.b", "user.c")]
    if sys.argv[2] == "batch":  # lmtpd's delivery thread: stage files fsynced by the commit
        [results] = disk.deliver_batch([(b"kept\\r\\n", targets)])
    else:
        results = disk.deliver(b"kept\\r\\n", targets)
    print(" ".join(str(r.uid) for r in results), flush=True)
    replied.set()
    threading.Event().wait(60)
"""


@pytest.mark.parametrize("way", ["deliver", "batch"])
@pytest.mark.parametrize(
    ("point", "lost"), [("committed", True), ("deferred", True), ("deferred", False)],
    ids=["committed-links-lost", "deferred-links-lost", "deferred-links-kept"],
)
def test_sigkill_after_commit_before_the_directory_fsyncs(
    tmp_path: Path, point: str, lost: bool, way: str
) -> None:
    directories = _prepare(tmp_path)
    child = _child(tmp_path, _KILLED_AFTER_COMMIT, point, way)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == (["2", "1", "1"] if point == "deferred" else [])
    stages = _stage_files(tmp_path)
    assert len(stages) == 2  # one per partition, durable, named by the content's guid
    assert {stage_guid(p.name) for p in stages} == {hashlib.sha1(b"kept\r\n").hexdigest()}
    copies = [directories[n] / ("2." if n == "user.a" else "1.") for n in NAMES]
    assert all(copy.exists() for copy in copies)  # made before COMMIT, as always
    if lost:
        # What a power failure may do to names whose directories were not fsynced yet.
        for copy in copies:
            copy.unlink()
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _stage_files(tmp_path) == []  # re-linked where missing, then removed
        assert [r.uid for r in disk.messages("user.a")] == [1, 2]
        assert disk.message_bytes("user.a", 2) == b"kept\r\n"
        assert disk.message_bytes("user.b", 1) == b"kept\r\n"
        assert disk.message_bytes("user.c", 1) == b"kept\r\n"
        assert os.stat(copies[0]).st_ino == os.stat(copies[1]).st_ino  # still one file
        assert disk.reconstruct_all() == []
        [again] = disk.deliver(b"next\r\n", [DeliveryTarget("user.b")])
        assert isinstance(again, AppendedMessage) and again.uid == 2


@pytest.mark.parametrize("way", ["deliver", "batch"])
@pytest.mark.parametrize("point", ["committed", "deferred"])
def test_without_single_instance_a_lost_copy_comes_back_as_its_own_file(
    tmp_path: Path, point: str, way: str
) -> None:
    """singleinstancestore=no: each copy had a file of its own, and recovery makes each lost
    one again as a file of its own, not as links to one stage file."""
    directories = _prepare(tmp_path)
    child = _child(tmp_path, _KILLED_AFTER_COMMIT, point, way, singleinstancestore="no")
    assert child.returncode == -signal.SIGKILL, child.stderr
    copies = [directories[n] / ("2." if n == "user.a" else "1.") for n in NAMES]
    for copy in copies:
        copy.unlink()
    with DiskStore.from_config(make_config(tmp_path, singleinstancestore="no")) as disk:
        assert _stage_files(tmp_path) == []
        assert [disk.message_bytes(n, 2 if n == "user.a" else 1) for n in NAMES] == [
            b"kept\r\n"] * 3
        assert [os.stat(copy).st_nlink for copy in copies] == [1, 1, 1]
        assert disk.reconstruct_all() == []


def test_links_lost_before_the_open_are_reported_by_reconstruct(tmp_path: Path) -> None:
    """reconstruct knows the stage files too: run in a store opened before the crash's stage
    files appeared, it re-links (and says so) rather than dropping the rows."""
    _prepare(tmp_path)
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        child = _child(tmp_path, _KILLED_AFTER_COMMIT, "deferred", "deliver")
        assert child.returncode == -signal.SIGKILL, child.stderr
        (disk.mailbox_path("user.b") / "1.").unlink()
        fixes = disk.reconstruct_all()
        assert any("re-linked" in fix and "/1." in fix for fix in fixes), fixes
        assert disk.message_bytes("user.b", 1) == b"kept\r\n"
        assert _stage_files(tmp_path) == []


def test_a_copy_expunged_before_the_crash_stays_expunged(tmp_path: Path) -> None:
    """The stage file outlives an EXPUNGE of its copy (the directory fsyncs were pending):
    recovery re-links only what the index still names."""
    directories = _prepare(tmp_path)
    child = _child(tmp_path, """
        expunged = threading.Event()
        def crash(at):
            if at == "deferred":
                expunged.wait(60)
                os.kill(os.getpid(), signal.SIGKILL)
        disk = DiskStore.from_config(config, fault_hook=crash)
        disk.deliver(b"gone\\r\\n", [DeliveryTarget("user.a"), DeliveryTarget("user.b")])
        disk.expunge("user.b", [1])
        expunged.set()
        threading.Event().wait(60)
    """)
    assert child.returncode == -signal.SIGKILL, child.stderr
    (directories["user.a"] / "2.").unlink()  # the power failure, as above
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _stage_files(tmp_path) == []
        assert disk.message_bytes("user.a", 2) == b"gone\r\n"
        assert disk.messages("user.b") == []
        assert not (disk.mailbox_path("user.b") / "1.").exists()
        assert disk.reconstruct_all() == []


def test_stage_names_carry_the_guid_only_when_kept() -> None:
    guid = "0123456789abcdef0123456789abcdef01234567"
    assert stage_guid(f"12-3-a1b2c3d4e5f6-{guid}") == guid
    assert stage_guid("12-3-a1b2c3d4e5f6") is None  # MULTIAPPEND's, removed after its commit
    assert stage_guid(f"12-3-a1b2c3d4e5f6-{guid[:-1]}") is None
    assert stage_guid("junk") is None


def test_a_process_that_exits_without_closing_its_store_leaves_no_stage_file(
    tmp_path: Path,
) -> None:
    _prepare(tmp_path)
    child = _child(tmp_path, """
        disk = DiskStore.from_config(config)
        [result] = disk.deliver(b"x\\r\\n", [DeliveryTarget("user.b")])
        print(result.uid)
    """)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split() == ["1"]
    assert _stage_files(tmp_path) == []


def test_deferred_only_when_it_saves_fsyncs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One mailbox per partition: its directory is fsynced before COMMIT as before and the
    stage file goes at once; two on one partition: the stage file stays until the round."""
    directories = _prepare(tmp_path)
    monkeypatch.setattr(deferred, "SYNC_INTERVAL", 600.0)  # no round but the ones asked for
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.deliver(b"one\r\n", [DeliveryTarget("user.b"), DeliveryTarget("user.c")])
        assert _stage_files(tmp_path) == []
        disk.deliver(b"two\r\n", [DeliveryTarget("user.a"), DeliveryTarget("user.b")])
        [kept] = _stage_files(tmp_path)
        assert os.stat(kept).st_nlink == 3
        disk.sync_directories()
        assert _stage_files(tmp_path) == []
        assert os.stat(directories["user.b"] / "2.").st_nlink == 2


def test_sigkill_after_a_one_mailbox_batch_commits_loses_no_message(tmp_path: Path) -> None:
    """The deferred case a batch to one mailbox now takes: its link lost as a power failure
    may lose it, the stage file brings it back."""
    directories = _prepare(tmp_path)
    child = _child(tmp_path, """
        def crash(at):
            if at == "committed":
                os.kill(os.getpid(), signal.SIGKILL)
        disk = DiskStore.from_config(config, fault_hook=crash)
        disk.deliver_batch([(b"alone\\r\\n", [DeliveryTarget("user.b")])])
    """)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert len(_stage_files(tmp_path)) == 1
    (directories["user.b"] / "1.").unlink()
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _stage_files(tmp_path) == []
        assert disk.message_bytes("user.b", 1) == b"alone\r\n"
        assert disk.reconstruct_all() == []
