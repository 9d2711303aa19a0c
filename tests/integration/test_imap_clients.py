"""`sealmail imapd` end to end: mail delivered over LMTP to a running `sealmail lmtpd`
(SealmailInstance) is read with Python's imaplib (STARTTLS and imaps, IDLE woken by the
delivery) and with `curl imap://` listing and fetching. imapd runs as its own process.
"""

from __future__ import annotations

import imaplib
import shutil
import smtplib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.instance import (
    SEALMAIL,
    SealmailInstance,
    store_root_opt_in,
    tls_test_settings,
)
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

PASSWORD = "imap secret"
SERVERNAME = "sealmail.test.example"
MESSAGE = (
    b"From: one@example.org\r\nTo: alice@example.com\r\nSubject: first\r\n"
    b"Message-ID: <i1@example.org>\r\n\r\nhello over LMTP\r\n"
)


@dataclass
class ImapDaemon:
    instance: SealmailInstance
    port: int
    tls_port: int
    ca_file: Path
    log: Path

    def deliver(self, content: bytes, user: str = "alice") -> None:
        with smtplib.LMTP(self.instance.socket_path) as client:
            client.ehlo()
            client.sendmail("sender@example.org", [f"{user}@example.com"], content)

    def tls_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture
def imapd(tmp_path: Path) -> Iterator[ImapDaemon]:
    extra, ca_file = tls_test_settings(tmp_path, allowplaintext=True)
    with SealmailInstance(tmp_path, users=["alice"], imapd_conf_extra=extra) as instance:
        sasldb = SaslDB(instance.configdirectory / "sasldb2", scrypt_n=2**10)
        sasldb.set_password(split_identity("alice", SERVERNAME), PASSWORD)
        port, tls_port = free_tcp_port(), free_tcp_port()
        log = tmp_path / "imapd.log"
        argv = [
            *SEALMAIL,
            "imapd",
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
            yield ImapDaemon(instance, port, tls_port, ca_file, log)
        finally:
            process.terminate()
            assert process.wait(15) == 0
        assert PASSWORD not in log.read_text(errors="replace")  # never a password in the log


def test_lmtp_delivery_read_over_imap_with_idle(imapd: ImapDaemon) -> None:
    client = imaplib.IMAP4("127.0.0.1", imapd.port, timeout=10)
    client.starttls(imapd.tls_context())
    client.login("alice", PASSWORD)
    assert client.select("INBOX")[1] == [b"0"]
    tag = client._new_tag()
    client.send(tag + b" IDLE\r\n")
    assert client.readline().startswith(b"+ ")
    imapd.deliver(MESSAGE)  # over LMTP to the lmtpd process
    assert client.readline() == b"* 1 EXISTS\r\n"  # the socket timeout bounds the wait
    assert client.readline() == b"* 1 RECENT\r\n"  # RFC 3501 7.3.2
    client.send(b"DONE\r\n")
    assert client.readline().startswith(tag + b" OK")
    _, data = client.fetch("1", "(BODY[])")
    assert isinstance(data[0], tuple)
    assert data[0][1].endswith(MESSAGE)  # after the Return-Path and Received lmtpd adds
    client.store("1", "+FLAGS", "(\\Deleted)")
    client.expunge()
    client.logout()
    imaps = imaplib.IMAP4_SSL(
        "127.0.0.1", imapd.tls_port, ssl_context=imapd.tls_context(), timeout=10
    )
    imaps.login("alice", PASSWORD)
    assert imaps.select("INBOX")[1] == [b"0"]
    imaps.logout()


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_lists_and_fetches(imapd: ImapDaemon) -> None:
    imapd.deliver(MESSAGE)
    base = f"imap://127.0.0.1:{imapd.port}"
    auth = [
        "--user",
        f"alice:{PASSWORD}",
        "--ssl-reqd",
        "--cacert",
        str(imapd.ca_file),
        "--max-time",
        "20",
        "-s",
        "-S",
    ]
    listing = subprocess.run(
        ["curl", *auth, f"{base}/"], capture_output=True, check=True, timeout=30
    ).stdout
    assert b'"." INBOX' in listing
    body = subprocess.run(
        ["curl", *auth, f"{base}/INBOX;UID=1"], capture_output=True, check=True, timeout=30
    ).stdout
    assert body.endswith(MESSAGE)


def test_imapd_under_master_from_cyrus_conf(tmp_path: Path) -> None:
    """cyrus.conf `imap cmd="imapd"` beside lmtpunix: deliver over LMTP, read over IMAP."""
    import signal
    import time

    port = free_tcp_port()
    conf = tmp_path / "imapd.conf"
    lmtp_socket = tmp_path / "config" / "socket" / "lmtp"
    conf.write_text(
        f"configdirectory: {tmp_path / 'config'}\npartition-default: {tmp_path / 'partition'}\n"
        f"lmtpsocket: {lmtp_socket}\nservername: {SERVERNAME}\nallowplaintext: yes\n"
        "auth_failure_delay: 0\n" + store_root_opt_in()
    )
    (tmp_path / "cyrus.conf").write_text(
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{lmtp_socket}" prefork=1\n'
        f'  imap     cmd="imapd" listen="127.0.0.1:{port}" prefork=1\n'
        "}\n"
    )
    subprocess.run(
        [*SEALMAIL, "mailbox", "-C", str(conf), "create", "user.alice"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10).set_password(
        split_identity("alice", SERVERNAME), PASSWORD
    )
    log = tmp_path / "master.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                *SEALMAIL,
                "master",
                "-C",
                str(conf),
                "-M",
                str(tmp_path / "cyrus.conf"),
                "-p",
                str(tmp_path / "master.pid"),
                "-D",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        wait_until_accepting(("127.0.0.1", port), 30, process, log)
        deadline = time.monotonic() + 30
        while not lmtp_socket.exists():
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        with smtplib.LMTP(str(lmtp_socket)) as lmtp:
            lmtp.ehlo()
            lmtp.sendmail("sender@example.org", ["alice@example.com"], MESSAGE)
        client = imaplib.IMAP4("127.0.0.1", port, timeout=10)
        client.login("alice", PASSWORD)
        client.select("INBOX", readonly=True)
        _, data = client.fetch("1", "(BODY.PEEK[TEXT])")
        assert isinstance(data[0], tuple)
        assert data[0][1] == b"hello over LMTP\r\n"
        client.logout()
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0, log.read_text(errors="replace")


def test_imapclient_reads_flags_moves_and_deletes(imapd: ImapDaemon) -> None:
    """IMAPClient (PyPI), a widely used high-level client, over STARTTLS."""
    from imapclient import IMAPClient

    imapd.deliver(MESSAGE)
    imapd.deliver(MESSAGE.replace(b"<i1@", b"<i2@").replace(b"first", b"second"))
    with IMAPClient("127.0.0.1", port=imapd.port, ssl=False, timeout=10) as client:
        client.starttls(imapd.tls_context())
        client.login("alice", PASSWORD)
        assert b"MOVE" in client.capabilities() and b"UIDPLUS" in client.capabilities()
        personal = client.namespace().personal[0]  # Cyrus's standard namespace: ("INBOX.", ".")
        archive = f"{personal[0]}Archive"
        client.create_folder(archive)
        info = client.select_folder("INBOX")
        assert info[b"EXISTS"] == 2
        uids = client.search(["SUBJECT", "second"])
        assert len(uids) == 1
        fetched = client.fetch(uids, ["ENVELOPE", "FLAGS", "RFC822.SIZE"])
        assert fetched[uids[0]][b"ENVELOPE"].subject == b"second"
        client.add_flags(uids, [b"\\Flagged"])
        assert b"\\Flagged" in client.get_flags(uids)[uids[0]]
        client.move(uids, archive)
        assert client.select_folder(archive)[b"EXISTS"] == 1
        client.select_folder("INBOX")
        first = client.search(["ALL"])
        client.delete_messages(first)
        client.expunge()
        assert client.search(["ALL"]) == []
        assert {name for _, _, name in client.list_folders()} >= {"INBOX", archive}


def test_imaplib_utf8_accept_and_imap4rev2(imapd: ImapDaemon) -> None:
    """Python's imaplib the way it speaks RFC 6855: `enable("UTF8=ACCEPT")` switches it to UTF-8
    (`_encoding = "utf-8"`), and mailbox names go and come back as UTF-8, unquoted or quoted; a
    client that enabled nothing sees the same mailbox in modified UTF-7. A third client enables
    IMAP4rev2 and gets ESEARCH for SEARCH (RFC 9051 6.4.4)."""
    imapd.deliver(MESSAGE)
    name = "INBOX.Café au lait"
    client = imaplib.IMAP4("127.0.0.1", imapd.port, timeout=10)
    client.starttls(imapd.tls_context())
    client.login("alice", PASSWORD)
    assert {"IMAP4REV1", "IMAP4REV2", "UTF8=ACCEPT", "ENABLE"} <= set(client.capabilities)
    before = client.capability()[1][-1]
    assert client.enable("UTF8=ACCEPT")[0] == "OK"
    assert client.utf8_enabled and client._encoding == "utf-8"
    assert client.response("ENABLED") == ("ENABLED", [b"UTF8=ACCEPT"])
    assert client.capability()[1][-1] == before  # RFC 9051 6.3.1: ENABLE changes no capability
    assert client.create("INBOX.Tōkyō")[0] == "OK"  # imaplib sends it unquoted
    assert client.create(f'"{name}"')[0] == "OK"
    _, listing = client.list('""', '"INBOX.*"')
    assert b'(\\HasNoChildren) "." "INBOX.Caf\xc3\xa9 au lait"' in listing
    assert b'(\\HasNoChildren) "." "INBOX.T\xc5\x8dky\xc5\x8d"' in listing
    assert client.select("INBOX")[0] == "OK"
    assert client.copy("1", f'"{name}"')[0] == "OK"
    # APPEND with RFC 6855 4's UTF8 (literal8); imaplib's own append() wraps the UTF8 (...)
    # inside its literal, so the command is written by hand.
    utf8_message = "Subject: café au lait\r\n\r\nbonjour\r\n".encode()
    tag = client._new_tag()
    client.send(tag + f' APPEND "{name}" UTF8 (~{{{len(utf8_message)}+}}\r\n'.encode()
                + utf8_message + b")\r\n")
    reply = client.readline()
    assert reply.startswith(tag + b" OK [APPENDUID "), reply
    typ, data = client.select(f'"{name}"', readonly=True)
    assert (typ, data) == ("OK", [b"2"])
    _, fetched = client.fetch("2", "(BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert isinstance(fetched[0], tuple) and "café au lait".encode() in fetched[0][1]
    client.logout()

    legacy = imaplib.IMAP4("127.0.0.1", imapd.port, timeout=10)
    legacy.starttls(imapd.tls_context())
    legacy.login("alice", PASSWORD)
    _, listing = legacy.list('""', '"INBOX.*"')
    assert b'(\\HasNoChildren) "." "INBOX.Caf&AOk- au lait"' in listing
    assert b'(\\HasNoChildren) "." INBOX.T&AU0-ky&AU0-' in listing
    assert legacy.select('"INBOX.Caf&AOk- au lait"') == ("OK", [b"2"])
    legacy.logout()

    rev2 = imaplib.IMAP4("127.0.0.1", imapd.port, timeout=10)
    rev2.starttls(imapd.tls_context())
    rev2.login("alice", PASSWORD)
    assert rev2._simple_command("ENABLE", "IMAP4rev2")[0] == "OK"
    assert rev2.response("ENABLED") == ("ENABLED", [b"IMAP4rev2"])
    rev2._mode_utf8()  # IMAP4rev2 names are UTF-8 too (RFC 9051 5.1)
    assert rev2.select(f'"{name}"') == ("OK", [b"2"])
    assert rev2.response("LIST") == ("LIST", [b'(\\HasNoChildren) "." "INBOX.Caf\xc3\xa9 au lait"'])
    assert rev2.response("RECENT") == ("RECENT", [None])  # no RECENT in IMAP4rev2
    typ, data = rev2.uid("SEARCH", "SUBJECT", '"café"')
    assert typ == "OK"
    [esearch] = rev2.response("ESEARCH")[1]
    assert isinstance(esearch, bytes) and esearch.endswith(b") UID ALL 2")
    rev2.logout()


def test_a_failed_imaps_handshake_is_logged_and_the_server_goes_on(imapd: ImapDaemon) -> None:
    """Cyrus's `imaps TLS negotiation failed: CLIENT` line, for garbage and for a client gone
    before its ClientHello; the next client is served."""

    def failures() -> list[str]:
        return [
            line for line in imapd.log.read_text(errors="replace").splitlines()
            if "imaps TLS negotiation failed: [127.0.0.1]" in line
        ]

    deadline = time.monotonic() + 15
    while not failures() and time.monotonic() < deadline:
        time.sleep(0.05)  # the fixture's own probe of the port, a client gone at once
    earlier = len(failures())
    with socket.create_connection(("127.0.0.1", imapd.tls_port), timeout=10) as garbage:
        garbage.sendall(b"a001 LOGIN alice secret\r\n" * 4)
        try:
            said = garbage.recv(4096)
        except ConnectionResetError:
            said = b""
        assert b"OK" not in said and b"BAD" not in said  # nothing said in clear
    socket.create_connection(("127.0.0.1", imapd.tls_port), timeout=10).close()
    imaps = imaplib.IMAP4_SSL(
        "127.0.0.1", imapd.tls_port, ssl_context=imapd.tls_context(), timeout=10
    )
    imaps.login("alice", PASSWORD)
    imaps.logout()
    deadline = time.monotonic() + 15
    while len(failed := failures()[earlier:]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(failed) == 2, imapd.log.read_text(errors="replace")[-2000:]
    assert "(WRONG_VERSION_NUMBER)" in failed[0] and "(lost connection)" in failed[1]
