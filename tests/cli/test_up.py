"""The README's run command: `sealmail up` brings a whole instance up on loopback."""

from __future__ import annotations

import fcntl
import imaplib
import os
import poplib
import pwd
import signal
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.peers import free_tcp_port, traversable_tmpdir
from tests.support.pipe_user import ensure_pipe_user, python_for

from sealmail.cli import up

UpCommand = tuple[list[str], dict[str, str], Path, str | None]


@pytest.fixture(params=["root", "a normal user"] if os.geteuid() == 0 else ["ourselves"])
def up_command(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UpCommand]:
    """`sealmail up` as argv, its environment, a parent directory for the instance and the
    account to start it as. Started by root the services run as the `sealmail` account, so
    everything they need must be reachable by it (a directory under /tmp, and a Python outside
    /root); started by a normal user, everything runs as that user, as before."""
    if request.param == "ourselves":
        yield [sys.executable, "-m", "sealmail", "up"], dict(os.environ), tmp_path, None
        return
    user = up.service_account().pw_name if request.param == "root" else ensure_pipe_user()
    with traversable_tmpdir("smup-") as directory:
        (directory / "runtime").mkdir()
        python, env = python_for(user, directory / "runtime")
        parent = directory / "home"
        parent.mkdir()
        if request.param != "root":
            account = pwd.getpwnam(user)
            os.chown(parent, account.pw_uid, account.pw_gid)
        yield [python, "-m", "sealmail", "up"], env, parent, (
            None if request.param == "root" else user)


def test_up_runs_an_instance_that_receives_and_serves_mail(
    tmp_path: Path, up_command: UpCommand
) -> None:
    argv, env, parent, user = up_command
    lmtp_port, pop3_port, sieve_port, smtp_port, imap_port = (free_tcp_port() for _ in range(5))
    log = tmp_path / "up.log"
    instance = parent / "inst"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                *argv,
                "--dir",
                str(instance),
                "--lmtp-port",
                str(lmtp_port),
                "--pop3-port",
                str(pop3_port),
                "--sieve-port",
                str(sieve_port),
                "--smtp-port",
                str(smtp_port),
                "--imap-port",
                str(imap_port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            user=user,
        )
    try:
        socket_path = instance / "lib" / "socket" / "lmtp"
        deadline = time.monotonic() + 30
        while "Stop with Ctrl-C" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        # the banner comes once every service listens, and says where the logs and pid are
        text = log.read_text()
        assert text.index("master ready") < text.index("demo user")
        assert str(instance / "mta" / "data" / "maillog") in text
        assert f"kill $(cat {instance / 'up.pid'})" in text
        second = subprocess.run([*argv, "--dir", str(instance)], env=env, capture_output=True,
                                text=True, timeout=60, check=False, user=user)
        assert second.returncode == 75
        assert f"already running (pid {process.pid})" in second.stderr
        assert "demo user" not in second.stderr
        with smtplib.LMTP(str(socket_path)) as client:
            client.sendmail("me@localhost", ["demo@localhost"], b"Subject: hi\r\n\r\nhello\r\n")
        deadline = time.monotonic() + 30
        while True:  # the MTA starts beside the store; SMTP in, then LMTP to the store
            try:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
                    smtp.sendmail(
                        "you@example.org", ["demo@localhost"], b"Subject: via smtp\r\n\r\nhello\r\n"
                    )
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
        pop.user("demo")
        pop.pass_("demo")
        while pop.stat()[0] < 2:  # the SMTP message is delivered by the queue
            pop.quit()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
            pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
            pop.user("demo")
            pop.pass_("demo")
        messages = [b"\r\n".join(pop.retr(n)[1]) for n in (1, 2)]
        assert any(b"Subject: hi" in m for m in messages)
        assert any(b"Subject: via smtp" in m and b"Received: from" in m for m in messages)
        pop.quit()
        imap = imaplib.IMAP4("127.0.0.1", imap_port)
        imap.login("demo", "demo")
        assert imap.select("INBOX") == ("OK", [b"2"])
        imap.logout()
        with socket.create_connection(("127.0.0.1", sieve_port), timeout=10) as sieve:
            assert b'"IMPLEMENTATION"' in sieve.recv(4096)
        serving = [(pid, uid, cmd) for pid, uid, cmd in descendants(process.pid)
                   if "sealmail.server.worker" in cmd or "sealmail.mta.smtpd" in cmd
                   or (cmd.endswith("start-fg") and pid != process.pid)]
        assert len(serving) >= 8  # 5 services, 2 smtpd, the MTA master (and its helper)
        expected = pwd.getpwnam(user or up.SERVICE_ACCOUNT).pw_uid if os.geteuid() == 0 \
            else os.getuid()
        root_left = [s for s in serving if s[1] != expected]
        # as root, the MTA's privileged helper is the one serving process left as root
        assert len(root_left) == (1 if os.geteuid() == 0 and user is None else 0), root_left
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log.read_text()
    assert (instance / "etc" / "cyrus.conf").exists()
    assert not socket_path.exists()


def descendants(top: int) -> list[tuple[int, int, str]]:
    """(pid, real uid, command line) of every process under `top`, from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1]
                                               .split()[1])
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [top]
    while todo:
        parent = todo.pop()
        for pid, ppid in parents.items():
            if ppid == parent:
                todo.append(pid)
                try:
                    status = (Path("/proc") / str(pid) / "status").read_text()
                    cmd = (Path("/proc") / str(pid) / "cmdline").read_bytes()
                except OSError:
                    continue
                uid = int(next(line for line in status.splitlines()
                               if line.startswith("Uid:")).split()[1])
                found.append((pid, uid, cmd.replace(b"\0", b" ").decode().strip()))
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="what root may not do")
def test_root_is_told_when_the_service_account_cannot_reach_the_instance(tmp_path: Path) -> None:
    """pytest's tmp_path lies under a 0700 directory: the `sealmail` account could not enter it."""
    done = subprocess.run(
        [sys.executable, "-m", "sealmail", "up", "--dir", str(tmp_path / "inst")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 78, done.stderr
    assert "the services run as sealmail; it cannot enter /tmp/pytest-of-root" in done.stderr
    assert "give --dir a directory it can reach" in done.stderr
    assert not (tmp_path / "inst" / "etc").exists()


def test_a_second_up_says_who_holds_the_instance(tmp_path: Path) -> None:
    instance = tmp_path / "inst"
    instance.mkdir()
    with (instance / "up.pid").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("4242\n")
        held.flush()
        done = subprocess.run(
            [sys.executable, "-m", "sealmail", "up", "--dir", str(instance)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert done.returncode == 75
    assert "already running (pid 4242)" in done.stderr
    assert "demo user" not in done.stderr
    assert not (instance / "etc").exists()


def test_the_mta_config_has_local_and_an_indexed_alias_table(tmp_path: Path) -> None:
    """Switching to the seed's 2.1 (mailbox_transport, through local(8)) needs no more files."""
    from sealmail.mta.config.instance import load_mta_config
    from sealmail.mta.config.parameters import MAIN
    from sealmail.mta.config.tables import open_table

    directory = up.mta_config(tmp_path, 2525)
    mta = load_mta_config(directory)
    assert "local" in {s.service for s in mta.master_cf if s.command == "local"}
    [spec] = mta.main.maps(MAIN.alias_maps)
    table = open_table(spec)
    assert table.lookup("postmaster") is None  # commented out: an empty, valid table
