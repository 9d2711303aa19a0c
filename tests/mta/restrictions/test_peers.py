"""smtpd's checks against the real parts Postfix operators plug in: a private nsd serving a DNS
block list, an allow list, the client's PTR and SPF records; Debian's postgrey (greylisting)
and policyd-spf (postfix-policyd-spf-python) as check_policy_service servers. One nsd for the
module; each policy server a private instance as an unprivileged user."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.mta.test_mta_smtpd import MESSAGE, Server
from tests.support.peers import (
    NsdInstance,
    PeerUnavailable,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

from sealmail.mta.queue import QueueName

pytestmark = pytest.mark.peer

POSTGREY = Path("/usr/sbin/postgrey")
POLICYD_SPF = Path("/usr/bin/policyd-spf")
DEBIAN_PYTHON = Path("/usr/bin/python3")

ZONES: dict[str, str | None] = {
    "dns.test": ("client IN A 127.0.0.1\n"
                 "good IN MX 10 client.dns.test.\n"
                 "null IN MX 0 .\n"
                 "bad IN MX 10 client.dns.test.\n"
                 "spf IN MX 10 client.dns.test.\n"
                 'spf IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
                 "nospf IN MX 10 client.dns.test.\n"
                 'nospf IN TXT "v=spf1 -all"\n'),
    "rbl.test": ('1.0.0.127 IN A 127.0.0.2\n1.0.0.127 IN TXT "listed for testing"\n'
                 "bad.dns.test IN A 127.0.0.2\n"),
    "wl.test": "1.0.0.127 IN A 127.0.2.1\n",
    "127.in-addr.arpa": "1.0.0 IN PTR client.dns.test.\n",
}


@pytest.fixture(scope="module")
def nsd() -> Iterator[NsdInstance]:
    with traversable_tmpdir("smrestrict-") as root:
        server = NsdInstance(root, ZONES)
        try:
            server.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def serve(tmp_path: Path, nsd: NsdInstance) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(main_text: str = "", **kwargs: Any) -> Server:
        text = f"sealmail_resolv_conf = {nsd.resolv_conf}\n{main_text}"
        server = Server(tmp_path / f"s{len(servers)}", text, **kwargs)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


def test_block_list_client_name_and_sender_domain(serve: Callable[..., Server],
                                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sealmail.mta.smtpd")
    server = serve("smtpd_client_restrictions = reject_unknown_client_hostname, "
                   "permit_dnswl_client wl.test=127.0.2.[1..9], reject_rbl_client rbl.test\n"
                   "smtpd_sender_restrictions = reject_unknown_sender_domain, "
                   "reject_rhsbl_sender rbl.test\n")
    with server.client() as client:
        client.ehlo("client.dns.test")
        client.mail("a@good.dns.test")
        assert client.rcpt("bob@example.com")[0] == 250  # allow-listed first
    assert "connect from client.dns.test[127.0.0.1]" in caplog.messages

    server = serve("smtpd_client_restrictions = reject_rbl_client rbl.test\n")
    with server.client() as client:
        client.ehlo("client.dns.test")
        client.mail("a@good.dns.test")
        assert client.rcpt("bob@example.com") == (
            554, b"5.7.1 Service unavailable; Client host [127.0.0.1] blocked using rbl.test; "
                 b"listed for testing")

    server = serve("smtpd_sender_restrictions = reject_unknown_sender_domain, "
                   "reject_rhsbl_sender rbl.test\n")
    with server.client() as client:
        client.ehlo("client.dns.test")
        for sender, reply in [
            ("a@nx.dns.test", b"4.1.8 <a@nx.dns.test>: Sender address rejected: Domain not found"),
            ("a@null.dns.test", b"5.7.27 <a@null.dns.test>: Sender address rejected: Domain "
                                b"null.dns.test does not accept mail (nullMX)"),
            ("a@bad.dns.test", b"5.7.1 Service unavailable; Sender address [a@bad.dns.test] "
                               b"blocked using rbl.test"),
        ]:
            client.rset()
            client.mail(sender)
            assert client.rcpt("bob@example.com")[1] == reply


def test_helo_hostname_must_resolve(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_helo_restrictions = reject_unknown_helo_hostname\n")
    with server.client() as client:
        client.ehlo("nowhere.dns.test")
        client.mail("a@good.dns.test")
        assert client.rcpt("bob@example.com") == (
            450, b"4.7.1 <nowhere.dns.test>: Helo command rejected: Host not found")
        client.ehlo("client.dns.test")
        client.mail("a@good.dns.test")
        assert client.rcpt("bob@example.com")[0] == 250


# -- postgrey -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def postgrey() -> Iterator[int]:
    if not POSTGREY.exists():
        if os.geteuid() == 0:
            pytest.fail("postgrey is missing: scripts/test.sh installs Debian's postgrey")
        pytest.skip("postgrey is not installed")
    if os.geteuid() != 0:
        pytest.skip("postgrey runs as its own account: needs root to start")
    with traversable_tmpdir("smgrey-") as root:
        db = root / "db"
        db.mkdir()
        shutil.chown(db, "postgrey", "postgrey")
        for name in ("clients", "recipients"):
            (root / name).write_text("")
        port = free_tcp_port()
        process = subprocess.Popen(
            [str(POSTGREY), f"--inet=127.0.0.1:{port}", f"--dbdir={db}", "--delay=1",
             "--user=postgrey", "--group=postgrey", f"--whitelist-clients={root}/clients",
             f"--whitelist-recipients={root}/recipients", "--auto-whitelist-clients=0",
             "--hostname=grey.test"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, process, None)
            yield port
        finally:
            process.terminate()
            process.wait(15)


def test_postgrey_greylists_then_passes(serve: Callable[..., Server], postgrey: int) -> None:
    server = serve("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,"
                   f" check_policy_service inet:127.0.0.1:{postgrey}\nmynetworks = 10.0.0.0/8\n")
    with server.client() as client:
        client.ehlo("client.dns.test")
        client.mail("a@good.dns.test")
        code, text = client.rcpt("bob@example.com")
        assert code == 450
        assert text.startswith(b"4.2.0 <bob@example.com>: Recipient address rejected: "
                               b"Greylisted, see http")
    deadline = time.monotonic() + 30
    while True:  # the client retries, as a real MTA would, until the delay is over
        with server.client() as client:
            client.ehlo("client.dns.test")
            client.mail("a@good.dns.test")
            code, _ = client.rcpt("bob@example.com")
            if code == 250:
                assert client.data(MESSAGE)[0] == 250
                break
        assert time.monotonic() < deadline, "postgrey never let the retry through"
        time.sleep(0.5)
    [queue_id] = server.incoming()
    content = server.queue.load(queue_id, QueueName.INCOMING).content.read()
    assert b"\r\nX-Greylist: delayed " in content


# -- policyd-spf ----------------------------------------------------------------------------------

SPF_WRAPPER = """
import sys
# policyd-spf's DNS library (pydns, or dnspython where installed) reads /etc/resolv.conf: point
# it at the test's nsd instead.
servers = [line.split()[1] for line in open(sys.argv[1]) if line.startswith("nameserver")]
try:
    import dns.resolver
    dns.resolver.default_resolver = dns.resolver.Resolver(filename=sys.argv[1])
except ImportError:
    import DNS
    DNS.defaults["server"] = servers
    DNS.DiscoverNameServers = lambda *args, **kwargs: None
sys.argv = ["policyd-spf", sys.argv[2]]
from spf_engine.policyd_spf import main
sys.exit(main())
"""


class SpawnServer:
    """What Postfix's spawn(8) does for policyd-spf: each connection on a UNIX socket gets its
    own policyd-spf process with the socket as stdin and stdout, as an unprivileged user."""

    def __init__(self, path: Path, argv: list[str], user: str) -> None:
        self.path, self.argv, self.user = path, argv, user
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        os.chmod(path, 0o666)
        self.listener.listen(8)
        self.processes: list[subprocess.Popen[bytes]] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                self.processes.append(subprocess.Popen(
                    self.argv, stdin=conn.fileno(), stdout=conn.fileno(),
                    stderr=subprocess.DEVNULL, user=self.user, cwd="/"))

    def close(self) -> None:
        self.listener.close()
        for process in self.processes:
            with contextlib.suppress(OSError):
                process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(10)


@pytest.fixture
def policyd_spf(nsd: NsdInstance) -> Iterator[Path]:
    if not POLICYD_SPF.exists():
        if os.geteuid() == 0:
            pytest.fail("policyd-spf is missing: scripts/test.sh installs "
                        "postfix-policyd-spf-python")
        pytest.skip("policyd-spf is not installed")
    if os.geteuid() != 0:
        pytest.skip("policyd-spf is started as nobody: needs root")
    with traversable_tmpdir("smspf-") as root:
        config = root / "policyd-spf.conf"
        config.write_text("debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\n"
                          "Mail_From_reject = Fail\nPermError_reject = False\n"
                          "TempError_Defer = False\nskip_addresses = 192.0.2.0/24\n")
        resolv = root / "resolv.conf"
        resolv.write_text(nsd.resolv_conf.read_text())
        wrapper = root / "run_policyd_spf.py"  # not spf.py: that would shadow the spf module
        wrapper.write_text(SPF_WRAPPER)
        for path in (config, resolv, wrapper):
            path.chmod(0o644)
        spawn = SpawnServer(root / "policyd-spf.sock",
                            [str(DEBIAN_PYTHON), str(wrapper), str(resolv), str(config)],
                            "nobody")
        try:
            yield spawn.path
        finally:
            spawn.close()


def test_policyd_spf_rejects_a_fail_and_stamps_a_pass(serve: Callable[..., Server],
                                                      policyd_spf: Path) -> None:
    server = serve("smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination,"
                   f" check_policy_service unix:{policyd_spf}\nmynetworks = 10.0.0.0/8\n"
                   "smtpd_policy_service_timeout = 20s\n")
    with server.client() as client:
        client.ehlo("client.dns.test")
        client.mail("a@nospf.dns.test")
        code, text = client.rcpt("bob@example.com")
        assert (code, text.split(b" Please see")[0]) == (
            550, b"5.7.23 <bob@example.com>: Recipient address rejected: Message rejected due "
                 b"to: SPF fail - not authorized.")
        client.rset()
        assert client.sendmail("a@spf.dns.test", ["bob@example.com"], MESSAGE) == {}
    [queue_id] = server.incoming()
    content = server.queue.load(queue_id, QueueName.INCOMING).content.read()
    assert b"\r\nReceived-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1;" in content
