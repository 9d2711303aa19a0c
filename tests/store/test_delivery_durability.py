"""Single-instance store, group commit under concurrency, cross-process visibility, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from contextlib import suppress
from pathlib import Path

import pytest
from tests.store.conftest import make_config

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.disk.layout import STAGE_DIRECTORY
from sealmail.store.errors import MailboxNotFound, StoreError

pytestmark = pytest.mark.disk_only("files, hard links, fsync and crashes of the disk store")

MESSAGE = b"From: a@example.com\r\nSubject: sis\r\n\r\n" + b"line of body\r\n" * 400


# A child's store, killed when it reaches the fault point named by its first argument.
KILLED_AT_ARGV1 = """
def crash(at):
    if at == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)
disk = DiskStore.from_config(config, fault_hook=crash)
"""


def _run_child(tmp_path: Path, code: str, *args: str, prelude: str = ""
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-c",
            _child_code(tmp_path, "import os, signal\n" + prelude + textwrap.dedent(code)),
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_ten_targets_one_inode(store: DiskStore) -> None:
    names = [f"user.u{i}" for i in range(10)]
    for name in names:
        store.create_mailbox(name)
    results = store.deliver(MESSAGE, [DeliveryTarget(n) for n in names])
    assert all(isinstance(r, AppendedMessage) and r.uid == 1 for r in results)
    store.sync_directories()  # drops the eleventh name, the stage file (store.disk.deferred)
    stats = [os.stat(store.mailbox_path(n) / "1.") for n in names]
    assert {(s.st_dev, s.st_ino) for s in stats} == {(stats[0].st_dev, stats[0].st_ino)}
    assert stats[0].st_nlink == 10
    # Disk usage: the ten names share the blocks of one copy.
    blocks = {(s.st_dev, s.st_ino): s.st_blocks for s in stats}
    assert sum(blocks.values()) * 512 < 2 * len(MESSAGE) + 8192


def test_two_partitions_two_files(store: DiskStore) -> None:
    store.create_mailbox("user.a")
    store.create_mailbox("user.b", partition="second")
    store.create_mailbox("user.c")
    store.deliver(
        MESSAGE, [DeliveryTarget("user.a"), DeliveryTarget("user.b"), DeliveryTarget("user.c")]
    )
    store.sync_directories()
    inodes = {os.stat(store.mailbox_path(n) / "1.").st_ino for n in ("user.a", "user.b", "user.c")}
    assert len(inodes) == 2
    assert os.stat(store.mailbox_path("user.b") / "1.").st_nlink == 1


def test_without_single_instance_every_copy_is_its_own_file(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path, singleinstancestore="no")) as disk:
        for name in ("user.a", "user.b", "user.c"):
            disk.create_mailbox(name)
        disk.deliver(MESSAGE, [DeliveryTarget(n) for n in ("user.a", "user.b", "user.c")])
        disk.sync_directories()
        stats = [os.stat(disk.mailbox_path(n) / "1.") for n in ("user.a", "user.b", "user.c")]
        assert len({s.st_ino for s in stats}) == 3
        assert all(s.st_nlink == 1 for s in stats)
        assert disk.message_bytes("user.c", 1) == MESSAGE


def test_many_threads_get_unique_gap_free_ascending_uids(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    disk = DiskStore.from_config(config)
    disk.create_mailbox("user.a")
    disk.create_mailbox("user.b")
    threads, per_thread = 8, 25
    seen: dict[int, list[AppendedMessage]] = {}
    failures: list[BaseException] = []
    start = threading.Barrier(threads)

    def work(number: int) -> None:
        try:
            start.wait()
            mine: list[AppendedMessage] = []
            for _ in range(per_thread):
                for result in disk.deliver(
                    MESSAGE, [DeliveryTarget("user.a"), DeliveryTarget("user.b")]
                ):
                    assert isinstance(result, AppendedMessage), result
                    mine.append(result)
            seen[number] = mine
        except BaseException as exc:  # reported below
            failures.append(exc)

    workers = [threading.Thread(target=work, args=(n,)) for n in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert not failures
    total = threads * per_thread
    for name in ("user.a", "user.b"):
        uids = [r.uid for results in seen.values() for r in results if r.mailbox == name]
        assert sorted(uids) == list(range(1, total + 1))
        for results in seen.values():  # each caller sees its own uids ascending
            own = [r.uid for r in results if r.mailbox == name]
            assert own == sorted(own)
    disk.close()
    with DiskStore.from_config(config) as reopened:  # every row durable and readable
        for name in ("user.a", "user.b"):
            assert [r.uid for r in reopened.messages(name)] == list(range(1, total + 1))
            assert reopened.mailbox(name).uidnext == total + 1  # type: ignore[union-attr]


def test_many_processes_share_the_uid_sequence(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
    code = """
        with DiskStore.from_config(config) as disk:
            for _ in range(20):
                [result] = disk.deliver(b"x\\r\\n", [DeliveryTarget("user.a")])
                print(result.uid)
    """
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _child_code(tmp_path, code)], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    uids = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        uids += [int(line) for line in out.split()]
    assert sorted(uids) == list(range(1, 61))


def _child_code(tmp_path: Path, code: str) -> str:
    return textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(Path(__file__).resolve().parents[2])!r})
        from pathlib import Path
        from sealmail.store.api import DeliveryTarget
        from sealmail.store.disk import DiskStore
        from tests.store.conftest import make_config
        config = make_config(Path({str(tmp_path)!r}))
        """
    ) + textwrap.dedent(code)


def test_another_process_sees_the_message_once_deliver_returns(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        [result] = disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
        assert isinstance(result, AppendedMessage)
        child = _run_child(
            tmp_path,
            f"""
            with DiskStore.from_config(config) as other:
                records = other.messages("user.a")
                same = other.message_bytes("user.a", 1) == {MESSAGE!r}
                print(len(records), records[-1].uid, same)
            """,
        )
        assert child.returncode == 0, child.stderr
        assert child.stdout.split() == ["1", "1", "True"]


@pytest.mark.parametrize("way", ["deliver", "batch"])
@pytest.mark.parametrize("point", ["staged", "linked"])
def test_sigkill_inside_delivery_leaves_nothing_visible(
    tmp_path: Path, point: str, way: str
) -> None:
    """"staged": the stage file written (in a batch, fsynced with its name before the commit
    turn); "linked": the links made and fsynced, before COMMIT."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.create_mailbox("user.b")
        disk.deliver(b"first\r\n", [DeliveryTarget("user.a")])
    child = _run_child(
        tmp_path,
        """
        targets = [DeliveryTarget("user.a"), DeliveryTarget("user.b")]
        if sys.argv[2] == "batch":
            disk.deliver_batch([(b"lost\\r\\n", targets)])
        else:
            disk.deliver(b"lost\\r\\n", targets)
        print("survived")
        """,
        point, way, prelude=KILLED_AT_ARGV1,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    stage = tmp_path / "spool" / "stage."
    assert len(list(stage.iterdir())) == 1  # the dead process's stage file
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert list(stage.iterdir()) == []  # cleaned at open: its pid is gone
        assert [r.uid for r in disk.messages("user.a")] == [1]
        assert disk.messages("user.b") == []
        assert disk.mailbox("user.a").uidnext == 2  # type: ignore[union-attr]
        debris = [disk.mailbox_path("user.a") / "2.", disk.mailbox_path("user.b") / "1."]
        assert all(p.exists() for p in debris) == (point == "linked")
        fixes = disk.reconstruct_all()
        assert len(fixes) == (2 if point == "linked" else 0), fixes
        assert not any(p.exists() for p in debris)
        assert disk.reconstruct_all() == []
        [again] = disk.deliver(b"next\r\n", [DeliveryTarget("user.a")])
        assert isinstance(again, AppendedMessage) and again.uid == 2


@pytest.mark.parametrize("point", ["linked", "committed"])
def test_sigkill_around_the_commit_of_an_appends_recent_claim(tmp_path: Path, point: str) -> None:
    """An APPEND's \\Recent claim (DeliveryTarget.claims_recent) is the delivery's own
    transaction: killed before its COMMIT, neither the message nor the mark is there; killed
    after it (before the caller heard), both are."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        disk.deliver(b"first\r\n", [DeliveryTarget("user.a")])
        assert disk.claim_recent("user.a", 1) == 0
    child = _run_child(
        tmp_path,
        """
        disk.deliver(b"second\\r\\n", [DeliveryTarget("user.a", reader="a", claims_recent=True)])
        print("survived")
        """,
        point, prelude=KILLED_AT_ARGV1,
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        uids = [r.uid for r in disk.messages("user.a")]
        assert uids == ([1, 2] if point == "committed" else [1])
        assert disk.claim_recent("user.a", 0) == uids[-1]
        disk.reconstruct_all()  # the debris of "linked" removed; the mark stays where it was
        assert disk.claim_recent("user.a", 0) == uids[-1]


def test_next_delivery_replaces_uncommitted_debris(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        (disk.mailbox_path("user.a") / "1.").write_bytes(b"debris")
        [result] = disk.deliver(b"real\r\n", [DeliveryTarget("user.a")])
        assert isinstance(result, AppendedMessage) and result.uid == 1
        assert disk.message_bytes("user.a", 1) == b"real\r\n"
        assert disk.reconstruct("user.a") == []


class _Fault(Exception):
    pass


def test_deliver_all_fails_as_a_whole(tmp_path: Path) -> None:
    """MULTIAPPEND's one commit: a failure after every message was linked (an exception at
    "linked", before COMMIT) leaves no row, no link and no stage file; then it succeeds."""
    def fail(at: str) -> None:
        if at == "linked":
            raise _Fault(at)

    messages = [(b"one\r\n", DeliveryTarget("user.a", ("\\Seen",)), None),
                (b"two\r\n", DeliveryTarget("user.a"), 1e9)]
    with DiskStore.from_config(make_config(tmp_path), fault_hook=fail) as disk:
        disk.create_mailbox("user.a")
        before = disk.mailbox("user.a")
        with pytest.raises(_Fault):
            disk.deliver_all(messages)
        assert disk.mailbox("user.a") == before
        assert not (disk.mailbox_path("user.a") / "1.").exists()
        assert list((tmp_path / "spool" / "stage.").iterdir()) == []
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        stored = disk.deliver_all(messages)
        assert [m.uid for m in stored] == [1, 2]
        records = disk.messages("user.a")
        assert [r.flags for r in records] == [("\\Seen",), ()]
        assert records[1].internaldate == 1e9
        with pytest.raises(ValueError):
            disk.deliver_all([messages[0], (b"x\r\n", DeliveryTarget("user.b"), None)])


def test_partitions_are_looked_up_in_chunks_of_names() -> None:
    """One query per 500 names (SQLite's parameter bound), duplicates and unknowns allowed."""
    import sqlite3

    from sealmail.store.disk.commit import partitions_of

    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE mailboxes (name TEXT PRIMARY KEY, partition TEXT)")
    conn.executemany("INSERT INTO mailboxes VALUES (?, ?)",
                     [(f"user.u{i}", f"p{i % 3}") for i in range(0, 1300, 2)])
    names = [f"user.u{i}" for i in range(1300)] + ["user.u4", "user.U4"]
    found = partitions_of(conn, names)
    assert found == {f"user.u{i}": f"p{i % 3}" for i in range(0, 1300, 2)}
    assert partitions_of(conn, []) == {}


def test_advisory_commits_skip_the_wal_fsync_and_everything_else_keeps_it(
    store: DiskStore,
) -> None:
    """A cached parse commits with synchronous=NORMAL (no WAL fsync before the reply); flags,
    deliveries and the rest commit FULL, also after an advisory transaction that failed; a
    \\Recent claim does not write the index at all (sealmail.store.disk.recent). The
    connection switches only when the durability differs from its last transaction's."""
    store.create_mailbox("user.a")
    store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    index = store.spool.index
    statements: list[str] = []
    index.connection().set_trace_callback(statements.append)

    def said(statement: str) -> int:
        return sum(1 for s in statements if s == statement)

    assert store.claim_recent("user.a", 2) == 0
    assert store.claim_recent("user.a", 2) == 2  # the mark was written, elsewhere
    assert not [s for s in statements if s.startswith(("PRAGMA", "BEGIN"))]
    store.save_message_structures("user.a", {1: b"parsed"})
    store.save_message_structures("user.a", {2: b"parsed"})
    assert said("PRAGMA synchronous=NORMAL") == 1 and said("COMMIT") == 2
    assert statements.index("PRAGMA synchronous=NORMAL") < statements.index("BEGIN IMMEDIATE")
    assert index.connection().execute(
        "SELECT structure FROM structures WHERE id & 0xffffffff = 1"
    ).fetchone() == (b"parsed",)
    statements.clear()
    store.update_flags("user.a", [1], ["\\Flagged"], "add")
    store.deliver(MESSAGE, [DeliveryTarget("user.a")])
    store.expunge("user.a", [2])
    assert said("PRAGMA synchronous=FULL") == 1 and said("PRAGMA synchronous=NORMAL") == 0
    assert statements.index("PRAGMA synchronous=FULL") < statements.index("BEGIN IMMEDIATE")
    with pytest.raises(RuntimeError), index.transaction(durable=False):
        raise RuntimeError("rolled back")
    with index.transaction() as conn:
        assert conn.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
    assert [r.uid for r in store.messages("user.a")] == [1, 3]


def test_writers_switch_the_busy_timeout_only_when_a_reader_needs_it(store: DiskStore) -> None:
    """BEGIN IMMEDIATE naps with busy_timeout 0; back-to-back transactions leave it so, and the
    connection gets its long timeout back when it is next handed out for reading."""
    index = store.spool.index
    statements: list[str] = []
    index.connection().set_trace_callback(statements.append)
    for _ in range(3):
        with index.transaction() as conn:
            conn.execute("SELECT 1")
    assert [s for s in statements if "busy_timeout" in s] == ["PRAGMA busy_timeout = 0"]
    assert index.connection().execute("PRAGMA busy_timeout").fetchone() == (60_000,)
    with index.transaction() as conn:
        assert conn.execute("PRAGMA busy_timeout").fetchone() == (0,)


# -- the commit turn: group commits of several processes (sealmail.store.locks.CommitTurn) ------


def test_two_processes_delivering_at_once_store_and_index_everything(tmp_path: Path) -> None:
    """Two processes of two threads each, as two preforked lmtpds: every message is stored
    once, indexed, readable, and each caller's uids ascend; the turn's lock file exists."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        for name in ("user.a", "user.b"):
            disk.create_mailbox(name)
    code = """
        import os, threading
        disk = DiskStore.from_config(config)
        lines = []
        def work(thread):
            for i in range(15):
                body = f"{os.getpid()}-{thread}-{i}\\r\\n".encode()
                results = disk.deliver(body, [DeliveryTarget("user.a"), DeliveryTarget("user.b")])
                lines.append(" ".join([body.decode().strip()] + [str(r.uid) for r in results]))
        threads = [threading.Thread(target=work, args=(t,)) for t in range(2)]
        for t in threads: t.start()
        for t in threads: t.join()
        disk.close()
        print("\\n".join(lines))
    """
    children = [
        subprocess.Popen([sys.executable, "-c", _child_code(tmp_path, code)],
                         stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    sent: dict[str, tuple[int, int]] = {}
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        for line in out.splitlines():
            body, uid_a, uid_b = line.split()
            sent[body] = (int(uid_a), int(uid_b))
    assert len(sent) == 60
    assert (tmp_path / "config" / "lock" / "commit").exists()
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        for column, name in enumerate(("user.a", "user.b")):
            assert [r.uid for r in disk.messages(name)] == list(range(1, 61))
            assert disk.mailbox(name).uidnext == 61  # type: ignore[union-attr]
            for body, uids in sent.items():
                assert disk.message_bytes(name, uids[column]) == f"{body}\r\n".encode()
        for prefix in {body.rsplit("-", 1)[0] for body in sent}:  # one calling thread
            own = [sent[f"{prefix}-{i}"][0] for i in range(15)]
            assert own == sorted(own)


def test_a_process_killed_during_its_turn_frees_it_and_leaves_no_half_message(
    tmp_path: Path,
) -> None:
    """SIGKILL after linking, inside the turn and the open transaction: the kernel drops the
    flock and SQLite rolls back, so another process delivers at once (it would hang on the turn
    otherwise), and the dead delivery is neither indexed nor readable."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
    killed = _run_child(
        tmp_path,
        """
        def crash(at):
            if at == "linked":
                os.kill(os.getpid(), signal.SIGKILL)
        disk = DiskStore.from_config(config, fault_hook=crash)
        disk.deliver(b"half\\r\\n", [DeliveryTarget("user.a")])
        """,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    other = _run_child(
        tmp_path,
        """
        with DiskStore.from_config(config) as disk:
            for i in range(5):
                [result] = disk.deliver(f"whole {i}\\r\\n".encode(), [DeliveryTarget("user.a")])
                print(result.uid)
        """,
    )
    assert other.returncode == 0, other.stderr
    assert other.stdout.split() == ["1", "2", "3", "4", "5"]  # uid 1's debris replaced
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert [disk.message_bytes("user.a", uid) for uid in range(1, 6)] == [
            f"whole {i}\r\n".encode() for i in range(5)
        ]
        assert disk.reconstruct_all() == []
        assert list((tmp_path / "spool" / "stage.").iterdir()) == []


def test_the_turn_excludes_other_processes_and_a_forked_child_locks_its_own(
    tmp_path: Path,
) -> None:
    """A forked child inherits the parent's descriptor; sharing it would share the flock, so
    the child opens its own and waits for the parent's turn to end."""
    from sealmail.store.locks import CommitTurn

    turn = CommitTurn(tmp_path / "lock" / "commit")
    with turn.taken():  # opened in this process before the fork
        pass
    read_end, write_end = os.pipe()
    with turn.taken():
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                os.close(read_end)
                with turn.taken():
                    os.write(write_end, b"in")
            finally:
                os._exit(0)
        os.close(write_end)
        import select

        # Never in while we hold it (a shared description would let it in at once).
        assert select.select([read_end], [], [], 0.3)[0] == []
    try:
        assert select.select([read_end], [], [], 60)[0] == [read_end]
        assert os.read(read_end, 2) == b"in"
    finally:
        os.close(read_end)
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)  # never left behind when it hangs
        os.waitpid(pid, 0)
    turn.close()


def test_a_turn_that_cannot_be_taken_fails_the_batch_and_nothing_is_stored(
    tmp_path: Path,
) -> None:
    """lock/commit unusable (here a directory): each copy gets a StoreError naming the lock
    file (lmtpd answers 451), nothing is linked or indexed, and delivery works once fixed."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        (tmp_path / "config" / "lock" / "commit").mkdir(parents=True)
        [failed] = disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
        assert isinstance(failed, StoreError) and "lock/commit" in str(failed)
        assert disk.messages("user.a") == []
        assert not (disk.mailbox_path("user.a") / "1.").exists()
        assert list((tmp_path / "spool" / "stage.").iterdir()) == []
    (tmp_path / "config" / "lock" / "commit").rmdir()
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        [stored] = disk.deliver(MESSAGE, [DeliveryTarget("user.a")])
        assert isinstance(stored, AppendedMessage) and stored.uid == 1


def _one_partition(root: Path) -> ImapdConfig:
    return parse_imapd_conf(f"configdirectory: {root / 'config'}\n"
                            f"partition-default: {root / 'spool'}\n", str(root / "imapd.conf"))


def test_with_one_partition_a_missing_mailbox_fails_alone_and_leaves_no_stage_file(
    tmp_path: Path,
) -> None:
    """With one partition the index is not read before staging (GroupCommit._partitions_of):
    a target that is no mailbox is refused by the commit, alone, and its stage file goes."""
    with DiskStore.from_config(_one_partition(tmp_path)) as disk:
        disk.create_mailbox("user.a")
        results = disk.deliver(MESSAGE, [DeliveryTarget("user.gone"), DeliveryTarget("user.a")])
        assert isinstance(results[0], MailboxNotFound)
        assert isinstance(results[1], AppendedMessage) and results[1].uid == 1
        [alone] = disk.deliver(MESSAGE, [DeliveryTarget("user.gone")])
        assert isinstance(alone, MailboxNotFound)
        [batch] = disk.deliver_batch([(MESSAGE, [DeliveryTarget("user.gone")])])
        assert isinstance(batch[0], MailboxNotFound)
        disk.sync_directories()
        assert list((tmp_path / "spool" / STAGE_DIRECTORY).iterdir()) == []
        assert [r.uid for r in disk.messages("user.a")] == [1]


def test_with_one_partition_a_mailbox_on_a_partition_taken_out_is_refused(
    tmp_path: Path,
) -> None:
    """A mailbox left on a partition no longer in imapd.conf: refused (PartitionNotFound), nothing
    stored, no stage file left (the commit sees the row's partition)."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        disk.create_mailbox("user.b", partition="second")
    with DiskStore.from_config(_one_partition(tmp_path)) as disk:
        [result] = disk.deliver(MESSAGE, [DeliveryTarget("user.b")])
        assert isinstance(result, StoreError) and "second" in str(result)
        disk.sync_directories()
        assert list((tmp_path / "spool" / STAGE_DIRECTORY).iterdir()) == []
