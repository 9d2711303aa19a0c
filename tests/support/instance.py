"""A throw-away sealmail store with its `sealmail lmtpd`, for integration tests and benchmarks.

Everything goes through sealmail's own commands, as an operator would use them: the imapd.conf is
written to a file, users' INBOXes are made with `sealmail mailbox -C CONF create user.NAME`, and
the daemon is `sealmail lmtpd -C CONF --listen SOCKET [--listen 127.0.0.1:PORT] [-a]` in a child
process that logs to a file. Reading back goes through the store's Python API (DiskStore).

Give it a directory from `tests.support.peers.traversable_tmpdir()` when a peer that drops root
(Postfix's lmtp client runs as `postfix`) must reach the socket; `socket_group="postfix"` then
makes the socket group-accessible to it (imapd.conf `unix_socket_group`, `unix_socket_mode`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Self

from tests.support.peers import PeerFailed, free_tcp_port, wait_until_accepting

if TYPE_CHECKING:
    from sealmail.store.disk import DiskStore

SEALMAIL = (sys.executable, "-m", "sealmail")


def store_root_opt_in() -> str:
    """imapd.conf lines for a store started as a subprocess on a directory under pytest's
    tmp_path (0700, root's): run by root, its programs would switch to `cyrus`, which cannot
    reach it. Root keeps serving, by the explicit opt-in the shared brief decides; not root,
    nothing is added. Dedicated tests (tests/server/test_accounts.py) exercise the real switch.
    """
    if os.geteuid() != 0:
        return ""
    return "cyrus_user: root\nallow_root_services: 1\n"


def create_inboxes(conf_path: Path, users: Sequence[str]) -> None:
    """The users' INBOXes, through the store's API in this process: what `sealmail mailbox
    create` does (tests/cli covers the command) without a process per user, which cost a test
    module a second per three users and a benchmark minutes for thousands."""
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.store.backends import open_store
    from sealmail.store.names import Namespace

    config = load_imapd_conf(conf_path)
    names = Namespace(config.hierarchy_separator)
    separator = config.hierarchy_separator
    store = open_store(config)
    try:
        for user in users:
            store.create_mailbox(names.to_internal(f"user{separator}{user}"))
    finally:
        store.close()


class SealmailInstance:
    """imapd.conf, partition and configdirectory under `root`, plus a running lmtpd."""

    def __init__(
        self,
        root: Path,
        users: Sequence[str] = (),
        *,
        tcp: bool = False,
        authless_tcp: bool = False,
        socket_group: str | None = None,
        socket_mode: str = "0660",
        imapd_conf_extra: Mapping[str, str] | None = None,
        verbose: bool = False,
        master_prefork: int | None = None,
    ) -> None:
        self.root = root
        # Under `sealmail master` with lmtpd preforked this many times (the deployed shape),
        # instead of one standalone `sealmail lmtpd`; the UNIX socket only.
        self.master_prefork = master_prefork
        self.conf_path = root / "imapd.conf"
        self.configdirectory = root / "config"
        self.partition = root / "partition"
        self.socket_path = str(root / "socket" / "lmtp")
        self.tcp_port = free_tcp_port() if tcp else None
        self.authless_tcp = authless_tcp
        self.users = list(users)
        self.socket_group = socket_group
        self.socket_mode = socket_mode
        self.imapd_conf_extra = dict(imapd_conf_extra or {})
        self.verbose = verbose
        self.log = root / "lmtpd.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def tcp_address(self) -> tuple[str, int]:
        if self.tcp_port is None:
            raise ValueError("this instance was made without tcp=True")
        return ("127.0.0.1", self.tcp_port)

    def imapd_conf(self) -> dict[str, str]:
        settings = {
            "configdirectory": str(self.configdirectory),
            "partition-default": str(self.partition),
            "lmtpsocket": self.socket_path,
            "servername": "sealmail.test.example",
            "unix_socket_mode": self.socket_mode,
        }
        if self.socket_group:
            settings["unix_socket_group"] = self.socket_group
        settings.update(self.imapd_conf_extra)
        return settings

    def write_config(self) -> None:
        for directory in (self.configdirectory, self.partition, Path(self.socket_path).parent):
            directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            "".join(f"{key}: {value}\n" for key, value in self.imapd_conf().items())
            + store_root_opt_in()
        )

    def sealmail(self, *args: str, timeout: float = 60.0) -> str:
        """Run `sealmail ARGS` (as a child process); its stdout, or PeerFailed with its output."""
        done = subprocess.run(
            [*SEALMAIL, *args], capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise PeerFailed(
                f"sealmail {' '.join(args)} exited with {done.returncode}:\n"
                f"{done.stdout}{done.stderr}"
            )
        return done.stdout

    def mailbox_name(self, user: str) -> str:
        """The external name of `user`'s INBOX, as `sealmail mailbox` and `mbpath` take it."""
        separator = "/" if self.imapd_conf().get("unixhierarchysep") in ("yes", "on", "1") else "."
        return f"user{separator}{user}"

    def create_user(self, user: str) -> None:
        self.sealmail("mailbox", "-C", str(self.conf_path), "create", self.mailbox_name(user))
        if user not in self.users:
            self.users.append(user)

    def create_users(self, users: Sequence[str]) -> None:
        create_inboxes(self.conf_path, users)

    def start(self) -> None:
        """Write the config, create the users, start lmtpd and wait until its sockets accept."""
        self.write_config()
        self.create_users(self.users)
        if self.master_prefork is not None:
            self._start_master(self.master_prefork)
            return
        argv = [*SEALMAIL, "lmtpd", "-C", str(self.conf_path), "--listen", self.socket_path]
        if self.tcp_port is not None:
            argv += ["--listen", f"127.0.0.1:{self.tcp_port}"]
        if self.authless_tcp:
            argv.append("-a")
        if self.verbose:
            argv.append("-v")
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_until_accepting(self.socket_path, 30.0, self._process, self.log)
            if self.tcp_port is not None:
                wait_until_accepting(self.tcp_address, 30.0, self._process, self.log)
        except BaseException:
            self.stop()
            raise

    def _start_master(self, prefork: int) -> None:
        cyrus_conf = self.root / "cyrus.conf"
        cyrus_conf.write_text(
            "SERVICES {\n"
            f'  lmtpunix cmd="lmtpd" listen="{self.socket_path}" prefork={prefork}\n'
            "}\n"
        )
        argv = [*SEALMAIL, "master", "-C", str(self.conf_path), "-M", str(cyrus_conf), "-D"]
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        try:
            wait_until_accepting(self.socket_path, 30.0, self._process, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after `grace` seconds; returns lmtpd's exit status."""
        process, self._process = self._process, None
        if process is None:
            return None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(grace)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    @property
    def pid(self) -> int | None:
        return None if self._process is None else self._process.pid

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def mbpath(self, user: str) -> Path:
        """The directory of `user`'s INBOX, from `sealmail mbpath`."""
        out = self.sealmail("mbpath", "-C", str(self.conf_path), self.mailbox_name(user))
        return Path(out.strip())

    @contextlib.contextmanager
    def store(self) -> Iterator[DiskStore]:
        """The store's Python API on this instance's imapd.conf, closed afterwards."""
        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.store.disk import DiskStore

        store = DiskStore.from_config(load_imapd_conf(self.conf_path))
        try:
            yield store
        finally:
            store.close()

    def message_count(self, user: str) -> int:
        with self.store() as store:
            return len(store.messages(f"user.{user}"))

    def message_files(self, user: str) -> dict[int, os.stat_result]:
        """`os.stat` of the file holding each message of `user`'s INBOX, keyed by UID.

        A file is matched to a UID by its bytes (what message_bytes returns), so this does not
        depend on how the store names its files.
        """
        directory = self.mbpath(user)
        files = {p: p.read_bytes() for p in directory.rglob("*") if p.is_file()}
        found: dict[int, os.stat_result] = {}
        with self.store() as store:
            for record in store.messages(f"user.{user}"):
                content = store.message_bytes(f"user.{user}", record.uid)
                for path, data in files.items():
                    if data == content:
                        found[record.uid] = path.stat()
                        break
        return found


def tls_test_settings(directory: Path, *, allowplaintext: bool) -> tuple[dict[str, str], Path]:
    """imapd.conf settings for a daemon with a trustme test certificate, no failure delay and
    its own (empty) hosts files; and the CA file clients verify it with."""
    import trustme

    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_file = directory / "cert.pem", directory / "key.pem", directory / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    return {
        "tls_server_cert": str(cert),
        "tls_server_key": str(key),
        "allowplaintext": "yes" if allowplaintext else "no",
        "auth_failure_delay": "0",
        "hosts_allow": str(directory / "hosts.allow"),
        "hosts_deny": str(directory / "hosts.deny"),
    }, ca_file
