"""imapd in process: a real asyncio server on 127.0.0.1, a real DiskStore, Python's imaplib."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import imaplib
import logging
import os
import re
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from tests.support.loops import new_event_loop

from sealmail.auth.authenticator import Authenticator
from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import ConfigError, ImapdConfig, parse_imapd_conf
from sealmail.proto.sasl import split_identity
from sealmail.server.imapd import ImapService, build_service
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

PASSWORD = "s3cret pw"
MESSAGE = (
    b"From: Alice Example <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?UTF-8?Q?caf=C3=A9?= report\r\n"
    b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n"
    b"Message-ID: <one@example.org>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=XX\r\n"
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"\r\n"
    b"hello world\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAw==\r\n"
    b"--XX--\r\n"
)
PLAIN = b"From: c@example.org\r\nSubject: second\r\n\r\nline one\r\n"


@dataclass
class Server:
    config: ImapdConfig
    store: DiskStore
    service: ImapService
    port: int
    ca: trustme.CA
    loop: asyncio.AbstractEventLoop

    def client(self) -> imaplib.IMAP4:
        return imaplib.IMAP4("127.0.0.1", self.port, timeout=10)

    def login(self, user: str = "alice") -> imaplib.IMAP4:
        client = self.client()
        client.login(user, PASSWORD)
        return client

    def tls_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def deliver(self, content: bytes, mailbox: str = "user.alice") -> int:
        [result] = self.store.deliver(content, [DeliveryTarget(mailbox)])
        assert not isinstance(result, Exception)
        return result.uid


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def make_config(tmp_path: Path, ca: trustme.CA, **extra: str) -> ImapdConfig:
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    values = {
        "configdirectory": str(tmp_path / "config"),
        "partition-default": str(tmp_path / "partition"),
        "servername": "imap.test.example",
        "tls_server_cert": str(cert),
        "tls_server_key": str(key),
        "auth_failure_delay": "0",
        "admins": "admin",
        "hosts_allow": str(tmp_path / "hosts.allow"),
        "hosts_deny": str(tmp_path / "hosts.deny"),
        **extra,
    }
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "partition").mkdir(exist_ok=True)
    return parse_imapd_conf("".join(f"{k}: {v}\n" for k, v in values.items()), "imapd.conf")


@pytest.fixture
def start(tmp_path: Path, ca: trustme.CA) -> Iterator[Callable[..., Server]]:
    """start(**imapd_conf) -> Server (alice, bob, admin), stopped at the end."""
    running: list[tuple[asyncio.AbstractEventLoop, threading.Thread, DiskStore]] = []

    def starter(idle_poll: float = 0.05, **extra: str) -> Server:
        config = make_config(tmp_path, ca, **extra)
        store = DiskStore.from_config(config)
        sasldb = SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10)
        for user in ("alice", "bob", "admin"):
            if store.mailbox(f"user.{user}") is None:
                store.create_mailbox(f"user.{user}")
            sasldb.set_password(split_identity(user, config.servername), PASSWORD)
        service = ImapService(config, store, authenticator=Authenticator(config, sasldb=sasldb),
                              idle_poll_interval=idle_poll)
        loop = new_event_loop()  # uvloop, as the daemon runs, unless SEALMAIL_EVENT_LOOP=asyncio
        port: list[int] = []

        async def main() -> None:
            server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
            port.append(server.sockets[0].getsockname()[1])

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(main(), loop).result(10)
        running.append((loop, thread, store))
        return Server(config, store, service, port[0], ca, loop)

    yield starter
    for loop, thread, store in running:

        async def finish() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(finish(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        store.close()


def raw_session(server: Server) -> tuple[socket.socket, Callable[[bytes], bytes]]:
    """A bare socket and `say(line)` returning everything up to the tagged reply."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()

    def say(data: bytes, tag: bytes | None = None) -> bytes:
        sock.sendall(data)
        tag = tag or data.split(b" ", 1)[0]
        out = b""
        while True:
            line = reader.readline()
            assert line, f"connection closed; got {out!r}"
            out += line
            if line.startswith(tag + b" ") or line.startswith(b"* BYE"):
                return out

    return sock, say


# -- not authenticated -------------------------------------------------------------------------


def test_greeting_capabilities_and_logindisabled(start) -> None:  # type: ignore[no-untyped-def]
    server = start()
    client = server.client()
    assert b"imap.test.example sealmail IMAP server ready" in client.welcome
    caps = client.capabilities
    assert "IMAP4REV1" in caps and "STARTTLS" in caps and "LOGINDISABLED" in caps
    assert "IDLE" in caps and "UIDPLUS" in caps and "MOVE" in caps
    assert not any(c.startswith("AUTH=PLAIN") for c in caps)
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login("alice", PASSWORD)
    assert client.noop()[0] == "OK"
    client.logout()


def test_starttls_then_login_and_authenticate(start) -> None:  # type: ignore[no-untyped-def]
    server = start()
    client = server.client()
    client.starttls(server.tls_context())
    assert "LOGINDISABLED" not in client.capabilities
    assert "AUTH=PLAIN" in client.capabilities
    assert client.login("alice", PASSWORD)[0] == "OK"
    client.logout()
    client = server.client()
    client.starttls(server.tls_context())
    typ, _ = client.authenticate("PLAIN", lambda _: b"\0bob\0" + PASSWORD.encode())
    assert typ == "OK"
    client.logout()


def test_imaps_build_service_and_bad_arguments(start, tmp_path: Path, ca) -> None:  # type: ignore[no-untyped-def]
    config = make_config(tmp_path, ca)
    service = build_service(config, ["-s"], service_name="imaps")
    assert service.implicit_tls_context is not None
    service.close()
    with pytest.raises(ConfigError):
        build_service(config, ["-x"])


def test_sasl_ir_and_wrong_password(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    import base64

    bad = base64.b64encode(b"\0alice\0wrong")
    assert b"a1 NO [AUTHENTICATIONFAILED]" in say(b"a1 AUTHENTICATE PLAIN " + bad + b"\r\n")
    good = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
    assert b"a2 OK [CAPABILITY" in say(b"a2 AUTHENTICATE PLAIN " + good + b"\r\n")
    sock.close()


def test_bad_input_gets_bad_with_tag_and_session_goes_on(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    assert say(b"x1 FROBNICATE\r\n").startswith(b"x1 BAD")
    assert say(b"x2 FETCH 1 FLAGS\r\n").startswith(b"x2 BAD")  # wrong state
    assert say(b"x3 LOGIN alice {5000000}\r\n").startswith(b"x3 BAD [TOOBIG]")
    assert b"x4 OK" in say(b"x4 NOOP\r\n")
    sock.close()


# -- mailboxes -------------------------------------------------------------------------------------


def test_list_create_rename_delete_subscribe_status(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    client = server.login()
    assert client.create("INBOX.Lists")[0] == "OK"
    assert client.create("INBOX.Lists.Python")[0] == "OK"
    typ, data = client.list("\"\"", "*")
    names = [line.decode() for line in data]
    assert any(n.endswith('"." INBOX') and "\\HasChildren" in n for n in names)
    assert any(n.endswith("INBOX.Lists.Python") and "\\HasNoChildren" in n for n in names)
    assert not any("user.bob" in n for n in names)  # no rights on bob's mailboxes
    typ, data = client.list("\"\"", "%")
    assert [line.split(b" ")[-1] for line in data] == [b"INBOX"]
    typ, data = client.list("INBOX.", "%")
    assert [line.split(b" ")[-1] for line in data] == [b"INBOX.Lists"]
    assert client.rename("INBOX.Lists", "INBOX.Archive")[0] == "OK"
    assert client.subscribe("INBOX.Archive")[0] == "OK"
    typ, data = client.lsub("\"\"", "*")
    assert data == [b'() "." INBOX.Archive']
    assert client.unsubscribe("INBOX.Archive")[0] == "OK"
    assert client.lsub("\"\"", "*")[1] == [None]
    server.deliver(MESSAGE)
    typ, data = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY HIGHESTMODSEQ)")
    assert re.match(rb"INBOX \(MESSAGES 1 UNSEEN 1 UIDNEXT 2 UIDVALIDITY \d+ HIGHESTMODSEQ \d+\)",
                    data[0])
    assert client.delete("INBOX.Archive.Python")[0] == "OK"
    assert client.delete("INBOX")[0] == "NO"
    typ, data = client.create("INBOX.Archive")
    assert typ == "NO" and b"ALREADYEXISTS" in data[0]
    typ, data = client.create("Shared")  # top level: admins only
    assert typ == "NO"
    typ, data = client.namespace()
    assert data == [b'(("INBOX." ".")) (("user." ".")) (("" "."))']
    client.logout()


def test_unixhierarchysep_and_altnamespace(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes", unixhierarchysep="yes", altnamespace="yes")
    server.store.create_mailbox("user.alice.Sent")
    server.store.set_acl("user.bob", "alice", "lr")
    client = server.login()
    _, data = client.list("\"\"", "*")
    names = {line.split(b'"/" ')[-1] for line in data}
    assert {b"INBOX", b"Sent", b'"Other Users/bob"'} <= names
    assert client.select('"Other Users/bob"', readonly=True)[0] == "OK"
    assert client.create("Drafts")[0] == "OK"
    assert client.create("Drafts/2026")[0] == "OK"
    assert server.store.mailbox("user.alice.Drafts.2026") is not None
    _, data = client.list('""', "Drafts/%")
    assert data == [b'(\\HasNoChildren) "/" Drafts/2026']
    client.logout()


# -- messages ------------------------------------------------------------------------------------


def test_select_fetch_store_search_expunge(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.deliver(MESSAGE)
    server.deliver(PLAIN)
    client = server.login()
    _, data = client.select("INBOX")
    assert data == [b"2"]
    assert client.untagged_responses.get("UIDVALIDITY")
    assert client.untagged_responses.get("HIGHESTMODSEQ")
    _, data = client.fetch("1", "(UID FLAGS RFC822.SIZE INTERNALDATE ENVELOPE)")
    text = data[0].decode()
    assert f"RFC822.SIZE {len(MESSAGE)}" in text and "UID 1" in text
    assert '"=?UTF-8?Q?caf=C3=A9?= report"' in text and '"<one@example.org>"' in text
    _, data = client.fetch("1", "(BODYSTRUCTURE)")
    assert b'("TEXT" "PLAIN" ("CHARSET" "utf-8")' in data[0]
    assert b'"MIXED" ("BOUNDARY" "XX")' in data[0]
    _, data = client.fetch("1", "(BODY.PEEK[1] BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"hello world"
    assert data[1][1] == b"Subject: =?UTF-8?Q?caf=C3=A9?= report\r\n\r\n"
    _, data = client.fetch("1", "(BINARY.PEEK[2] BINARY.SIZE[2])")
    assert data[0][1] == b"\x00\x01\x02\x03"
    _, data = client.fetch("1", "(BODY.PEEK[]<0.4>)")
    assert data[0][1] == b"From"
    # The first read-write session claims \Recent (RFC 3501 2.3.2).
    assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]
    _, data = client.fetch("2", "(BODY[TEXT])")  # sets \Seen
    assert data[0][1] == b"line one\r\n" and b"\\Seen" in data[0][0] + data[1]
    assert client.search(None, "UNSEEN")[1] == [b"1"]
    client.literal = "café".encode()
    assert client.search("UTF-8", "SUBJECT")[1] == [b"1"]
    assert client.search(None, "BODY", "hello")[1] == [b"1"]
    assert client.search(None, "FROM", "c@example")[1] == [b"2"]
    assert client.search(None, "LARGER", "100")[1] == [b"1"]
    assert client.search(None, "OR", "SEEN", "HEADER", "Message-ID", "one")[1] == [b"1 2"]
    assert client.uid("SEARCH", "UID", "2:*")[1] == [b"2"]
    assert client.search(None, "SENTON", "3-Mar-2026")[1] == [b"1"]
    _, data = client.store("1", "+FLAGS", "(\\Flagged $Important)")
    assert b"\\Flagged" in data[0] and b"$Important" in data[0]
    _, data = client.uid("STORE", "1", "-FLAGS.SILENT", "(\\Flagged)")
    assert data == [None]
    assert client.search(None, "KEYWORD", "$Important")[1] == [b"1"]
    client.store("1", "+FLAGS", "(\\Deleted)")
    _, data = client.expunge()
    assert data == [b"1"]
    assert client.fetch("1", "(UID)")[1] == [b"1 (UID 2)"]
    assert server.store.mailbox("user.alice").exists == 1
    client.logout()


def test_append_copy_move_uidplus(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    client = server.login()
    client.create("INBOX.Archive")
    typ, data = client.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(1_700_000_000),
                              MESSAGE)
    assert typ == "OK" and re.search(rb"\[APPENDUID \d+ 1\]", data[0])
    typ, data = client.append("INBOX.Nope", None, None, PLAIN)
    assert typ == "NO" and b"TRYCREATE" in data[0]
    client.select("INBOX")
    assert client.fetch("1", "(FLAGS INTERNALDATE)")[1] == [
        b'1 (FLAGS (\\Seen \\Recent) INTERNALDATE "14-Nov-2023 22:13:20 +0000")']
    typ, data = client.copy("1", "INBOX.Archive")
    assert typ == "OK" and re.search(rb"\[COPYUID \d+ 1 1\]", data[0])
    typ, data = client._simple_command("MOVE", "1", "INBOX.Archive")
    assert typ == "OK"
    assert client.untagged_responses.get("EXPUNGE") == [b"1"]
    client.select("INBOX.Archive")
    assert client.search(None, "ALL")[1] == [b"1 2"]
    assert client.fetch("2", "(FLAGS)")[1] == [b"2 (FLAGS (\\Seen \\Recent))"]
    assert server.store.message_bytes("user.alice.Archive", 2) == MESSAGE
    assert client.unselect()[0] == "OK"
    client.logout()


def test_two_sessions_see_each_others_changes(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.deliver(PLAIN)
    server.deliver(PLAIN)
    one, two = server.login(), server.login()
    one.select("INBOX")
    two.select("INBOX")
    one.store("1", "+FLAGS", "(\\Deleted \\Flagged)")
    two.untagged_responses.clear()
    two.noop()
    assert two.untagged_responses.get("FETCH") == [b"1 (UID 1 FLAGS (\\Deleted \\Flagged))"]
    two.untagged_responses.clear()
    one.expunge()
    server.deliver(PLAIN)
    # FETCH may not report the expunge (RFC 9051 7.5.1), but the new message yes; NOOP then
    # reports the expunge.
    _, data = two.fetch("1", "(UID)")
    assert data[0] == b"1 (UID 1)"
    assert two.untagged_responses.get("EXISTS") == [b"3"]
    assert "EXPUNGE" not in two.untagged_responses
    two.untagged_responses.clear()
    two.noop()
    assert two.untagged_responses.get("EXPUNGE") == [b"1"]
    assert two.fetch("1:*", "(UID)")[1] == [b"1 (UID 2)", b"2 (UID 3)"]
    one.logout()
    two.logout()


def test_idle_announces_a_delivery(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    say(b"a LOGIN alice \"" + PASSWORD.encode() + b"\"\r\n")
    assert b"* 0 EXISTS" in say(b"b SELECT INBOX\r\n")
    sock.sendall(b"c IDLE\r\n")
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"+ ")
    server.deliver(PLAIN)
    sock.settimeout(5)
    assert reader.readline() == b"* 1 EXISTS\r\n"
    assert reader.readline() == b"* 1 RECENT\r\n"  # RFC 3501 7.3.2
    sock.sendall(b"DONE\r\n")
    assert reader.readline().startswith(b"c OK")
    sock.close()


def test_one_watch_wakes_only_the_idling_session_with_news(start) -> None:  # type: ignore[no-untyped-def]
    """IdleWatch: one timer looks at every idling session's mailbox; a delivery reaches the
    session idling on that mailbox and no other, and DONE takes a session off the watch."""
    server = start(allowplaintext="yes")
    readers = {}
    for user in ("alice", "bob"):
        sock, say = raw_session(server)
        say(f'a LOGIN {user} "{PASSWORD}"\r\n'.encode())
        assert b"* 0 EXISTS" in say(b"b SELECT INBOX\r\n")
        sock.sendall(b"c IDLE\r\n")
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+ ")
        sock.settimeout(5)
        readers[user] = (sock, reader)
    server.deliver(PLAIN, "user.bob")
    _, bob = readers["bob"]
    assert bob.readline() == b"* 1 EXISTS\r\n"
    assert bob.readline() == b"* 1 RECENT\r\n"
    alice_sock, alice = readers["alice"]
    # Six intervals: alice's mailbox had nothing to tell, so nothing reached her socket.
    assert select.select([alice_sock], [], [], 0.3)[0] == []
    server.deliver(PLAIN)
    assert alice.readline() == b"* 1 EXISTS\r\n"
    assert alice.readline() == b"* 1 RECENT\r\n"
    for sock, reader in readers.values():
        sock.sendall(b"DONE\r\n")
        assert reader.readline().startswith(b"c OK")
    assert not server.service.idle_watch._idlers
    for sock, _ in readers.values():
        sock.close()


def test_an_idling_session_is_logged_out_after_the_timeout(start) -> None:  # type: ignore[no-untyped-def]
    """RFC 9051 5.4: IDLE does not hold a session past the autologout time; the watch's ticks
    meanwhile (nothing to tell) do not restart it."""
    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    server.service.timeout = 0.4
    sock.sendall(b"c IDLE\r\n")
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"+ ")
    assert reader.readline().startswith(b"* BYE Autologout")
    sock.close()


def test_notify_news_arrives_between_commands(start) -> None:  # type: ignore[no-untyped-def]
    """RFC 5465: once NOTIFY is set, a delivery to another watched mailbox is told as STATUS
    without the client sending anything (polled between commands)."""
    server = start(allowplaintext="yes")
    server.store.create_mailbox("user.alice.Archive")
    sock, say = raw_session(server)
    say(b"a LOGIN alice \"" + PASSWORD.encode() + b"\"\r\n")
    assert b"b OK" in say(b"b NOTIFY SET (PERSONAL (MessageNew MessageExpunge))\r\n")
    server.deliver(PLAIN, "user.alice.Archive")
    sock.settimeout(10)
    reader = sock.makefile("rb")
    line = reader.readline()
    assert line.startswith(b"* STATUS INBOX.Archive (MESSAGES 1 UIDNEXT 2 UIDVALIDITY "), line
    sock.close()


def test_a_second_login_is_answered_from_the_auth_cache(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """auth_cache_size: the second LOGIN with the same password runs no scrypt; a wrong one
    is checked (and then remembered for auth_cache_negative_ttl)."""
    checks: list[str] = []
    real = SaslDB.check_password

    def counting(self: SaslDB, identity: object, password: str) -> object:
        checks.append(password)
        return real(self, identity, password)  # type: ignore[arg-type]

    monkeypatch.setattr(SaslDB, "check_password", counting)
    server = start(allowplaintext="yes", auth_cache_size="100")
    for _ in range(2):
        client = server.client()
        assert client.login("alice", PASSWORD)[0] == "OK"
        client.logout()
    assert len(checks) == 1
    sock, say = raw_session(server)
    for _ in range(2):
        assert b"a NO" in say(b'a LOGIN alice "wrong horse"\r\n')
    assert len(checks) == 2
    sock.close()


def test_condstore_qresync_and_esearch(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    for _ in range(3):
        server.deliver(PLAIN)
    sock, say = raw_session(server)
    say(b"a LOGIN alice \"" + PASSWORD.encode() + b"\"\r\n")
    assert b"* ENABLED QRESYNC" in say(b"b ENABLE QRESYNC\r\n")
    reply = say(b"c SELECT INBOX\r\n")
    modseq = int(re.search(rb"HIGHESTMODSEQ (\d+)", reply).group(1))  # type: ignore[union-attr]
    info = server.store.mailbox("user.alice")
    assert info is not None
    say(b"d STORE 2 +FLAGS (\\Seen)\r\n")
    reply = say(b"e UID FETCH 1:* (FLAGS) (CHANGEDSINCE " + str(modseq).encode() + b")\r\n")
    assert re.search(rb"\* 2 FETCH \(UID 2 FLAGS \(\\Seen \\Recent\) MODSEQ \(\d+\)\)", reply)
    assert b"UID 1 " not in reply
    reply = say(b"f SEARCH RETURN (MIN MAX COUNT) ALL\r\n")
    assert b'* ESEARCH (TAG "f") MIN 1 MAX 3 COUNT 3' in reply
    say(b"g STORE 1 +FLAGS (\\Deleted)\r\n")
    reply = say(b"h EXPUNGE\r\n")
    assert b"* VANISHED 1" in reply
    say(b"i UNSELECT\r\n")
    reply = say(b"j SELECT INBOX (QRESYNC (" + str(info.uidvalidity).encode() + b" "
                + str(modseq).encode() + b"))\r\n")
    assert b"* VANISHED (EARLIER) 1" in reply
    sock.close()


def test_acl_and_quota_for_admins(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    admin = server.login("admin")
    assert admin.create("user.carol")[0] == "OK"
    # As Cyrus: an admin needs no right on the parent (user.bob gives admin none).
    assert admin.create("user.bob.Projects")[0] == "OK"
    assert admin.setacl("user.bob", "alice", "lrs")[0] == "OK"
    typ, data = admin.getacl("user.bob")
    assert b"alice lrs" in data[0] and b"bob lrswipkxtecda" in data[0]
    assert admin.setquota("user.bob", "(STORAGE 100 MESSAGE 5)")[0] == "OK"
    typ, data = admin.getquotaroot("user.bob")
    assert data == [[b"user.bob user.bob"], [b"user.bob (STORAGE 0 100 MESSAGE 0 5)"]]
    alice = server.login()
    typ, data = alice.myrights("user.bob")
    assert data == [b"user.bob lrs"]
    assert alice.select("user.bob")[0] == "OK"
    typ, data = alice.setquota("INBOX", "(STORAGE 1)")
    assert typ == "NO"
    typ, data = alice.getacl("user.bob")
    assert typ == "NO" and b"NOPERM" in data[0]
    assert admin.delete("user.carol")[0] == "OK"
    admin.logout()
    alice.logout()


def test_no_setacl_locks_the_owner_out(start) -> None:  # type: ignore[no-untyped-def]
    """Cyrus's implicit_owner_rights: a negative entry or an emptied entry for the owner, set by
    the owner or by anyone holding "a", leaves the owner lkxa, enough to repair the ACL."""
    server = start(allowplaintext="yes")
    alice, bob = server.login(), server.login("bob")
    assert alice.setacl("INBOX", "-alice", "lra")[0] == "OK"
    assert alice.myrights("INBOX")[1] == [b"INBOX lswipkxtecda"]
    assert alice.select("INBOX")[0] == "NO"  # "r" is gone, as asked
    assert alice.deleteacl("INBOX", "-alice")[0] == "OK"
    assert alice.myrights("INBOX")[1] == [b"INBOX lrswipkxtecda"]
    assert alice.setacl("INBOX", "bob", "la")[0] == "OK"
    assert bob.setacl("user.alice", "alice", '""')[0] == "OK"
    assert alice.myrights("INBOX")[1] == [b"INBOX lkxca"]  # c stands for k
    assert alice.xatom("LISTRIGHTS", "INBOX", "alice")[0] == "OK"
    assert alice.response("LISTRIGHTS")[1][0].startswith(b"INBOX alice lkxa ")
    assert alice.setacl("INBOX", "alice", "lrswipkxtecda")[0] == "OK"
    assert alice.select("INBOX")[0] == "OK"
    assert bob.myrights("user.alice")[1] == [b"user.alice la"]  # not the owner: nothing implicit
    alice.logout()
    bob.logout()


def test_implicit_owner_rights_is_configurable(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes", implicit_owner_rights="la")
    alice = server.login()
    assert alice.setacl("INBOX", "alice", '""')[0] == "OK"
    assert alice.myrights("INBOX")[1] == [b"INBOX la"]
    alice.logout()


def test_idle_timeout_closes_with_bye(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.service.timeout = 0.2
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    assert reader.readline().startswith(b"* BYE Autologout")
    sock.close()


def test_a_stopping_daemon_says_bye_to_waiting_sessions(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    server.loop.call_soon_threadsafe(server.service.drain)
    reader = sock.makefile("rb")
    assert reader.readline() == b"* BYE Server shutting down\r\n"
    assert reader.readline() == b""  # and the connection is closed
    sock.close()


def test_sessions_end(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.login().logout()
    deadline = time.monotonic() + 10
    while server.service.sessions:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_special_use_list_status_sort_thread(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.deliver(b"From: zed@example.org\r\nSubject: Re: topic\r\n"
                   b"Message-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\n"
                   b"Date: Wed, 04 Mar 2026 10:00:00 +0000\r\n\r\nreply\r\n")
    server.deliver(b"From: amy@example.org\r\nSubject: topic\r\nMessage-ID: <a@x>\r\n"
                   b"Date: Tue, 03 Mar 2026 10:00:00 +0000\r\n\r\nfirst, and longer\r\n")
    server.deliver(b"From: bea@example.org\r\nSubject: other\r\nMessage-ID: <c@x>\r\n"
                   b"Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n\r\nx\r\n")
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    assert say(b"b CREATE INBOX.Sent (USE (\\Sent))\r\n").startswith(b"b OK")
    assert b"USEATTR" in say(b"c CREATE INBOX.X (USE (\\Bogus))\r\n")
    reply = say(b'd LIST (SPECIAL-USE) "" *\r\n')
    assert reply.splitlines()[0] == b'* LIST (\\HasNoChildren \\Sent) "." INBOX.Sent'
    reply = say(b'e LIST "" INBOX RETURN (STATUS (MESSAGES UNSEEN))\r\n')
    assert b"* STATUS INBOX (MESSAGES 3 UNSEEN 3)" in reply
    say(b"f SELECT INBOX\r\n")
    assert b"* SORT 3 2 1" in say(b"g SORT (DATE) UTF-8 ALL\r\n")
    assert b"* SORT 2 3 1" in say(b"h SORT (FROM) UTF-8 ALL\r\n")
    assert b"* SORT 1 2 3" in say(b"i SORT (REVERSE SIZE) UTF-8 ALL\r\n")
    assert b"* THREAD (3)(2 1)" in say(b"j THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
    assert b"* THREAD (3)(2 1)" in say(b"k THREAD REFERENCES UTF-8 ALL\r\n")
    assert b"* SEARCH 2 3" in say(b"l SEARCH YOUNGER 3600 NOT FROM zed\r\n")
    say(b"m SEARCH RETURN (SAVE) FROM amy\r\n")
    assert b"* 2 FETCH (UID 2)" in say(b"n FETCH $ (UID)\r\n")
    sock.close()


def test_sort_and_thread_answers_kept_by_the_daemon_follow_new_mail_and_expunges(  # type: ignore[no-untyped-def]
        start) -> None:
    """SORT and THREAD answers kept by the process (sealmail.imap.orders), shared by its
    sessions, are those of each session's own view of the mailbox."""
    server = start(allowplaintext="yes")
    for day, sender in ((4, "zed"), (3, "amy"), (5, "bea")):
        server.deliver(f"From: {sender}@example.org\r\nSubject: topic\r\n"
                       f"Date: 0{day} Mar 2026 10:00:00 +0000\r\n\r\nx\r\n".encode())
    one, two = server.login(), server.login()
    one.select("INBOX")
    two.select("INBOX")
    assert one.sort("(DATE)", "UTF-8", "ALL")[1] == [b"2 1 3"]
    assert two.sort("(DATE)", "UTF-8", "ALL")[1] == [b"2 1 3"]
    assert two.thread("ORDEREDSUBJECT", "UTF-8", "ALL")[1] == [b"(2 (1)(3))"]
    server.deliver(b"From: al@example.org\r\nSubject: topic\r\n"
                   b"Date: 01 Mar 2026 10:00:00 +0000\r\n\r\nx\r\n")
    one.noop()
    assert one.sort("(DATE)", "UTF-8", "ALL")[1] == [b"4 2 1 3"]
    one.store("2", "+FLAGS", "(\\Deleted)")
    one.expunge()
    assert one.uid("SORT", "(DATE)", "UTF-8", "ALL")[1] == [b"4 1 3"]
    assert one.thread("ORDEREDSUBJECT", "UTF-8", "ALL")[1] == [b"(3 (1)(2))"]
    two.noop()  # the new message and the expunge, now
    assert two.sort("(DATE)", "UTF-8", "ALL")[1] == [b"3 1 2"]
    assert two.thread("ORDEREDSUBJECT", "UTF-8", "ALL")[1] == [b"(3 (1)(2))"]
    one.logout()
    two.logout()


def test_compress_deflate(start) -> None:  # type: ignore[no-untyped-def]
    import zlib

    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    assert say(b"b COMPRESS DEFLATE\r\n").startswith(b"b OK")
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    sock.sendall(deflate.compress(b"c NOOP\r\nd COMPRESS DEFLATE\r\n")
                 + deflate.flush(zlib.Z_SYNC_FLUSH))
    received = b""
    while b"d NO" not in received:
        chunk = sock.recv(4096)
        assert chunk
        received += inflate.decompress(chunk)
    assert b"c OK" in received and b"[COMPRESSIONACTIVE]" in received
    sock.close()


def test_compressed_input_reaches_the_core_a_piece_at_a_time(start) -> None:  # type: ignore[no-untyped-def]
    """A deflate bomb (64 MiB of one line in ~64 KiB) meets the core's line limit a piece at a
    time instead of being inflated whole; bytes sent with COMPRESS itself are not lost."""
    import zlib

    from sealmail.server.imapd import INFLATED_PIECE, _Deflate

    bomb = zlib.compressobj(9, zlib.DEFLATED, -15)
    wire = bomb.compress(b"x" * (64 << 20)) + bomb.flush(zlib.Z_SYNC_FLUSH)
    pieces = list(_Deflate().inflate(wire))
    assert max(map(len, pieces)) == INFLATED_PIECE and sum(map(len, pieces)) == 64 << 20

    server = start(allowplaintext="yes")
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    sock.sendall(b"b COMPRESS DEFLATE\r\n"
                 + deflate.compress(b"c NOOP\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    raw = b""
    while b"\r\n" not in raw:  # the OK to COMPRESS is the last uncompressed line
        chunk = sock.recv(4096)
        assert chunk
        raw += chunk
    head, _, rest = raw.partition(b"\r\n")
    assert head.startswith(b"b OK")
    received = inflate.decompress(rest)
    while b"c OK" not in received:
        chunk = sock.recv(4096)
        assert chunk
        received += inflate.decompress(chunk)
    sock.sendall(deflate.compress(b"x" * (64 << 20) + b"\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    answer = b""
    with contextlib.suppress(OSError):
        while b"BAD" not in answer and b"BYE" not in answer:
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += inflate.decompress(chunk)
    assert b"BAD" in answer or b"BYE" in answer
    sock.close()
    other = server.login()  # the daemon goes on
    assert other.noop()[0] == "OK"
    other.logout()


def test_failed_logins_are_counted_and_end_the_session(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes", auth_max_failures="2")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    reader = sock.makefile("rb")
    reader.readline()
    sock.sendall(b"a LOGIN alice wrong\r\n")
    assert reader.readline().startswith(b"a NO [AUTHENTICATIONFAILED]")
    sock.sendall(b"b LOGIN alice wrong\r\n")
    assert reader.readline().startswith(b"b NO [AUTHENTICATIONFAILED]")
    assert reader.readline() == b"* BYE Too many authentication failures\r\n"
    assert reader.readline() == b""
    sock.close()


def test_hosts_deny_refuses_before_the_greeting(start, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "hosts.deny").write_text("imap: ALL\n")
    server = start(allowplaintext="yes")
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    assert sock.recv(100) == b""  # as tcpd: no greeting at all
    sock.close()


def test_examine_is_read_only_and_fetch_sets_no_seen(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    server.deliver(PLAIN)
    client = server.login()
    client.select("INBOX", readonly=True)
    _, data = client.fetch("1", "(RFC822)")
    assert isinstance(data[0], tuple) and data[0][1] == PLAIN
    # No \Seen; \Recent shown, not claimed (RFC 3501 6.3.2).
    assert client.fetch("1", "(FLAGS)")[1] == [b"1 (FLAGS (\\Recent))"]
    typ, data = client.store("1", "+FLAGS", "(\\Seen)")
    assert typ == "NO" and b"READ-ONLY" in data[0]
    assert client.close()[0] == "OK"
    client.logout()


def test_large_fetch_is_streamed_in_order_also_compressed(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import zlib

    from sealmail.imap import fetching

    monkeypatch.setattr(fetching.job, "CHUNKS", (3, 5))  # many chunks from few messages
    monkeypatch.setattr(fetching.job, "BODY_CHUNKS", (2, 4))
    server = start(allowplaintext="yes")
    for _ in range(40):
        server.deliver(PLAIN)
    client = server.login()
    client.select("INBOX")
    client.store("5:9", "+FLAGS", "(\\Flagged)")
    _, data = client.fetch("1:*", "(FLAGS UID)")
    assert data == [b"%d (FLAGS (%s\\Recent) UID %d)"  # this session claimed \Recent
                    % (n, b"\\Flagged " if 5 <= n <= 9 else b"", n) for n in range(1, 41)]
    _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert [item[1] for item in data[::2]] == [PLAIN] * 40
    client.logout()

    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    assert say(b"c COMPRESS DEFLATE\r\n").startswith(b"c OK")
    deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    inflate = zlib.decompressobj(-15)
    sock.sendall(deflate.compress(b"d FETCH 1:* (UID)\r\n") + deflate.flush(zlib.Z_SYNC_FLUSH))
    received = b""
    while not received.endswith(b"d OK FETCH completed\r\n"):
        chunk = sock.recv(65536)
        assert chunk
        received += inflate.decompress(chunk)
    assert received == b"".join(b"* %d FETCH (UID %d)\r\n" % (n, n) for n in range(1, 41)) + (
        b"d OK FETCH completed\r\n")
    sock.close()


def test_fetch_after_another_sessions_expunge(start) -> None:  # type: ignore[no-untyped-def]
    """RFC 9051 6.4.9 / RFC 2180 4.1: a message another session expunged (not yet announced
    here) is left out; the others are answered and the command succeeds."""
    server = start(allowplaintext="yes")
    for n in (1, 2):
        server.deliver(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    other = server.login()
    other.select("INBOX")
    other.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")
    other.expunge()
    other.logout()
    reply = say(b"c UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])\r\n")
    assert reply.splitlines()[-1].startswith(b"c OK"), reply
    assert b"UID 2 BODY[HEADER.FIELDS (SUBJECT)]" in reply
    # FETCH by sequence number may not announce the expunge (RFC 9051 7.5.1): nothing to send.
    other = server.login()
    other.select("INBOX")
    other.uid("STORE", "2", "+FLAGS.SILENT", "(\\Deleted)")
    other.expunge()
    other.logout()
    reply = say(b"d FETCH 1 (BODY.PEEK[TEXT])\r\n")
    assert reply.splitlines()[-1].startswith(b"d OK"), reply
    assert reply == b"d OK FETCH completed\r\n"
    sock.close()


def _one_worker_thread(server: Server) -> None:
    """The service's commands then run in one thread: a command that waited for its client
    would stall every other session of the process."""
    from concurrent.futures import ThreadPoolExecutor

    server.service.executor = ThreadPoolExecutor(1)


def _big_messages(server: Server, count: int) -> bytes:
    big = b"Subject: big\r\n\r\n" + b"".join(b"%0998d\r\n" % n for n in range(256))
    for _ in range(count):
        server.deliver(big)
    return big


def test_a_slow_reader_gets_every_byte_and_bounded_memory(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A FETCH larger than the socket takes at once: the command's thread writes what the
    socket takes (server.imapd.output._stream), the loop's transport buffers the rest, but never
    much more than STREAM_BUFFER: the command waits for the client (in its thread; another
    session's commands still run meanwhile)."""
    from sealmail.imap import fetching
    from sealmail.server import imapd
    from sealmail.server.imapd import output

    monkeypatch.setattr(fetching.job, "BODY_CHUNKS", (2, 4))  # batches of at most 1 MiB here
    partial: list[int] = []

    def recording(fd: int, data: bytes) -> int:
        sent = write(fd, data)
        if sent < len(data):
            partial.append(sent)
        return sent

    write = output._write_nonblocking
    monkeypatch.setattr(output, "_write_nonblocking", recording)
    connections: list[imapd.ImapConnection] = []
    init = imapd.ImapConnection.__init__

    def remember(self: imapd.ImapConnection, *args: object) -> None:
        init(self, *args)  # type: ignore[arg-type]
        connections.append(self)

    monkeypatch.setattr(imapd.ImapConnection, "__init__", remember)
    server = start(allowplaintext="yes")
    big = _big_messages(server, 64)  # 16 MiB
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server.port))
    sock.settimeout(10)
    reader = sock.makefile("rb")
    reader.readline()
    for line in (b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n', b"b SELECT INBOX\r\n"):
        sock.sendall(line)
        while not (answer := reader.readline()).startswith(line[:2]):
            assert answer, "the server closed the connection"  # not a loop forever on EOF
    sock.sendall(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
    other = server.login()  # while the first client reads nothing
    other.select("INBOX")
    size = other.uid("FETCH", "64", "(RFC822.SIZE)")[1]
    assert size == [b"64 (UID 64 RFC822.SIZE %d)" % len(big)]
    other.logout()
    buffered = 0
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        buffered = max(buffered, connections[0].writer.transport.get_write_buffer_size())
        time.sleep(0.01)
    assert partial, "the socket took 16 MiB at once: the test proves nothing"
    assert imapd.STREAM_BUFFER // 2 < buffered <= imapd.STREAM_BUFFER + 2 * len(big) * 4
    for n in range(1, 65):
        head = reader.readline()
        assert head == b"* %d FETCH (UID %d BODY[] {%d}\r\n" % (n, n, len(big)), head
        assert reader.read(len(big)) == big
        assert reader.readline() == b")\r\n"
    assert reader.readline() == b"c OK UID FETCH completed\r\n"
    sock.close()


def _open_files() -> str:
    """What this process has open, for a failure's message."""
    names = []
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # listdir's own descriptor is gone by now
            names.append(os.readlink(f"/proc/self/fd/{fd}"))
    return " ".join(sorted(names))


def test_a_client_gone_mid_fetch_leaves_no_descriptor(start) -> None:  # type: ignore[no-untyped-def]
    server = start(allowplaintext="yes")
    _big_messages(server, 32)
    _one_worker_thread(server)
    warm = server.login()  # the worker thread opens its index connection
    warm.select("INBOX")
    warm.noop()  # and the loop's thread its own (a quick command runs there)
    warm.logout()
    descriptors = len(os.listdir("/proc/self/fd"))
    for _ in range(3):
        sock, say = raw_session(server)
        say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
        say(b"b SELECT INBOX\r\n")
        sock.sendall(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        os.close(sock.detach())  # a reset, with the command still writing (say's file
        # would keep the socket open)
    other = server.login()
    other.select("INBOX")
    # A command for the one worker thread, so it runs after the FETCHes (a NOOP would run on
    # the loop at once: sealmail.imap.quick).
    assert other.search(None, "ALL")[0] == "OK"
    other.logout()
    deadline = time.monotonic() + 10
    while len(os.listdir("/proc/self/fd")) > descriptors and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(os.listdir("/proc/self/fd")) <= descriptors, _open_files()


def test_a_client_that_stops_reading_is_logged_out(start) -> None:  # type: ignore[no-untyped-def]
    """The autologout timer also ends a session whose client stops reading our output."""
    server = start(allowplaintext="yes")
    _big_messages(server, 64)
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    server.service.timeout = 0.5
    sock.sendall(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")
    time.sleep(0.2)
    assert len(server.service.sessions) == 1
    deadline = time.monotonic() + 10
    while server.service.sessions and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not server.service.sessions
    sock.close()


def test_a_large_fetch_over_tls_goes_through_the_loop(start) -> None:  # type: ignore[no-untyped-def]
    server = start()
    big = _big_messages(server, 8)
    client = server.client()
    client.starttls(server.tls_context())
    client.login("alice", PASSWORD)
    client.select("INBOX")
    _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert [item[1] for item in data[::2]] == [big] * 8
    client.logout()


def test_a_socket_taking_little_at_a_time_gets_everything_in_order(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The command's thread writes what the socket takes (streamed batches and the responses
    at the end, server.imapd.output._execute); the loop's transport sends the rest, in order."""
    from sealmail.server.imapd import output

    write = output._write_nonblocking
    monkeypatch.setattr(output, "_write_nonblocking", lambda fd, data: write(fd, data[:7]))
    server = start(allowplaintext="yes")
    for n in range(6):
        server.deliver(b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n))
    client = server.login()
    assert client.select("INBOX") == ("OK", [b"6"])
    _, data = client.uid("FETCH", "1:*", "(BODY.PEEK[])")
    assert [item[1] for item in data[::2]] == [
        b"Subject: m%d\r\n\r\nbody %d\r\n" % (n, n) for n in range(6)]
    assert client.search(None, "SUBJECT", "m3") == ("OK", [b"4"])
    assert client.noop()[0] == "OK"
    client.logout()


def test_a_session_ended_while_its_fetch_waits_frees_the_thread(start, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A client that reads nothing is cut off once the session has ended (server.session.close),
    and the command's thread waiting for it goes free."""
    from sealmail.server import session

    monkeypatch.setattr(session, "CLOSE_TIMEOUT", 0.5)
    server = start(allowplaintext="yes")
    _big_messages(server, 64)
    _one_worker_thread(server)
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    sock.sendall(b"c UID FETCH 1:* (BODY.PEEK[])\r\n")  # then read nothing
    time.sleep(0.5)  # the command's thread now waits for the client

    async def end_sessions() -> None:
        for task in list(server.service.sessions):
            task.cancel()

    asyncio.run_coroutine_threadsafe(end_sessions(), server.loop).result(10)
    other = server.login()  # the only command thread is free again
    other.select("INBOX")
    other.logout()
    os.close(sock.detach())


# -- authentication: the SASL exchange every daemon shares (server.session.SaslExchange) -------


class RecordedSleeps:
    """sealmail.server.session's `asyncio`, with the failure delay's sleeps recorded instead of
    waited for: the delay is proven without a test that waits or times anything."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def __getattr__(self, name: str) -> object:
        return getattr(asyncio, name)

    async def sleep(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)


def start_pop3(server: Server) -> int:
    """pop3d beside the imapd of `server`: its loop, store, config and password database."""
    from sealmail.server.pop3d import Pop3Service, Pop3Settings

    pop3 = Pop3Service(
        server.config,
        server.store,
        settings=Pop3Settings.from_config(server.config),
        authenticator=server.service.authenticator,
    )

    async def listen() -> int:
        listener = await asyncio.start_server(pop3.handle, "127.0.0.1", 0)
        return int(listener.sockets[0].getsockname()[1])

    return asyncio.run_coroutine_threadsafe(listen(), server.loop).result(10)


def session_lines(caplog: pytest.LogCaptureFixture, logger: str) -> list[str]:
    """The logger's lines with the session id (the only part that differs per session) cut."""
    lines = []
    for record in caplog.records:
        message = record.getMessage()
        if record.name != logger:
            continue
        if message.endswith(">") and " SESSIONID=<" in message:  # Cyrus's shape
            lines.append(message.rsplit(" SESSIONID=<", 1)[0])
        elif ": " in message:
            lines.append(message.split(": ", 1)[1])
    return lines


def test_a_failed_login_is_delayed_and_logged_as_pop3d_does(start, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    import poplib

    from sealmail.server import session

    sleeps = RecordedSleeps()
    monkeypatch.setattr(session, "asyncio", sleeps)
    caplog.set_level(logging.INFO, logger="sealmail")
    server = start(allowplaintext="yes", auth_failure_delay="3", auth_max_failures="2")
    client = server.client()
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.login("alice", "wrong horse")
    assert sleeps.delays == [3.0]  # auth_failure_delay, before the refusal went out
    with pytest.raises(imaplib.IMAP4.error, match=r"\[AUTHENTICATIONFAILED\]"):
        client.login("alice", "wrong horse")  # then BYE: auth_max_failures
    assert sleeps.delays == [3.0, 6.0]  # longer each time, as every daemon waits

    pop = poplib.POP3("127.0.0.1", start_pop3(server), timeout=10)
    pop.user("alice")
    with pytest.raises(poplib.error_proto, match="AUTH"):
        pop.pass_("wrong horse")
    pop.quit()
    assert sleeps.delays == [3.0, 6.0, 9.0]  # the client's third failure, in any session

    def failed(logger: str) -> list[str]:
        lines = session_lines(caplog, logger)
        return [ln for ln in lines if ln.startswith("badlogin:")]

    imap_failed, pop_failed = failed("sealmail.imapd"), failed("sealmail.pop3d")
    assert len(imap_failed) == 2 and len(pop_failed) == 1
    assert imap_failed[0].startswith(
        "badlogin: [127.0.0.1] plaintext alice [SASL(-13): authentication failure: "
    )
    assert imap_failed[0] == pop_failed[0]
    assert "wrong horse" not in caplog.text and PASSWORD not in caplog.text


def test_authenticate_plain_with_sasl_ir(start, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="sealmail.imapd")
    server = start()
    client = server.client()
    client.starttls(server.tls_context())
    response = base64.b64encode(b"\0alice\0" + PASSWORD.encode()).decode()
    typ, data = client._simple_command("AUTHENTICATE", "PLAIN", response)  # RFC 4959: one line
    assert typ == "OK" and data[0].startswith(b"[CAPABILITY IMAP4rev1 ")
    assert data[0].endswith(b"] Logged in") and b" AUTH=" not in data[0]
    client.state = "AUTH"
    assert client.select("INBOX")[0] == "OK"
    client.logout()
    logins = [ln for ln in session_lines(caplog, "sealmail.imapd") if ln.startswith("login:")]
    assert logins == ["login: [127.0.0.1] alice PLAIN+TLS User logged in"]


def test_a_cancelled_authenticate_gets_bad_is_logged_and_not_counted(start, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="sealmail.imapd")
    server = start(allowplaintext="yes", auth_max_failures="1")
    client = server.client()
    for _ in range(2):  # a cancel is no failure: the session goes on
        with pytest.raises(imaplib.IMAP4.error, match="Authentication cancelled"):
            client.authenticate("PLAIN", lambda challenge: None)  # imaplib sends "*"
    assert client.noop()[0] == "OK"
    typ, _ = client.authenticate("PLAIN", lambda _: b"\0alice\0" + PASSWORD.encode())
    assert typ == "OK"
    client.logout()
    aborted = [ln for ln in session_lines(caplog, "sealmail.imapd") if "aborted" in ln]
    assert aborted == ["AUTHENTICATE aborted from [127.0.0.1]: Authentication cancelled"] * 2


def test_plaintext_is_refused_without_tls_and_accepted_under_it(start, caplog) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="sealmail.imapd")
    server = start()  # allowplaintext: no
    sock, say = raw_session(server)
    plain = base64.b64encode(b"\0alice\0" + PASSWORD.encode())
    assert say(b"a AUTHENTICATE PLAIN " + plain + b"\r\n") == (
        b"a NO [PRIVACYREQUIRED] This mechanism needs TLS\r\n")
    assert say(b"b AUTHENTICATE PLAIN\r\n") == (
        b"b NO [PRIVACYREQUIRED] This mechanism needs TLS\r\n")
    assert say(b'c LOGIN alice "' + PASSWORD.encode() + b'"\r\n') == (
        b"c NO [PRIVACYREQUIRED] LOGIN is disabled without TLS\r\n")
    assert say(b"d AUTHENTICATE X-UNHEARD-OF\r\n") == (
        b"d NO [CANNOT] Mechanism not available\r\n")
    sock.close()
    refused = [ln for ln in session_lines(caplog, "sealmail.imapd") if "refused" in ln]
    assert refused == [
        "AUTHENTICATE PLAIN refused from [127.0.0.1]: encryption required",
        "AUTHENTICATE PLAIN refused from [127.0.0.1]: encryption required",
        "AUTHENTICATE X-UNHEARD-OF refused from [127.0.0.1]: unknown mechanism",
    ]
    client = server.client()
    client.starttls(server.tls_context())
    assert client.login("alice", PASSWORD)[0] == "OK"
    client.logout()


def test_a_password_backend_that_is_down_is_unavailable_and_not_counted(start, tmp_path) -> None:  # type: ignore[no-untyped-def]
    server = start(
        allowplaintext="yes",
        auth_max_failures="1",
        sasl_pwcheck_method="saslauthd",
        sasl_saslauthd_path=str(tmp_path / "no-saslauthd" / "mux"),
    )
    sock, say = raw_session(server)
    for tag in (b"a", b"b"):  # RFC 5530 [UNAVAILABLE]; not the client's fault, not counted
        assert say(tag + b' LOGIN alice "' + PASSWORD.encode() + b'"\r\n') == (
            tag + b" NO [UNAVAILABLE] Authentication is temporarily unavailable\r\n")
    assert say(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"
    sock.close()


def test_quick_commands_run_on_the_loop_and_the_rest_in_threads(start) -> None:  # type: ignore[no-untyped-def]
    """sealmail.imap.quick: a NOOP or a FETCH of flags costs no thread hand-off, news to sync
    (new mail, \\Recent claimed) or not; a body FETCH and a STORE are handed to the executor;
    the answers are the same either way."""
    from concurrent.futures import ThreadPoolExecutor

    class Counting(ThreadPoolExecutor):
        submitted = 0

        def submit(self, fn, /, *args, **kwargs):  # type: ignore[no-untyped-def]
            Counting.submitted += 1
            return super().submit(fn, *args, **kwargs)

    server = start(allowplaintext="yes")
    server.deliver(b"Subject: one\r\n\r\nbody\r\n")
    server.service.executor = Counting(4)
    sock, say = raw_session(server)
    say(b'a LOGIN alice "' + PASSWORD.encode() + b'"\r\n')
    say(b"b SELECT INBOX\r\n")
    before = Counting.submitted
    assert say(b"c NOOP\r\n") == b"c OK NOOP completed\r\n"
    assert say(b"d FETCH 1 (FLAGS UID)\r\n").startswith(b"* 1 FETCH (FLAGS (\\Recent) UID 1)")
    assert b"* LIST" in say(b'e LIST "" *\r\n')
    assert Counting.submitted == before
    assert b"body" in say(b"f FETCH 1 (BODY.PEEK[TEXT])\r\n")
    assert b"\\Seen" in say(b"g STORE 1 +FLAGS (\\Seen)\r\n")
    assert Counting.submitted == before + 2
    server.deliver(b"Subject: two\r\n\r\nbody\r\n")
    assert b"* 2 EXISTS\r\n* 2 RECENT\r\n" in say(b"h NOOP\r\n")  # news: synced on the loop
    assert b"* 2 FETCH (FLAGS (\\Recent))" in say(b"i FETCH 2 (FLAGS)\r\n")
    assert Counting.submitted == before + 2
    sock.close()


def test_no_quick_commands_on_postgresql(tmp_path: Path, ca: trustme.CA) -> None:
    """A read there may wait for a pooled connection a worker thread holds (sealmail.imap.quick):
    every command goes to a thread."""
    from sealmail.store.memory import MemoryStore

    disk = ImapService(make_config(tmp_path, ca), MemoryStore())
    shared = ImapService(make_config(tmp_path, ca, store_backend="postgresql"), MemoryStore())
    try:
        assert disk.quick_commands and not shared.quick_commands
    finally:
        disk.close()
        shared.close()
