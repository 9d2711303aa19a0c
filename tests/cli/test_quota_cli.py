"""`sealmail quota [-f]`: Cyrus's quota(8) report, its repair, repair while lmtpd delivers, and
progress only on a terminal."""

from __future__ import annotations

import os
import pty
import smtplib
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance, store_root_opt_in

from sealmail.cli.main import main
from sealmail.cli.progress import Progress
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "imapd.conf"
    path.write_text(
        f"configdirectory: {tmp_path / 'config'}\n"
        f"partition-default: {tmp_path / 'spool'}\n" + store_root_opt_in()
    )
    return str(path)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _store(conf: str) -> DiskStore:
    return DiskStore.from_config(load_imapd_conf(conf))


def test_report_in_cyrus_columns(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    with _store(conf) as store:
        for name in ("user.alice", "user.alice.Lists", "user.bob", "user.carol"):
            store.create_mailbox(name)
        store.set_quota("user.alice", 100, None)
        store.set_quota("user.bob", 0, 10)
        store.deliver(
            b"x" * 30000, [DeliveryTarget("user.alice"), DeliveryTarget("user.alice.Lists")]
        )
        store.deliver(b"y" * 10, [DeliveryTarget("user.bob", ignore_quota=True)])
    code, out, err = run(capsys, "quota", "-C", conf)
    assert code == 0 and err == ""
    assert out.splitlines() == [
        "   Quota   % Used     Used             Resource Root",
        "     100       58       58              STORAGE user.alice",
        "                         2              MESSAGE user.alice",
        "       0                 0              STORAGE user.bob",
        "      10       10        1              MESSAGE user.bob",
    ]
    code, out, _ = run(capsys, "quota", "-C", conf, "user.b")
    assert [line.split()[-1] for line in out.splitlines()[1:]] == ["user.bob", "user.bob"]


def test_fix_repairs_drifted_counters(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    with _store(conf) as store:
        store.create_mailbox("user.alice")
        store.create_mailbox("user.alice.Sub")
        store.set_quota("user.alice", 1000, 100)
        store.deliver(b"z" * 2048, [DeliveryTarget("user.alice"), DeliveryTarget("user.alice.Sub")])
    index = sqlite3.connect(Path(conf).parent / "config" / "mailboxes.db", isolation_level=None)
    index.execute("UPDATE mailboxes SET size_bytes = 999999, exists_count = 7")  # drifted
    index.close()
    code, out, err = run(capsys, "quota", "-C", conf, "-f")
    assert code == 0
    assert err.splitlines() == [
        "user.alice: STORAGE usage was 1999998, now 4096",
        "user.alice: MESSAGE usage was 14, now 2",
    ]
    assert "    1000        0        4              STORAGE user.alice" in out.splitlines()
    code, _, err = run(capsys, "quota", "-C", conf, "-f")
    assert code == 0 and err == ""  # nothing left to repair, and no progress off a terminal


def test_a_missing_config_exits_non_zero(tmp_path: Path) -> None:
    assert main(["quota", "-C", str(tmp_path / "nope.conf")]) != 0


def _read_all(fd: int) -> str:
    """Everything written to a pty whose other end is closed (Linux then says EIO)."""
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode()


def test_progress_only_on_a_terminal(tmp_path: Path) -> None:
    plain = (tmp_path / "plain").open("w+")
    with Progress("work", 3, plain) as progress:
        for _ in range(3):
            progress.step("x")
        progress.write("a real line")
    plain.seek(0)
    assert plain.read() == "a real line\n"  # output only, no progress
    parent, child = pty.openpty()
    try:
        with (
            os.fdopen(child, "w", closefd=True) as terminal,
            Progress("work", 2, terminal, interval=0) as progress,
        ):
            progress.step("first")
            progress.write("a real line")
            progress.step("second")
        drawn = _read_all(parent)
    finally:
        os.close(parent)
    assert "work: 1/2 first" in drawn and "work: 2/2 second" in drawn
    assert "\r\x1b[Ka real line\r\n" in drawn  # the progress line erased first
    assert drawn.endswith("\r\x1b[K")  # erased at the end


def test_fix_while_lmtpd_delivers(tmp_path: Path) -> None:
    """Counters made wrong, then `quota -f` run again and again while three clients deliver:
    afterwards the usage is exactly what the messages add up to."""
    with SealmailInstance(tmp_path, users=["alice"]) as inst:
        with inst.store() as store:
            store.set_quota("user.alice", 100000, None)
            store.deliver(b"seed", [DeliveryTarget("user.alice")])
        index = sqlite3.connect(inst.configdirectory / "mailboxes.db", isolation_level=None)
        index.execute("UPDATE mailboxes SET size_bytes = size_bytes + 5000, exists_count = 40")
        index.close()
        stop = threading.Event()
        sent: list[str] = []

        def deliver_many(who: int) -> None:
            for n in range(150):
                if stop.is_set():
                    return
                with smtplib.LMTP(inst.socket_path) as client:
                    client.ehlo()
                    client.mail("s@example.org")
                    client.rcpt("alice@example.com")
                    body = f"Message-ID: <r{who}.{n}@x>\r\n\r\n".encode() + b"b" * (100 + n)
                    assert client.data(body)[0] == 250
                    sent.append(f"{who}.{n}")

        threads = [threading.Thread(target=deliver_many, args=(who,)) for who in range(3)]
        for thread in threads:
            thread.start()
        outputs = []
        try:
            for _ in range(10):
                done = subprocess.run(
                    [sys.executable, "-m", "sealmail", "quota", "-C", str(inst.conf_path), "-f"],
                    capture_output=True, text=True, timeout=120, check=False,
                )
                assert done.returncode == 0, done.stderr
                outputs.append(done.stderr)
        finally:
            stop.set()
            for thread in threads:
                thread.join(120)
        assert "user.alice: STORAGE usage was" in outputs[0]
        assert all("usage was" not in err for err in outputs[1:]), outputs  # still right
        with inst.store() as store:
            records = store.messages("user.alice")
            usage = store.quota_for("user.alice")
        assert usage is not None
        assert usage.messages_used == len(records) == len(sent) + 1
        assert usage.storage_used == sum(r.size for r in records)
