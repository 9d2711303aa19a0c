"""A batch's COMMIT alongside its stage files' fsync round (sealmail.store.disk.unconfirmed):
what a process killed at each point leaves, with the files and names a power failure may take
away removed by hand; a live process's rows untouched; COPY passing the mark on; a failed round."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import make_config
from tests.support.stores import index_of_version_11

from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore, commit, deferred, unconfirmed
from sealmail.store.errors import StoreError
from sealmail.store.locks import CommitTurn

pytestmark = pytest.mark.disk_only("files, fsync and crashes of the disk store")

NAMES = ("user.a", "user.b", "user.c")  # user.c on the second partition: two stage files
BODY = b"Subject: kept\r\n\r\n" + b"body line\r\n" * 300


def _child(tmp_path: Path, code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _child_code(tmp_path, code)],
                          capture_output=True, text=True, timeout=120)


def _stage_files(tmp_path: Path) -> list[Path]:
    return [*(tmp_path / "spool" / "stage.").iterdir(), *(tmp_path / "spool2" / "stage.").iterdir()]


def _prepare(tmp_path: Path) -> dict[str, Path]:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        for name in NAMES:
            disk.create_mailbox(name, partition="second" if name == "user.c" else None)
        disk.set_quota("user.a", 10_000, None)
        disk.deliver(b"first\r\n", [DeliveryTarget("user.a")])
        return {name: disk.mailbox_path(name) for name in NAMES}


def _rows(disk: DiskStore) -> list[tuple[Any, ...]]:
    """Every unconfirmed copy, (mailbox id, uid, owner, round), unpacked from its round's row."""
    return sorted(
        (mailbox_id, uid, owner, round_)
        for owner, round_, copies in disk.spool.index.connection().execute(
            "SELECT owner, round, copies FROM unconfirmed_rounds")
        for mailbox_id, uid in unconfirmed.unpack(copies)
    )


# The child delivers BODY to the three mailboxes in a batch and is killed at sys.argv[1]:
# "committed" (after COMMIT; its round may still run) or "confirmed" (the round done, before
# deliver_batch returns). Either way its rows are in `unconfirmed`, owned by a dead process.
_KILLED = """
    def crash(at):
        if at == sys.argv[1]:
            os.kill(os.getpid(), signal.SIGKILL)
    disk = DiskStore.from_config(config, fault_hook=crash)
    disk.deliver_batch([(sys.stdin.buffer.read(), [DeliveryTarget(n) for n in
                         ("user.a", "user.b", "user.c")])])
"""


def _killed(tmp_path: Path, point: str) -> None:
    child = subprocess.run(
        [sys.executable, "-c", _child_code(tmp_path, _KILLED), point],
        input=BODY, capture_output=True, timeout=120,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with sqlite3.connect(tmp_path / "config" / "mailboxes.db") as conn:
        [(copies,)] = conn.execute("SELECT copies FROM unconfirmed_rounds").fetchall()
        assert len(unconfirmed.unpack(copies)) == 3  # one row for the batch


def _child_code(tmp_path: Path, code: str) -> str:
    return textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from sealmail.store.api import DeliveryTarget
        from sealmail.store.disk import DiskStore
        from tests.store.conftest import make_config
        config = make_config(Path({str(tmp_path)!r}))
        """) + textwrap.dedent(code)


@pytest.mark.parametrize("point", ["committed", "confirmed"])
def test_killed_after_commit_everything_there_is_kept(tmp_path: Path, point: str) -> None:
    """No power failure: the files are whole (in the page cache at least): recovery fsyncs
    them and their directories, keeps every copy and clears the rows."""
    directories = _prepare(tmp_path)
    _killed(tmp_path, point)
    synced: list[int] = []
    real = unconfirmed.fsync_together

    def counted(directories: set[str], fds: list[int]) -> None:
        synced.append(len(fds))
        real(directories, fds)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(unconfirmed, "fsync_together", counted)
        disk = DiskStore.from_config(make_config(tmp_path))
    with disk:
        assert synced == [3]
        assert _rows(disk) == []
        assert _stage_files(tmp_path) == []
        assert disk.message_bytes("user.a", 2) == BODY
        assert disk.message_bytes("user.b", 1) == BODY
        assert disk.message_bytes("user.c", 1) == BODY
        assert os.stat(directories["user.a"] / "2.").st_ino == os.stat(
            directories["user.b"] / "1.").st_ino
        assert disk.reconstruct_all() == []


def test_a_deleted_mailbox_copies_in_a_packed_row_are_passed_over(tmp_path: Path) -> None:
    """A round's row names its copies by mailbox id; one deleted since (by a store opened
    before the crash, so not recovered yet) has no copies left to check."""
    _prepare(tmp_path)
    _killed(tmp_path, "committed")
    child = _child(tmp_path, """
        from sealmail.store.disk import commit
        commit.GroupCommit.clean_stage_files = lambda self: []  # opened before the crash
        with DiskStore.from_config(config) as disk:
            disk.delete_mailbox("user.a")
    """)
    assert child.returncode == 0, child.stderr
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == [] and _stage_files(tmp_path) == []
        assert disk.message_bytes("user.b", 1) == BODY
        assert disk.message_bytes("user.c", 1) == BODY
        assert disk.reconstruct_all() == []


def test_inherit_finds_the_source_mailbox_copies_only(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        with disk.spool.index.transaction() as conn:
            unconfirmed.record(conn, 1, [(13, 1), (3, 2), (31, 1)])
            unconfirmed.record(conn, 2, [(4, 1)])
            unconfirmed.inherit(conn, 3, 5, [(1, 8), (2, 7)])
            unconfirmed.inherit(conn, 1, 6, [(1, 9)])  # none of mailbox 1's: nothing added
        mine = unconfirmed.owner()
        assert _rows(disk) == [(3, 2, mine, 1), (4, 1, mine, 2), (5, 7, mine, 1),
                               (13, 1, mine, 1), (31, 1, mine, 1)]


def test_packed_copies_read_back() -> None:
    copies = [(3, 1), (12, 40_000), (3, 2)]
    assert unconfirmed.unpack(unconfirmed.pack(copies)) == copies
    assert unconfirmed.unpack(unconfirmed.pack([])) == []


def test_lost_links_come_back_from_whole_stage_files(tmp_path: Path) -> None:
    """The mailbox names were never fsynced (the directory round comes after the reply): a
    power failure may take them; the stage files, whole, give them back."""
    directories = _prepare(tmp_path)
    _killed(tmp_path, "committed")
    for name, uid in (("user.a", 2), ("user.b", 1), ("user.c", 1)):
        (directories[name] / f"{uid}.").unlink()
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == [] and _stage_files(tmp_path) == []
        assert [r.uid for r in disk.messages("user.a")] == [1, 2]
        for name, uid in (("user.a", 2), ("user.b", 1), ("user.c", 1)):
            assert disk.message_bytes(name, uid) == BODY
        assert disk.reconstruct_all() == []


@pytest.mark.parametrize("loss", ["gone", "truncated"])
def test_copies_whose_files_did_not_survive_are_expunged_not_reused(
    tmp_path: Path, loss: str
) -> None:
    """The round had not reached the disk: on the first partition the file and both its names
    are gone (or the file is there, cut short, as a delayed allocation leaves it); the second
    partition's file made it. user.a and user.b lose the message as IMAP EXPUNGE would remove
    it (new modseq, VANISHED, counts and quota), its UID never drawn again; user.c keeps it."""
    directories = _prepare(tmp_path)
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        before = {name: disk.mailbox(name) for name in NAMES}
        used_before = disk.quota_for("user.a")
    _killed(tmp_path, "committed")
    [stage] = (tmp_path / "spool" / "stage.").iterdir()
    if loss == "gone":
        for path in (stage, directories["user.a"] / "2.", directories["user.b"] / "1."):
            path.unlink()
    else:
        os.truncate(stage, 100)  # the same inode as both links
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == [] and _stage_files(tmp_path) == []
        for name, uid in (("user.a", 2), ("user.b", 1)):
            info = disk.mailbox(name)
            was = before[name]
            assert info is not None and was is not None
            assert [r.uid for r in disk.messages(name)] == ([1] if name == "user.a" else [])
            assert info.uidnext == uid + 1  # drawn by the dead commit: never again
            assert info.highestmodseq == was.highestmodseq + 2  # the append, then the expunge
            assert disk.expunged_since(name, was.highestmodseq) == [uid]
            assert not (directories[name] / f"{uid}.").exists()
        assert disk.quota_for("user.a") == used_before
        assert disk.message_bytes("user.c", 1) == BODY
        assert disk.reconstruct_all() == []
        [again] = disk.deliver(b"next\r\n", [DeliveryTarget("user.b")])
        assert isinstance(again, AppendedMessage) and again.uid == 2


def test_a_live_process_rows_are_never_touched(tmp_path: Path) -> None:
    """Another store opened while a process's round runs (an imapd starting, reconstruct)
    leaves that process's rows alone, even with their files missing."""
    directories = _prepare(tmp_path)
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        mailbox_id = disk.spool.index.connection().execute(
            "SELECT id FROM mailboxes WHERE name = 'user.a'").fetchone()[0]
        with disk.spool.index.transaction() as conn:
            unconfirmed.record(conn, 7, [(mailbox_id, 1)])
        (directories["user.a"] / "1.").rename(tmp_path / "aside")
        with DiskStore.from_config(make_config(tmp_path)) as other:
            assert other.clean_stage_files() == []
            assert _rows(other) == [(mailbox_id, 1, unconfirmed.owner(), 7)]
            assert [r.uid for r in other.messages("user.a")] == [1]
        (tmp_path / "aside").rename(directories["user.a"] / "1.")


def test_owners_are_dead_by_boot_pid_or_start_time() -> None:
    mine = unconfirmed.owner()
    boot, pid, start = mine.split(":")
    assert int(pid) == os.getpid() and not unconfirmed.owner_gone(mine)
    assert unconfirmed.owner_gone(f"another-boot:{pid}:{start}")
    assert unconfirmed.owner_gone(f"{boot}:{pid}:{int(start or 0) + 1}")  # pid reused
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    assert unconfirmed.owner_gone(f"{boot}:{dead.stdout.strip()}:1")
    assert unconfirmed.owner_gone("junk")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write_end, unconfirmed.owner().encode())
        os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end) as pipe:
        child = pipe.read()
    assert child.split(":")[:2] == [boot, str(pid)]  # a forked child is an owner of its own
    assert unconfirmed.owner() == mine


def test_a_copy_of_an_unconfirmed_message_is_checked_with_it(tmp_path: Path) -> None:
    """COPY and MOVE of copies whose process died before its round ended (by a store opened
    before that, so not recovered yet): the new copies share the file and its mark, so they
    are expunged with it when that file did not survive."""
    _prepare(tmp_path)
    _killed(tmp_path, "committed")
    child = _child(tmp_path, """
        from sealmail.store.disk import commit
        commit.GroupCommit.clean_stage_files = lambda self: []  # opened before the crash
        with DiskStore.from_config(config) as disk:
            print(disk.copy_messages("user.b", [1], "user.a").pairs)
            print(disk.move_messages("user.a", [2], "user.b").pairs)
    """)
    assert child.returncode == 0, child.stderr
    assert child.stdout.split("\n")[:2] == ["[(1, 3)]", "[(2, 2)]"]
    [stage] = (tmp_path / "spool" / "stage.").iterdir()
    os.truncate(stage, 10)  # the file all four names on the first partition share
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == []
        assert [r.uid for r in disk.messages("user.a")] == [1]
        assert disk.messages("user.b") == []
        assert disk.message_bytes("user.c", 1) == BODY
        assert disk.mailbox("user.a").uidnext == 4  # type: ignore[union-attr]
        assert disk.reconstruct_all() == []


def test_a_batch_commits_while_its_stage_round_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The round is started before the turn and waited for after COMMIT; the copy is
    unconfirmed meanwhile, and the process's next transaction (the next batch's commit, or the
    deferred directory round) clears it. Even one mailbox's directory fsync is deferred."""
    directories = _prepare(tmp_path)
    monkeypatch.setattr(deferred, "SYNC_INTERVAL", 600.0)  # no round but the ones asked for
    events: list[str] = []
    real_started, real_taken = commit.fsyncs_started, CommitTurn.taken

    class Watched:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def finish(self) -> None:
            events.append("round waited")
            self.inner.finish()

    def started(directories: set[str], fds: list[int]) -> Any:
        events.append(f"round of {len(directories)} + {len(fds)}")
        return Watched(real_started(directories, fds))

    def turn(self: CommitTurn) -> Any:
        events.append("turn")
        return real_taken(self)

    monkeypatch.setattr(commit, "fsyncs_started", started)
    monkeypatch.setattr(CommitTurn, "taken", turn)
    seen: list[list[tuple[Any, ...]]] = []
    with DiskStore.from_config(make_config(tmp_path),
                               fault_hook=lambda at: at == "committed" and seen.append(
                                   _rows(disk))) as disk:
        [[one]] = disk.deliver_batch([(b"one\r\n", [DeliveryTarget("user.b")])])
        assert isinstance(one, AppendedMessage) and one.uid == 1
        assert events == ["round of 1 + 1", "turn", "round waited"]
        b_id = seen[0][0][0]
        assert [row[:2] for row in seen[0]] == [(b_id, 1)]
        [[two]] = disk.deliver_batch([(b"two\r\n", [DeliveryTarget("user.b")])])
        assert isinstance(two, AppendedMessage) and two.uid == 2
        assert [row[:2] for row in seen[1]] == [(b_id, 2)]  # the first cleared by this commit
        assert [row[:2] for row in _rows(disk)] == [(b_id, 2)]
        [kept, _] = _stage_files(tmp_path)
        assert os.stat(kept).st_nlink == 2
        disk.sync_directories()  # the deferred round: stage files go, and the last rows
        assert _stage_files(tmp_path) == []
        assert _rows(disk) == []
        assert os.stat(directories["user.b"] / "1.").st_nlink == 1


def test_a_failed_round_expunges_what_the_commit_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An fsync of the round fails (EIO) after the COMMIT published the copies: they are
    expunged at once and every recipient gets the error; the store goes on."""
    _prepare(tmp_path)
    real = commit.fsyncs_started

    class Failing:
        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def finish(self) -> None:
            self.inner.finish()
            raise OSError(5, "Input/output error")

    monkeypatch.setattr(commit, "fsyncs_started", lambda d, f: Failing(real(d, f)))
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        before = disk.mailbox("user.b")
        assert before is not None
        [results] = disk.deliver_batch([(b"lost\r\n", [DeliveryTarget("user.a"),
                                                        DeliveryTarget("user.b")])])
        assert all(isinstance(r, StoreError) and "Input/output" in str(r) for r in results)
        assert [r.uid for r in disk.messages("user.a")] == [1]
        assert disk.messages("user.b") == []
        assert disk.expunged_since("user.b", before.highestmodseq) == [1]
        assert _rows(disk) == []
        monkeypatch.setattr(commit, "fsyncs_started", real)
        [[again]] = disk.deliver_batch([(b"again\r\n", [DeliveryTarget("user.b")])])
        assert isinstance(again, AppendedMessage) and again.uid == 2


def test_an_index_of_version_9_gets_the_table(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)):
        pass
    with sqlite3.connect(tmp_path / "config" / "mailboxes.db") as conn:
        conn.execute("DROP TABLE unconfirmed_rounds")
        index_of_version_11(conn)
        conn.execute("PRAGMA user_version=9")
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == []


def test_an_index_of_version_10_gets_its_rows_packed(tmp_path: Path) -> None:
    """Version 10 kept a row per copy; version 11 one per round, the copies in one value."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.b")
        ids = [disk.spool.index.connection().execute(
            "SELECT id FROM mailboxes WHERE name = ?", (name,)).fetchone()[0]
            for name in ("user.a", "user.b")]
    mine = unconfirmed.owner()  # alive: recovery leaves them
    with sqlite3.connect(tmp_path / "config" / "mailboxes.db") as conn:
        conn.execute("DROP TABLE unconfirmed_rounds")
        conn.execute("CREATE TABLE unconfirmed (mailbox_id INTEGER NOT NULL, uid INTEGER NOT NULL,"
                     " owner TEXT NOT NULL, round INTEGER NOT NULL,"
                     " PRIMARY KEY (mailbox_id, uid)) WITHOUT ROWID")
        conn.executemany("INSERT INTO unconfirmed VALUES (?, ?, ?, ?)", [
            (ids[0], 1, mine, 7), (ids[1], 1, mine, 7), (ids[1], 2, mine, 8)])
        index_of_version_11(conn)
        conn.execute("PRAGMA user_version=10")
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert _rows(disk) == [(ids[0], 1, mine, 7), (ids[1], 1, mine, 7), (ids[1], 2, mine, 8)]
        conn = disk.spool.index.connection()
        assert conn.execute("SELECT count(*) FROM unconfirmed_rounds").fetchone() == (2,)
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE name = 'unconfirmed'"
                            ).fetchone() == (0,)
