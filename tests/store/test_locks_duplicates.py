from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from tests.store.conftest import make_config

from sealmail.store import locks
from sealmail.store.disk import DiskStore
from sealmail.store.duplicates import DuplicateDatabase
from sealmail.store.errors import MailboxBusy
from sealmail.store.locks import lock_filename, mailbox_lock


def test_delivery_slots_are_bounded_and_released(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path, lmtp_user_concurrency_limit="2")) as disk:
        with disk.delivery_slot("alice"), disk.delivery_slot("alice"):
            with pytest.raises(MailboxBusy), disk.delivery_slot("alice"):
                pass
            with disk.delivery_slot("bob"):
                pass
        with disk.delivery_slot("alice"), disk.delivery_slot("alice"):
            pass


def test_slot_limit_zero_is_unlimited(tmp_path: Path) -> None:
    disk = DiskStore.from_config(make_config(tmp_path, lmtp_user_concurrency_limit="0"))
    with disk.delivery_slot("a"), disk.delivery_slot("a"), disk.delivery_slot("a"):
        pass
    disk.close()


def test_slots_are_shared_across_processes(tmp_path: Path) -> None:
    config = make_config(tmp_path, lmtp_user_concurrency_limit="1")
    root = str(Path(__file__).resolve().parents[2])
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                f"import sys; sys.path.insert(0, {root!r})\n"
                "from pathlib import Path\n"
                "from sealmail.store.disk import DiskStore\n"
                "from tests.store.conftest import make_config\n"
                f"disk = DiskStore.from_config(make_config(Path({str(tmp_path)!r}), "
                "lmtp_user_concurrency_limit='1'))\n"
                "with disk.delivery_slot('alice'):\n"
                "    print('held', flush=True)\n"
                "    sys.stdin.readline()\n"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None and child.stdin is not None
    assert child.stdout.readline().strip() == "held"
    with DiskStore.from_config(config) as disk:
        with pytest.raises(MailboxBusy), disk.delivery_slot("alice"):
            pass
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
        with disk.delivery_slot("alice"):
            pass


def test_a_slot_let_go_stays_open_unlocked_and_other_processes_take_it(tmp_path: Path) -> None:
    """Slot files are kept open between deliveries (locks.SlotFiles), but never locked: a
    slot given back is free for another process at once; closing the store closes them."""
    config = make_config(tmp_path, lmtp_user_concurrency_limit="1")
    slot = tmp_path / "config" / "lock" / "deliver" / "alice.0"
    with DiskStore.from_config(config) as disk:
        with disk.delivery_slot("alice"):
            with pytest.raises(MailboxBusy), disk.delivery_slot("alice"):  # this process's
                pass
            assert _other_process_can_lock(slot) is False
        assert _other_process_can_lock(slot) is True
        kept = _open_descriptors_of(slot)
        assert kept == 1
        with disk.delivery_slot("alice"):  # the same file again: no new descriptor
            assert _open_descriptors_of(slot) == 1
    assert _open_descriptors_of(slot) == 0


def test_slot_files_kept_open_stay_within_a_quarter_of_the_open_files_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Debian's default soft limit is 1,024: a standalone lmtpd must not spend it on slots."""
    monkeypatch.setattr(locks.resource, "getrlimit", lambda _: (40, 4096))
    config = make_config(tmp_path, lmtp_user_concurrency_limit="1")
    with DiskStore.from_config(config) as disk:
        for n in range(30):
            with disk.delivery_slot(f"user{n}"):
                pass
        slots = sorted((tmp_path / "config" / "lock" / "deliver").iterdir())
        assert len(slots) == 30
        assert sum(_open_descriptors_of(slot) for slot in slots) == 10


def test_slots_held_by_one_thread_exclude_another_of_the_same_process(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path, lmtp_user_concurrency_limit="1")) as disk:
        outcome: list[str] = []
        with disk.delivery_slot("alice"):

            def other() -> None:
                try:
                    with disk.delivery_slot("alice"):
                        outcome.append("took")
                except MailboxBusy:
                    outcome.append("busy")

            thread = threading.Thread(target=other)
            thread.start()
            thread.join(30)
        assert outcome == ["busy"]
        with disk.delivery_slot("alice"):
            pass


def test_a_forked_child_neither_shares_nor_releases_its_parents_slots(tmp_path: Path) -> None:
    config = make_config(tmp_path, lmtp_user_concurrency_limit="1")
    slot = tmp_path / "config" / "lock" / "deliver" / "alice.0"
    with DiskStore.from_config(config) as disk:
        with disk.delivery_slot("bob"):
            pass  # bob's file kept open, unlocked: the child inherits it
        with disk.delivery_slot("alice"):
            pid = os.fork()
            if pid == 0:  # the child: alice's slot is its parent's, bob's is free
                status = 0
                try:
                    with disk.delivery_slot("alice"):
                        status = 1
                except MailboxBusy:
                    with disk.delivery_slot("bob"):
                        pass
                except BaseException:
                    status = 2
                os._exit(status)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
            assert _other_process_can_lock(slot) is False  # still the parent's
        assert _other_process_can_lock(slot) is True


def _other_process_can_lock(path: Path) -> bool:
    code = (
        "import fcntl, os, sys\n"
        f"fd = os.open({str(path)!r}, os.O_RDWR)\n"
        "try:\n"
        "    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
        "except BlockingIOError:\n"
        "    sys.exit(3)\n"
    )
    returncode = subprocess.run([sys.executable, "-c", code], timeout=60).returncode
    assert returncode in (0, 3)
    return returncode == 0


def _open_descriptors_of(path: Path) -> int:
    found = 0
    for entry in os.scandir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(entry.path) == str(path):
                found += 1
    return found


def test_mailbox_lock_excludes_other_threads(tmp_path: Path) -> None:
    order: list[str] = []
    inside = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with mailbox_lock(tmp_path, ["user.a"]):
            order.append("first in")
            inside.set()
            release.wait(timeout=30)
            order.append("first out")

    thread = threading.Thread(target=holder)
    thread.start()
    inside.wait(timeout=30)
    release.set()  # the holder may leave; we must still come after it
    with mailbox_lock(tmp_path, ["user.a", "user.b"]):
        order.append("second in")
    thread.join()
    assert order == ["first in", "first out", "second in"]


def test_lock_file_names_are_safe() -> None:
    assert lock_filename("alice") == "alice"
    assert "/" not in lock_filename("a/b")
    assert lock_filename("..") != ".."
    assert len(lock_filename("x" * 600)) < 100


def test_duplicate_database_seen_mark_expire(tmp_path: Path) -> None:
    now = [1_000_000.0]
    database = DuplicateDatabase(tmp_path / "deliver.db", clock=lambda: now[0])
    assert not database.seen("<m1@x>", "user.a")
    database.mark("<m1@x>", "user.a")
    assert database.seen("<m1@x>", "user.a")
    assert not database.seen("<m1@x>", "user.b")
    database.mark("<m2@x>", "user.a", when=now[0] - 5 * 86400)
    now[0] += 2 * 86400
    assert database.expire(3) == 1  # m2 is 7 days old, m1 2 days
    assert database.seen("<m1@x>", "user.a") and not database.seen("<m2@x>", "user.a")
    assert database.expire(1) == 1
    assert database.expire(1) == 0
    database.close()


def test_duplicate_database_threads_and_processes(tmp_path: Path) -> None:
    database = DuplicateDatabase(tmp_path / "deliver.db")
    threads = [
        threading.Thread(target=lambda n=n: [database.mark(f"<{n}-{i}>", "m") for i in range(20)])
        for n in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    script = (
        "import sys\n"
        "from sealmail.store.duplicates import DuplicateDatabase\n"
        f"db = DuplicateDatabase({str(tmp_path / 'deliver.db')!r})\n"
        "print(all(db.seen(f'<{n}-{i}>', 'm') for n in range(4) for i in range(20)))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "True", out.stderr
    database.close()


def test_duplicate_marks_wait_their_turn_on_the_lock_file(tmp_path: Path) -> None:
    """A mark waits for whoever holds lock/deliver.db (another process's mark, here a
    descriptor of our own), asleep in flock rather than in SQLite's busy handler, and is
    written as soon as the turn is free."""
    import fcntl
    import os

    database = DuplicateDatabase(tmp_path / "deliver.db")
    database.mark("<first@x>", "m")  # creates the lock file
    fd = os.open(tmp_path / "lock" / "deliver.db", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    marks = [
        threading.Thread(target=database.mark, args=("<held@x>", "m")),
        threading.Thread(target=database.mark_all, args=("<held@x>", ["a", "b"])),
    ]
    for thread in marks:
        thread.start()
    for thread in marks:
        thread.join(0.2)
    assert all(thread.is_alive() for thread in marks)  # never in while the turn is held
    assert not database.seen("<held@x>", "m")
    os.close(fd)  # releases the flock
    for thread in marks:
        thread.join(60)
    assert database.seen_among("<held@x>", ["m", "a", "b"]) == {"m", "a", "b"}
    database.close()


def test_store_hands_out_duplicates_only_when_enabled(tmp_path: Path) -> None:
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        assert disk.duplicates() is disk.duplicates() is not None
    with DiskStore.from_config(make_config(tmp_path, duplicatesuppression="no")) as disk:
        assert disk.duplicates() is None


# -- contract: every backend keeps duplicates and POP locks (PostgreSQL: across nodes) ----------


def test_every_backend_keeps_duplicate_deliveries(store: Any) -> None:
    duplicates = store.duplicates()
    assert duplicates is not None
    assert not duplicates.seen("<a@x>", "user.alice")
    duplicates.mark("<a@x>", "user.alice", when=1000.0)
    duplicates.mark("<b@x>", "user.alice")
    assert duplicates.seen("<a@x>", "user.alice") and not duplicates.seen("<a@x>", "user.bob")
    assert duplicates.expire(1) == 1  # only the old one
    assert not duplicates.seen("<a@x>", "user.alice") and duplicates.seen("<b@x>", "user.alice")
    duplicates.mark_all("<c@x>", [])
    duplicates.mark_all("<c@x>", ["user.alice"])
    duplicates.mark_all("<d@x>", ["user.alice", "user.bob", "user.carol"])
    assert duplicates.seen("<c@x>", "user.alice") and not duplicates.seen("<c@x>", "user.bob")
    assert all(duplicates.seen("<d@x>", f"user.{u}") for u in ("alice", "bob", "carol"))
    assert duplicates.expire(1) == 0  # marked now, at the store's clock
    assert duplicates.seen_among("<d@x>", ["user.bob", "user.dave", "user.bob"]) == {"user.bob"}
    assert duplicates.seen_among("<d@x>", []) == set()
    many = [f"user.n{i}" for i in range(1200)]
    duplicates.mark_all("<e@x>", many[::3])
    assert duplicates.seen_among("<e@x>", many) == set(many[::3])


def test_every_backend_expires_in_batches_and_reports_each(
    store: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A big purge goes in transactions of EXPIRE_BATCH entries, so marks never wait for it."""
    import sealmail.store.duplicates as disk_duplicates
    import sealmail.store.postgres.duplicates as shared_duplicates

    monkeypatch.setattr(disk_duplicates, "EXPIRE_BATCH", 4)
    monkeypatch.setattr(shared_duplicates, "EXPIRE_BATCH", 4)
    duplicates = store.duplicates()
    for n in range(10):
        duplicates.mark(f"<old{n}@x>", "user.alice", when=1000.0)
    duplicates.mark("<new@x>", "user.alice")
    reports: list[tuple[int, int]] = []
    assert duplicates.expire(1, lambda removed, total: reports.append((removed, total))) == 10
    assert reports == [(4, 10), (8, 10), (10, 10)]
    assert duplicates.seen("<new@x>", "user.alice")
    assert not any(duplicates.seen(f"<old{n}@x>", "user.alice") for n in range(10))
    assert duplicates.expire(1, lambda removed, total: reports.append((removed, total))) == 0
    assert len(reports) == 3  # nothing to remove: no report


def test_every_backend_has_an_exclusive_pop_lock_with_its_last_login(store: Any) -> None:
    first, second = store.pop_lock("user.alice"), store.pop_lock("user.alice")
    first.acquire()
    with pytest.raises(MailboxBusy):
        second.acquire()
    store.pop_lock("user.bob").acquire()  # another maildrop is free
    assert first.last_login() == 0.0
    first.record_login(1234.0)
    first.renew()
    first.release()
    second.acquire()
    assert second.last_login() == 1234.0
    second.release()


def test_a_forked_child_reads_duplicates_through_its_own_connection(tmp_path: Path) -> None:
    """The duplicate marks' per-thread connection of a parent is never used by a forked child
    (a SQLite connection must not cross a fork); the child's reads and marks go through its own."""
    with DiskStore.from_config(make_config(tmp_path)) as disk:
        duplicates = disk.duplicates()
        duplicates.mark("<a@example>", "user.alice")
        parents = duplicates._connection()
        pid = os.fork()
        if pid == 0:  # the child: exits at once, whatever happens
            status = 1
            try:
                own = duplicates._connection()
                seen = duplicates.seen("<a@example>", "user.alice")
                duplicates.mark("<b@example>", "user.alice")
                status = 0 if own is not parents and seen else 2
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert duplicates._connection() is parents
        assert duplicates.seen("<b@example>", "user.alice")  # the child's mark counts here
