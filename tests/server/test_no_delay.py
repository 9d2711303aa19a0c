"""Nagle's algorithm off on every accepted TCP connection, however a daemon is started (issue 17).

With it on, each small reply waited for the client's delayed ACK: a FETCH of one flag took 44 ms
from `sealmail imapd --listen` under the stdlib loop. Tests never time anything, so each test
looks at the server's end of a real connection, from inside its handler, while a real client
(imaplib, smtplib) holds a session on it, once per event loop. The listeners are made with
protocol number 0, as asyncio alone would serve them with Nagle on: the daemon's code turns it off.
"""

from __future__ import annotations

import asyncio
import imaplib
import os
import signal
import smtplib
import socket
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.loops import LOOPS, runner

from sealmail.auth.authenticator import Authenticator
from sealmail.auth.sasldb import SaslDB
from sealmail.config.cyrus_conf import InetAddress
from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.queue import Queue
from sealmail.mta.smtpd import SmtpdService, serve_sockets
from sealmail.proto.sasl import split_identity
from sealmail.server import standalone, worker
from sealmail.server.imapd import ImapService
from sealmail.server.listeners import bind_inet
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

PASSWORD = "s3cret pw"


def nodelay(sock: Any) -> int:
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


def listener() -> socket.socket:
    """A listening socket with protocol number 0 (not IPPROTO_TCP), the case asyncio skips."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    sock.setblocking(False)
    assert sock.proto == 0 and nodelay(sock) == 0
    return sock


class Observed:
    """A daemon's service that notes, as each connection's handler starts, whether its socket
    has TCP_NODELAY; everything else is the service's own."""

    def __init__(self, service: Any) -> None:
        self.service = service
        self.seen: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.service, name)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen.append(nodelay(writer.get_extra_info("socket")))
        await self.service.handle(reader, writer)


@pytest.fixture
def imap_service(tmp_path: Path) -> Iterator[Callable[[], ImapService]]:
    """A real ImapService on a DiskStore with alice (one message in her INBOX)."""
    stores: list[DiskStore] = []

    def make() -> ImapService:
        (tmp_path / "config").mkdir(exist_ok=True)
        (tmp_path / "partition").mkdir(exist_ok=True)
        config = parse_imapd_conf(
            f"configdirectory: {tmp_path / 'config'}\n"
            f"partition-default: {tmp_path / 'partition'}\n"
            "servername: imap.test.example\nallowplaintext: yes\nauth_failure_delay: 0\n",
            "imapd.conf",
        )
        store = DiskStore.from_config(config)
        stores.append(store)
        if store.mailbox("user.alice") is None:
            store.create_mailbox("user.alice")
            store.deliver(b"Subject: one\r\n\r\nhello\r\n", [DeliveryTarget("user.alice")])
        sasldb = SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10)
        sasldb.set_password(split_identity("alice", config.servername), PASSWORD)
        return ImapService(config, store, authenticator=Authenticator(config, sasldb=sasldb))

    yield make
    for store in stores:
        store.close()


def fetch_one_flag(port: int) -> None:
    """An idle connection's small FETCH, as the issue measured it."""
    with imaplib.IMAP4("127.0.0.1", port, timeout=10) as client:
        client.login("alice", PASSWORD)
        client.select("INBOX")
        status, data = client.fetch("1", "(FLAGS)")
        assert status == "OK" and data == [b"1 (FLAGS (\\Recent))"]
        client.logout()


def run_until_sigterm(loop_name: str, serve: Coroutine[Any, Any, None], client: Callable[[], None]
                      ) -> None:
    """Run a daemon's serve() (which stops on SIGTERM) on this thread, `client` on another; once
    the client is done (or failed), SIGTERM ends serve(). The client's failure is raised here."""
    failures: list[BaseException] = []

    def drive() -> None:
        try:
            client()
        except BaseException as exc:
            failures.append(exc)
        finally:
            deadline = time.monotonic() + 30
            # Only once serve() handles SIGTERM: the default action would end the test run.
            while signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=drive, daemon=True)
    previous = signal.getsignal(signal.SIGTERM)
    thread.start()
    try:
        runner(loop_name)(serve)
    finally:
        thread.join(30)
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if failures:
        raise failures[0]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_standalone_imapd_accepts_with_nodelay(
    loop_name: str, imap_service: Callable[[], ImapService]
) -> None:
    """`sealmail imapd --listen`: standalone.serve on the listener."""
    service = Observed(imap_service())
    sock = listener()
    port = sock.getsockname()[1]
    run_until_sigterm(
        loop_name, standalone.serve([(service, [sock])], "imapd", 5.0),
        lambda: fetch_one_flag(port),
    )
    assert service.seen == [1]


@pytest.mark.parametrize("loop_name", LOOPS)
def test_master_worker_imapd_accepts_with_nodelay(
    loop_name: str, imap_service: Callable[[], ImapService]
) -> None:
    """Under `sealmail master`: a worker accepts on the socket master handed it (a descriptor
    it inherited, read back with socket.socket(fileno=...))."""
    service = Observed(imap_service())
    bound = listener()
    inherited = socket.socket(fileno=os.dup(bound.fileno()))
    bound.close()
    inherited.setblocking(False)
    port = inherited.getsockname()[1]
    run_until_sigterm(
        loop_name, worker.serve(service, [inherited], None, "imap"),
        lambda: fetch_one_flag(port),
    )
    assert service.seen == [1]


class ObservedSmtpd(SmtpdService):
    seen: list[int]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.seen.append(nodelay(writer.get_extra_info("socket")))
        await super().handle(reader, writer)


@pytest.mark.parametrize("loop_name", LOOPS)
def test_smtpd_accepts_with_nodelay(loop_name: str, tmp_path: Path) -> None:
    """The MTA's smtpd (its master's servers and its worker processes both use serve_on)."""
    config = MainConfig.from_document(
        parse_main_cf("myhostname = mx.example.com\nmydestination = example.com\n"),
        hostname="mx.example.com",
    )
    queue = Queue(tmp_path / "queue")
    queue.create_directories()
    sock = listener()
    port = sock.getsockname()[1]

    async def main() -> None:
        service = ObservedSmtpd(config, queue, cleanup_from_config(config))
        service.seen = []
        servers = await serve_sockets(service, [sock])
        try:
            await asyncio.to_thread(ehlo_noop, port)
        finally:
            for server in servers:
                server.close()
            service.drain()
            if service.sessions:
                await asyncio.wait(set(service.sessions), timeout=10)
        assert service.seen == [1]

    runner(loop_name)(main())


def ehlo_noop(port: int) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.ehlo("client.test")[0] == 250
        assert client.noop()[0] == 250


def test_store_listeners_are_tcp_sockets_with_protocol_number() -> None:
    """bind_inet makes its sockets as getaddrinfo describes them (IPPROTO_TCP), so asyncio's own
    check agrees too."""
    [sock] = bind_inet(InetAddress("127.0.0.1", 0, socket.AF_INET))
    try:
        assert sock.proto == socket.IPPROTO_TCP
    finally:
        sock.close()
