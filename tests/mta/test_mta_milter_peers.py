"""smtpd_milters with the real milters Postfix sites run: Debian's opendkim signing the mail of
authenticated users (the {auth_type} macro; the signature checked with dkimpy against the
generated key) and verifying inbound mail (the
public key served by a private nsd, found through opendkim's own resolver), and opendmarc after
it adding its Authentication-Results. One private instance of each per module, on 127.0.0.1."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.mta.test_mta_smtpd import Server, make_authenticator
from tests.support.peers import (
    NsdInstance,
    PeerFailed,
    PeerUnavailable,
    free_tcp_port,
    require_binaries,
    traversable_tmpdir,
)
from tests.support.pipe_user import ensure_pipe_user

from sealmail.mta.queue import QueueName

dkim = pytest.importorskip("dkim")

OPENDKIM = "/usr/sbin/opendkim"
OPENDKIM_GENKEY = "/usr/sbin/opendkim-genkey"
OPENDMARC = "/usr/sbin/opendmarc"
DOMAIN = "example.test"
SELECTOR = "sel"
MESSAGE = (f"From: Alice <alice@{DOMAIN}>\r\nTo: bob@example.com\r\nSubject: signed\r\n"
           "Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <m1@example.test>\r\n\r\n"
           "Hello Bob,\r\nthis is signed.\r\n").encode()


class MilterDaemon:
    """A private opendkim or opendmarc: its own config file, in the foreground."""

    def __init__(self, argv: list[str], port: int, log: Path) -> None:
        self.port = port
        self.spec = f"inet:127.0.0.1:{port}"
        self.log = log
        self.process = subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise PeerFailed(f"{argv[0]} exited: {log.read_text()[-2000:]}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.05)
        self.stop()
        raise PeerFailed(f"{argv[0]} did not listen on {port}: {log.read_text()[-2000:]}")

    def stop(self) -> None:
        # libmilter may take seconds to wind down its threads; a test instance owns nothing.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(1)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class Peers:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.user = ensure_pipe_user()
        keys = root / "keys"
        keys.mkdir()
        subprocess.run([OPENDKIM_GENKEY, "-D", str(keys), "-d", DOMAIN, "-s", SELECTOR,
                        "-b", "1024"], check=True, capture_output=True)
        self.private_key = (keys / f"{SELECTOR}.private").read_bytes()
        record = (keys / f"{SELECTOR}.txt").read_text()
        self.public_txt = "".join(re.findall(r'"([^"]*)"', record))
        shutil.chown(keys / f"{SELECTOR}.private", self.user)
        self.nsd = NsdInstance(root, {DOMAIN: record.split("; -----", 1)[0] + "\n"
                                      + '_dmarc IN TXT "v=DMARC1; p=reject"\n'})
        self.nsd.start()
        self.daemons: list[MilterDaemon] = []
        self.signer = self._opendkim("s", keys)
        self.verifier = self._opendkim("v", keys)
        self.dmarc = self._opendmarc()

    def _opendkim(self, mode: str, keys: Path) -> MilterDaemon:
        port = free_tcp_port()
        unbound = self.root / f"unbound-{mode}.conf"
        # opendkim resolves through libunbound: a stub zone on our nsd, with unbound's own
        # "test." zone (RFC 6761, NXDOMAIN by default) switched off.
        unbound.write_text('server:\n    do-not-query-localhost: no\n'
                           '    module-config: "iterator"\n    local-zone: "test." nodefault\n'
                           f'stub-zone:\n    name: "{DOMAIN}."\n'
                           f"    stub-addr: {self.nsd.address}\n")
        conf = self.root / f"opendkim-{mode}.conf"
        conf.write_text(
            f"Mode {mode}\nSocket inet:{port}@127.0.0.1\nUserID {self.user}\n"
            f"PidFile {self.root}/opendkim-{mode}.pid\nSyslog no\nBackground no\n"
            f"Domain {DOMAIN}\nSelector {SELECTOR}\nKeyFile {keys}/{SELECTOR}.private\n"
            "Canonicalization relaxed/simple\nAuthservID mx.example.com\n"
            f"ResolverConfiguration {unbound}\nRequireSafeKeys no\n"
            # Neither trusts our client (127.0.0.1): the signer signs what authenticated users
            # send ({auth_type}, a macro it asks for in the negotiation).
            + "InternalHosts 192.0.2.1\n")
        daemon = MilterDaemon([OPENDKIM, "-f", "-x", str(conf)], port,
                              self.root / f"opendkim-{mode}.log")
        self.daemons.append(daemon)
        return daemon

    def _opendmarc(self) -> MilterDaemon:
        port = free_tcp_port()
        conf = self.root / "opendmarc.conf"
        ignored = self.root / "opendmarc.ignore"  # not the default 127.0.0.1: our client
        ignored.write_text("192.0.2.1\n")
        conf.write_text(
            f"Socket inet:{port}@127.0.0.1\nUserID {self.user}\n"
            f"PidFile {self.root}/opendmarc.pid\nSyslog false\nBackground false\n"
            "AuthservID mx.example.com\nTrustedAuthservIDs mx.example.com\n"
            "IgnoreAuthenticatedClients false\nSPFSelfValidate false\nDNSTimeout 2\n"
            f"RejectFailures false\nIgnoreHosts {ignored}\n")
        daemon = MilterDaemon([OPENDMARC, "-f", "-c", str(conf)], port,
                              self.root / "opendmarc.log")
        self.daemons.append(daemon)
        return daemon

    def stop(self) -> None:
        for daemon in self.daemons:  # all told at once: they wind down together
            if daemon.process.poll() is None:
                daemon.process.terminate()
        deadline = time.monotonic() + 1
        for daemon in self.daemons:
            try:
                daemon.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait(5)
        self.nsd.stop()

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == f"{SELECTOR}._domainkey.{DOMAIN}"
        return self.public_txt.encode()


@pytest.fixture(scope="module")
def peers() -> Iterator[Peers]:
    try:
        require_binaries("opendkim", OPENDKIM)
        require_binaries("opendkim-tools", OPENDKIM_GENKEY)
        require_binaries("opendmarc", OPENDMARC)
    except PeerUnavailable as exc:
        if os.geteuid() == 0:
            raise PeerFailed(str(exc)) from None  # CI installs them (scripts/test.sh)
        pytest.skip(str(exc))
    with traversable_tmpdir("smmilter-") as root:
        try:
            found = Peers(root)
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield found
        finally:
            found.stop()


def submit(tmp_path: Path, milters: str, message: bytes) -> bytes:
    with Server(tmp_path, f"smtpd_milters = {milters}\n") as server, server.client() as client:
        client.ehlo("client.test")
        assert client.sendmail(f"alice@{DOMAIN}", ["bob@example.com"], message) == {}
        [queue_id] = server.queue.ids(QueueName.INCOMING)
        return server.queue.load(queue_id, QueueName.INCOMING).content.read()


def test_opendkim_signs_mail_of_authenticated_users(peers: Peers, tmp_path: Path) -> None:
    main_cf = f"smtpd_milters = {peers.signer.spec}\nsmtpd_sasl_auth_enable = yes\n"
    with Server(tmp_path, main_cf, authenticator=make_authenticator(tmp_path)) as server:
        with server.client() as client:
            client.ehlo("client.test")
            assert client.sendmail(f"alice@{DOMAIN}", ["bob@example.com"], MESSAGE) == {}
        with server.client() as client:
            client.login("alice", "alice-pw")
            assert client.sendmail(f"alice@{DOMAIN}", ["bob@example.com"], MESSAGE) == {}
        entries = [server.queue.load(i, QueueName.INCOMING)
                   for i in server.queue.ids(QueueName.INCOMING)]
    [signed] = [e.content.read() for e in entries if e.envelope.sasl_username == "alice"]
    [anonymous] = [e.content.read() for e in entries if not e.envelope.sasl_username]
    assert b"DKIM-Signature" not in anonymous
    assert signed.startswith(b"DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/simple; "
                             b"d=example.test;")
    assert b"\r\nReceived: from " in signed  # below the signature
    assert dkim.verify(signed, dnsfunc=peers.dns)
    tampered = signed.replace(b"this is signed", b"this is forged")
    assert not dkim.verify(tampered, dnsfunc=peers.dns)


def test_opendkim_verifies_inbound_and_opendmarc_follows(peers: Peers, tmp_path: Path) -> None:
    signed = dkim.sign(MESSAGE, SELECTOR.encode(), DOMAIN.encode(), peers.private_key,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    content = submit(tmp_path, f"{peers.verifier.spec}, {peers.dmarc.spec}", signed + MESSAGE)
    headers = content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ")
    results = [h for h in headers.split(b"\r\n") if h.startswith(b"Authentication-Results:")]
    dkim_result = next(r for r in results if b"dkim=" in r)
    assert b"mx.example.com;" in dkim_result
    assert b"dkim=pass" in dkim_result and b"header.d=example.test" in dkim_result
    dmarc_result = next((r for r in results if b"dmarc=" in r), headers)
    # opendmarc resolves through the system's resolver, which does not know our zone: its
    # verdict is dmarc=none; what matters here is that its header is there, after opendkim's.
    assert b"header.from=example.test" in dmarc_result, headers
    assert results.index(dmarc_result) < results.index(dkim_result)  # each inserts on top
