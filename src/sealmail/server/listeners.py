"""Listening sockets for the store's daemons, from cyrus.conf-style listen= addresses.

A stale UNIX socket (its server gone) is replaced; a live one is an error, so two daemons never
share a path by accident. UNIX sockets get the mode and group of `unix_socket_mode` and
`unix_socket_group`, so the MTA's user can reach them (the seed's section 2.1 warns about this).

Every accepted TCP connection has Nagle's algorithm off (`no_delay`), however the daemon runs:
`serve_on` for asyncio's servers (standalone daemons, the MTA's smtpd), `serve_unread` and
`accept_tls` for implicit TLS a session watches (smtpd_tls_wrappermode), and
`sealmail.server.session.serve_connection` for the sockets master's workers accept themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import grp
import os
import socket
import ssl
import stat
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, cast

from sealmail.config.cyrus_conf import InetAddress, ListenAddress, UnixAddress
from sealmail.privileges import Account, ensure_directory


class ListenError(Exception):
    """A listener cannot be set up; the message says which and why."""


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


def no_delay(sock: socket.socket | None) -> None:
    """Turn Nagle's algorithm off on a TCP connection (UNIX sockets are left alone).

    A server answers each command with small writes and then waits for the next command. With
    Nagle on, a reply written while an earlier segment is unacknowledged waits for the client's
    ACK, which the client delays (up to 40 ms on Linux) until it has something to send: every
    small FETCH took 44 ms (issue 17). RFC 1122 4.2.3.4 has applications turn it off per
    connection. asyncio does so only for sockets whose protocol number says TCP, so a socket
    made with protocol 0 or inherited from master was served with Nagle on under the stdlib
    loop; uvloop always turns it off. Set here, it no longer depends on the loop.
    """
    if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
        with contextlib.suppress(OSError):  # the client already gone: the session finds out
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


async def serve_on(
    handler: Handler,
    sock: socket.socket,
    tls: ssl.SSLContext | None = None,
    tls_handshake_timeout: float | None = None,
) -> asyncio.Server:
    """An asyncio server on a bound listening socket (UNIX or TCP), each TCP connection with
    `no_delay` before its handler runs."""
    if sock.family == socket.AF_UNIX:
        return await asyncio.start_unix_server(
            handler, sock=sock, ssl=tls, ssl_handshake_timeout=tls_handshake_timeout
        )

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        no_delay(writer.get_extra_info("socket"))
        await handler(reader, writer)

    return await asyncio.start_server(
        handle, sock=sock, ssl=tls, ssl_handshake_timeout=tls_handshake_timeout
    )


UnreadHandler = Callable[[socket.socket], Coroutine[Any, Any, None]]


async def serve_unread(handler: UnreadHandler, sock: socket.socket) -> asyncio.Server:
    """An asyncio server on a bound listening socket whose handler gets each connection as a
    socket nothing has read from yet, for an implicit-TLS session that must see its own
    handshake (`accept_tls`).

    A listener's own TLS (ssl=) handshakes before any handler runs, and both asyncio and uvloop
    then log a failed handshake only in debug mode; a handshake started later on the session's
    stream misses the ClientHello the stream already read (uvloop reads at once). So the
    transport the loop made is aborted in connection_made, which both loops honour before
    their first read, and the handler keeps a duplicate of its descriptor.
    """
    loop = asyncio.get_running_loop()
    tasks: set[asyncio.Task[None]] = set()

    class Handoff(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass of it
            raw = transport.get_extra_info("socket")
            try:
                connection = socket.socket(fileno=os.dup(raw.fileno()))
            except OSError:  # out of descriptors: the client is refused, the server goes on
                transport.abort()
                return
            transport.abort()
            task = loop.create_task(handler(connection))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    return await loop.create_server(Handoff, sock=sock)


async def accept_tls(
    connection: socket.socket, context: ssl.SSLContext, timeout: float
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The server side of an implicit-TLS handshake on an unread accepted connection, within
    `timeout` seconds, then streams over it as asyncio.start_server makes them. A failure
    raises (ssl.SSLError, OSError; ConnectionAbortedError when the time is up) and the
    connection is closed by its transport."""
    no_delay(connection)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    protocol = asyncio.StreamReaderProtocol(reader)
    transport, _ = await loop.connect_accepted_socket(
        lambda: protocol, connection, ssl=context, ssl_handshake_timeout=timeout
    )
    return reader, asyncio.StreamWriter(transport, protocol, reader, loop)


def bind_unix(
    path: Path, mode: int = 0o660, group: str | None = None, owner: Account | None = None
) -> socket.socket:
    """A listening UNIX socket at `path`, replacing a stale one.

    Bound by root, the socket (and a directory made for it) belongs to `owner`, the account the
    services run as, which must be able to serve it and remove it; its group stays the one asked.
    """
    ensure_directory(path.parent, owner, 0o755, check_owner=False)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ListenError(f"{path}: exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody answers
        else:
            raise ListenError(f"{path}: another server is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        gid = -1 if owner is None or os.geteuid() != 0 else owner.gid
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ListenError(f"{path}: unknown group {group!r}") from None
        uid = -1 if owner is None or os.geteuid() != 0 else owner.uid
        if uid >= 0 or gid >= 0:
            os.chown(path, uid, gid)
        os.chmod(path, mode)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_inet(address: InetAddress) -> list[socket.socket]:
    """Listening TCP sockets for every (family, address) the listen= value resolves to."""
    where = f"{address.host or '*'}:{address.port}"
    try:
        pairs = address.sockaddrs()
    except OSError as exc:
        raise ListenError(f"{where}: {exc.strerror or exc}") from None
    sockets: list[socket.socket] = []
    try:
        for family, sockaddr in pairs:
            # IPPROTO_TCP, as getaddrinfo gives it: what asyncio checks before it turns Nagle off.
            sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(sockaddr)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and len(pairs) > 1:
                    sockets.pop().close()  # e.g. no IPv6 on this host: the other family serves
                    continue
                raise ListenError(f"{where}: {exc.strerror}") from None
            sock.listen(1024)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise ListenError(f"{where}: no address to listen on")
    return sockets


def bind(address: ListenAddress, owner: Account | None = None) -> list[socket.socket]:
    if isinstance(address, UnixAddress):
        return [bind_unix(address.path, address.mode, address.group, owner)]
    return bind_inet(address)


def describe(address: ListenAddress) -> str:
    if isinstance(address, UnixAddress):
        return str(address.path)
    host = address.host or "*"
    return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
