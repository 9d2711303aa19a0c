"""`sealmail newaliases` (alias_database of main.cf) and `sealmail postalias [-q KEY] FILE`."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from sealmail.cli.main import main


def test_newaliases_builds_every_hash_alias_database(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "aliases").write_text("postmaster: root\nroot: alice\n")
    (tmp_path / "lists").write_text("staff: a, b\n")
    (tmp_path / "main.cf").write_text(
        f"alias_database = hash:{tmp_path}/aliases, {tmp_path}/lists, "
        "inline:{ x=y }\n")
    assert main(["newaliases", "-c", str(tmp_path)]) == 0
    assert (tmp_path / "aliases.sqlite").exists() and (tmp_path / "lists.sqlite").exists()
    assert main(["postalias", "-c", str(tmp_path), "-q", "ROOT", str(tmp_path / "aliases")]) == 0
    assert main(["postalias", "-c", str(tmp_path), "-q", "staff",
                 str(tmp_path / "aliases"), f"hash:{tmp_path}/lists"]) == 0
    assert capsys.readouterr().out == "alice\na, b\n"
    assert main(["postalias", "-c", str(tmp_path), "-q", "nobody",
                 str(tmp_path / "aliases")]) == 1


def test_postalias_builds_and_reads_keys_from_stdin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "aliases"
    source.write_text("a: x\nb: y,\n  z\n")
    assert main(["postalias", "-c", str(tmp_path), str(source)]) == 0
    monkeypatch.setattr("sys.stdin", io.StringIO("b\nnone\na\n"))
    assert main(["postalias", "-c", str(tmp_path), "-q", "-", str(source)]) == 0
    assert capsys.readouterr().out == "b:\ty, z\na:\tx\n"


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "aliases"
    bad.write_text("ok: x\nbroken line\n")
    assert main(["postalias", "-c", str(tmp_path), str(bad)]) == 78
    assert f"{bad}" in capsys.readouterr().err
    assert main(["postalias", "-c", str(tmp_path), str(tmp_path / "absent")]) == 78
    assert "no such file" in capsys.readouterr().err
