"""Overload: many idle LMTP and IMAP connections held open on `sealmail master` while a normal
client is still served (asserted served, never how fast: the latency is printed, and
docs/reliability.md quotes it), and a service at its maxchild refuses at once in its own
protocol (421 4.3.2 for LMTP, * BYE for IMAP) instead of leaving the client hanging.

200 idle connections per service in CI; SEALMAIL_LONG=1 holds 1,000. The memory each idle
session costs (the workers' RSS growth divided by the count) is printed too.
"""

from __future__ import annotations

import imaplib
import os
import resource
import smtplib
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import store_root_opt_in
from tests.support.mta import wait_for
from tests.support.peers import free_tcp_port

IDLE = 1000 if os.environ.get("SEALMAIL_LONG") else 200
PASSWORD = "overload-pw"
MESSAGE = "From: a@example.org\r\nSubject: under load\r\nMessage-ID: <{}@example.org>\r\n\r\nhi\r\n"
SENT = iter(range(1_000_000))


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class Master:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.ports = {name: free_tcp_port() for name in ("imap", "lmtp", "imapbusy", "lmtpbusy")}
        self.conf = root / "imapd.conf"
        self.conf.write_text(
            f"configdirectory: {root}/config\npartition-default: {root}/partition\n"
            "servername: overload.test\nallowplaintext: yes\nauth_failure_delay: 0\n"
            "lmtp_user_concurrency_limit: 0\n" + store_root_opt_in()
        )
        (root / "cyrus.conf").write_text(
            "SERVICES {\n"
            f'  imap     cmd="imapd"    listen="127.0.0.1:{self.ports["imap"]}" prefork=1\n'
            f'  lmtp     cmd="lmtpd -a" listen="127.0.0.1:{self.ports["lmtp"]}" prefork=1\n'
            f'  imapbusy cmd="imapd"    listen="127.0.0.1:{self.ports["imapbusy"]}" maxchild=1\n'
            f'  lmtpbusy cmd="lmtpd -a" listen="127.0.0.1:{self.ports["lmtpbusy"]}" maxchild=1\n'
            "}\n"
        )
        from sealmail.auth.sasldb import SaslDB
        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.proto.sasl import split_identity
        from sealmail.store.disk import DiskStore

        config = load_imapd_conf(self.conf)
        with DiskStore.from_config(config) as store:
            store.create_mailbox("user.alice")
        SaslDB(root / "config" / "sasldb2", scrypt_n=2**10).set_password(
            split_identity("alice", "overload.test"), PASSWORD)
        self.log = root / "master.log"
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "sealmail", "master", "-C", str(self.conf), "-M",
                 str(root / "cyrus.conf"), "-p", str(root / "master.pid"), "-D"],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        wait_for(lambda: "master ready" in self.log_text() or self.process.poll() is not None,
                 what="master ready")
        assert self.process.poll() is None, self.log_text()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def workers(self, service: str) -> list[int]:
        import re

        return [int(p) for p in re.findall(rf"service {service}: started worker (\d+)",
                                           self.log_text())]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * IDLE + 200
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"needs {needed} open files, the hard limit is {hard}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, needed), hard))
    run = Master(tmp_path_factory.mktemp("overload"))
    try:
        yield run
    finally:
        run.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def greeting(sock: socket.socket) -> bytes:
    sock.settimeout(60)
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(512)
        if not chunk:
            break
        data += chunk
    return data


def deliver(port: int) -> float:
    started = time.monotonic()
    with smtplib.LMTP("127.0.0.1", port, timeout=60) as client:
        message = MESSAGE.format(f"load-{next(SENT)}").encode()  # never a duplicate
        assert client.sendmail("a@example.org", ["alice"], message) == {}
    return time.monotonic() - started


def read_mail(port: int) -> float:
    started = time.monotonic()
    with imaplib.IMAP4("127.0.0.1", port, timeout=60) as client:
        client.login("alice", PASSWORD)
        client.select("INBOX")
        status, data = client.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
        assert status == "OK" and b"under load" in data[0][1]  # type: ignore[index]
        client.logout()
    return time.monotonic() - started


def test_idle_connections_held_while_a_normal_client_is_served(master: Master) -> None:
    workers = master.workers("imap") + master.workers("lmtp")
    deliver(master.ports["lmtp"])  # the workers import and open what a session needs
    read_mail(master.ports["imap"])
    before = sum(rss_kib(pid) for pid in workers)
    held: list[socket.socket] = []
    try:
        for service, expected in (("lmtp", b"220 "), ("imap", b"* OK")):
            for _ in range(IDLE):
                sock = socket.create_connection(("127.0.0.1", master.ports[service]), 60)
                held.append(sock)
            for sock in held[-IDLE:]:
                assert greeting(sock).startswith(expected)
        after = sum(rss_kib(pid) for pid in workers)
        lmtp_seconds = deliver(master.ports["lmtp"])
        imap_seconds = read_mail(master.ports["imap"])
        print(f"\noverload: {IDLE} idle LMTP + {IDLE} idle IMAP sessions held; a delivery took "
              f"{lmtp_seconds * 1000:.0f} ms, an IMAP login+select+fetch "
              f"{imap_seconds * 1000:.0f} ms; workers' RSS {before} -> {after} KiB, "
              f"{(after - before) / (2 * IDLE):.1f} KiB per idle session")
        assert all(sock.fileno() >= 0 for sock in held)
    finally:
        for sock in held:
            sock.close()


def test_maxchild_reached_refuses_at_once_in_the_protocol(master: Master) -> None:
    for service, greeting_start, refusal in (
        ("lmtpbusy", b"220 ", b"421 4.3.2 "),
        ("imapbusy", b"* OK", b"* BYE [UNAVAILABLE] "),
    ):
        first = socket.create_connection(("127.0.0.1", master.ports[service]), 60)
        try:
            assert greeting(first).startswith(greeting_start)
            second = socket.create_connection(("127.0.0.1", master.ports[service]), 60)
            with second:
                assert greeting(second).startswith(refusal)
                assert second.recv(100) == b""  # closed
        finally:
            first.close()
