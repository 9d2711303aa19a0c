"""`sealmail postmap`: the seed's `postmap /etc/postfix/cyrus_lmtp_sasl_pass` and queries."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest
from tests.support.peers import POSTMAP, postfix_config_dir

from sealmail.cli.main import main

PASS = "cyrus.example.com lmtpuser:PASSWORD\n# c\nFoo   bar baz\n  continued\n"


@pytest.fixture
def confdir(tmp_path: Path) -> Path:
    directory = tmp_path / "etc"
    directory.mkdir()
    (directory / "main.cf").write_text("")
    return directory


def postmap(confdir: Path, *args: str) -> int:
    return main(["postmap", "-c", str(confdir), *args])


def test_seed_postmap_builds_hash_by_default(
    tmp_path: Path, confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "cyrus_lmtp_sasl_pass"
    source.write_text(PASS)
    assert postmap(confdir, str(source)) == 0
    assert (tmp_path / "cyrus_lmtp_sasl_pass.sqlite").exists()
    assert postmap(confdir, "-q", "Cyrus.Example.com", f"hash:{source}") == 0
    assert capsys.readouterr().out == "lmtpuser:PASSWORD\n"
    assert postmap(confdir, "-q", "nobody", str(source)) == 1
    assert postmap(confdir, "-s", str(source)) == 0
    assert capsys.readouterr().out == (
        "cyrus.example.com\tlmtpuser:PASSWORD\nfoo\tbar baz  continued\n")


def test_query_stream_and_other_types(
    tmp_path: Path,
    confdir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source = tmp_path / "t"
    source.write_text(PASS)
    monkeypatch.setattr("sys.stdin", io.StringIO("foo\nnope\nCYRUS.example.com\n"))
    assert postmap(confdir, "-q", "-", f"texthash:{source}") == 0
    assert capsys.readouterr().out == (
        "foo\tbar baz  continued\nCYRUS.example.com\tlmtpuser:PASSWORD\n")
    assert postmap(confdir, "-q", "K2", "inline:{ K2=V2 }") == 0
    assert postmap(confdir, "-q", "x", "static:{ a b }") == 0
    assert capsys.readouterr().out == "V2\na b\n"


def test_default_database_type_from_main_cf(
    tmp_path: Path, confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (confdir / "main.cf").write_text("default_database_type = texthash\n")
    source = tmp_path / "t"
    source.write_text(PASS)
    assert postmap(confdir, "-q", "foo", str(source)) == 0  # texthash needs no build
    assert postmap(confdir, str(source)) == 78  # and cannot be built
    assert "only hash: is built" in capsys.readouterr().err


def test_missing_source_is_a_clear_error(
    tmp_path: Path, confdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert postmap(confdir, str(tmp_path / "nope")) == 78
    assert "no such file" in capsys.readouterr().err


@pytest.mark.peer
@pytest.mark.skipif(not Path(POSTMAP).exists(), reason="Postfix's postmap not installed")
@pytest.mark.parametrize("fold", [True, False])
def test_same_answers_as_postfix(
    tmp_path: Path, confdir: Path, capsys: pytest.CaptureFixture[str], fold: bool
) -> None:
    source = tmp_path / "t"
    source.write_text(PASS + "ABC x\nabc dup\nnovalue\nk2\tv2  \n")
    flags = [] if fold else ["-f"]
    theirs = str(postfix_config_dir(tmp_path / "postfix"))  # never the host's /etc/postfix
    subprocess.run([POSTMAP, "-c", theirs, *flags, f"hash:{source}"],
                   check=True, capture_output=True)
    assert postmap(confdir, *flags, str(source)) == 0
    for key in ["cyrus.example.com", "CYRUS.EXAMPLE.COM", "foo", "abc", "ABC", "k2", "novalue"]:
        real = subprocess.run([POSTMAP, "-c", theirs, *flags, "-q", key,
                               f"hash:{source}"], capture_output=True, text=True)
        capsys.readouterr()
        code = postmap(confdir, *flags, "-q", key, str(source))
        assert (code, capsys.readouterr().out) == (real.returncode, real.stdout), key
