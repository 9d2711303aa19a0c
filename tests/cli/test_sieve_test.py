"""`sealmail sieve-test`: the --json contract, exit codes, options, and Pigeonhole's agreement."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from sealmail.cli.main import main

CORPUS = Path(__file__).parent.parent / "sieve" / "corpus"
MESSAGE = (b"From: Coyote <coyote@desert.example.org>\r\nTo: me@example.com\r\n"
           b"Subject: a present\r\nMessage-ID: <1@desert.example.org>\r\n\r\nhello\r\n")


def sieve_test(tmp_path: Path, script: str, *options: str,
               message: bytes = MESSAGE) -> tuple[int, str, str]:
    script_path = tmp_path / "script.sieve"
    message_path = tmp_path / "message.eml"
    script_path.write_text(script, encoding="utf-8")
    message_path.write_bytes(message)
    out_path = tmp_path / "out.txt"
    err_path = tmp_path / "err.txt"
    command = ["sealmail", "sieve-test", *options, str(script_path), str(message_path)]
    with out_path.open("w") as out, err_path.open("w") as err:
        code = subprocess.run(command, stdout=out, stderr=err, check=False).returncode
    return code, out_path.read_text(), err_path.read_text()


def json_of(tmp_path: Path, script: str, *options: str, **kwargs: bytes) -> list[object]:
    code, out, _ = sieve_test(tmp_path, script, "--json", *options, **kwargs)
    assert code in (0, 1, 2)
    parsed = json.loads(out)
    assert isinstance(parsed, list)
    return parsed


@pytest.mark.parametrize("name", sorted(p.stem for p in CORPUS.glob("*.sieve")))
def test_corpus_through_the_command(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.loads((CORPUS / f"{name}.json").read_text())
    options = ["--json"]
    if "from" in spec:
        options += ["-f", spec["from"]]
    if "to" in spec:
        options += ["-r", spec["to"]]
    for mailbox in spec.get("mailboxes", ()):
        options += ["--mailbox", mailbox]
    code = main(["sieve-test", *options, str(CORPUS / f"{name}.sieve"),
                 str(CORPUS / f"{name}.eml")])
    output = json.loads(capsys.readouterr().out)
    assert output == spec["expected"]
    expected_code = {"compile": 1, "runtime": 2}.get(str(output[0].get("error")), 0)
    assert code == expected_code


def test_json_shapes(tmp_path: Path) -> None:
    script = ('require ["fileinto", "copy", "imap4flags", "vacation", "mailbox"];\n'
              'fileinto :copy :create :flags ["\\\\Seen", "\\\\seen", "B"] "X";\n'
              'redirect "<a@b.example>"; redirect "a@b.example";\n'
              'vacation :subject "S" :from "me@example.com" :handle "h" "R";\n')
    assert json_of(tmp_path, script, "-r", "me@example.com") == [
        {"action": "fileinto", "mailbox": "X", "flags": ["\\seen", "b"], "copy": True,
         "create": True},
        {"action": "redirect", "address": "a@b.example", "copy": False},
        {"action": "vacation", "subject": "S", "from": "me@example.com", "seconds": 604800,
         "mime": False, "reason": "R", "handle": "h", "sent": True,
         "to": "sender@example.com"},
    ]


def test_null_sender_and_default_envelope(tmp_path: Path) -> None:
    script = 'require "vacation"; vacation "away";'
    (sent, _keep) = json_of(tmp_path, script, "-r", "me@example.com")
    assert isinstance(sent, dict) and sent["to"] == "sender@example.com"
    (sent, _keep) = json_of(tmp_path, script, "-r", "other@example.com")
    assert isinstance(sent, dict) and sent["sent"] is False  # not among the recipients
    (sent, _keep) = json_of(tmp_path, script, "-f", "coyote@desert.example.org",
                            "-r", "me@example.com")
    assert isinstance(sent, dict) and sent["sent"] is True
    assert sent["to"] == "coyote@desert.example.org"
    (null, _keep) = json_of(tmp_path, script, "-f", "", "-r", "me@example.com")
    assert isinstance(null, dict) and null["sent"] is False and null["to"] is None
    envelope = 'require "envelope"; if envelope :is "from" "" { discard; }'
    assert json_of(tmp_path, envelope, "-f", "") == [{"action": "discard"}]
    assert json_of(tmp_path, envelope) == [{"action": "keep", "flags": []}]


def test_mailbox_option(tmp_path: Path) -> None:
    script = ('require ["fileinto", "mailbox"];\n'
              'if mailboxexists "Work" { fileinto "Work"; } else { fileinto "Other"; }')
    assert json_of(tmp_path, script, "--mailbox", "Work") == [
        {"action": "fileinto", "mailbox": "Work", "flags": [], "copy": False, "create": False}]
    assert json_of(tmp_path, script, "--mailbox", "Else") == [{"action": "keep", "flags": []}]
    # without --mailbox every folder exists
    assert json_of(tmp_path, script)[0] == {"action": "fileinto", "mailbox": "Work",
                                            "flags": [], "copy": False, "create": False}


def test_include_dirs(tmp_path: Path) -> None:
    personal = tmp_path / "personal"
    shared = tmp_path / "global"
    personal.mkdir()
    shared.mkdir()
    (personal / "mine.sieve").write_text('require "fileinto"; fileinto "Mine";')
    (shared / "site").write_text("discard;")
    script = 'require "include"; include :personal "mine"; include :global "site";'
    assert json_of(tmp_path, script, "--include-dir", f"personal={personal}",
                   "--include-dir", f"global={shared}") == [
        {"action": "fileinto", "mailbox": "Mine", "flags": [], "copy": False, "create": False},
        {"action": "discard"}]
    assert json_of(tmp_path, script) == [{"error": "runtime"}]


def test_errors_and_exit_codes(tmp_path: Path) -> None:
    code, out, err = sieve_test(tmp_path, 'require "fileinto";\n\nfileinto "x"\n', "--json")
    assert code == 1 and json.loads(out) == [{"error": "compile", "line": 4}]
    assert "line 4, column 1: expected ';' or '{' after command 'fileinto'" in err
    code, out, err = sieve_test(
        tmp_path, "".join(f'redirect "u{i}@b.example";' for i in range(30)), "--json")
    assert code == 2 and json.loads(out) == [{"error": "runtime"}]
    assert "runtime error" in err
    code, _, err = sieve_test(tmp_path, "keep;", "--json")
    assert code == 0
    missing = main(["sieve-test", str(tmp_path / "nope.sieve"), str(tmp_path / "nope.eml")])
    assert missing == 66


def test_script_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "s.sieve").write_bytes(b"keep;\n# \xff\n")
    (tmp_path / "m.eml").write_bytes(MESSAGE)
    code, out, _ = (lambda r: (r.returncode, r.stdout, r.stderr))(subprocess.run(
        ["sealmail", "sieve-test", "--json", str(tmp_path / "s.sieve"),
         str(tmp_path / "m.eml")], capture_output=True, text=True, check=False))
    assert code == 1 and json.loads(out) == [{"error": "compile", "line": 2}]


def test_plain_output(tmp_path: Path) -> None:
    code, out, _ = sieve_test(tmp_path, 'require ["fileinto", "copy"]; fileinto :copy "A";',
                              "-e")
    assert code == 0
    assert out == ("Performed actions:\n\n * store message in folder: A [copy]\n\n"
                   "Implicit keep:\n\n * store message in folder: INBOX\n")


# --- cross-check with Pigeonhole's sieve-test -------------------------------------------------
PIGEONHOLE = shutil.which("sieve-test", path="/usr/bin")
PEER_CASES = ["rfc5228_section9", "rfc5228_section9_personal", "rfc5228_section9_company",
              "size_exists", "variables_lists", "variables_subject", "imap4flags",
              "relational", "body_text", "regex", "encoded", "subaddress_detail"]


@pytest.fixture(scope="module")
def pigeonhole_dir() -> Iterator[Path]:
    if PIGEONHOLE is None:
        pytest.skip("Pigeonhole's sieve-test (dovecot-sieve) is not installed")
    directory = Path(tempfile.mkdtemp(prefix="sealmail-pigeonhole-"))
    (directory / "home").mkdir()
    (directory / "dovecot.conf").write_text(
        "mail_uid = nobody\nmail_gid = nogroup\nfirst_valid_uid = 0\nfirst_valid_gid = 0\n"
        f"mail_home = {directory}/home\nmail_location = maildir:{directory}/home/Maildir\n")
    os.chmod(directory, 0o777)
    os.chmod(directory / "home", 0o777)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def pigeonhole_actions(directory: Path, name: str, spec: dict[str, object]) -> set[tuple[str, ...]]:
    for suffix in (".sieve", ".eml"):
        target = directory / f"{name}{suffix}"
        shutil.copyfile(CORPUS / f"{name}{suffix}", target)
        os.chmod(target, 0o644)
    command = [str(PIGEONHOLE), "-c", str(directory / "dovecot.conf")]
    if "from" in spec:
        command += ["-f", str(spec["from"])]
    if "to" in spec:
        command += ["-r", str(spec["to"])]
    command += [str(directory / f"{name}.sieve"), str(directory / f"{name}.eml")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    found: set[tuple[str, ...]] = set()
    current: list[str] | None = None
    for line in done.stdout.splitlines():
        if line.startswith(" * "):
            if current:
                found.add(tuple(current))
            text = line[3:]
            if text.startswith("store message in folder: "):
                current = ["store", text.split(": ", 1)[1]]
            elif text.startswith("redirect message to: "):
                current = ["redirect", text.split(": ", 1)[1].strip("<>")]
            else:
                current = [text.split(" ")[0]]
        elif "add IMAP flags:" in line and current is not None:
            current.append(" ".join(sorted(line.split(": ", 1)[1].lower().split())))
    if current:
        found.add(tuple(current))
    return found


def our_actions(name: str, spec: dict[str, object]) -> set[tuple[str, ...]]:
    found: set[tuple[str, ...]] = set()
    for action in spec["expected"]:  # type: ignore[attr-defined]
        kind = action["action"]
        flags = " ".join(sorted(action.get("flags", [])))
        if kind == "keep":
            found.add(("store", "INBOX", flags) if flags else ("store", "INBOX"))
        elif kind == "fileinto":
            found.add(("store", action["mailbox"], flags) if flags
                      else ("store", action["mailbox"]))
        elif kind == "redirect":
            found.add(("redirect", action["address"]))
        else:
            found.add((kind,))
    return found


@pytest.mark.peer
@pytest.mark.parametrize("name", PEER_CASES)
def test_pigeonhole_agrees(pigeonhole_dir: Path, name: str,
                           capsys: pytest.CaptureFixture[str]) -> None:
    spec = json.loads((CORPUS / f"{name}.json").read_text())
    assert main(["sieve-test", "--json", *(["-r", spec["to"]] if "to" in spec else []),
                 str(CORPUS / f"{name}.sieve"), str(CORPUS / f"{name}.eml")]) == 0
    ours = json.loads(capsys.readouterr().out)
    assert ours == spec["expected"]
    assert our_actions(name, spec) == pigeonhole_actions(pigeonhole_dir, name, spec)
