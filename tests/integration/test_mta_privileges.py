"""The MTA started by root, as an operator starts it (issue 16, items 2, 3 and 4).

`sealmail postfix start` as root binds its listener, then the master and its smtpd processes run
as mail_owner (`postfix`); only the privileged helper stays root, and it holds no network socket.
Mail goes in through smtpd and out through local(8) (mailbox_transport LMTP into sealmail's
store, an alias `|command` run as default_privs) and a pipe(8) transport run as its user=. The
same deliveries are checked on an MTA that keeps root by the explicit opt-in, on uvloop (the
`[fast]` extra), where commands once failed with "unexpected kwargs: user, group".
"""

from __future__ import annotations

import os
import pwd
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.mta import mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port, traversable_tmpdir, wait_until_accepting
from tests.support.pipe_user import ensure_pipe_user, python_for

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(os.geteuid() != 0, reason="starting the MTA as root needs root"),
]

MAIL_OWNER = "postfix"


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smpriv-") as path:
        yield path


@pytest.fixture
def store(root: Path) -> Iterator[SealmailInstance]:
    directory = root / "store"
    directory.mkdir()
    with SealmailInstance(directory, ("alice",), socket_mode="0666") as instance:
        yield instance


def write_mta(root: Path, store: SealmailInstance, pipe_user: str, extra: str = "") -> tuple[
        Path, int]:
    """main.cf and master.cf: smtpd on a free port, alice into the store over LMTP, `team` an
    alias command, pipe.example a pipe(8) transport; the queue under `root`."""
    out = root / "out"
    out.mkdir(mode=0o777, exist_ok=True)
    out.chmod(0o777)
    (root / "aliases").write_text(f'team: "|id -u > {out}/alias.uid; cat > {out}/alias.msg"\n')
    subprocess.run([sys.executable, "-m", "sealmail", "postalias", str(root / "aliases")],
                   check=True)
    script = root / "pipe.sh"
    script.write_text(f"#!/bin/sh\nid -u > {out}/pipe.uid\ncat > {out}/pipe.msg\n")
    script.chmod(0o755)
    config = root / "etc"
    config.mkdir(exist_ok=True)
    port = free_tcp_port()
    (config / "main.cf").write_text(
        f"queue_directory = {root}/spool\ndata_directory = {root}/data\n"
        "myhostname = mx.example.com\nmydestination = example.com\n"
        "inet_interfaces = loopback-only\nmynetworks = 127.0.0.0/8\n"
        f"alias_maps = hash:{root}/aliases\nallow_mail_to_commands = alias\n"
        f"mailbox_transport = lmtp:unix:{store.socket_path}\n"
        "transport_maps = inline:{ pipe.example=mypipe }\n" + extra)
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "local unix - n n - - local\nlmtp unix - - n - - lmtp\n"
        "error unix - - n - - error\n"
        f"mypipe unix - n n - - pipe user={pipe_user} argv={script}\n")
    return config, port


def postfix(python: str, env: dict[str, str], config: Path, action: str,
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, "-m", "sealmail", "postfix", "-c", str(config), action],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def send_all(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail("sender@remote.example",
                        ["alice@example.com", "team@example.com", "bob@pipe.example"],
                        b"From: sender@remote.example\r\nSubject: as who\r\n\r\nbody\r\n")


def delivered(root: Path, store: SealmailInstance) -> None:
    out = root / "out"
    wait_for(lambda: (out / "pipe.msg").exists() and b"Subject: as who" in (
        out / "pipe.msg").read_bytes(), what="the pipe(8) command's copy")
    wait_for(lambda: (out / "alias.msg").exists() and b"Subject: as who" in (
        out / "alias.msg").read_bytes(), what="the alias command's copy")
    wait_for(lambda: store.message_count("alice") == 1, what="alice's copy in the store")


def status_ids(pid: int) -> tuple[list[int], list[int]]:
    """(real, effective, saved, fs) uids and gids of a process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return [int(x) for x in fields["Uid"].split()], [int(x) for x in fields["Gid"].split()]


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def inet_socket_inodes() -> set[str]:
    inodes = set()
    for table in ("tcp", "tcp6", "udp", "udp6"):
        path = Path("/proc/net") / table
        if path.exists():
            for line in path.read_text().splitlines()[1:]:
                inodes.add(line.split()[9])
    return inodes


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[len("socket:["):-1])
    return found


def test_started_as_root_the_mta_serves_as_mail_owner(root: Path,
                                                      store: SealmailInstance) -> None:
    pipe_user = ensure_pipe_user()
    python, env = python_for(MAIL_OWNER, root)
    config, port = write_mta(root, store, pipe_user)
    started = postfix(python, env, config, "start")
    assert started.returncode == 0, started.stderr
    maillog = root / "data" / "maillog"  # no syslog socket on the test machines, no maillog_file
    where = "syslog" if Path("/dev/log").exists() else str(maillog)
    assert f"logging to {where}" in started.stderr
    try:
        wait_until_accepting(("127.0.0.1", port), 30.0)
        send_all(port)
        delivered(root, store)
        owner = pwd.getpwnam(MAIL_OWNER)
        master = int((root / "data" / "master.pid").read_text())
        assert status_ids(master) == ([owner.pw_uid] * 4, [owner.pw_gid] * 4)
        smtpd, root_helpers = [], []
        for child in children(master):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
            uids, _ = status_ids(child)
            if b"sealmail.mta.smtpd" in cmdline:
                smtpd.append(child)
                assert uids == [owner.pw_uid] * 4
            elif 0 in uids:
                root_helpers.append(child)
        assert smtpd, "no smtpd process"
        [helper] = root_helpers  # the privileged helper is the only root process
        assert not socket_inodes(helper) & inet_socket_inodes()
        # Commands ran as their accounts: pipe(8) as user=, the alias as default_privs.
        out = root / "out"
        assert int((out / "pipe.uid").read_text()) == pwd.getpwnam(pipe_user).pw_uid
        assert int((out / "alias.uid").read_text()) == pwd.getpwnam("nobody").pw_uid
        assert (root / "spool").stat().st_uid == owner.pw_uid
        # A local user posts through maildrop; pickup (as postfix) reads and removes the file.
        posted = subprocess.run(
            [python, "-m", "sealmail", "sendmail", "-c", str(config), "alice@example.com"],
            input=b"Subject: posted by nobody\n\nhi\n", env=env, user="nobody",
            capture_output=True, timeout=60, check=False)
        assert posted.returncode == 0, posted.stderr
        wait_for(lambda: store.message_count("alice") == 2, what="the maildrop posting")
        assert not list((root / "spool" / "maildrop").iterdir())
        if where != "syslog":
            text = maillog.read_text()
            assert f"logging to {maillog}" in text and f"running as {MAIL_OWNER}" in text
    finally:
        stopped = postfix(python, env, config, "stop")
    assert stopped.returncode == 0, stopped.stderr
    wait_for(lambda: not Path(f"/proc/{helper}").exists()
             or " Z " in Path(f"/proc/{helper}/stat").read_text(), what="the helper's end")


def test_opted_in_root_mta_runs_commands_on_uvloop(root: Path, store: SealmailInstance) -> None:
    pytest.importorskip("uvloop", reason="uvloop (the [fast] extra) is not installed")
    pipe_user = ensure_pipe_user()
    config, port = write_mta(root, store, pipe_user, mail_owner_opt_in())
    env = dict(os.environ)
    started = postfix(sys.executable, env, config, "start")
    assert started.returncode == 0, started.stderr
    try:
        wait_until_accepting(("127.0.0.1", port), 30.0)
        send_all(port)
        delivered(root, store)
        assert "allow_root_services = yes" in (root / "data" / "maillog").read_text()
    finally:
        postfix(sys.executable, env, config, "stop")


@pytest.mark.parametrize("action", ["check", "start-fg"])
def test_mail_owner_root_is_refused_unless_allowed(tmp_path: Path, action: str) -> None:
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/data\n"
        "mail_owner = root\n")
    (config / "master.cf").write_text("")
    done = postfix(sys.executable, dict(os.environ), config, action)
    assert done.returncode == 78
    assert "mail_owner = root has uid 0" in done.stderr
    assert "allow_root_services = yes" in done.stderr
    assert not (tmp_path / "data" / "master.pid").exists()
