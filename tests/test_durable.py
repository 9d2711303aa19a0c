"""Durable replace: a crash (here: a failing step) leaves the old file or the new one, never a
mix, and no temporary file behind."""

from __future__ import annotations

import errno
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealmail import durable


def crash(step: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object) -> None:
        raise OSError(5, f"{step} failed")

    monkeypatch.setattr(os, step, fail)


def test_replace_file_writes_the_new_content_with_the_mode(tmp_path: Path) -> None:
    target = tmp_path / "main.cf"
    target.write_bytes(b"old")
    old_umask = os.umask(0o077)
    try:
        durable.replace_file(target, b"new", mode=0o644)
    finally:
        os.umask(old_umask)
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o644  # exactly: the umask does not apply
    assert os.listdir(tmp_path) == ["main.cf"]


@pytest.mark.parametrize("step", ["fsync", "rename", "write"])
def test_a_failed_step_leaves_the_old_file(
    step: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "file"
    target.write_bytes(b"old")
    crash(step, monkeypatch)
    with pytest.raises(OSError, match=f"{step} failed"):
        durable.replace_file(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["file"]


def test_a_failed_directory_fsync_comes_after_the_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rename is done (a reader sees the new file), but the caller is told it may not
    survive a crash: it must not answer OK."""
    target = tmp_path / "file"
    target.write_bytes(b"old")
    monkeypatch.setattr(durable, "fsync_directory", lambda path: (_ for _ in ()).throw(
        OSError(5, "directory fsync failed")))
    with pytest.raises(OSError, match="directory fsync failed"):
        durable.replace_file(target, b"new")
    assert target.read_bytes() == b"new"


def test_a_named_temporary_replaces_a_crash_leftover(tmp_path: Path) -> None:
    target, leftover = tmp_path / "cyrus.header", tmp_path / "cyrus.header.tmp"
    leftover.write_bytes(b"half a header from before the crash, longer than the new one")
    durable.replace_file(target, b"header", temporary=leftover)
    assert target.read_bytes() == b"header"
    assert not leftover.exists()


def test_replacing_by_name_for_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "aliases.sqlite"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError), durable.replacing(target, mode=0o640) as tmp:
        sqlite3.connect(tmp).close()
        raise RuntimeError("the build failed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["aliases.sqlite"]
    crash("rename", monkeypatch)
    with pytest.raises(OSError), durable.replacing(target) as tmp:
        tmp.write_bytes(b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["aliases.sqlite"]
    with durable.replacing(target, mode=0o640) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640


def test_replace_symlink(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    link = tmp_path / "defaultbc"
    durable.replace_symlink(link, "a.script")
    assert os.readlink(link) == "a.script"
    crash("rename", monkeypatch)
    with pytest.raises(OSError):
        durable.replace_symlink(link, "b.script")
    monkeypatch.undo()
    assert os.readlink(link) == "a.script"
    assert os.listdir(tmp_path) == ["defaultbc"]
    durable.replace_symlink(link, "b.script")
    assert os.readlink(link) == "b.script"


def test_fsync_directories_syncs_each_and_reports_a_failure_after_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directories = [tmp_path / f"d{i}" for i in range(40)]
    for directory in directories:
        directory.mkdir()
    synced: list[str] = []
    real = durable.fsync_directory

    def counting(path: str | os.PathLike[str]) -> None:
        synced.append(str(path))
        if str(path).endswith("d7"):
            raise OSError(errno.EIO, "I/O error")
        real(path)

    monkeypatch.setattr(durable, "fsync_directory", counting)
    with pytest.raises(OSError, match="I/O error"):
        durable.fsync_directories(directories)
    assert sorted(synced) == sorted(map(str, directories))  # the others were synced all the same
    synced.clear()
    durable.fsync_directories(directories[:1])
    assert synced == [str(directories[0])]


def test_fsync_together_syncs_directories_and_files_and_reports_a_failure_after_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directories = [str(tmp_path / f"d{i}") for i in range(3)]
    for directory in directories:
        os.mkdir(directory)
    fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600) for i in range(4)]
    synced: list[object] = []
    real_directory, real_fsync = durable.fsync_directory, os.fsync

    def directory(path: str | os.PathLike[str]) -> None:
        synced.append(str(path))
        real_directory(path)

    def file(fd: int) -> None:
        if fd in fds:  # not the directories' own descriptors
            synced.append(fd)
        if fd == fds[2]:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(durable, "fsync_directory", directory)
    monkeypatch.setattr(os, "fsync", file)
    try:
        with pytest.raises(OSError, match="I/O error"):
            durable.fsync_together(directories, fds)
        assert sorted(map(str, synced)) == sorted(map(str, [*directories, *fds]))
    finally:
        for fd in fds:
            os.close(fd)


def test_rounds_from_many_threads_all_finish_on_a_capped_pool(tmp_path: Path) -> None:
    """Concurrent committers share the fsync pool: every round ends, and the pool never grows
    past PARALLEL_FSYNCS threads however many jobs are queued."""
    fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600) for i in range(40)]
    errors: list[BaseException] = []

    def committer(start: int) -> None:
        try:
            for _ in range(5):
                durable.fsync_together([str(tmp_path)], fds[start:start + 20])
        except BaseException as exc:  # reported below
            errors.append(exc)

    try:
        threads = [threading.Thread(target=committer, args=(i * 5,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert errors == []
        assert durable._FsyncPool.get()._threads <= durable.PARALLEL_FSYNCS
    finally:
        for fd in fds:
            os.close(fd)


@pytest.fixture
def three_files(tmp_path: Path) -> Iterator[list[int]]:
    """Three open files in tmp_path, closed after the test."""
    fds = [os.open(tmp_path / f"f{i}", os.O_WRONLY | os.O_CREAT, 0o600) for i in range(3)]
    yield fds
    for fd in fds:
        os.close(fd)


def _fresh_pool(patch: pytest.MonkeyPatch) -> durable._FsyncPool:
    """A pool of this test's own, as the process's, whatever earlier tests started."""
    pool = durable._FsyncPool()
    patch.setattr(durable._FsyncPool, "_current", pool)
    patch.setattr(durable._FsyncPool, "_current_pid", os.getpid())
    return pool


def _refuse_thread_starts(patch: pytest.MonkeyPatch) -> None:
    """The process's thread limit reached."""
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    patch.setattr(threading.Thread, "start", refuse)


def test_a_thread_that_cannot_start_fails_the_round_and_leaves_the_count_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_files: list[int]
) -> None:
    """The process's thread limit reached: the commit fails with the error, nothing waits for
    jobs that were never queued, and the next round (threads available again) runs."""
    pool = _fresh_pool(monkeypatch)
    with monkeypatch.context() as patched:
        _refuse_thread_starts(patched)
        with pytest.raises(RuntimeError, match="can't start new thread"):
            durable.fsync_together([str(tmp_path)], three_files)
    assert pool._outstanding == 0
    durable.fsync_together([str(tmp_path)], three_files)
    assert pool._outstanding == 0


def test_a_started_round_runs_in_the_pool_and_reports_at_finish(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_files: list[int]
) -> None:
    """fsyncs_started returns at once (a batch commits meanwhile, store.disk.commit); finish()
    waits for every fsync and raises the first error; a pool that cannot start a thread leaves
    the round to the caller, done before fsyncs_started returns; an empty round is done."""
    fds = three_files
    ran: list[tuple[int, str]] = []
    real_fsync = os.fsync

    def file(fd: int) -> None:
        if fd in fds:
            ran.append((fd, threading.current_thread().name))
        if fd == fds[1]:
            raise OSError(errno.EIO, "I/O error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", file)
    started = durable.fsyncs_started([str(tmp_path)], fds)
    with pytest.raises(OSError, match="I/O error"):
        started.finish()
    assert sorted(fd for fd, _ in ran) == fds
    assert all(name.startswith("fsync_") for _, name in ran)
    durable.fsyncs_started([], []).finish()

    ran.clear()
    pool = _fresh_pool(monkeypatch)
    _refuse_thread_starts(monkeypatch)
    started = durable.fsyncs_started([str(tmp_path)], fds)
    assert [name for _, name in ran] == [threading.current_thread().name] * 3
    with pytest.raises(OSError, match="I/O error"):
        started.finish()
    assert pool._outstanding == 0


def test_a_started_round_fsyncs_once_every_file_is_written_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_files: list[int]
) -> None:
    """No fsync of the round (the directory's, on ext4, commits the journal at once) is issued
    before every file's data is written out, so one journal commit covers the whole round."""
    fds = three_files
    events: list[str] = []
    real_fsync = os.fsync
    monkeypatch.setattr(durable, "_sync_file_range", lambda *args: 0)

    def written(fd: int) -> None:
        events.append(f"written {fd}")

    monkeypatch.setattr(durable, "written_out", written)

    def file(fd: int) -> None:
        events.append(f"fsync {fd}")
        real_fsync(fd)

    def directory(path: str) -> None:
        events.append("fsync directory")

    monkeypatch.setattr(os, "fsync", file)
    monkeypatch.setattr(durable, "fsync_directory", directory)
    durable.fsyncs_started([str(tmp_path)], fds).finish()
    assert events[:3] == [f"written {fd}" for fd in fds]
    assert sorted(events[3:]) == sorted([f"fsync {fd}" for fd in fds] + ["fsync directory"])


def test_a_failed_write_out_fails_the_round(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, three_files: list[int]
) -> None:
    """Waiting for a file's data consumes its writeback error (its fsync would not see it
    again): that error is the round's, and the round still ends, with or without threads."""
    fds = three_files
    monkeypatch.setattr(durable, "_sync_file_range", lambda *args: 0)
    monkeypatch.setattr(durable, "written_out", lambda fd: OSError(errno.EIO, "I/O error")
                        if fd == fds[1] else None)
    with pytest.raises(OSError, match="I/O error"):
        durable.fsyncs_started([str(tmp_path)], fds).finish()
    pool = _fresh_pool(monkeypatch)
    _refuse_thread_starts(monkeypatch)
    with pytest.raises(OSError, match="I/O error"):
        durable.fsyncs_started([str(tmp_path)], fds).finish()
    assert pool._outstanding == 0


@pytest.mark.skipif(durable._sync_file_range is None, reason="no sync_file_range here")
def test_written_out_and_started_writeback_on_a_real_file(tmp_path: Path) -> None:
    """The kernel's call as used: a new file's writeback started, then waited for."""
    fd = os.open(tmp_path / "f", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        os.write(fd, b"x" * 10000)
        durable._start_writeback(fd)
        assert durable.written_out(fd) is None
    finally:
        os.close(fd)
