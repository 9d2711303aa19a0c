from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.instance import store_root_opt_in

from sealmail.cli.main import main
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "imapd.conf"
    path.write_text(
        f"configdirectory: {tmp_path / 'config'}\n"
        f"partition-default: {tmp_path / 'spool'}\n"
        f"partition-other: {tmp_path / 'other'}\n"
        "unixhierarchysep: yes\n" + store_root_opt_in()
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_rename_delete(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "mailbox", "-C", conf, "create", "user/alice")[0] == 0
    assert run(capsys, "mailbox", "-C", conf, "create", "user/alice/Lists")[0] == 0
    assert run(capsys, "mailbox", "-C", conf, "create", "--partition", "other", "Shared")[0] == 0
    assert run(capsys, "mailbox", "-C", conf, "create", "user/alice/Grüße")[0] == 0
    code, out, _ = run(capsys, "mailbox", "-C", conf, "list")
    assert out.split("\n")[:-1] == ["Shared", "user/alice", "user/alice/Grüße", "user/alice/Lists"]
    code, out, _ = run(capsys, "mailbox", "-C", conf, "list", "user/%")
    assert out == "user/alice\n"
    assert run(capsys, "mailbox", "-C", conf, "rename", "user/alice/Lists", "user/alice/L")[0] == 0
    _, out, _ = run(capsys, "mailbox", "-C", conf, "list", "*L*")
    assert out == "user/alice/L\n"
    code, out, _ = run(capsys, "mbpath", "-C", conf, "Shared")
    assert code == 0 and out.strip().startswith(str(Path(conf).parent / "other" / "uuid"))
    assert run(capsys, "mailbox", "-C", conf, "delete", "user/alice")[0] == 0
    assert run(capsys, "mailbox", "-C", conf, "list")[1] == "Shared\n"


def test_quota_and_acl(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "mailbox", "-C", conf, "create", "user/bob")
    assert run(capsys, "mailbox", "-C", conf, "getquota", "user/bob")[1] == "user/bob: no quota\n"
    assert run(capsys, "mailbox", "-C", conf, "setquota", "user/bob", "100", "10")[0] == 0
    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        store.deliver(b"x" * 2000, [DeliveryTarget("user.bob")])
    _, out, _ = run(capsys, "mailbox", "-C", conf, "getquota", "user/bob")
    assert out == "user/bob STORAGE 2/100 MESSAGE 1/10\n"
    run(capsys, "mailbox", "-C", conf, "setquota", "user/bob", "none")  # keeps the message limit
    _, out, _ = run(capsys, "mailbox", "-C", conf, "getquota", "user/bob")
    assert out == "user/bob STORAGE 2/none MESSAGE 1/10\n"
    assert run(capsys, "mailbox", "-C", conf, "setacl", "user/bob", "anyone", "p")[0] == 0
    _, out, _ = run(capsys, "mailbox", "-C", conf, "listacl", "user/bob")
    assert out == "anyone p\nbob lrswipkxtecda\n"


def test_errors_are_one_line_and_non_zero(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "mailbox", "-C", conf, "delete", "user/ghost")
    assert code == 1 and out == "" and len(err.strip().splitlines()) == 1 and "ghost" in err
    code, _, err = run(capsys, "mailbox", "-C", conf, "setacl", "user/ghost", "x", "l")
    assert code == 1
    run(capsys, "mailbox", "-C", conf, "create", "A")
    code, _, err = run(capsys, "mailbox", "-C", conf, "setacl", "A", "x", "lQ")
    assert code == 1 and "unknown right" in err
    code, _, err = run(capsys, "mailbox", "-C", conf, "create", "bad*name")
    assert code == 1 and "bad character" in err
    code, _, err = run(capsys, "mailbox", "-C", "/nonexistent/imapd.conf", "list")
    assert code == 78 and "cannot read" in err
    with pytest.raises(SystemExit):
        main(["mailbox", "-C", conf, "setquota", "A", "lots"])


def test_reconstruct_and_expire(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "mailbox", "-C", conf, "create", "user/carol")
    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        store.deliver(b"m\r\n", [DeliveryTarget("user.carol")])
        (store.mailbox_path("user.carol") / "1.").unlink()
        duplicates = store.duplicates()
        assert duplicates is not None
        duplicates.mark("<old@x>", "user.carol", when=0.0)
        duplicates.mark("<new@x>", "user.carol")
    code, out, _ = run(capsys, "reconstruct", "-C", conf, "user/carol")
    assert code == 0 and "UID 1 has no file" in out
    assert run(capsys, "reconstruct", "-C", conf) == (0, "", "")
    assert (
        run(capsys, "expire", "-C", conf, "-E", "3")[1] == "expired 1 duplicate delivery entries\n"
    )


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_reconstruct_and_expire_show_progress_on_a_terminal(
    conf: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_quiet = main  # output goes to the fake terminal below, not to capsys
    run_quiet(["mailbox", "-C", conf, "create", "user/erin"])
    run_quiet(["mailbox", "-C", conf, "create", "user/erin/Lists"])
    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        duplicates = store.duplicates()
        assert duplicates is not None
        for n in range(3):
            duplicates.mark(f"<old{n}@x>", "user.erin", when=0.0)
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["reconstruct", "-C", conf]) == 0
    assert main(["reconstruct", "-C", conf, "user/erin"]) == 0
    assert main(["expire", "-C", conf, "-E", "1"]) == 0
    drawn = terminal.getvalue()
    assert "reconstruct: 2/2 user/erin/Lists" in drawn
    assert "reconstruct: 1/1 user/erin" in drawn
    assert "expire: 3/3 entries" in drawn
    assert drawn.endswith("\r\x1b[K")  # erased when done


def test_through_a_subprocess(conf: str) -> None:
    command = [sys.executable, "-m", "sealmail", "mailbox", "-C", conf]
    assert subprocess.run([*command, "create", "user/dan"], timeout=60).returncode == 0
    listed = subprocess.run([*command, "list"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0 and listed.stdout == "user/dan\n"
    failed = subprocess.run(
        [*command, "create", "user/dan"], capture_output=True, text=True, timeout=60
    )
    assert failed.returncode == 1 and "already exists" in failed.stderr


def test_auditlog_lines(
    conf: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """imapd.conf auditlog: Cyrus's lines for the changes `sealmail mailbox` makes; off (the
    other tests): none."""
    caplog.set_level("INFO", "sealmail.auditlog")
    Path(conf).write_text(Path(conf).read_text() + "auditlog: yes\n")
    for argv in (("create", "user/carol"), ("create", "user/carol/A"),
                 ("rename", "user/carol/A", "user/carol/B"),
                 ("setacl", "user/carol/B", "dave", "lr"), ("delete", "user/carol/B")):
        assert run(capsys, "mailbox", "-C", conf, *argv)[0] == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"]
    assert [" ".join(line.split()[1:4:2]) for line in lines] == [
        "create mailbox=<user.carol>", "acl: mailbox=<user.carol>",
        "create mailbox=<user.carol.A>", "acl: mailbox=<user.carol.A>",
        "rename oldmailbox=<user.carol.A>", "acl: mailbox=<user.carol.B>",
        "delete mailbox=<user.carol.B>",
    ]
