"""`sealmail saslpasswd2` / `sasldblistusers2` through main(), with stdin, like the originals."""

from __future__ import annotations

import io
import stat
from pathlib import Path

import pytest

from sealmail.auth.sasldb import SaslDB
from sealmail.cli.main import main
from sealmail.proto.sasl import Identity, Verdict


@pytest.fixture(autouse=True)
def cheap_scrypt(monkeypatch: pytest.MonkeyPatch) -> None:
    original = SaslDB.__init__

    def cheap(self: SaslDB, path: object, **kwargs: object) -> None:
        kwargs.setdefault("scrypt_n", 2**10)
        original(self, path, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(SaslDB, "__init__", cheap)


def run(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(argv)


def test_create_list_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "sasldb2")
    args = ["saslpasswd2", "-p", "-c", "-f", db, "-u", "cyrus.example.com", "lmtpuser"]
    assert run(monkeypatch, args, "s3cret-pw\n") == 0
    assert stat.S_IMODE(Path(db).stat().st_mode) == 0o600
    assert b"s3cret-pw" not in Path(db).read_bytes()
    database = SaslDB(db)
    assert database.check_password(Identity("lmtpuser", "cyrus.example.com"), "s3cret-pw") is (
        Verdict.OK
    )
    assert run(monkeypatch, ["sasldblistusers2", "-f", db]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "lmtpuser@cyrus.example.com: userPassword" in out
    assert "lmtpuser@cyrus.example.com: cmusaslsecretSCRAM-SHA-256" in out
    assert (
        run(monkeypatch, ["saslpasswd2", "-d", "-f", db, "-u", "cyrus.example.com", "lmtpuser"])
        == 0
    )
    assert run(monkeypatch, ["sasldblistusers2", "-f", db]) == 0
    assert capsys.readouterr().out == ""


def test_realm_from_user_name_and_default_from_servername(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text(f"servername: mail.example.net\nsasl_sasldb_path: {tmp_path}/db\n")
    assert run(monkeypatch, ["saslpasswd2", "-p", "-C", str(conf), "bob"], "pw1\n") == 0
    assert (
        run(monkeypatch, ["saslpasswd2", "-p", "-C", str(conf), "-u", "x.org", "c@d"], "pw2\n") == 0
    )
    users = {entry.identity for entry in SaslDB(tmp_path / "db").entries()}
    assert users == {Identity("bob", "mail.example.net"), Identity("c", "d")}


def test_pipe_mode_reads_one_line_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "db"
    assert (
        run(monkeypatch, ["saslpasswd2", "-p", "-f", str(db), "-u", "r", "u"], "first\nsecond\n")
        == 0
    )
    assert SaslDB(db).check_password(Identity("u", "r"), "first") is Verdict.OK


def test_no_userpassword_with_n(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "db"
    assert run(monkeypatch, ["saslpasswd2", "-p", "-n", "-f", str(db), "-u", "r", "u"], "pw\n") == 0
    [entry] = SaslDB(db).entries()
    assert "userPassword" not in entry.properties and "cmusaslsecretCRAM-MD5" in entry.properties


@pytest.mark.parametrize(
    ("argv", "stdin", "code", "message"),
    [
        (["saslpasswd2", "-p", "-c", "-d", "u"], "pw\n", 1, "mutually exclusive"),
        (["saslpasswd2", "-p"], "pw\n", 1, "user name is required"),
        (["saslpasswd2", "-p", "u"], "\n", 7, "empty password"),
        (["saslpasswd2", "-p", "@realm"], "pw\n", 7, "invalid user name"),
    ],
)
def test_errors_and_exit_codes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    stdin: str,
    code: int,
    message: str,
) -> None:
    assert run(monkeypatch, [*argv[:1], "-f", str(tmp_path / "db"), *argv[1:]], stdin) == code
    assert message in capsys.readouterr().err


def test_unusable_database_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    missing_dir = str(tmp_path / "no" / "db")
    assert run(monkeypatch, ["saslpasswd2", "-p", "-f", missing_dir, "u"], "pw\n") == 1
    assert "cannot create" in capsys.readouterr().err
    assert run(monkeypatch, ["sasldblistusers2", "-f", str(tmp_path / "none")]) == 1
    assert "no such file" in capsys.readouterr().err


def test_prompts_twice_on_a_terminal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    answers = iter(["one", "two", "same", "same"])
    monkeypatch.setattr("getpass.getpass", lambda prompt="": next(answers))
    tty = io.StringIO()
    tty.isatty = lambda: True  # type: ignore[method-assign]
    monkeypatch.setattr("sys.stdin", tty)
    db = str(tmp_path / "db")
    assert main(["saslpasswd2", "-f", db, "-u", "r", "u"]) == 1
    assert "don't match" in capsys.readouterr().err
    assert main(["saslpasswd2", "-f", db, "-u", "r", "u"]) == 0
    assert SaslDB(db).check_password(Identity("u", "r"), "same") is Verdict.OK
