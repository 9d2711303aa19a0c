"""The queue on disk: ids, durable writes, state moves, in-place recipient marks, recovery."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.mta.queue import (
    AttemptResult,
    CorruptQueueFile,
    Envelope,
    Queue,
    QueueError,
    QueueName,
    RecipientRecord,
    RecipientState,
    hash_directories,
    is_queue_id,
    new_queue_id,
    parse_queue_file,
    render_queue_file,
)
from sealmail.mta.queue_commit import CommitThread


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    q = Queue(tmp_path / "spool", clock=lambda: 1_700_000_000.0)
    q.create_directories()
    return q


def envelope(*recipients: str, sender: str = "alice@example.org") -> Envelope:
    return Envelope(sender, tuple(RecipientRecord(r, r) for r in recipients), arrival=1000.0,
                    size=5, client="unknown[127.0.0.1]", protocol="ESMTP")


def test_queue_ids_are_distinct_and_valid(queue: Queue) -> None:
    ids = {queue.enqueue(envelope("b@x.test"), b"m") for _ in range(300)}
    assert len(ids) == 300  # the same clock for all: the inode tells them apart
    assert all(is_queue_id(i) and len(i) >= 12 for i in ids)
    assert new_queue_id(5, lambda: 1.0) != new_queue_id(6, lambda: 1.0)
    assert not is_queue_id("../etc/passwd")
    assert not is_queue_id("aeiou12345")  # lower case and vowels are never in an id


def test_enqueue_writes_one_file_with_envelope_and_content(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("bob@example.com"), b"hello")
    assert queue.ids(QueueName.INCOMING) == [queue_id]
    loaded = queue.load(queue_id, QueueName.INCOMING)
    assert loaded.content.read() == b"hello"
    assert loaded.content.path == queue.path_of(queue_id, QueueName.INCOMING)
    assert loaded.envelope.sender == "alice@example.org"
    assert [r.record.address for r in loaded.pending] == ["bob@example.com"]
    assert not any(p.name.startswith(".") for p in queue.queue_directory(QueueName.INCOMING)
                   .iterdir())


def test_commit_thread_makes_a_burst_durable_and_answers_each(queue: Queue) -> None:
    async def burst() -> list[str]:
        commits = CommitThread(queue)
        writers = []
        for n in range(20):
            writer = queue.new_message()
            writer.write(f"message {n}".encode())
            writers.append(writer)
        try:
            return await asyncio.gather(
                *(commits.commit(w, envelope(f"r{n}@x.test")) for n, w in enumerate(writers)))
        finally:
            commits.close()

    ids = asyncio.run(burst())
    assert sorted(ids) == sorted(queue.ids(QueueName.INCOMING))
    for n, queue_id in enumerate(ids):
        assert queue.load(queue_id, QueueName.INCOMING).content.read() == f"message {n}".encode()
    assert not any(p.name.startswith(".")
                   for p in queue.queue_directory(QueueName.INCOMING).iterdir())


def test_commit_thread_creates_the_next_files_ahead_and_drops_them_at_close(
    queue: Queue,
) -> None:
    incoming = queue.queue_directory(QueueName.INCOMING)

    def temporary() -> set[str]:
        return {p.name for p in incoming.iterdir() if p.name.startswith(".")}

    async def two() -> tuple[set[str], bool]:
        commits = CommitThread(queue)
        first = commits.reserve()
        first.write(b"one")
        await commits.commit(first, envelope("a@x.test"))
        for _ in range(100):  # the thread makes spares just after it answered
            if len(temporary()) == CommitThread.SPARES:
                break
            await asyncio.sleep(0.01)
        ahead = temporary()
        second = commits.reserve()
        taken = second._temporary.name in ahead
        second.write(b"two")
        await commits.commit(second, envelope("b@x.test"))
        commits.close()
        return ahead, taken

    ahead, taken = asyncio.run(two())
    assert len(ahead) == CommitThread.SPARES and taken
    assert temporary() == set()
    assert len(queue.ids(QueueName.INCOMING)) == 2


def test_a_commit_that_cannot_be_written_fails_alone(queue: Queue) -> None:
    async def two() -> tuple[BaseException | str, ...]:
        commits = CommitThread(queue)
        good, bad = queue.new_message(), queue.new_message()
        good.write(b"kept")
        bad.write(b"lost")
        shutil.rmtree(queue.queue_directory(QueueName.HOLD))  # its rename fails: ENOENT
        try:
            return tuple(await asyncio.gather(
                commits.commit(good, envelope("a@x.test")),
                commits.commit(bad, envelope("b@x.test"), QueueName.HOLD),
                return_exceptions=True))
        finally:
            commits.close()

    kept, failed = asyncio.run(two())
    assert isinstance(failed, FileNotFoundError)
    assert queue.ids(QueueName.INCOMING) == [kept]
    assert list(queue.queue_directory(QueueName.INCOMING).iterdir()) == [
        queue.path_of(str(kept), QueueName.INCOMING)]  # the failed one's temporary file is gone


def test_aborted_writer_leaves_nothing(queue: Queue) -> None:
    with pytest.raises(RuntimeError), queue.new_message() as writer:
        writer.write(b"partial")
        raise RuntimeError("client went away")
    assert list(queue.queue_directory(QueueName.INCOMING).iterdir()) == []


def test_marks_are_in_place_and_survive_reload(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test", "b@x.test", "c@x.test"), b"m")
    entry = queue.load(queue_id, QueueName.INCOMING)
    size = entry.path.stat().st_size
    queue.mark(entry, [0, 2], RecipientState.SENT)
    assert entry.path.stat().st_size == size  # overwritten, not appended
    again = queue.load(queue_id, QueueName.INCOMING)
    assert [r.state for r in again.recipients] == [
        RecipientState.SENT, RecipientState.PENDING, RecipientState.SENT]
    assert [r.record.address for r in again.pending] == ["b@x.test"]


def test_results_and_attempts_are_appended(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test", "b@x.test"), b"R m\nL x\n")
    entry = queue.load(queue_id, QueueName.INCOMING)
    queue.record(entry, [AttemptResult(1, "deferred", "4.4.1", "connect refused", "none", 5.0)],
                 attempt=(5.0, 305.0))
    again = queue.load(queue_id, QueueName.INCOMING)
    assert again.content.read() == b"R m\nL x\n"  # content that looks like records stays content
    assert again.attempts == 1
    assert again.recipients[1].last is not None
    assert again.recipients[1].last.text == "connect refused"
    assert again.recipients[0].last is None


def test_torn_append_is_ignored(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test"), b"m")
    path = queue.path_of(queue_id, QueueName.INCOMING)
    with open(path, "ab") as handle:
        handle.write(b'L {"index": 0, "sta')  # a crash in the middle of an append
    assert queue.load(queue_id, QueueName.INCOMING).recipients[0].last is None


def test_move_sets_next_attempt_time(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test"), b"m")
    queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED, next_attempt=2000.0)
    assert queue.find(queue_id) is QueueName.DEFERRED
    assert queue.due(QueueName.DEFERRED, 1999.0) == []
    assert queue.due(QueueName.DEFERRED, 2000.0) == [queue_id]
    with pytest.raises(QueueError):
        queue.move(queue_id, QueueName.INCOMING, QueueName.ACTIVE)


def test_recover_requeues_active_and_removes_debris(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test"), b"m")
    queue.move(queue_id, QueueName.INCOMING, QueueName.ACTIVE)
    half = queue.new_message()
    half.write(b"content of a receive that never got its 250")
    (queue.queue_directory(QueueName.INCOMING) / ".HALF.tmp").write_bytes(b"x")
    assert queue.recover() == [queue_id]
    assert queue.find(queue_id) is QueueName.INCOMING
    assert queue.load(queue_id, QueueName.INCOMING).content.read() == b"m"
    assert queue.ids(QueueName.INCOMING) == [queue_id]
    assert [p.name for p in queue.queue_directory(QueueName.INCOMING).iterdir()] == [queue_id]


def test_remove_deletes_the_queue_file(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test"), b"m")
    assert queue.remove(queue_id)
    assert queue.find(queue_id) is None
    assert not queue.remove(queue_id)


def test_corrupt_files_are_typed_errors() -> None:
    with pytest.raises(CorruptQueueFile):
        parse_queue_file(b"garbage\n")
    with pytest.raises(CorruptQueueFile):
        parse_queue_file(b"sealmail-queue 2 7 0\nR P {}\n")
    with pytest.raises(CorruptQueueFile):
        parse_queue_file(b"sealmail-queue 2 7 0\nX what\n")
    with pytest.raises(CorruptQueueFile):
        parse_queue_file(b"sealmail-queue 2 0 0\n")  # no envelope
    with pytest.raises(CorruptQueueFile):
        parse_queue_file(b"sealmail-queue 2 90 5\nE {}\n")  # cut short


def test_maildrop_is_sticky_and_world_writable(queue: Queue) -> None:
    mode = os.stat(queue.maildrop).st_mode & 0o7777
    assert mode == 0o1733


addresses = st.text(st.characters(blacklist_categories=["Cs"]), min_size=1, max_size=40)


@given(st.lists(addresses, min_size=1, max_size=5), st.text(max_size=30))
def test_envelope_round_trip(recipients: list[str], sender: str) -> None:
    original = Envelope(sender, tuple(RecipientRecord(r, r.upper(), ("FAILURE",)) for r in
                                      recipients), arrival=12.5, size=3, envid="x")
    data = render_queue_file(original, b"R P x\r\n")
    parsed, entries, attempts, (at, size) = parse_queue_file(data)
    assert parsed == original
    assert data[at : at + size] == b"R P x\r\n"
    assert attempts == 0
    assert all(e.state is RecipientState.PENDING for e in entries)


@given(st.binary(max_size=300))
def test_parser_never_crashes_untyped(data: bytes) -> None:
    with contextlib.suppress(CorruptQueueFile):
        parse_queue_file(b"sealmail-queue 2 %d 0\n" % len(data) + data)


# -- hash_queue_names / hash_queue_depth ---------------------------------------------------------


def every_file(queue: Queue) -> list[Path]:
    """Every queue file anywhere under the queue directory (maildrop included)."""
    return sorted(p for p in queue.directory.rglob("*") if p.is_file() and not
                  p.name.startswith("."))


def test_hash_directories_follow_the_fast_clock_digits() -> None:
    assert hash_directories("0123456BCDFG", 1) == ("6",)
    assert hash_directories("0123456BCDFG", 2) == ("6", "5")
    assert hash_directories("BCDFGH", 8)[-2:] == ("_", "_")  # a short id pads, as dir_forest


def test_deferred_is_hashed_by_default_and_found_there(queue: Queue) -> None:
    queue_id = queue.enqueue(envelope("a@x.test"), b"m")
    assert queue.path_of(queue_id, QueueName.INCOMING).parent.name == "incoming"
    queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED, next_attempt=2000.0)
    path = queue.path_of(queue_id, QueueName.DEFERRED)
    assert path.relative_to(queue.directory).parts == ("deferred", queue_id[6], queue_id)
    assert path.is_file()
    assert queue.ids(QueueName.DEFERRED) == [queue_id]
    assert queue.due(QueueName.DEFERRED, 2000.0) == [queue_id]
    assert queue.find(queue_id) is QueueName.DEFERRED
    assert queue.load(queue_id, QueueName.DEFERRED).content.read() == b"m"
    assert queue.remove(queue_id, QueueName.DEFERRED)
    assert every_file(queue) == []


def test_two_levels_for_every_named_queue(tmp_path: Path) -> None:
    queue = Queue(tmp_path / "spool", hashed=frozenset(QueueName), hash_depth=2)
    queue.create_directories()
    queue_id = queue.enqueue(envelope("a@x.test"), b"m", QueueName.HOLD)
    assert queue.path_of(queue_id, QueueName.HOLD).relative_to(queue.directory).parts == (
        "hold", queue_id[6], queue_id[5], queue_id)
    assert queue.find(queue_id) is QueueName.HOLD
    queue.move(queue_id, QueueName.HOLD, QueueName.ACTIVE)
    assert queue.recover() == [queue_id]
    assert queue.path_of(queue_id, QueueName.INCOMING).is_file()
    with pytest.raises(ValueError):
        Queue(tmp_path / "spool", hash_depth=0)


def test_a_layout_change_is_read_and_then_restructured(tmp_path: Path) -> None:
    flat = Queue(tmp_path / "spool", hashed=frozenset())
    flat.create_directories()
    waiting = flat.enqueue(envelope("a@x.test"), b"deferred one")
    flat.move(waiting, QueueName.INCOMING, QueueName.DEFERRED, next_attempt=4242.0)
    held = flat.enqueue(envelope("b@x.test"), b"held one", QueueName.HOLD)
    assert (flat.directory / "deferred" / waiting).is_file()

    hashed = Queue(tmp_path / "spool", hashed=frozenset({QueueName.DEFERRED, QueueName.HOLD}),
                   hash_depth=2)
    # Before any restructuring, every reader finds the old files where they are.
    assert hashed.ids(QueueName.DEFERRED) == [waiting]
    assert hashed.find(held) is QueueName.HOLD
    assert hashed.load(held, QueueName.HOLD).content.read() == b"held one"
    assert sorted(hashed.restructure()) == sorted([(waiting, QueueName.DEFERRED),
                                                   (held, QueueName.HOLD)])
    assert hashed.path_of(waiting, QueueName.DEFERRED).is_file()
    assert hashed.path_of(waiting, QueueName.DEFERRED).stat().st_mtime == 4242.0  # kept
    assert hashed.restructure() == []  # nothing left to do

    back = Queue(tmp_path / "spool", hashed=frozenset())
    assert len(back.restructure()) == 2
    assert (back.directory / "deferred" / waiting).is_file()
    # The hash directories the flat layout does not use are gone.
    assert [p.name for p in (back.directory / "deferred").iterdir()] == [waiting]
    assert [p.name for p in (back.directory / "hold").iterdir()] == [held]


def test_a_crash_in_the_middle_of_restructuring_loses_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    flat = Queue(tmp_path / "spool", hashed=frozenset())
    flat.create_directories()
    ids = []
    for n in range(6):
        queue_id = flat.enqueue(envelope(f"r{n}@x.test"), b"m")
        flat.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)
        ids.append(queue_id)
    hashed = Queue(tmp_path / "spool", hash_depth=2)
    real_place = Queue.place
    calls = 0

    def crash_after_three(self: Queue, source: Path, target: Path) -> None:
        nonlocal calls
        calls += 1
        if calls > 3:
            raise KeyboardInterrupt("power lost")
        real_place(self, source, target)

    monkeypatch.setattr(Queue, "place", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        hashed.restructure()
    monkeypatch.setattr(Queue, "place", real_place)
    files = every_file(hashed)
    assert sorted(p.name for p in files) == sorted(ids)  # each message exactly once
    assert sum(p.parent.name == "deferred" for p in files) == 3  # three not moved yet
    assert sorted(hashed.ids(QueueName.DEFERRED)) == sorted(ids)
    assert len(hashed.restructure()) == 3  # running it again finishes the job
    assert all(hashed.path_of(i, QueueName.DEFERRED).is_file() for i in ids)


def test_queue_from_main_cf(tmp_path: Path) -> None:
    from sealmail.mta.config import load_mta_config

    (tmp_path / "main.cf").write_text(
        f"queue_directory = {tmp_path / 'spool'}\ndata_directory = {tmp_path / 'data'}\n"
        "hash_queue_names = deferred, defer, hold, bounce\nhash_queue_depth = 2\n")
    (tmp_path / "master.cf").write_text("")
    queue = Queue.from_config(load_mta_config(tmp_path).main)
    assert queue.hashed == {QueueName.DEFERRED, QueueName.HOLD}  # defer, bounce: Postfix's logs
    assert queue.hash_depth == 2
    assert queue.directory == tmp_path / "spool"


def test_threads_moving_into_a_new_hash_directory_all_get_there(tmp_path: Path) -> None:
    from concurrent.futures import ThreadPoolExecutor

    for _ in range(5):  # a race: try it a few times
        queue = Queue(tmp_path / "spool", clock=lambda: 1_700_000_000.0)  # one clock: one X
        queue.create_directories()
        ids = [queue.enqueue(envelope(f"r{n}@x.test"), b"m") for n in range(16)]
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(queue.move, ids, [QueueName.INCOMING] * 16,
                          [QueueName.DEFERRED] * 16))
        assert sorted(queue.ids(QueueName.DEFERRED)) == sorted(ids)
        shutil.rmtree(tmp_path / "spool")
