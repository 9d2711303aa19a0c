"""The per-user script store: Cyrus's layout, atomic writes, quotas, the active link."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.sieve_scripts import (
    InvalidScriptName,
    ScriptActive,
    ScriptEntry,
    ScriptExists,
    ScriptNotFound,
    ScriptQuota,
    SieveScriptStore,
    user_sieve_directory,
)


@pytest.fixture
def scripts(tmp_path: Path) -> SieveScriptStore:
    return SieveScriptStore(tmp_path / "sieve", max_script_size=64, max_scripts=3)


def test_layout_follows_cyrus(tmp_path: Path) -> None:
    assert user_sieve_directory(tmp_path, "alice") == tmp_path / "a" / "alice"
    assert user_sieve_directory(tmp_path, "Zed") == tmp_path / "z" / "Zed"
    assert user_sieve_directory(tmp_path, "1st") == tmp_path / "q" / "1st"
    assert user_sieve_directory(tmp_path, "bob@Example.COM") == (
        tmp_path / "domain" / "e" / "example.com" / "b" / "bob"
    )
    for bad in ("", "..", "a/b", ".hidden", "x@../y"):
        with pytest.raises(InvalidScriptName):
            user_sieve_directory(tmp_path, bad)


def test_from_config_defaults_under_configdirectory(tmp_path: Path) -> None:
    config = parse_imapd_conf(f"configdirectory: {tmp_path}\n")
    store = SieveScriptStore.from_config(config)
    assert store.sievedir == tmp_path / "sieve"
    assert (store.max_script_size, store.max_scripts) == (32 * 1024, 5)


def test_put_read_list_activate(scripts: SieveScriptStore) -> None:
    assert scripts.entries("alice") == []
    assert scripts.active_script("alice") is None
    scripts.put("alice", "b", b"keep;\r\n")
    scripts.put("alice", "a \u00e9", b"discard;\r\n")
    scripts.set_active("alice", "b")
    assert scripts.entries("alice") == [ScriptEntry("a \u00e9", False), ScriptEntry("b", True)]
    assert scripts.active_script("alice") == ("b", b"keep;\r\n")
    scripts.put("alice", "b", b"stop;\r\n")  # replacing the active script keeps it active
    assert scripts.active_script("alice") == ("b", b"stop;\r\n")
    directory = scripts.directory("alice")
    assert sorted(os.listdir(directory)) == [".lock", "a \u00e9.script", "b.script", "defaultbc"]
    assert os.readlink(directory / "defaultbc") == "b.script"
    scripts.set_active("alice", None)
    assert scripts.active_name("alice") is None
    with pytest.raises(ScriptNotFound):
        scripts.set_active("alice", "nope")
    with pytest.raises(ScriptNotFound):
        scripts.read("alice", "nope")


def test_quotas(scripts: SieveScriptStore) -> None:
    with pytest.raises(ScriptQuota) as too_big:
        scripts.put("alice", "a", b"#" * 65)
    assert too_big.value.kind == "MAXSIZE"
    for name in ("a", "b", "c"):
        scripts.put("alice", name, b"keep;")
    scripts.check_space("alice", "a", 64)  # replacing does not count as one more
    with pytest.raises(ScriptQuota) as too_many:
        scripts.put("alice", "d", b"keep;")
    assert too_many.value.kind == "MAXSCRIPTS"
    assert scripts.names("alice") == ["a", "b", "c"]
    scripts.put("bob", "d", b"keep;")  # quotas are per user


def test_delete_and_rename(scripts: SieveScriptStore) -> None:
    scripts.put("alice", "a", b"keep;")
    scripts.put("alice", "b", b"discard;")
    scripts.set_active("alice", "a")
    with pytest.raises(ScriptActive):
        scripts.delete("alice", "a")
    with pytest.raises(ScriptExists):
        scripts.rename("alice", "a", "b")
    with pytest.raises(ScriptNotFound):
        scripts.rename("alice", "zz", "c")
    scripts.rename("alice", "a", "c")
    assert scripts.active_script("alice") == ("c", b"keep;")
    scripts.delete("alice", "b")
    assert scripts.names("alice") == ["c"]
    with pytest.raises(ScriptNotFound):
        scripts.delete("alice", "b")


def test_names_that_cannot_be_files(scripts: SieveScriptStore) -> None:
    for bad in ("a/b", ".x", "x" * 249):
        with pytest.raises(InvalidScriptName):
            scripts.put("alice", bad, b"keep;")
    scripts.put("alice", "x" * 248, b"keep;")


def test_concurrent_puts_never_pass_the_script_limit(scripts: SieveScriptStore) -> None:
    """The limit is checked under the user's lock, so racing sessions cannot both pass it."""
    results: list[str] = []

    def put(name: str) -> None:
        try:
            scripts.put("alice", name, b"keep;")
            results.append("ok")
        except ScriptQuota:
            results.append("quota")

    threads = [threading.Thread(target=put, args=(f"s{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count("ok") == 3 and len(scripts.names("alice")) == 3


def test_failed_write_leaves_the_old_script(scripts: SieveScriptStore, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    scripts.put("alice", "a", b"old")

    def broken_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(Exception, match="No space left") as failure:
        scripts.put("alice", "a", b"new")
    assert getattr(failure.value, "temporary", None) is True
    monkeypatch.undo()
    assert scripts.read("alice", "a") == b"old"
    assert [f for f in os.listdir(scripts.directory("alice")) if f.endswith(".tmp")] == []
