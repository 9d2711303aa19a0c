"""pop3d in process: a real asyncio server on 127.0.0.1, the memory store, Python's poplib."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import poplib
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme

from sealmail.auth.authenticator import Authenticator
from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import ConfigError, ImapdConfig, parse_imapd_conf
from sealmail.proto.sasl import split_identity
from sealmail.server.pop3d import Pop3Service, Pop3Settings, build_service
from sealmail.server.session import maildrop_name
from sealmail.store.api import DeliveryTarget
from sealmail.store.memory import MemoryStore

PASSWORD = "s3cret pw"
MESSAGES = [
    b"From: a@example.org\r\nSubject: one\r\n\r\nfirst\r\n.dot line\r\n",
    b"From: b@example.org\r\nSubject: two \xc3\xa9\r\n\r\nsecond\r\nline 2\r\nline 3\r\n",
    b"From: c@example.org\r\nSubject: three\r\n\r\n\r\n..\r\n.\r\nend",
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Server:
    config: ImapdConfig
    store: MemoryStore
    service: Pop3Service
    port: int
    ca: trustme.CA
    clock: Clock
    loop: asyncio.AbstractEventLoop

    def client(self) -> poplib.POP3:
        return poplib.POP3("127.0.0.1", self.port, timeout=10)

    def login(self, user: str = "alice") -> poplib.POP3:
        client = self.client()
        client.user(user)
        client.pass_(PASSWORD)
        return client

    def tls_client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context

    def uids(self, user: str = "alice") -> list[int]:
        return [m.uid for m in self.store.messages(f"user.{user}")]


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
        "servername": "pop.test.example",
        "tls_server_cert": str(cert),
        "tls_server_key": str(key),
        "auth_failure_delay": "0",
        "hosts_allow": str(tmp_path / "hosts.allow"),
        "hosts_deny": str(tmp_path / "hosts.deny"),
        **extra,
    }
    (tmp_path / "config").mkdir(exist_ok=True)
    (tmp_path / "partition").mkdir(exist_ok=True)
    return parse_imapd_conf("".join(f"{k}: {v}\n" for k, v in values.items()), "imapd.conf")


@pytest.fixture
def start(tmp_path: Path, ca: trustme.CA) -> Iterator[object]:
    """start(settings=..., implicit_tls=..., **imapd_conf) -> Server, stopped at the end."""
    loops: list[tuple[asyncio.AbstractEventLoop, threading.Thread, MemoryStore]] = []

    def starter(settings: Pop3Settings | None = None, **extra: str) -> Server:
        config = make_config(tmp_path, ca, **extra)
        store = MemoryStore.from_config(config)
        sasldb = SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10)
        for user in ("alice", "bob"):
            if store.mailbox(f"user.{user}") is None:
                store.create_mailbox(f"user.{user}")
            sasldb.set_password(split_identity(user, config.servername), PASSWORD)
        clock = Clock()
        service = Pop3Service(
            config,
            store,
            settings=settings or Pop3Settings.from_config(config),
            authenticator=Authenticator(config, sasldb=sasldb),
            clock=clock,
        )
        loop = asyncio.new_event_loop()
        ready = threading.Event()
        port: list[int] = []

        async def main() -> None:
            server = await asyncio.start_server(service.handle, "127.0.0.1", 0)
            port.append(server.sockets[0].getsockname()[1])
            ready.set()

        thread = threading.Thread(target=loop.run_forever, daemon=True)
        thread.start()
        asyncio.run_coroutine_threadsafe(main(), loop).result(10)
        assert ready.wait(10)
        loops.append((loop, thread, store))
        return Server(config, store, service, port[0], ca, clock, loop)

    yield starter
    for loop, thread, store in loops:

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


def wait_until_idle(server: Server, limit: float = 10.0) -> None:
    """Until the server has seen every client go (bounded; not a timing assertion)."""
    deadline = time.monotonic() + limit
    while server.service.sessions:
        assert time.monotonic() < deadline, "sessions did not end"
        time.sleep(0.01)


def deliver(server: Server, *contents: bytes, user: str = "alice") -> None:
    for content in contents:
        [result] = server.store.deliver(content, [DeliveryTarget(f"user.{user}")])
        assert not isinstance(result, Exception)


def test_user_pass_stat_list_retr_uidl_dele(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, *MESSAGES)
    info = server.store.mailbox("user.alice")
    assert info is not None
    client = server.client()
    assert client.getwelcome() == b"+OK pop.test.example sealmail POP3 server ready"
    assert client.user("alice").startswith(b"+OK")
    assert client.pass_(PASSWORD).startswith(b"+OK Mailbox locked and ready SESSIONID=<")
    sizes = [len(m) for m in MESSAGES]
    assert client.stat() == (3, sum(sizes))
    _, listing, _ = client.list()
    assert listing == [f"{i} {s}".encode() for i, s in enumerate(sizes, 1)]
    _, uidl, _ = client.uidl()
    uids = server.uids()
    assert uidl == [f"{i} {info.uidvalidity}.{uid}".encode() for i, uid in enumerate(uids, 1)]
    for number, content in enumerate(MESSAGES, 1):
        _, lines, octets = client.retr(number)
        # poplib undoes the dot-stuffing; the bytes are the stored ones, line by line.
        expected = content if content.endswith(b"\r\n") else content + b"\r\n"
        assert b"\r\n".join(lines) + b"\r\n" == expected
        assert octets >= len(content)
    _, top, _ = client.top(2, 1)
    assert top == [b"From: b@example.org", b"Subject: two \xc3\xa9", b"", b"second"]
    client.dele(1)
    client.dele(3)
    assert server.uids() == uids  # DELE only marks
    assert client.quit().startswith(b"+OK pop.test.example POP3 server signing off (1 message")
    assert server.uids() == [uids[1]]  # removed at QUIT, as a store expunge


def test_uidl_is_stable_across_sessions(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, MESSAGES[0], MESSAGES[1])
    client = server.login()
    _, first, _ = client.uidl()
    client.dele(1)
    client.quit()
    deliver(server, MESSAGES[2])
    client = server.login()
    _, second, _ = client.uidl()
    client.quit()
    assert second[0].split()[1] == first[1].split()[1]  # message 2 became number 1, same id
    assert second[1].split()[1] not in {line.split()[1] for line in first}


def test_second_session_gets_in_use_while_store_readers_go_on(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, MESSAGES[0])
    first = server.login()
    second = server.client()
    second.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[IN-USE\]"):
        second.pass_(PASSWORD)
    assert second.noop  # the refused session goes on in AUTHORIZATION
    assert second.capa()
    # Another reader of the store (an IMAP session, a delivery) is not held up by the POP lock.
    deliver(server, MESSAGES[1])
    assert len(server.store.messages("user.alice")) == 2
    first.quit()
    assert server.login().stat()[0] == 2  # the lock went with the first session
    second.quit()


def test_dropped_connection_deletes_nothing_and_unlocks(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, *MESSAGES)
    client = server.login()
    client.dele(1)
    client.dele(2)
    client.file.close()
    client.sock.close()  # no QUIT
    wait_until_idle(server)
    client = server.login()  # the lock was released when the connection dropped
    assert client.stat()[0] == 3
    client.quit()
    assert len(server.uids()) == 3


def test_plaintext_needs_tls_then_stls_works(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start()
    deliver(server, MESSAGES[0])
    client = server.client()
    caps = client.capa()
    assert "STLS" in caps and "USER" not in caps and "PLAIN" not in caps.get("SASL", [])
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] USER command only available"):
        client.user("alice")
    client.stls(server.tls_client_context())
    caps = client.capa()
    assert "USER" in caps and "STLS" not in caps and "PLAIN" in caps["SASL"]
    client.user("alice")
    client.pass_(PASSWORD)
    assert client.stat()[0] == 1
    client.quit()


def test_pop3s(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(settings=None)
    implicit = Pop3Settings(failure_delay=0, implicit_tls=True)
    service = Pop3Service(
        server.config,
        server.store,
        settings=implicit,
        authenticator=server.service.authenticator,
    )
    loop_port: list[int] = []
    loop = asyncio.new_event_loop()

    async def main() -> None:
        srv = await asyncio.start_server(service.handle, "127.0.0.1", 0, ssl=service.tls_context)
        loop_port.append(srv.sockets[0].getsockname()[1])

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(main(), loop).result(10)
        deliver(server, MESSAGES[1])
        client = poplib.POP3_SSL(
            "127.0.0.1", loop_port[0], context=server.tls_client_context(), timeout=10
        )
        assert "STLS" not in client.capa()
        client.user("alice")
        client.pass_(PASSWORD)
        assert client.retr(1)[1][-1] == b"line 3"
        client.quit()
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_auth_plain_and_cram_md5(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, MESSAGES[0])
    client = server.client()
    assert set(client.capa()["SASL"]) >= {"PLAIN", "CRAM-MD5", "SCRAM-SHA-256"}
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    assert client._shortcmd(f"AUTH PLAIN {token}").startswith(b"+OK Mailbox locked")
    client.quit()

    client = server.client()
    challenge = client._shortcmd("AUTH CRAM-MD5")
    assert challenge.startswith(b"+ ")
    digest = hmac.new(PASSWORD.encode(), base64.b64decode(challenge[2:]), hashlib.md5).hexdigest()
    answer = base64.b64encode(f"bob {digest}".encode()).decode()
    assert client._shortcmd(answer).startswith(b"+OK Mailbox locked")
    assert client.stat() == (0, 0)
    client.quit()


def test_auth_failures_and_cancel(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes", auth_max_failures="2")
    client = server.client()
    client.user("alice")
    with pytest.raises(poplib.error_proto, match=r"-ERR \[AUTH\] authenticating"):
        client.pass_("wrong")
    assert client._shortcmd("AUTH PLAIN").startswith(b"+")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] Client canceled"):
        client._shortcmd("*")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
        client._shortcmd("AUTH NOSUCH")
    client.user("nobody")
    with pytest.raises(poplib.error_proto, match=r"\[AUTH\] authenticating"):
        client.pass_(PASSWORD)  # same reply as a wrong password: no user probing
    # auth_max_failures reached: the server closes.
    assert client.file.readline().startswith(b"-ERR [AUTH] Too many authentication failures")
    assert client.file.readline() == b""


def test_user_without_mailbox_gets_sys_perm(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    sasldb = SaslDB(Path(server.config.configdirectory) / "sasldb2", scrypt_n=2**10)
    sasldb.set_password(split_identity("carol", server.config.servername), PASSWORD)
    client = server.client()
    client.user("carol")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/PERM\] Unable to open maildrop"):
        client.pass_(PASSWORD)
    client.quit()


def test_login_delay(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(
        settings=Pop3Settings(min_poll=15 * 60, failure_delay=0), allowplaintext="yes"
    )
    client = server.client()
    assert client.capa()["LOGIN-DELAY"] == ["900"]
    client.user("alice")
    client.pass_(PASSWORD)
    client.quit()
    server.clock.now += 60
    client = server.client()
    client.user("alice")
    with pytest.raises(poplib.error_proto, match=r"\[LOGIN-DELAY\] Logins must be at least 15"):
        client.pass_(PASSWORD)
    server.clock.now += 15 * 60
    client.user("alice")
    assert client.pass_(PASSWORD).startswith(b"+OK")
    client.quit()


def test_autologout_deletes_nothing(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(
        settings=Pop3Settings(timeout=0.3, failure_delay=0), allowplaintext="yes"
    )
    deliver(server, MESSAGES[0])
    client = server.login()
    client.dele(1)
    assert client.file.readline() == b"-ERR Autologout; idle for too long\r\n"
    assert client.file.readline() == b""
    assert len(server.uids()) == 1


def test_shutdown_ends_idle_sessions_and_deletes_nothing(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, MESSAGES[0])
    client = server.login()
    client.dele(1)
    server.loop.call_soon_threadsafe(server.service.drain)  # as master's SIGTERM does
    assert client.file.readline() == b"-ERR [SYS/TEMP] Server shutting down\r\n"
    assert client.file.readline() == b""
    assert len(server.uids()) == 1  # no QUIT, no UPDATE
    wait_until_idle(server)


def test_bad_input_keeps_the_session(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    deliver(server, MESSAGES[0])
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        reader = sock.makefile("rb")
        assert reader.readline().startswith(b"+OK")
        sock.sendall(
            b"X" * 100_000
            + b"\r\nBOGUS\r\nSTAT\r\nUSER alice\r\nPASS "
            + PASSWORD.encode()
            + b"\r\nSTAT\r\nRETR 9\r\nQUIT\r\n"
        )
        replies = [reader.readline() for _ in range(8)]
    assert replies[:4] == [
        b"-ERR Line too long\r\n",
        b"-ERR Unrecognized command\r\n",
        b"-ERR STAT is valid only after login\r\n",
        b"+OK Name accepted, send PASS\r\n",
    ]
    assert replies[5] == b"+OK 1 %d\r\n" % len(MESSAGES[0])
    assert replies[6] == b"-ERR no such message, only 1 message in maildrop\r\n"
    assert replies[7].startswith(b"+OK pop.test.example POP3 server signing off")


def test_popuseimapflags(start) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(
        settings=Pop3Settings(use_imap_flags=True, failure_delay=0), allowplaintext="yes"
    )
    deliver(server, *MESSAGES)
    first, second, third = server.uids()
    server.store.set_flags("user.alice", [first], ["\\Deleted"])
    client = server.login()
    assert client.stat()[0] == 2  # the \Deleted one is hidden
    client.retr(1)
    client.quit()
    flags = {m.uid: m.flags for m in server.store.messages("user.alice")}
    assert "\\Seen" in flags[second] and "\\Seen" not in flags[third]


def test_logs_never_hold_the_password(start, caplog) -> None:  # type: ignore[no-untyped-def]
    server: Server = start(allowplaintext="yes")
    caplog.set_level(logging.DEBUG, logger="sealmail")
    client = server.client()
    client.user("alice")
    with pytest.raises(poplib.error_proto):
        client.pass_("wrong horse")
    client.user("alice")
    client.pass_(PASSWORD)
    client.quit()
    text = caplog.text
    assert "login:" in text and "alice" in text
    assert "wrong horse" not in text and PASSWORD not in text


def test_build_service_arguments(tmp_path: Path, ca: trustme.CA) -> None:
    config = make_config(tmp_path, ca)
    with pytest.raises(ConfigError, match="unknown argument"):
        build_service(config, ["-x"])
    service = build_service(config, ["-s"], service_name="pop3s")
    assert service.settings.implicit_tls and service.daemon_name == "pop3s"
    service.close()
    no_tls = parse_imapd_conf(
        f"configdirectory: {tmp_path}/c2\npartition-default: {tmp_path}/p2\n", "imapd.conf"
    )
    with pytest.raises(ConfigError, match="tls_server_cert"):
        build_service(no_tls, ["-s"])


def test_maildrop_names(tmp_path: Path, ca: trustme.CA) -> None:
    config = make_config(tmp_path, ca)
    assert maildrop_name("alice", config) == "user.alice"
    assert maildrop_name("john.doe", config) == "user.john^doe"
    with pytest.raises(Exception, match="virtdomains"):
        maildrop_name("alice@elsewhere.example", config)
    virtual = make_config(tmp_path, ca, virtdomains="userid")
    assert maildrop_name("alice@example.com", virtual) == "example.com!user.alice"
