"""The MTA as an operator runs it: `sealmail postfix start/status/reload/flush/stop`, smtplib in,
sendmail through maildrop and pickup, and a kill -9 in the middle of a delivery."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.mta import mail_owner_opt_in
from tests.support.peers import free_tcp_port

SEALMAIL = (sys.executable, "-m", "sealmail")
MESSAGE = b"From: alice@example.org\r\nSubject: durable\r\n\r\nkeep me\r\n"


def write_config(root: Path, port: int, extra: str = "") -> Path:
    config = root / "etc"
    config.mkdir(parents=True, exist_ok=True)
    (config / "main.cf").write_text(
        "myhostname = mx.example.com\n"
        "mydestination = example.com\n"
        f"queue_directory = {root / 'spool'}\n"
        f"data_directory = {root / 'data'}\n"
        f"maillog_file = {root / 'maillog'}\n"
        "inet_interfaces = loopback-only\n"
        "local_transport = lmtp:unix:/nowhere/lmtp\n"
        "default_transport = error:5.7.1 no relaying in tests\n" + mail_owner_opt_in()
        + extra)
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet  n       -       n       -       -       smtpd\n"
        "lmtp      unix  -       -       n       -       -       lmtp\n"
        "error     unix  -       -       n       -       -       error\n"
        "discard   unix  -       -       n       -       -       discard\n")
    return config


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def maillog(root: Path) -> str:
    path = root / "maillog"
    return path.read_text() if path.exists() else ""


def postfix(config: Path, action: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEALMAIL, "postfix", "-c", str(config), action],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def mta(tmp_path: Path) -> Iterator[tuple[Path, Path, int]]:
    port = free_tcp_port()
    config = write_config(tmp_path, port, "local_transport = discard:\n")
    started = postfix(config, "start")
    assert started.returncode == 0, started.stderr
    try:
        yield tmp_path, config, port
    finally:
        postfix(config, "stop")


def test_start_status_submit_stop(mta: tuple[Path, Path, int]) -> None:
    root, config, port = mta
    status = postfix(config, "status")
    assert status.returncode == 0
    assert "is running: PID:" in status.stderr
    assert postfix(config, "start").returncode == 1  # already running
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE) == {}
    wait_for(lambda: ": removed" in maillog(root))
    log = maillog(root)
    assert "postfix/smtpd[" in log and "client=unknown[127.0.0.1]" in log
    assert "to=<bob@example.com>, relay=none" in log
    assert "removed" in log
    assert postfix(config, "reload").returncode == 0
    wait_for(lambda: maillog(root).count("daemon started") == 2)
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:  # listening again after reload
        assert client.noop()[0] == 250
    assert postfix(config, "stop").returncode == 0
    assert postfix(config, "status").returncode == 1


def test_sendmail_goes_through_pickup(mta: tuple[Path, Path, int]) -> None:
    root, config, _ = mta
    result = subprocess.run([*SEALMAIL, "sendmail", "-C", str(config), "-f", "root", "-t"],
                            input=b"To: Bob <bob@example.com>\nBcc: carol@example.com\n"
                                  b"Subject: local\n\nhi\n.\nnot part of it\n",
                            capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    wait_for(lambda: ": removed" in maillog(root))
    log = maillog(root)
    assert "uid=0 from=<root@mx.example.com>" in log
    assert "to=<carol@example.com>" in log


def test_flush_needs_a_running_master(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_tcp_port())
    result = postfix(config, "flush")
    assert result.returncode == 1
    assert "is not running" in result.stderr


def test_check_refuses_an_open_relay(tmp_path: Path) -> None:
    config = write_config(tmp_path, free_tcp_port(),
                          "smtpd_relay_restrictions = permit_mynetworks\n")
    result = postfix(config, "check")
    assert result.returncode == 78
    assert "reject_unauth_destination" in result.stderr


def test_kill_9_during_delivery_loses_nothing(tmp_path: Path) -> None:
    """The 250 was given, delivery was under way, the master died hard: after a restart the
    message is delivered, once."""
    port = free_tcp_port()
    config = write_config(tmp_path, port)
    sink = tmp_path / "sink"
    sink.mkdir()
    (sink / "hold").touch()
    command = [sys.executable, "-m", "tests.mta.mta_with_sink", str(config), str(sink)]
    cwd = Path(__file__).resolve().parents[2]
    first = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: "daemon started" in maillog(tmp_path))
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("c.test")
            client.mail("alice@example.org")
            client.rcpt("bob@example.com")
            code, text = client.data(MESSAGE)
        assert code == 250
        queue_id = text.decode().split()[-1]
        wait_for(lambda: f"{queue_id}: sink got the delivery" in maillog(tmp_path))
        assert (tmp_path / "spool" / "active" / queue_id).exists()
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
    assert list(sink.glob("*.eml")) == []
    (sink / "hold").unlink()
    second = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: len(list(sink.glob("*.eml"))) == 1)
        wait_for(lambda: f"{queue_id}: removed" in maillog(tmp_path))
    finally:
        second.send_signal(signal.SIGTERM)
        second.wait(30)
    [delivered] = sink.glob("*.eml")
    assert delivered.name.startswith(queue_id)
    assert delivered.read_bytes().endswith(b"keep me\r\n")
    assert f"{queue_id}: requeued from active after an interrupted delivery" in maillog(tmp_path)
    assert not any(list((tmp_path / "spool" / q).iterdir()) for q in ("incoming", "active",
                                                                 "deferred"))


def test_master_cf_service_names_without_a_services_line(tmp_path: Path) -> None:
    """`127.0.0.1:lmtp` / `submission` in master.cf on a services file without them: IANA's
    ports; a name that neither knows is a master.cf error naming it."""
    from sealmail.config.imapd_conf import ConfigError
    from sealmail.mta.config import MainConfig
    from sealmail.mta.config.main_cf import parse_main_cf
    from sealmail.mta.master import inet_addresses

    debian = tmp_path / "services"
    debian.write_text("smtp\t\t25/tcp\t\tmail\n")
    main = MainConfig.from_document(parse_main_cf("inet_interfaces = loopback-only\n", "main.cf"),
                                    hostname="mx.example.com")
    assert inet_addresses("127.0.0.1:lmtp", main, debian) == [("127.0.0.1", 24)]
    assert inet_addresses("submission", main, debian) == [("127.0.0.1", 587)]
    assert inet_addresses("mail", main, debian) == [("127.0.0.1", 25)]
    with pytest.raises(ConfigError, match=f"unknown service 'lmtpx': not in {debian}"):
        inet_addresses("127.0.0.1:lmtpx", main, debian)
    where = r"^/etc/x/master\.cf:7: 127\.0\.0\.1:lmtpx: unknown service"
    with pytest.raises(ConfigError, match=where):
        inet_addresses("127.0.0.1:lmtpx", main, debian, path="/etc/x/master.cf", line=7)


def test_maillog_stamps_are_syslog_s_with_a_space_padded_day() -> None:
    """pflogsumm and friends read `Dec  6 05:20:20` by position; `Dec 06` made them count
    nothing in a sealmail maillog."""
    import logging

    from sealmail.mta.master import MaillogFormatter, syslog_time

    when = time.mktime((2026, 12, 6, 5, 20, 20, 0, 0, -1))
    assert syslog_time(when) == "Dec  6 05:20:20"
    assert syslog_time(time.mktime((2026, 11, 25, 15, 52, 25, 0, 0, -1))) == "Nov 25 15:52:25"
    record = logging.LogRecord("sealmail.mta.smtpd", logging.INFO, "", 0, "connect from x",
                               None, None)
    record.created, record.process = when, 123
    line = MaillogFormatter("mail.example.org", "postfix").format(record)
    assert line == "Dec  6 05:20:20 mail postfix/smtpd[123]: connect from x"
    from sealmail.mta.agents.pipe import from_line_time

    assert from_line_time(when) == "Sun Dec  6 05:20:20 2026"
