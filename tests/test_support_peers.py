"""tests/support/peers.py's own guards: a peer we did not start as our child is signalled by
pid only while that pid still is the process we started."""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

import pytest
from tests.support import peers
from tests.support.peers import PostfixInstance, closed_tcp_port, process_identity


def test_process_identity_names_one_process() -> None:
    me = process_identity(os.getpid())
    assert me is not None and me[1] > 0
    child = subprocess.Popen(["sleep", "30"])
    try:
        identity = process_identity(child.pid)
        assert identity is not None and identity[0] == "sleep" and identity[1] >= me[1]
    finally:
        child.kill()
        child.wait()
    assert process_identity(child.pid) is None


def _instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PostfixInstance:
    instance = PostfixInstance(tmp_path)
    instance.config_dir.mkdir(parents=True)
    (instance.config_dir / "main.cf").write_text("")
    monkeypatch.setattr(peers, "_run", lambda argv, **kwargs: "")  # `postfix stop`: no effect
    return instance


def test_stop_does_not_kill_a_process_that_took_the_masters_pid(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = _instance(tmp_path, monkeypatch)
    other = subprocess.Popen(["sleep", "30"])
    try:
        identity = process_identity(other.pid)
        assert identity is not None
        instance._master = other.pid, ("master", identity[1] - 1)  # the pid, reused since
        instance.stop(grace=0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_stop_kills_that_master_only_as_a_last_resort(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance = _instance(tmp_path, monkeypatch)
    stuck = subprocess.Popen(["sleep", "30"])
    identity = process_identity(stuck.pid)
    assert identity is not None
    instance._master = stuck.pid, identity
    instance.stop(grace=0.1)
    assert stuck.wait(10) == -9


def test_a_closed_port_refuses_and_stays_taken() -> None:
    with closed_tcp_port() as port:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5)
        with socket.socket() as other:  # as asyncio's servers bind: SO_REUSEADDR
            other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            with pytest.raises(OSError):
                other.bind(("127.0.0.1", port))
