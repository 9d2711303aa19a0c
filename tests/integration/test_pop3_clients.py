"""`sealmail pop3d` end to end with real clients: poplib, curl (pop3 with STLS, pop3s), and
fetchmail (Debian's package) fetching through an MDA, keeping and then deleting mail.

Mail arrives the way it does in production: over LMTP into `sealmail lmtpd` (SealmailInstance).
pop3d runs as its own process (`sealmail pop3d -C ... --listen ... --tls-listen ...`), so the
test process reading the store through DiskStore is another store reader, as an IMAP server is.
"""

from __future__ import annotations

import os
import poplib
import shutil
import smtplib
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance, tls_test_settings
from tests.support.peers import (
    PeerUnavailable,
    free_tcp_port,
    require_binaries,
    wait_until_accepting,
)

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

PASSWORD = "pop secret"
SERVERNAME = "sealmail.test.example"
MESSAGES = [
    b"From: one@example.org\r\nTo: alice@example.com\r\nSubject: first\r\n"
    b"Message-ID: <p1@example.org>\r\n\r\nhello\r\n.dotted line\r\n",
    b"From: two@example.org\r\nTo: alice@example.com\r\nSubject: second \xc3\xa9\r\n"
    b"Message-ID: <p2@example.org>\r\n\r\n8-bit \xe2\x82\xac body\r\n..\r\nend\r\n",
]


@dataclass
class Pop3Daemon:
    instance: SealmailInstance
    port: int
    tls_port: int
    ca_file: Path
    log: Path

    def deliver(self, content: bytes, user: str = "alice") -> None:
        with smtplib.LMTP(self.instance.socket_path) as client:
            client.ehlo()
            client.sendmail("sender@example.org", [f"{user}@example.com"], content)

    def stored(self, user: str = "alice") -> list[bytes]:
        with self.instance.store() as store:
            name = f"user.{user}"
            return [store.message_bytes(name, m.uid) for m in store.messages(name)]

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def pop3d(tmp_path: Path) -> Iterator[Pop3Daemon]:
    extra, ca_file = tls_test_settings(tmp_path, allowplaintext=True)
    with SealmailInstance(tmp_path, users=["alice", "bob"], imapd_conf_extra=extra) as instance:
        sasldb = SaslDB(instance.configdirectory / "sasldb2", scrypt_n=2**10)
        for user in ("alice", "bob"):
            sasldb.set_password(split_identity(user, SERVERNAME), PASSWORD)
        port, tls_port = free_tcp_port(), free_tcp_port()
        log = tmp_path / "pop3d.log"
        argv = [
            *SEALMAIL,
            "pop3d",
            "-C",
            str(instance.conf_path),
            "-v",
            "--listen",
            f"127.0.0.1:{port}",
            "--tls-listen",
            f"127.0.0.1:{tls_port}",
        ]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_accepting(("127.0.0.1", port), 30, process, log)
            wait_until_accepting(("127.0.0.1", tls_port), 30, process, log)
            yield Pop3Daemon(instance, port, tls_port, ca_file, log)
        finally:
            process.terminate()
            assert process.wait(15) == 0
        text = log.read_text(errors="replace")
        assert PASSWORD not in text  # never a password in the log


def test_poplib_session_and_deletion_seen_by_another_reader(pop3d: Pop3Daemon) -> None:
    for content in MESSAGES:
        pop3d.deliver(content)
    stored = pop3d.stored()
    with pop3d.instance.store() as reader:  # another reader, open across the POP session
        before = [m.uid for m in reader.messages("user.alice")]
        info = reader.mailbox("user.alice")
        assert info is not None
        client = poplib.POP3("127.0.0.1", pop3d.port, timeout=10)
        client.stls(pop3d.tls_context())
        client.user("alice")
        client.pass_(PASSWORD)
        _, uidl, _ = client.uidl()
        assert [line.split()[1] for line in uidl] == [
            f"{info.uidvalidity}.{uid}".encode() for uid in before
        ]
        for number, content in enumerate(stored, 1):
            _, lines, _ = client.retr(number)
            assert b"\r\n".join(lines) + b"\r\n" == content  # byte-exact, dot-unstuffed
        client.dele(1)
        assert [m.uid for m in reader.messages("user.alice")] == before  # not before QUIT
        client.quit()
        assert [m.uid for m in reader.messages("user.alice")] == before[1:]


def test_second_pop_session_is_in_use(pop3d: Pop3Daemon) -> None:
    first = poplib.POP3("127.0.0.1", pop3d.port, timeout=10)
    first.user("alice")
    first.pass_(PASSWORD)
    second = poplib.POP3_SSL("127.0.0.1", pop3d.tls_port, context=pop3d.tls_context(), timeout=10)
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    second.user("bob")  # the session goes on
    second.pass_(PASSWORD)
    second.quit()
    first.quit()


def curl(*args: str) -> bytes:
    binary = shutil.which("curl")
    if binary is None:
        pytest.skip("curl is not installed")
    done = subprocess.run(
        [binary, "--silent", "--show-error", "--max-time", "30", *args],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return done.stdout


def test_curl_pop3_with_stls_and_pop3s(pop3d: Pop3Daemon) -> None:
    for content in MESSAGES:
        pop3d.deliver(content)
    stored = pop3d.stored()
    user = f"alice:{PASSWORD}"
    base = f"pop3://127.0.0.1:{pop3d.port}"
    tls = ["--ssl-reqd", "--cacert", str(pop3d.ca_file)]
    listing = curl(*tls, "-u", user, f"{base}/")
    assert listing.split(b"\r\n")[:2] == [b"1 %d" % len(stored[0]), b"2 %d" % len(stored[1])]
    assert curl(*tls, "-u", user, f"{base}/2") == stored[1]
    secure = f"pop3s://127.0.0.1:{pop3d.tls_port}"
    assert curl("--cacert", str(pop3d.ca_file), "-u", user, f"{secure}/1") == stored[0]
    uidl = curl("--cacert", str(pop3d.ca_file), "-u", user, "-X", "UIDL", f"{secure}/")
    assert len(uidl.strip().split(b"\r\n")) == 2
    # Plain USER/PASS over the clear port works too, since this instance sets allowplaintext.
    assert curl("-u", user, f"{base}/1") == stored[0]
    assert len(pop3d.stored()) == 2  # retrieving deletes nothing


def fetchmail(pop3d: Pop3Daemon, home: Path, *, keep: bool, fetchall: bool = False) -> int:
    try:
        require_binaries("fetchmail", "/usr/bin/fetchmail")
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    inbox = home / "delivered"
    inbox.mkdir(exist_ok=True)
    mda = home / "mda.sh"
    mda.write_text(f'#!/bin/sh\ncat > "{inbox}/$(date +%s%N)-$$.eml"\n')
    mda.chmod(0o755)
    rc = home / "fetchmailrc"
    rc.write_text(
        f"set no bouncemail\n"
        f"poll 127.0.0.1 service {pop3d.port} protocol pop3 uidl:\n"
        f'  user "alice" there with password "{PASSWORD}" is "alice" here\n'
        # fetchmail checks a certificate's name against DNS subjectAltNames only, which a
        # 127.0.0.1 test certificate cannot satisfy: it polls in clear (allowplaintext is on
        # here); poplib and curl cover STLS and pop3s.
        "  sslproto ''\n"
        f'  mda "{mda}"\n'
        f"  {'keep' if keep else 'no keep'} {'fetchall' if fetchall else 'no fetchall'}\n"
    )
    rc.chmod(0o600)
    env = {**os.environ, "HOME": str(home), "FETCHMAILHOME": str(home)}
    done = subprocess.run(
        ["/usr/bin/fetchmail", "-f", str(rc), "--nosyslog", "--nodetach", "-v"],
        capture_output=True,
        env=env,
        timeout=120,
        check=False,
    )
    # fetchmail exits 0 when mail was fetched and 1 when there was none.
    assert done.returncode in (0, 1), (done.stdout + done.stderr).decode(errors="replace")
    return len(list(inbox.iterdir()))


def test_fetchmail_keeps_then_deletes(pop3d: Pop3Daemon, tmp_path: Path) -> None:
    home = tmp_path / "fetchmail-home"
    home.mkdir()
    for content in MESSAGES:
        pop3d.deliver(content)
    stored = pop3d.stored()
    assert fetchmail(pop3d, home, keep=True) == 2
    assert len(pop3d.stored()) == 2  # kept on the server
    # UIDL is stable across sessions, so fetchmail sees nothing new the second time.
    assert fetchmail(pop3d, home, keep=True) == 2
    pop3d.deliver(MESSAGES[0].replace(b"<p1@", b"<p3@"))  # a new Message-ID: not a duplicate
    assert len(pop3d.stored()) == 3
    assert fetchmail(pop3d, home, keep=False, fetchall=True) == 2 + 3
    assert pop3d.stored() == []  # deleted by POP, as an expunge of the store
    delivered = [p.read_bytes() for p in sorted((home / "delivered").iterdir())]
    for content in MESSAGES:
        # The MDA gets LF line ends, and fetchmail redoes the trace headers lmtpd added on top
        # (Return-Path, Received); the message as the sender wrote it arrives exact.
        assert any(d.endswith(content.replace(b"\r\n", b"\n")) for d in delivered)
    assert all(s.endswith(m) for s, m in zip(stored, MESSAGES, strict=True))


def test_dropped_connection_keeps_mail(pop3d: Pop3Daemon) -> None:
    pop3d.deliver(MESSAGES[0])
    client = poplib.POP3("127.0.0.1", pop3d.port, timeout=10)
    client.user("alice")
    client.pass_(PASSWORD)
    client.dele(1)
    # No QUIT: whatever happens to this session, the message stays.
    client.sock.close()
    assert len(pop3d.stored()) == 1
    again = poplib.POP3("127.0.0.1", pop3d.port, timeout=10)
    again.user("bob")
    again.pass_(PASSWORD)
    again.quit()
    assert len(pop3d.stored()) == 1  # and the daemon's SIGTERM exit status 0 is the fixture's
