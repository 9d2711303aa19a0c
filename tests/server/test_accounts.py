"""Started by root, the store's programs serve as imapd.conf's cyrus_user (issue 16, item 3).

Real processes on a directory the `cyrus` account can reach (0755 under /tmp), with a Python
that account can run (tests.support.pipe_user.python_for), and no opt-in: the default
`cyrus_user: cyrus` is what is tested. Every serving process's ids are read from /proc.
"""

from __future__ import annotations

import grp
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from tests.support.peers import free_tcp_port, traversable_tmpdir, wait_until_accepting
from tests.support.pipe_user import python_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")

CYRUS = "cyrus"
MESSAGE = b"From: a@example.org\r\nSubject: as cyrus\r\n\r\nhello\r\n"


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Ids:
    uids: tuple[int, ...]  # real, effective, saved, filesystem
    gids: tuple[int, ...]
    groups: frozenset[int]


def ids_of(pid: int) -> Ids:
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return Ids(
        tuple(int(x) for x in fields["Uid"].split()),
        tuple(int(x) for x in fields["Gid"].split()),
        frozenset(int(x) for x in fields["Groups"].split()),
    )


def _runs_as(pid: int, expected: Ids) -> bool:
    """Whether `pid` has the ids `expected`, or is gone (an EVENT that ended)."""
    try:
        return ids_of(pid) == expected
    except FileNotFoundError:
        return True


def as_account(name: str) -> dict[str, Any]:
    """subprocess arguments for a child as `name`, with its group and groups (as pipe(8) or
    Postfix's lmtp would run; user= alone would keep root's group)."""
    gid = pwd.getpwnam(name).pw_gid
    return {"user": name, "group": gid, "extra_groups": os.getgrouplist(name, gid)}


def children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                status = (entry / "status").read_text()
            except OSError:
                continue
            if f"\nPPid:\t{pid}\n" in status:
                found.append(int(entry.name))
    return found


def cyrus_ids() -> Ids:
    account = pwd.getpwnam(CYRUS)
    return Ids(
        (account.pw_uid,) * 4,
        (account.pw_gid,) * 4,
        frozenset(os.getgrouplist(CYRUS, account.pw_gid)),
    )


class Store:
    """imapd.conf and cyrus.conf in a directory `cyrus` can reach; sealmail run as root."""

    def __init__(self, root: Path, python: str, env: dict[str, str]) -> None:
        self.root, self.python, self.env = root, python, env
        self.conf = root / "imapd.conf"
        self.cyrus_conf = root / "cyrus.conf"
        self.socket = root / "config" / "socket" / "lmtp"
        self.log = root / "master.log"
        self.conf.write_text(
            f"configdirectory: {root / 'config'}\n"
            f"partition-default: {root / 'spool'}\n"
            f"lmtpsocket: {self.socket}\n"
            "servername: accounts.test\n"
            "allowplaintext: yes\n"
            "auth_failure_delay: 0\n"
            "unix_socket_group: postfix\n"
        )

    def sealmail(
        self, *args: str, user: str | None = None, data: bytes = b""
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            [self.python, "-m", "sealmail", *args],
            input=data,
            env=self.env,
            cwd="/",
            **(as_account(user) if user else {}),
            capture_output=True,
            timeout=60,
            check=False,
        )

    def popen(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as log:
            return subprocess.Popen(
                [self.python, "-m", "sealmail", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def files(self) -> dict[Path, os.stat_result]:
        return {
            path: path.lstat()
            for top in (self.root / "config", self.root / "spool")
            for path in [top, *top.rglob("*")]
        }


@pytest.fixture
def store() -> Iterator[Store]:
    try:
        pwd.getpwnam(CYRUS)
        grp.getgrnam("postfix")
    except KeyError:
        pytest.skip("needs the cyrus and postfix accounts (Debian's cyrus-common, postfix)")
    with traversable_tmpdir("smacct-") as root:
        python, env = python_for(CYRUS, root)
        yield Store(root, python, env)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        return process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


def test_master_started_by_root_serves_everything_as_cyrus(store: Store) -> None:
    lmtp_port, imap_port, pop3_port = (free_tcp_port() for _ in range(3))
    store.cyrus_conf.write_text(
        'START {\n  recover cmd="reconstruct"\n}\n'
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{store.socket}" prefork=1\n'
        f'  lmtp     cmd="lmtpd -a" listen="127.0.0.1:{lmtp_port}" prefork=1\n'
        f'  imap     cmd="imapd" listen="127.0.0.1:{imap_port}" prefork=1\n'
        f'  pop3     cmd="pop3d" listen="127.0.0.1:{pop3_port}" prefork=1\n'
        "}\n"
        'EVENTS {\n  dups cmd="expire -E 3" period=600\n}\n'
    )
    master = store.popen(
        "master", "-C", str(store.conf), "-M", str(store.cyrus_conf),
        "-p", str(store.root / "master.pid"), "-D",
    )  # fmt: skip
    try:
        wait_for(lambda: "master ready" in store.log_text() or master.poll() is not None, "ready")
        assert master.poll() is None, store.log_text()
        assert "START and EVENT commands run as cyrus (uid " in store.log_text()
        expected = cyrus_ids()
        children = children_of(master.pid)
        assert len(children) >= 4, store.log_text()  # four workers (and maybe the EVENT)
        for pid in children:  # a child caught between fork and exec is root a moment longer
            wait_for(partial(_runs_as, pid, expected), f"child {pid} as cyrus", timeout=10)
        assert ids_of(master.pid).uids == (0, 0, 0, 0)  # master keeps root to bind

        # The UNIX socket: the account's, with imapd.conf's mode and group (Postfix connects).
        st = store.socket.stat()
        account, postfix = pwd.getpwnam(CYRUS), grp.getgrnam("postfix")
        assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (account.pw_uid, postfix.gr_gid, 0o660)
        as_postfix = subprocess.run(
            ["/usr/bin/python3", "-c",
             f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(store.socket)!r});"
             " print(s.recv(100).decode())"],
            cwd="/", capture_output=True, text=True, timeout=60, check=False,
            **as_account("postfix"),
        )  # fmt: skip
        assert as_postfix.stdout.startswith("220 accounts.test"), as_postfix.stderr

        # Admin tools run as root go on as cyrus.
        created = store.sealmail("mailbox", "-C", str(store.conf), "create", "user.alice")
        assert created.returncode == 0, created.stderr
        assert b"sealmail mailbox runs as cyrus (uid " in created.stderr
        password = store.sealmail(
            "saslpasswd2", "-C", str(store.conf), "-p", "-c", "alice", data=b"secret\n"
        )
        assert password.returncode == 0, password.stderr

        with smtplib.LMTP(str(store.socket)) as client:
            assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
        with smtplib.LMTP("127.0.0.1", lmtp_port) as client:
            assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
        for user in (None, CYRUS):  # the seed's pipe line runs deliver as cyrus
            done = store.sealmail(
                "deliver", "-C", str(store.conf), "-r", "a@example.org", "alice",
                user=user, data=b"Subject: by deliver\n\nhello\n",
            )  # fmt: skip
            assert (done.returncode, done.stderr) == (0, b""), (user, done.stderr)

        imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=60)
        imap.login("alice", "secret")
        assert imap.select("INBOX") == ("OK", [b"4"])
        imap.logout()
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=60)
        pop.user("alice")
        pop.pass_("secret")
        assert pop.stat()[0] == 4
        pop.quit()

        # START and EVENT ran as cyrus too (they are over: their start-up lines say who).
        wait_for(lambda: "EVENT dups: exited with status 0" in store.log_text(), "the EVENT")
        assert "START recover: reconstruct" in store.log_text()
        assert "sealmail reconstruct runs as cyrus (uid " in store.log_text()
        assert "sealmail expire runs as cyrus (uid " in store.log_text()
    finally:
        assert stop(master) == 0, store.log_text()
    # Nothing in the store is root's: every file was made by the account.
    roots = [str(path) for path, st in store.files().items() if st.st_uid != account.pw_uid]
    assert roots == []


def test_standalone_lmtpd_started_by_root_binds_then_serves_as_cyrus(store: Store) -> None:
    port = free_tcp_port()
    lmtpd = store.popen(
        "lmtpd", "-C", str(store.conf), "--listen", str(store.socket),
        "--listen", f"127.0.0.1:{port}", "-a",
    )  # fmt: skip
    try:
        wait_until_accepting(str(store.socket), 60.0, lmtpd, store.log)
        # The socket accepts once bound, before lmtpd switches to cyrus and sets its SIGTERM
        # handler; "ready" comes after both (it reads nothing from a connection before).
        wait_for(lambda: "lmtpd ready" in store.log_text() or lmtpd.poll() is not None, "ready")
        assert ids_of(lmtpd.pid) == cyrus_ids()
        created = store.sealmail("mailbox", "-C", str(store.conf), "create", "user.alice")
        assert created.returncode == 0, created.stderr
        with smtplib.LMTP("127.0.0.1", port) as client:
            assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
        assert "lmtpd runs as cyrus (uid " in store.log_text()
        assert "lmtpd logs to standard error" in store.log_text()
    finally:
        assert stop(lmtpd) == 0, store.log_text()
    assert not store.socket.exists()  # removed by the account that owns it
    uid = pwd.getpwnam(CYRUS).pw_uid
    assert [str(p) for p, st in store.files().items() if st.st_uid != uid] == []


@pytest.mark.parametrize(
    ("settings", "option"),
    [
        ("cyrus_user: root\n", "cyrus_user"),
        ("cyrus_user: 0\n", "cyrus_user"),
        ("cyrus_group: root\n", "cyrus_group"),
        ("cyrus_user: no-such-account-here\n", "cyrus_user"),
        ("cyrus_group: no-such-group-here\n", "cyrus_group"),
    ],
)
def test_a_root_or_unknown_account_is_refused_naming_the_option(
    tmp_path: Path, settings: str, option: str
) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text(f"configdirectory: {tmp_path}/config\n{settings}")
    (tmp_path / "cyrus.conf").write_text(
        f'SERVICES {{\n  lmtp cmd="lmtpd -a" listen="127.0.0.1:{free_tcp_port()}"\n}}\n'
    )
    commands = [
        ["master", "-C", str(conf), "-M", str(tmp_path / "cyrus.conf"), "-D"],
        ["lmtpd", "-C", str(conf), "--listen", f"127.0.0.1:{free_tcp_port()}"],
        ["deliver", "-C", str(conf), "alice"],
        ["mailbox", "-C", str(conf), "create", "user.alice"],
    ]
    for argv in commands:
        done = subprocess.run(
            [sys.executable, "-m", "sealmail", *argv],
            input=b"Subject: x\n\nx\n",
            capture_output=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 78, (argv, done.stderr)
        # The line that set it (line 1 is configdirectory), not the file alone.
        assert f"imapd.conf:2: {option}: ".encode() in done.stderr, (argv, done.stderr)
    assert not (tmp_path / "config" / "user").exists()  # nothing started


def test_root_serves_with_allow_root_services_and_says_so(tmp_path: Path) -> None:
    port = free_tcp_port()
    conf = tmp_path / "imapd.conf"
    conf.write_text(
        f"configdirectory: {tmp_path}/config\npartition-default: {tmp_path}/spool\n"
        "cyrus_user: root\nallow_root_services: 1\n"
    )
    (tmp_path / "cyrus.conf").write_text(
        f'SERVICES {{\n  lmtp cmd="lmtpd -a" listen="127.0.0.1:{port}"\n}}\n'
    )
    log = tmp_path / "master.log"
    with log.open("wb") as out:
        master = subprocess.Popen(
            [sys.executable, "-m", "sealmail", "master", "-C", str(conf),
             "-M", str(tmp_path / "cyrus.conf"), "-p", str(tmp_path / "pid"), "-D"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        # The port accepts once bound, before master starts the worker (and its SIGTERM handler).
        wait_for(lambda: "master ready" in log.read_text() or master.poll() is not None, "ready")
        wait_until_accepting(("127.0.0.1", port), 60.0, master, log)
        [worker] = children_of(master.pid)
        assert ids_of(worker).uids == (0, 0, 0, 0)
    finally:
        assert stop(master) == 0
    assert "allow_root_services is set: the store's services run as root" in log.read_text()


def test_a_worker_started_as_root_without_the_opt_in_refuses(tmp_path: Path) -> None:
    """The worker's own check, for a worker started some other way than by master."""
    conf = tmp_path / "imapd.conf"
    conf.write_text(f"configdirectory: {tmp_path}/config\npartition-default: {tmp_path}/spool\n")
    listener = socket.create_server(("127.0.0.1", 0))
    done = subprocess.run(
        [sys.executable, "-m", "sealmail.server.worker", "--service", "lmtp",
         "--imapd-conf", str(conf), "--fds", str(listener.fileno()), "--", "lmtpd"],
        pass_fds=[listener.fileno()], capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    listener.close()
    assert done.returncode == 78
    assert b"refusing to serve as root" in done.stderr
