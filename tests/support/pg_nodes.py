"""sealmail nodes for scale-out tests (issue 24): each node its own imapd.conf, configdirectory,
LMTP socket and IMAP/POP3 ports, running `sealmail lmtpd`, `sealmail imapd` and `sealmail pop3d`
as child processes; several nodes share one PostgreSQL database (store_dsn) and a password file,
and nothing else. With `dsn=None` a node runs the embedded (disk) store, as before a migration.

Every node's daemons are started at once and then waited for, so two nodes cost about what one
does.
"""

from __future__ import annotations

import imaplib
import poplib
import signal
import smtplib
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import free_tcp_port, wait_until_accepting

PASSWORD = "secret-pw"


class Node:
    def __init__(
        self,
        root: Path,
        dsn: str | None,
        sasldb: Path,
        *,
        services: Sequence[str] = ("lmtpd", "imapd", "pop3d"),
        extra: Mapping[str, str] | None = None,
    ) -> None:
        conf = {"allowplaintext": "yes", "sasl_sasldb_path": str(sasldb),
                "store_poll_interval": "1"}
        if dsn is not None:
            conf |= {"store_backend": "postgresql", "store_dsn": dsn}
        conf |= dict(extra or {})
        root.mkdir(parents=True, exist_ok=True)
        self.instance = SealmailInstance(root, [], imapd_conf_extra=conf)
        self.instance.write_config()
        self.root = root
        self.services = services
        self.imap_port = free_tcp_port()
        self.pop_port = free_tcp_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def conf(self) -> str:
        return str(self.instance.conf_path)

    @property
    def lmtp_socket(self) -> str:
        return self.instance.socket_path

    def set_conf(self, **changes: str) -> None:
        """Change imapd.conf options (before the next start)."""
        self.instance.imapd_conf_extra.update(changes)
        self.instance.write_config()

    def sealmail(self, *args: str) -> str:
        return self.instance.sealmail(*args)

    def _argv(self, service: str) -> list[str]:
        listen = {"lmtpd": self.lmtp_socket, "imapd": f"127.0.0.1:{self.imap_port}",
                  "pop3d": f"127.0.0.1:{self.pop_port}"}[service]
        return [*SEALMAIL, service, "-C", self.conf, "--listen", listen]

    def spawn(self) -> None:
        """Start this node's daemons without waiting for them (see `wait`)."""
        self.instance.write_config()
        for service in self.services:
            log = (self.root / f"{service}.log").open("ab")
            self.processes[service] = subprocess.Popen(
                self._argv(service), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)
            log.close()

    def wait(self, timeout: float = 60.0) -> None:
        addresses = {"lmtpd": self.lmtp_socket, "imapd": ("127.0.0.1", self.imap_port),
                     "pop3d": ("127.0.0.1", self.pop_port)}
        for service, process in self.processes.items():
            wait_until_accepting(addresses[service], timeout, process,
                                 self.root / f"{service}.log")

    def kill(self, service: str, how: int = signal.SIGKILL) -> None:
        process = self.processes.pop(service)
        process.send_signal(how)
        process.wait(30)

    def restart(self, service: str) -> None:
        if service in self.processes:
            self.kill(service, signal.SIGTERM)
        log = (self.root / f"{service}.log").open("ab")
        self.processes[service] = subprocess.Popen(
            self._argv(service), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        addresses = {"lmtpd": self.lmtp_socket, "imapd": ("127.0.0.1", self.imap_port),
                     "pop3d": ("127.0.0.1", self.pop_port)}
        wait_until_accepting(addresses[service], 60.0, self.processes[service],
                             self.root / f"{service}.log")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        self.processes.clear()

    def imap(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap_port, timeout=60)
        client.login(user, PASSWORD)
        return client

    def pop(self, user: str) -> poplib.POP3:
        client = poplib.POP3("127.0.0.1", self.pop_port, timeout=60)
        client.user(user)
        client.pass_(PASSWORD)
        return client

    def lmtp(self, recipients: Iterable[str], content: bytes) -> dict[str, tuple[int, bytes]]:
        """Deliver over LMTP; refused recipients with their reply (empty: all accepted)."""
        with smtplib.LMTP(self.lmtp_socket, timeout=60) as client:
            return client.sendmail("sender@example.org", list(recipients), content)


def start_nodes(nodes: Sequence[Node]) -> None:
    for node in nodes:
        node.spawn()
    try:
        for node in nodes:
            node.wait()
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def add_user(node: Node, user: str) -> None:
    """The user's INBOX (through `sealmail mailbox`) and password (the shared sasldb)."""
    node.sealmail("mailbox", "-C", node.conf, "create", f"user.{user}")
    subprocess.run([*SEALMAIL, "saslpasswd2", "-C", node.conf, "-p", "-c", user],
                   input=f"{PASSWORD}\n", text=True, check=True, capture_output=True)


def add_users_fast(node: Node, users: Iterable[str], quota: Mapping[str, int] | None = None
                   ) -> None:
    """INBOXes and passwords in this process (no child per user): the store of `node`'s
    imapd.conf and its sasldb (a cheap scrypt). `quota`: user -> most messages."""
    from sealmail.auth.sasldb import SaslDB, sasldb_path
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.proto.sasl import split_identity
    from sealmail.store.backends import open_store

    config = load_imapd_conf(node.conf)
    sasldb = SaslDB(sasldb_path(config), scrypt_n=2**10)
    store = open_store(config)
    try:
        for user in users:
            if store.mailbox(f"user.{user}") is None:
                store.create_mailbox(f"user.{user}")
            sasldb.set_password(split_identity(user, config.servername), PASSWORD)
        for user, messages in (quota or {}).items():
            store.set_quota(f"user.{user}", None, messages)
    finally:
        store.close()
