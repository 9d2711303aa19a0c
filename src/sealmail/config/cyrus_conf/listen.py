"""listen=: the sockets a service's listen= value names, UNIX paths and TCP addresses."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealmail.config.cyrus_conf.syntax import _Where
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port

if TYPE_CHECKING:
    from sealmail.config.cyrus_conf.entries import Service

# Owner and group may connect; the group is the one the MTA runs in (see resolve_listen).
DEFAULT_UNIX_SOCKET_MODE = 0o660

# Linux's sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107

_PROTOS = ("tcp", "tcp4", "tcp6")


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A UNIX-domain socket; master creates it with `mode` and, if set, `group`.

    The group is how the MTA's user reaches lmtpd (CYRUS_README: "make sure that both the user id
    that Cyrus runs under and the Postfix user id can access the socket").
    """

    path: Path
    mode: int = DEFAULT_UNIX_SOCKET_MODE
    group: str | None = None


@dataclass(frozen=True, slots=True)
class InetAddress:
    """A TCP address to listen on.

    `host` is None for every interface. A host *name* is kept as written (not resolved here) and
    `family` is then AF_UNSPEC under proto=tcp: master resolves it when it binds, so a name that
    does not resolve fails at start-up with the resolver's error, not while reading the file.
    """

    host: str | None
    port: int
    family: socket.AddressFamily

    def sockaddrs(self) -> list[tuple[socket.AddressFamily, tuple[object, ...]]]:
        """(family, sockaddr) pairs to bind, resolving a host name now (may raise OSError)."""
        infos = socket.getaddrinfo(
            self.host, self.port, self.family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        seen: list[tuple[socket.AddressFamily, tuple[object, ...]]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            pair = (family, tuple(sockaddr))
            if pair not in seen:
                seen.append(pair)
        return seen


ListenAddress = UnixAddress | InetAddress

_FAMILIES: Mapping[str, tuple[socket.AddressFamily, ...]] = {
    "tcp": (socket.AF_INET, socket.AF_INET6),
    "tcp4": (socket.AF_INET,),
    "tcp6": (socket.AF_INET6,),
}


def _port(text: str, services_file: str | os.PathLike[str], where: _Where) -> int:
    if not text:
        raise where.error("listen", "no port or service name")
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise where.error("listen", f"port {port} is out of range (0-65535)")
        return port
    if not (text.isascii() and text[0].isalpha() and all(c.isalnum() or c in "-_.+" for c in text)):
        raise where.error("listen", f"{text!r} is neither a port number nor a service name")
    try:
        return service_port(text, services_file)
    except UnknownService as exc:
        raise where.error("listen", str(exc)) from None


def _host_name_ok(host: str) -> bool:
    if not host.isascii() or len(host) > 253:
        return False
    labels = host.removesuffix(".").split(".")
    return all(
        0 < len(label) <= 63
        and all(c.isalnum() or c in "-_" for c in label)
        and not label.startswith("-")
        for label in labels
    )


def _split_host(listen: str, where: _Where) -> tuple[str | None, str]:
    """`[addr]:port`, `host:port`, `*:port` or a bare port/service -> (host or None, port)."""
    if listen.startswith("["):
        close = listen.find("]")
        if close < 0:
            raise where.error("listen", f"{listen!r}: missing ']' after the address")
        host, rest = listen[1:close], listen[close + 1 :]
        if not rest.startswith(":"):
            raise where.error("listen", f"{listen!r}: expected [address]:port")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise where.error("listen", f"{host!r} in brackets is not an IP address") from None
        return host, rest[1:]
    colons = listen.count(":")
    if colons == 0:
        return None, listen
    if colons > 1:
        raise where.error("listen", f"{listen!r}: write an IPv6 address in brackets, as [::1]:port")
    host, _colon, port = listen.partition(":")
    if not host:
        raise where.error("listen", f"{listen!r}: no host before ':'")
    return (None if host == "*" else host), port


def resolve_listen(
    listen: str,
    proto: str,
    configdirectory: Path,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
    *,
    unix_mode: int = DEFAULT_UNIX_SOCKET_MODE,
    unix_group: str | None = None,
    path: str = "<listen>",
    line: int = 0,
) -> list[ListenAddress]:
    """The sockets a listen= value names, in the forms cyrus.conf(5) and CYRUS_README use.

    - a value with '/' is a UNIX socket; a relative one lies under `configdirectory`;
    - `port`, `service`, `*:port`: every interface, both families unless proto narrows them;
    - `host:port`, `host:service`, `[addr]:port`: one interface.

    A service name is looked up in `services_file` for tcp, so `lmtp` is whatever that file says
    (2003 in the one CYRUS_README shows); a mail service name the file lacks (Debian's has no
    `lmtp`) gets IANA's port (sealmail.config.services). Port 0 asks the kernel for a free port.
    Errors are ConfigError at `path`:`line`, key `listen` (or `proto`).
    """
    where = _Where(path, line)
    families = _FAMILIES.get(proto)
    if families is None:
        raise where.error("proto", f"{proto!r} is not one of {', '.join(_PROTOS)}")
    if not listen:
        raise where.error("listen", "listen= is empty")
    if "\0" in listen:
        raise where.error("listen", "a NUL byte in listen=")
    if "/" in listen:
        # proto does not apply to UNIX sockets; Cyrus ignores it there, and so do we.
        socket_path = Path(listen)
        if not socket_path.is_absolute():
            socket_path = configdirectory / socket_path
        if len(os.fsencode(socket_path)) > _UNIX_PATH_MAX:
            raise where.error(
                "listen",
                f"UNIX socket path {str(socket_path)!r} is longer than {_UNIX_PATH_MAX} bytes",
            )
        return [UnixAddress(socket_path, unix_mode, unix_group)]
    host, port_text = _split_host(listen, where)
    port = _port(port_text, services_file, where)
    if host is None:
        return [InetAddress(None, port, family) for family in families]
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if not _host_name_ok(host):
            raise where.error("listen", f"{host!r} is not a host name") from None
        family = families[0] if len(families) == 1 else socket.AF_UNSPEC
        return [InetAddress(host, port, family)]
    family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
    if family not in families:
        raise where.error(
            "proto", f"proto={proto} excludes {host}, an IPv{literal.version} address"
        )
    return [InetAddress(host, port, family)]


def service_addresses(
    service: Service,
    config: ImapdConfig,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
) -> list[ListenAddress]:
    """A service's sockets as imapd.conf places them: relative paths under configdirectory,
    UNIX sockets with unix_socket_mode and unix_socket_group."""
    return service.addresses(
        config.configdirectory,
        services_file,
        unix_mode=config.get(IMAPD.unix_socket_mode),
        unix_group=config.get(IMAPD.unix_socket_group),
    )
