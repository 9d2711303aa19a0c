"""sealmail.sessions without daemons: filing, listing (dead pids swept, junk removed), kick
markers and their delivery, and that a process that cannot be kicked files nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealmail import sessions
from sealmail.sessions import LiveSession


@pytest.fixture
def ready(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[int, object]]]:
    """As a worker: the SIGUSR2 handler 'installed' (recorded, not really installed)."""
    installed: list[tuple[int, object]] = []
    monkeypatch.setattr(sessions, "_kick_ready", False)
    monkeypatch.setattr(sessions, "_local", {})
    sessions.install_kick_handler(lambda signum, handler: installed.append((signum, handler)))
    yield installed


def live(session_id: str, user: str, pid: int | None = None) -> LiveSession:
    return LiveSession(session_id, user, "imap", "imap", "127.0.0.1", 1_700_000_000.0,
                       pid if pid is not None else os.getpid())


def test_not_filed_unless_the_process_can_be_kicked(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sessions, "_kick_ready", False)
    assert sessions.register(tmp_path, live("S1", "alice"), lambda: None) is None
    assert sessions.list_sessions(tmp_path) == []


def test_file_update_list_remove(tmp_path: Path, ready: list[tuple[int, object]]) -> None:
    assert ready[0][0] == signal.SIGUSR2
    entry = sessions.register(tmp_path, live("S1", "alice"), lambda: None)
    assert entry is not None
    sessions.register(tmp_path, live("S2", "bob"), lambda: None)
    entry.update("user.alice.Work")
    [alice] = sessions.list_sessions(tmp_path, "alice")
    assert alice.mailbox == "user.alice.Work" and alice.remote == "127.0.0.1"
    assert [s.user for s in sessions.list_sessions(tmp_path)] == ["alice", "bob"]
    entry.remove()
    assert [s.user for s in sessions.list_sessions(tmp_path)] == ["bob"]


def test_dead_pids_and_junk_are_swept(tmp_path: Path, ready: list[tuple[int, object]]) -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    sessions.register(tmp_path, live("S1", "alice", gone.pid), lambda: None)
    (tmp_path / "S9").write_text("{not json")
    assert sessions.list_sessions(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    sessions.register(tmp_path, live("S2", "alice", gone.pid), lambda: None)
    sessions.sweep_pid(tmp_path, gone.pid)
    assert not (tmp_path / "S2").exists()
    assert sessions.list_sessions(tmp_path / "missing") == []


def test_kick_marks_signals_and_the_worker_ends_only_marked_sessions(
        tmp_path: Path, ready: list[tuple[int, object]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    ended: list[str] = []
    for sid, user in (("S1", "alice"), ("S2", "alice"), ("S3", "bob")):
        sessions.register(tmp_path, live(sid, user), lambda sid=sid: ended.append(sid))
    signals: list[tuple[int, int]] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signals.append((pid, sig)))
    asked = sessions.kick(tmp_path, "alice")
    assert {s.session_id for s in asked} == {"S1", "S2"}
    assert [s for s in signals if s[1]] == [(os.getpid(), signal.SIGUSR2)] * 2  # 0: alive?
    assert sessions.deliver_kicks() == 2
    assert sorted(ended) == ["S1", "S2"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S3"]
    assert sessions.deliver_kicks() == 0


def test_clear_empties_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "proc"
    directory.mkdir()
    (directory / "S1").write_text("{}")
    sessions.clear(directory)
    assert directory.is_dir() and not list(directory.iterdir())
