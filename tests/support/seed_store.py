"""The store every seed test (tests/seed/) delivers into: `sealmail master` on the seed's
cyrus.conf services, and the fixtures that start it (tests/seed/conftest.py imports them).

One store for the whole directory (tests/seed/), started once: its cyrus.conf carries each
service the seed (Postfix's CYRUS_README) writes, with loopback ports and paths under one
traversable directory:

    lmtpunix  cmd="lmtpd"     listen=".../socket/lmtp"        2.1
    lmtp      cmd="lmtpd"     listen="127.0.0.1:PORT"         2.2.1.1-2.2.1.3 (SASL)
    lmtpa     cmd="lmtpd -a"  listen="127.0.0.1:PORT"         2.3 (no SASL, hosts.allow)
    externN   cmd="lmtpd"     listen="QUEUE_DIRECTORY/extern/cyrus/lmtp"
                              2.1.1, for sealmail's MTA and for Debian's Postfix

imapd.conf has the seed's `lmtp_admins: lmtpuser` (in a sasldb made by `sealmail saslpasswd2`,
which stores no clear text), `lmtp_allowplaintext: no`, `postuser: bb` (8.2) and
`lmtp_downcase_rcpt: yes` (8.3). The sockets are mode 0666: the MTA (root here, `postfix` for
Debian's Postfix) and the pipe transport's account (sections 3, 9.1) all connect to them; the
seed's NOTE on socket permissions is what `sealmail check` reports (tests/cli/test_check.py).

Mailboxes are made with the store's own API before the daemons start (a subprocess per mailbox
would cost a quarter of a second each), with the `p` right for `anyone` on the folders that
plus-addressing (8.1) and the postuser (8.2) post to: the seed's setup needs it, or mail for
user+folder lands in the INBOX.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, store_root_opt_in
from tests.support.peers import free_tcp_port, traversable_tmpdir, wait_until_accepting

SERVERNAME = "sealmail.test.example"
LMTP_PASSWORD = "lmtp-seed-pw"
# sealmail-deliver: the UNIX account (tests/support/pipe_user.py) whose procmail delivers to its
# own store mailbox in section 4.
USERS = (
    "alice",
    "bob",
    "carol",
    "dave",
    "erin",
    "frank",
    "gina",
    "hank",
    "ivan",
    "sealmail-deliver",
)
FOLDERS = ("user.alice.Lists", "user.bob.Lists", "folder")


@dataclass
class SeedStore:
    root: Path
    conf: Path
    cyrus_conf: Path
    socket: str
    sasl_port: int
    open_port: int
    log: Path

    def extern_socket(self, queue_directory: Path) -> Path:
        """The seed's 2.1.1 socket under an MTA's queue directory."""
        return queue_directory / "extern" / "cyrus" / "lmtp"

    def count(self, mailbox: str, marker: str) -> int:
        """Messages in `mailbox` whose bytes contain `marker`."""
        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.store.disk import DiskStore

        with DiskStore.from_config(load_imapd_conf(self.conf)) as store:
            return sum(
                marker.encode() in store.message_bytes(mailbox, m.uid)
                for m in store.messages(mailbox)
            )

    def messages(self, mailbox: str, marker: str) -> list[bytes]:
        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.store.disk import DiskStore

        with DiskStore.from_config(load_imapd_conf(self.conf)) as store:
            return [
                data
                for m in store.messages(mailbox)
                if marker.encode() in (data := store.message_bytes(mailbox, m.uid))
            ]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def make_sasldb(conf: Path) -> None:
    """The seed's `saslpasswd2 -c -u cyrus.example.com lmtpuser`, with sealmail's tool."""
    subprocess.run(
        [*SEALMAIL, "saslpasswd2", "-C", str(conf), "-p", "-c", "-u", SERVERNAME, "lmtpuser"],
        input=LMTP_PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )


def create_mailboxes(conf: Path) -> None:
    from sealmail.config.imapd_conf import load_imapd_conf
    from sealmail.store.disk import DiskStore

    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        for name in [f"user.{u}" for u in USERS] + list(FOLDERS):
            store.create_mailbox(name)
        for folder in FOLDERS:
            store.set_acl(folder, "anyone", "+p")


@pytest.fixture(scope="session")
def seed_root() -> Iterator[Path]:
    with traversable_tmpdir("smseed-") as path:
        yield path


@pytest.fixture(scope="session")
def seed_store(seed_root: Path) -> Iterator[SeedStore]:
    root = seed_root / "store"
    for sub in ("config", "partition", "socket"):
        (root / sub).mkdir(parents=True)
    conf, cyrus_conf = root / "imapd.conf", root / "cyrus.conf"
    socket = str(root / "socket" / "lmtp")
    sasl_port, open_port = free_tcp_port(), free_tcp_port()
    conf.write_text(
        f"configdirectory: {root}/config\npartition-default: {root}/partition\n"
        f"lmtpsocket: {socket}\nservername: {SERVERNAME}\n"
        "lmtp_admins: lmtpuser\nlmtp_allowplaintext: no\n"
        "postuser: bb\nlmtp_downcase_rcpt: yes\n"
        "unix_socket_mode: 0666\nauth_failure_delay: 0\n"
        f"hosts_allow: {root}/hosts.allow\nhosts_deny: {root}/hosts.deny\n" + store_root_opt_in()
    )
    # Section 7's rules, for the daemon names of 2.3 (lmtpa) and 7 (deliver).
    (root / "hosts.allow").write_text("lmtpa deliver : 127.0.0.1 : ALLOW\n")
    (root / "hosts.deny").write_text("lmtpa deliver : ALL@ALL : DENY\n")
    externs = [
        seed_root / "mta-2.1.1" / "spool" / "extern" / "cyrus" / "lmtp",
        seed_root / "postfix" / "spool" / "extern" / "cyrus" / "lmtp",
    ]
    for path in externs:
        path.parent.mkdir(parents=True)
    cyrus_conf.write_text(
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{socket}" prefork=1\n'
        f'  lmtp     cmd="lmtpd" listen="127.0.0.1:{sasl_port}" prefork=1\n'
        f'  lmtpa    cmd="lmtpd -a" listen="127.0.0.1:{open_port}" prefork=0\n'
        + "".join(
            f'  extern{n} cmd="lmtpd" listen="{path}" prefork=0\n' for n, path in enumerate(externs)
        )
        + "}\n"
    )
    make_sasldb(conf)
    create_mailboxes(conf)
    log = root / "master.log"
    with log.open("wb") as out:
        master = subprocess.Popen(
            [*SEALMAIL, "master", "-C", str(conf), "-M", str(cyrus_conf), "-D"],
            stdout=out,
            stderr=out,
            stdin=subprocess.DEVNULL,
        )
    try:
        for address in (
            socket,
            ("127.0.0.1", sasl_port),
            ("127.0.0.1", open_port),
            *map(str, externs),
        ):
            wait_until_accepting(address, 30.0, master, log)
        yield SeedStore(root, conf, cyrus_conf, socket, sasl_port, open_port, log)
    finally:
        master.send_signal(signal.SIGTERM)
        try:
            master.wait(30)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(5)


def wait_for_count(
    store: SeedStore, mailbox: str, marker: str, n: int = 1, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while store.count(mailbox, marker) < n:
        assert time.monotonic() < deadline, (
            f"{marker!r} did not reach {mailbox}\n" + store.log_text()[-3000:]
        )
        time.sleep(0.05)


@contextlib.contextmanager
def xinetd_deliver(seed_root: Path, store: SeedStore, name: str) -> Iterator[int]:
    """Seed section 7: Debian's xinetd runs `deliver -e -l` per connection on a loopback port
    (yielded), behind the store's hosts.allow; stopped afterwards."""
    xinetd = shutil.which("xinetd") or "/usr/sbin/xinetd"
    if not os.access(xinetd, os.X_OK):
        pytest.skip("xinetd is missing (install Debian's xinetd package)")
    port = free_tcp_port()
    # xinetd gives its servers an empty environment: name this checkout and its packages.
    here = os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())
    conf = seed_root / f"{name}.conf"
    conf.write_text(
        "service lmtp-seed\n{\n"
        "  type = UNLISTED\n  socket_type = stream\n  protocol = tcp\n  wait = no\n"
        f"  user = root\n  bind = 127.0.0.1\n  port = {port}\n"
        f"  server = {sys.executable}\n"
        f"  server_args = -m sealmail deliver -C {store.conf} -e -l\n"
        f"  env = PYTHONPATH={here}\n"
        "}\n"
    )
    log = seed_root / f"{name}.log"
    with log.open("wb") as out:
        inetd = subprocess.Popen(
            [xinetd, "-f", str(conf), "-dontfork", "-pidfile", str(seed_root / f"{name}.pid")],
            stdout=out,
            stderr=out,
        )
    try:
        wait_until_accepting(("127.0.0.1", port), 30.0, inetd, log)
        yield port
    finally:
        inetd.terminate()
        inetd.wait(15)
