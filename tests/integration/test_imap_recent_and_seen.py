"""\\Recent and per-user \\Seen end to end: `sealmail imapd` as its own process, mail delivered over
LMTP to a running `sealmail lmtpd`, and Python's imaplib over real sockets as two users.

The first read-write session claims \\Recent (RFC 3501 2.3.2), another sees none, and a delivery
during IDLE comes as EXISTS plus RECENT (RFC 3501 7.3.2). alice lets bob read her INBOX (SETACL
lrs); each has their own \\Seen there, as in Cyrus.
"""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance, tls_test_settings
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

PASSWORD = "recent secret"
SERVERNAME = "sealmail.test.example"


def message(n: int) -> bytes:
    return (f"From: one@example.org\r\nTo: alice@example.com\r\nSubject: number {n}\r\n"
            f"Message-ID: <r{n}@example.org>\r\n\r\nbody {n}\r\n").encode()


@dataclass
class Daemon:
    instance: SealmailInstance
    port: int

    def deliver(self, n: int) -> None:
        with smtplib.LMTP(self.instance.socket_path) as client:
            client.ehlo()
            client.sendmail("sender@example.org", ["alice@example.com"], message(n))

    def login(self, user: str) -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        client.login(user, PASSWORD)
        return client


@pytest.fixture
def imapd(tmp_path: Path) -> Iterator[Daemon]:
    extra, _ = tls_test_settings(tmp_path, allowplaintext=True)
    with SealmailInstance(tmp_path, users=["alice", "bob"], imapd_conf_extra=extra) as instance:
        sasldb = SaslDB(instance.configdirectory / "sasldb2", scrypt_n=2**10)
        for user in ("alice", "bob"):
            sasldb.set_password(split_identity(user, SERVERNAME), PASSWORD)
        port = free_tcp_port()
        log = tmp_path / "imapd.log"
        argv = [*SEALMAIL, "imapd", "-C", str(instance.conf_path), "--listen",
                f"127.0.0.1:{port}"]
        with log.open("ab") as out:
            process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until_accepting(("127.0.0.1", port), 30, process, log)
            yield Daemon(instance, port)
        finally:
            process.terminate()
            assert process.wait(15) == 0


def flags_of(client: imaplib.IMAP4, numbers: str) -> list[bytes]:
    """The FLAGS the FETCH answers with (unsolicited FETCH responses from before dropped)."""
    client.response("FETCH")
    typ, data = client.fetch(numbers, "(FLAGS)")
    assert typ == "OK"
    return [item for item in data if isinstance(item, bytes)]


def test_recent_and_per_user_seen_over_imaplib(imapd: Daemon) -> None:
    imapd.deliver(1)
    imapd.deliver(2)
    first = imapd.login("alice")
    assert first.select("INBOX") == ("OK", [b"2"])
    assert first.response("RECENT") == ("RECENT", [b"2"])
    assert flags_of(first, "1:*") == [b"1 (FLAGS (\\Recent))", b"2 (FLAGS (\\Recent))"]

    second = imapd.login("alice")
    assert second.select("INBOX") == ("OK", [b"2"])
    assert second.response("RECENT") == ("RECENT", [b"0"])
    assert flags_of(second, "1:*") == [b"1 (FLAGS ())", b"2 (FLAGS ())"]
    assert second.status("INBOX", "(RECENT)")[1] == [b"INBOX (RECENT 0)"]

    # New mail while the first session IDLEs: EXISTS, then RECENT, from the daemon's poll.
    tag = first._new_tag()
    first.send(tag + b" IDLE\r\n")
    assert first.readline().startswith(b"+ ")
    imapd.deliver(3)
    assert first.readline() == b"* 3 EXISTS\r\n"  # the socket timeout bounds the wait
    assert first.readline() == b"* 3 RECENT\r\n"
    first.send(b"DONE\r\n")
    assert first.readline().startswith(tag + b" OK")
    assert first.search(None, "RECENT") == ("OK", [b"1 2 3"])
    assert second.noop()[0] == "OK"
    assert second.search(None, "RECENT") == ("OK", [b""])
    assert flags_of(second, "3") == [b"3 (FLAGS ())"]

    # bob reads alice's INBOX: his own \Recent marks and his own \Seen.
    assert first.setacl("INBOX", "bob", "lrs")[0] == "OK"
    bob = imapd.login("bob")
    assert bob.select("user.alice") == ("OK", [b"3"])
    assert bob.response("RECENT") == ("RECENT", [b"3"])
    typ, data = bob.fetch("1", "(BODY[])")  # sets bob's \Seen (RFC 3501 6.4.5)
    assert typ == "OK" and isinstance(data[0], tuple) and data[0][1].endswith(message(1))
    assert data[1] == b" FLAGS (\\Seen \\Recent))"
    assert first.store("2", "+FLAGS", "(\\Seen)")[0] == "OK"
    assert bob.search(None, "UNSEEN") == ("OK", [b"2 3"])
    assert bob.search(None, "SEEN") == ("OK", [b"1"])
    assert first.search(None, "SEEN") == ("OK", [b"2"])
    assert second.status("INBOX", "(UNSEEN)")[1] == [b"INBOX (UNSEEN 2)"]
    assert bob.status("user.alice", "(UNSEEN)")[1] == [b"user.alice (UNSEEN 2)"]
    assert flags_of(second, "1:2") == [b"1 (FLAGS ())", b"2 (FLAGS (\\Seen))"]
    for client in (first, second, bob):
        client.logout()
