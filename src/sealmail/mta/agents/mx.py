"""Where an SMTP delivery goes: a next hop becomes the servers to try, in order.

Postfix's smtp_addr.c and smtp_connect.c, which this follows:

- `[host]:port`, or an address: that host's addresses, no MX lookup (RFC 5321 5.1).
- `domain[:port]`: its MX hosts by preference, each host's addresses in turn; with no MX record
  the domain's own addresses, as if it were its only MX (RFC 5321 5.1, the "implicit MX");
  RFC 7505's null MX (`MX 0 .`) bounces at once.
- Addresses come from DNS (A and AAAA), from the system's resolver (getaddrinfo: /etc/hosts,
  nsswitch), or from DNS and then the system's when DNS finds nothing: `smtp_host_lookup =
  dns`, `native`, `dns, native`. With `native` alone there are no MX lookups (Postfix turns DNS
  off).
- Servers of one preference are shuffled (`smtp_randomize_addresses`, RFC 5321 5.1), then IPv4
  or IPv6 go first within it (`smtp_address_preference`); at most `smtp_mx_address_limit`
  addresses are kept.
- Mail must not loop (port 25 only, as Postfix): when an address of the list is one of ours (the
  `inet_interfaces` addresses; every interface's for `all`), the list is cut before our own
  preference. Nothing left: "mail for D loops back to myself" (5.4.6) when we are the best MX,
  "unable to find primary relay for D" (4.4.4) when a better MX had no address.

A lookup that gives no server raises `LookupFailure(dsn, text)`, whose DSN is decided here once:

    temporary DNS failure (SERVFAIL, timeout)            4.4.3  deferred
    null MX                                              5.1.10 bounced (RFC 7505 4.2's code;
                                                                Postfix 3.7 says 5.1.0)
    the recipient domain does not exist (NXDOMAIN)       5.1.2  bounced
    a host without addresses, MX hosts none of which has any
                                                         5.4.4  bounced (4.4.4 if any lookup
                                                                failed only for now)
    native lookups: Postfix's dsn for getaddrinfo's error (EAI_AGAIN 4.4.4, EAI_NONAME 5.4.4)
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealmail.mta.dns import (
    Address,
    DnsError,
    NoSuchDomain,
    NullMx,
    Resolver,
    TemporaryDnsError,
)

__all__ = ["LookupFailure", "Server", "ServerPolicy", "local_addresses", "order", "servers"]

SMTP_PORT = 25
_NO_MX_PREFERENCE = 0  # the implicit MX


@dataclass(frozen=True, slots=True)
class Server:
    """One address to try. `host` is the name the log and the TLS checks use."""

    host: str
    address: str
    port: int
    preference: int = 0

    @property
    def namaddr(self) -> str:
        """Postfix's `host[address]:port`."""
        return f"{self.host}[{self.address}]:{self.port}"


class LookupFailure(Exception):
    """No server to try; `dsn` (4.x.x deferred, 5.x.x bounced) and `text` as Postfix logs."""

    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text

    @property
    def temporary(self) -> bool:
        return self.dsn.startswith("4")


@dataclass(frozen=True)
class ServerPolicy:
    """The parameters that turn a next hop into servers (read once per configuration)."""

    dns: bool = True  # smtp_host_lookup has dns
    native: bool = False  # smtp_host_lookup has native
    preference: str = "any"  # smtp_address_preference: ipv4, ipv6 or any
    randomize: bool = True
    address_limit: int = 5  # 0: no limit
    own_addresses: frozenset[str] = frozenset()
    families: tuple[int, ...] = (4, 6)
    rng: random.Random = field(default_factory=random.Random, compare=False)


def local_addresses(inet_interfaces: Sequence[str], proc: Path = Path("/proc/net")
                    ) -> frozenset[str]:
    """The addresses this MTA receives mail on (Postfix's own_inet_addr_list): the listed
    ones, loopback's for `loopback-only`, every interface's for `all` (read from Linux's
    /proc/net; 127.0.0.1 and ::1 when it cannot be read)."""
    found: set[str] = set()
    for word in (w.lower() for w in inet_interfaces):
        if word == "loopback-only":
            found |= {"127.0.0.1", "::1"}
        elif word == "all":
            found |= _interface_addresses(proc) or {"127.0.0.1", "::1"}
        else:
            try:
                found.add(str(ipaddress.ip_address(word.strip("[]"))))
            except ValueError:
                continue  # a host name: Postfix would resolve it; we do not guess
    return frozenset(found)


def _interface_addresses(proc: Path) -> set[str]:
    found: set[str] = set()
    try:
        last = ""
        for line in (proc / "fib_trie").read_text().splitlines():
            text = line.strip()
            if text.startswith("|-- "):
                last = text[4:]
            elif text.startswith("/32 host LOCAL") and last:
                found.add(last)
    except OSError:
        pass
    try:
        for line in (proc / "if_inet6").read_text().splitlines():
            digits = line.split()[0] if line.split() else ""
            if len(digits) == 32:
                found.add(str(ipaddress.IPv6Address(int(digits, 16))))
    except (OSError, ValueError):
        pass
    return found


# -- ordering (pure) ----------------------------------------------------------------------------


def order(found: Sequence[Server], policy: ServerPolicy) -> list[Server]:
    """Shuffle within a preference (when asked), then by preference and address family."""
    shuffled = list(found)
    if policy.randomize and len(shuffled) > 1:
        policy.rng.shuffle(shuffled)

    def family_rank(server: Server) -> int:
        version = ipaddress.ip_address(server.address).version
        if policy.preference == "ipv4":
            return 0 if version == 4 else 1
        if policy.preference == "ipv6":
            return 0 if version == 6 else 1
        return 0

    ranked = sorted(shuffled, key=lambda s: (s.preference, family_rank(s)))
    return ranked[: policy.address_limit] if policy.address_limit > 0 else ranked


def _cut_at_self(found: list[Server], policy: ServerPolicy, domain: str,
                 best_preference: int) -> list[Server]:
    """RFC 5321 5.1: a server must not deliver to itself or to MXs it is better than."""
    mine = [s for s in found if s.address in policy.own_addresses]
    if not mine:
        return found
    cut = min(s.preference for s in mine)
    kept = [s for s in found if s.preference < cut]
    if not kept:
        best_found = min(s.preference for s in found)
        if best_found != best_preference:
            raise LookupFailure("4.4.4", f"unable to find primary relay for {domain}")
        raise LookupFailure("5.4.6", f"mail for {domain} loops back to myself")
    return kept


# -- lookups --------------------------------------------------------------------------------------


async def servers(host: str, port: int, *, explicit: bool, policy: ServerPolicy,
                  resolver: Resolver | None) -> list[Server]:
    """The servers for a next hop: `explicit` for `[host]` or an address (no MX lookup)."""
    loop_check = port == SMTP_PORT and bool(policy.own_addresses)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        found = [Server(host, str(literal), port)]
    elif explicit or not policy.dns:
        found = await _host_servers(host, port, 0, policy, resolver, "5.4.4")
    else:
        assert resolver is not None
        found, best = await _mx_servers(host, port, policy, resolver)
        if loop_check:
            found = _cut_at_self(found, policy, host, best)
        return order(found, policy)
    if loop_check and any(s.address in policy.own_addresses for s in found):
        shown = f"[{host}]" if explicit else host
        raise LookupFailure("5.4.6", f"mail for {shown} loops back to myself")
    return order(found, policy)


async def _mx_servers(domain: str, port: int, policy: ServerPolicy,
                      resolver: Resolver) -> tuple[list[Server], int]:
    """The MX hosts' servers sorted by preference, and the best preference DNS named."""
    try:
        records = await resolver.mx(domain)
    except NullMx as exc:
        raise LookupFailure("5.1.10", str(exc)) from None
    except TemporaryDnsError as exc:
        raise LookupFailure("4.4.3", exc.text) from None
    except DnsError:
        # No MX (no such record, or no such domain): the domain is its own MX, preference 0.
        implicit = await _host_servers(domain, port, _NO_MX_PREFERENCE, policy, resolver,
                                       "5.1.2")
        return implicit, _NO_MX_PREFERENCE
    found: list[Server] = []
    failure: LookupFailure | None = None
    for record in records:
        try:
            found += await _host_servers(record.host, port, record.preference, policy, resolver,
                                         "5.4.4")
        except LookupFailure as exc:
            # A temporary failure outweighs permanent ones, before and after (Postfix).
            if failure is None or not failure.temporary or exc.temporary:
                failure = exc
    if not found:
        assert failure is not None
        raise failure
    return sorted(found, key=lambda s: s.preference), records[0].preference


async def _host_servers(host: str, port: int, preference: int, policy: ServerPolicy,
                        resolver: Resolver | None, nxdomain_dsn: str) -> list[Server]:
    """A host's addresses: DNS, then the system's resolver when DNS found none and both are
    configured (Postfix's smtp_addr_one)."""
    try:  # an MX record naming an address (against RFC 5321 5.1): used as is, as Postfix does
        return [Server(host, str(ipaddress.ip_address(host)), port, preference)]
    except ValueError:
        pass
    failure: LookupFailure | None = None
    if policy.dns and resolver is not None:
        try:
            addresses = await resolver.addresses(host, policy.families)
            return [Server(host, str(a), port, preference) for a in addresses]
        except TemporaryDnsError as exc:
            raise LookupFailure("4.4.3", exc.text) from None
        except DnsError as exc:
            failure = LookupFailure(nxdomain_dsn if isinstance(exc, NoSuchDomain) else "5.4.4",
                                    exc.text)
    if policy.native:
        try:
            addresses = await _native_addresses(host, policy.families)
        except socket.gaierror as exc:
            retry = exc.errno in (socket.EAI_AGAIN, socket.EAI_MEMORY, socket.EAI_SYSTEM)
            nohost = exc.errno in (socket.EAI_AGAIN, socket.EAI_NONAME,
                                   getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
            soft = retry or (failure is not None and failure.temporary)
            dsn = ("4.4.4" if nohost else "4.3.0") if soft else ("5.4.4" if nohost else "5.3.0")
            raise LookupFailure(dsn, f"unable to look up host {host}: {exc.strerror}") from None
        if addresses:
            return [Server(host, str(a), port, preference) for a in addresses]
        failure = LookupFailure("5.4.4", f"{host}: host not found")
    assert failure is not None
    raise failure


async def _native_addresses(host: str, families: Sequence[int]) -> list[Address]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    found: list[Address] = []
    for family, _type, _proto, _name, sockaddr in infos:
        address = ipaddress.ip_address(sockaddr[0])
        wanted = (family == socket.AF_INET and 4 in families) or (
            family == socket.AF_INET6 and 6 in families)
        if wanted and address not in found:
            found.append(address)
    return found
