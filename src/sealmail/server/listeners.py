"""Listening sockets for the store's daemons: UNIX sockets and TCP on explicit addresses.

A stale UNIX socket (its server gone) is replaced; a live one is an error, so two daemons never
share a path by accident. UNIX sockets get the mode and group of `unix_socket_mode` and
`unix_socket_group`, so the MTA's user can reach them (the seed's section 2.1 warns about this).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path


class ListenError(Exception):
    """A listener cannot be set up; the message says which and why."""


@dataclass(frozen=True, slots=True)
class ListenSpec:
    """Where to listen: a UNIX socket path, or a host and port."""

    path: Path | None = None
    host: str | None = None
    port: int = 0

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        host = self.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


def parse_listen(text: str) -> ListenSpec:
    """`/path/sock`, `host:port`, `[::1]:port` or a bare port (all addresses)."""
    if "/" in text:
        return ListenSpec(path=Path(text))
    host: str | None
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep:
            raise ListenError(f"{text!r}: expected [address]:port")
    elif ":" in text:
        host, _, port = text.rpartition(":")
    else:
        host, port = None, text
    if host in ("", "*"):
        host = None
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ListenError(f"{text!r}: {port!r} is not a port number")
    return ListenSpec(host=host, port=int(port))


def bind_unix(path: Path, mode: int = 0o660, group: str | None = None) -> socket.socket:
    """A listening UNIX socket at `path`, replacing a stale one."""
    path.parent.mkdir(parents=True, exist_ok=True)
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
        gid = -1
        if group:
            try:
                gid = grp.getgrnam(group).gr_gid
            except KeyError:
                raise ListenError(f"{path}: unknown group {group!r}") from None
        if gid >= 0:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_tcp(host: str | None, port: int) -> list[socket.socket]:
    """Listening TCP sockets for host:port (every address family the host resolves to)."""
    try:
        infos = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE | socket.AI_NUMERICSERV
        )
    except socket.gaierror as exc:
        raise ListenError(f"{host}:{port}: {exc.strerror}") from None
    sockets: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address[0]) in seen:
                continue
            seen.add((family, address[0]))
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL and len(infos) > 1:
                    sockets.pop().close()
                    continue
                raise ListenError(f"{host or '*'}:{port}: {exc.strerror}") from None
            sock.listen(1024)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    if not sockets:
        raise ListenError(f"{host or '*'}:{port}: no address to listen on")
    return sockets


def bind(spec: ListenSpec, mode: int = 0o660, group: str | None = None) -> list[socket.socket]:
    if spec.path is not None:
        return [bind_unix(spec.path, mode, group)]
    return bind_tcp(spec.host, spec.port)
