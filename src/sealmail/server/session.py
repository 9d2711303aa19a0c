"""What every daemon session shares: who the client is, tcp_wrappers, TLS, ids, closing.

lmtpd, pop3d and imapd differ in their protocol cores; the way they learn the peer, refuse it by
hosts.allow (before any greeting, as tcpd), turn on TLS and log it is one piece of code here.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.server.tls import cipher_bits, peer_identity
from sealmail.store.errors import MailboxNotFound, StoreError
from sealmail.store.names import user_inbox, validate_internal

log = logging.getLogger("sealmail.session")

TLS_HANDSHAKE_TIMEOUT = 180.0  # seconds, as Cyrus gives a handshake
_counter = itertools.count(1)


def new_session_id() -> str:
    """Short, unique across processes and restarts, easy to grep."""
    return f"{os.getpid():x}{next(_counter):x}{secrets.token_hex(3)}".upper()


@dataclass(frozen=True, slots=True)
class ClientEndpoint:
    """The two ends of a connection; UNIX-socket clients have no addresses."""

    is_unix: bool
    client_ip: str | None
    server_ip: str | None

    @classmethod
    def of(cls, writer: asyncio.StreamWriter) -> ClientEndpoint:
        sock = writer.get_extra_info("socket")
        if sock is None or sock.family == socket.AF_UNIX:
            return cls(True, None, None)
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        return cls(False, str(peer[0]), str(local[0]))

    @property
    def label(self) -> str:
        """How logs and Received: name the client."""
        return "unix socket" if self.is_unix else f"[{self.client_ip}]"

    def admitted(self, hosts: HostsAccess, daemon: str, session_id: str) -> bool:
        """hosts.allow / hosts.deny for a TCP client (UNIX sockets are not wrapped)."""
        if self.client_ip is None:
            return True
        verdict = hosts.check(daemon, self.client_ip, self.server_ip)
        if not verdict.allowed:
            log.warning(
                "%s: refused connect from %s (%s: %s)",
                session_id,
                self.label,
                daemon,
                verdict.rule or "no rule",
            )
        return verdict.allowed


@dataclass(frozen=True, slots=True)
class TlsInfo:
    bits: int  # the cipher's secret bits, what sasl_minimum_layer counts
    peer: str | None  # identity of a verified client certificate (EXTERNAL)


async def start_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, session_id: str, client: str
) -> TlsInfo | None:
    """TLS on this connection (unless the listener did it at accept); None if it failed."""
    if writer.get_extra_info("ssl_object") is None:
        try:
            await writer.start_tls(context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("%s: TLS handshake with %s failed: %s", session_id, client, exc)
            return None
    ssl_object = writer.get_extra_info("ssl_object")
    info = TlsInfo(cipher_bits(ssl_object), peer_identity(ssl_object))
    log.info(
        "%s: TLS %s %s (%d bits)%s",
        session_id,
        ssl_object.version(),
        ssl_object.cipher()[0],
        info.bits,
        f" client certificate {info.peer}" if info.peer else "",
    )
    return info


class Handler(Protocol):
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...


async def serve_connection(
    service: Handler, connection: socket.socket, implicit_tls: ssl.SSLContext | None = None
) -> None:
    """Serve one accepted connection to its end with server-side streams (as
    asyncio.start_server makes them, so a later STARTTLS handshakes as the server)."""
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await service.handle(reader, writer)
        finally:
            if not finished.done():
                finished.set_result(None)

    protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), session)
    await loop.connect_accepted_socket(lambda: protocol, connection, ssl=implicit_tls)
    await finished


def maildrop_name(identity: str, config: ImapdConfig) -> str:
    """The INBOX of a canonical SASL identity (`alice`, or `alice@realm` outside servername).

    A realm other than the server's is a mail domain only under virtdomains; otherwise such a
    user has no maildrop here (never someone else's: `alice@other` is not `alice`).
    """
    user, at, realm = identity.partition("@")
    domain: str | None = None
    if at:
        default_domain = (config.string("defaultdomain") or "").lower()
        if config.enum("virtdomains") == "off" and realm.lower() != default_domain:
            raise MailboxNotFound(f"no maildrop for {identity!r}: virtdomains is off")
        domain = None if realm.lower() == default_domain else realm.lower()
    name = user_inbox(user, domain)
    try:
        validate_internal(name)
    except StoreError:
        raise MailboxNotFound(f"no maildrop for {identity!r}") from None
    return name


class Core(Protocol):
    """What every sans-I/O server core offers its driver."""

    @property
    def closed(self) -> bool: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> object: ...

    def data_to_send(self) -> bytes: ...


async def drive(
    core: Core,
    writer: asyncio.StreamWriter,
    read: Callable[[], Awaitable[bytes | None]],
    on_event: Callable[[Any], Awaitable[bool]],
    need_data: object,
    closed: type,
) -> None:
    """The one read -> feed -> events -> write loop of every daemon.

    `read` gives the client's next bytes, or None when the session must end (it has written its
    own goodbye: timeout, shutdown); `on_event` acts on one event and returns False to end the
    session. Replies a batch of pipelined commands produced go out in one write.
    """
    writer.write(core.data_to_send())
    going_on = True
    while going_on and not core.closed:
        data = await read()
        if data is None:
            break
        core.receive_data(data)
        while not core.closed:
            event = core.next_event()
            if event is need_data or isinstance(event, closed):
                break
            if not await on_event(event):
                going_on = False
                break
        out = core.data_to_send()
        if out:
            writer.write(out)
            await writer.drain()
        if not data:
            break
    out = core.data_to_send()
    if out:
        writer.write(out)


async def close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
