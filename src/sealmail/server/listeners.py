"""Listening sockets for the store's daemons, from cyrus.conf-style listen= addresses.

A stale UNIX socket (its server gone) is replaced; a live one is an error, so two daemons never
share a path by accident. UNIX sockets get the mode and group of `unix_socket_mode` and
`unix_socket_group`, so the MTA's user can reach them (the seed's section 2.1 warns about this).

Every accepted TCP connection has Nagle's algorithm off (`no_delay`), however the daemon runs:
`serve_on` for asyncio's servers (standalone daemons, the MTA's smtpd), and
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
from collections.abc import Awaitable, Callable
from pathlib import Path

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
