"""`sealmail cyradm` against a real sealmail imapd (in process, on 127.0.0.1) with an admin user:
STARTTLS, AUTHENTICATE PLAIN and LOGIN, Cyrus's short forms and what they print."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.server import test_imapd
from tests.server.test_imapd import PASSWORD, Server

from sealmail.cli.cyradm import columns, perl_number, split_commands
from sealmail.cli.imap_admin import tokens
from sealmail.cli.main import main

Start = Callable[..., Server]
# The imapd fixtures (an in-process server with users alice, bob and admin), shared.
ca = test_imapd.ca
start = test_imapd.start


def cafile(server: Server, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    server.ca.cert_pem.write_to_path(str(path))
    return str(path)


def cyradm(
    server: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str], commands: str,
    *extra: str, user: str = "admin",
) -> tuple[int, str, str]:
    argv = ["cyradm", "-u", user, "-w", PASSWORD, "-p", str(server.port),
            "--cafile", cafile(server, tmp_path), *extra, "-e", commands, "127.0.0.1"]
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_mailboxes_acls_and_quotas_over_starttls(
    start: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start()  # no allowplaintext: only STARTTLS makes PLAIN possible
    # sealmail's imapd wants "k" on the parent even from an admin (Cyrus's admins need none).
    code, out, err = cyradm(
        server, tmp_path, capsys, "cm user.carol; sam user.carol admin k; cm user.carol.Work; lm"
    )
    assert (code, err) == (0, "")
    listed = out.splitlines()
    assert listed == columns(
        ["INBOX (\\HasNoChildren)", "user.alice (\\HasNoChildren)",
         "user.bob (\\HasNoChildren)", "user.carol (\\HasChildren)",
         "user.carol.Work (\\HasNoChildren)"], 79)
    assert listed[0].startswith("INBOX (\\HasNoChildren)            user.carol")  # by column

    code, out, err = cyradm(
        server, tmp_path, capsys,
        "sam user.carol alice lrs bob lr; lam user.carol; dam user.carol bob; lam user.carol")
    assert (code, err) == (0, "")
    assert "alice lrs\n" in out and "carol lrswipkxtecda\n" in out
    assert out.count("bob lr\n") == 1  # listed once: gone after dam
    assert out.count("alice lrs\n") == 2

    code, out, err = cyradm(server, tmp_path, capsys,
                            "sq user.carol 1000; lq user.carol; lqr user.carol.Work")
    assert (code, err) == (0, "")
    assert out == (
        "quota:1000\n"
        " STORAGE 0/1000 (0%)\n"
        "user.carol STORAGE 0/1000 (0%)\n"
    )
    code, out, err = cyradm(server, tmp_path, capsys,
                            "sq user.carol STORAGE 3 MESSAGE 3; lq user.carol")
    server.deliver(b"Subject: x\r\n\r\n" + b"y" * 1500, "user.carol")
    code, out, err = cyradm(server, tmp_path, capsys, "lq user.carol")
    assert out == " STORAGE 1/3 (33.3333333333333%) MESSAGE 1/3 (33.3333333333333%)\n"
    code, out, err = cyradm(server, tmp_path, capsys, "sq user.carol none; lq user.carol")
    assert out.startswith("remove quota\n")

    code, out, err = cyradm(server, tmp_path, capsys,
                            "renm user.carol.Work user.carol.Old; lm user.carol.*; dm user.carol")
    assert (code, err) == (0, "")
    assert out.splitlines() == ["user.carol.Old (\\HasNoChildren)  "]
    code, out, _ = cyradm(server, tmp_path, capsys, "lm user.carol*")
    assert code == 0 and out == ""


def test_errors_print_the_servers_text_and_exit_non_zero(
    start: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start()
    code, out, err = cyradm(server, tmp_path, capsys, "cm user.alice; lm user.alice")
    assert code == 1
    assert err.startswith("createmailbox: ") and "exists" in err.lower()
    assert out.startswith("user.alice")  # the commands after a failure still run
    code, _, err = cyradm(server, tmp_path, capsys, "dm user.nobody")
    assert code == 1 and err.startswith("deletemailbox: ")
    code, _, err = cyradm(server, tmp_path, capsys, "sam user.alice bob")
    assert code == 1 and err == "usage: setaclmailbox mailbox id rights [id rights ...]\n"
    code, _, err = cyradm(server, tmp_path, capsys, "frobnicate")
    assert code == 1 and err == "unknown command: frobnicate\n"
    # A user who is no admin: the server refuses, cyradm says why.
    code, _, err = cyradm(server, tmp_path, capsys, "cm Shared", user="alice")
    assert code == 1 and err.startswith("createmailbox: ")
    code, _, err = cyradm(server, tmp_path, capsys, "sq user.bob 10", user="alice")
    assert code == 1 and err.startswith("setquota: ")


def test_wrong_password_and_no_tls(
    start: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start()
    assert main(["cyradm", "-u", "admin", "-w", "wrong", "-p", str(server.port),
                 "--cafile", cafile(server, tmp_path), "-e", "lm", "127.0.0.1"]) == 1
    assert "cannot authenticate" in capsys.readouterr().err
    # Without TLS the server disables plaintext mechanisms: refused, not sent in the clear.
    code, _, err = cyradm(server, tmp_path, capsys, "lm", "--notls")
    assert code == 1 and "cannot authenticate" in err


def test_login_mechanism_without_tls_when_allowed(
    start: Start, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = start(allowplaintext="yes")
    code, out, err = cyradm(server, tmp_path, capsys, "lm user.bob", "--notls", "-a", "LOGIN")
    assert (code, err) == (0, "")
    assert out == "user.bob (\\HasNoChildren)  \n"


def test_interactive_prompt(start: Start, tmp_path: Path) -> None:
    server = start()
    done = subprocess.run(
        [sys.executable, "-m", "sealmail", "cyradm", "-u", "admin", "-w", PASSWORD,
         "-p", str(server.port), "--cafile", cafile(server, tmp_path), "127.0.0.1"],
        input="cm user.dave\nlm user.d*\nlq user.nobody\nhelp\nexit 3\nlm\n",
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 3
    assert done.stdout.startswith("127.0.0.1> 127.0.0.1> user.dave (\\HasNoChildren)  \n")
    assert "listquota: " in done.stderr
    assert "cm, create" in done.stdout and "show commands" in done.stdout
    assert done.stdout.count("127.0.0.1> ") == 5  # nothing after exit


def test_command_splitting_and_formatting() -> None:
    assert split_commands("cm 'a b'; lm;;sq x 1") == [["cm", "a b"], ["lm"], ["sq", "x", "1"]]
    assert split_commands("sam user.x anyone lrs") == [["sam", "user.x", "anyone", "lrs"]]
    assert columns(["b", "a", "c"], 6) == ["a  b  c  "]
    assert columns(["b", "a", "c"], 5) == ["a  c  ", "b  "]  # column-major
    assert columns(["a" * 100], 79) == ["a" * 100 + " " * 0]
    assert perl_number(0.0) == "0" and perl_number(100 / 3) == "33.3333333333333"
    assert tokens(b'user.bob (STORAGE 0 100) "a \\"q\\""') == [
        "user.bob", ["STORAGE", "0", "100"], 'a "q"']
