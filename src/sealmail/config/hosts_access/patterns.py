"""What a rule matches: the connection's endpoints, host patterns, list elements, rules.

Everything here is already parsed (by pattern_syntax and rules); matching is a walk with no I/O.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from dataclasses import dataclass
from typing import Protocol

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The name a loopback client gets without DNS; see the package docstring.
LOOPBACK_NAME = "localhost"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a connection as patterns see it (no DNS: see the package docstring)."""

    address: IPAddress | None
    text: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Connection:
    """What the rules are matched against."""

    daemon: str
    client: Endpoint
    server: Endpoint


_UNKNOWN_ENDPOINT = Endpoint(None, "unknown", None)


@functools.lru_cache(maxsize=4096)
def endpoint(text: str | None) -> Endpoint:
    """The endpoint for an address text; anything that is not an IP address is an unknown host.

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, what a dual-stack socket reports) are seen as
    the IPv4 address, so ``192.0.2.`` patterns keep working on ``::`` listeners.
    """
    if not text:
        return _UNKNOWN_ENDPOINT
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return _UNKNOWN_ENDPOINT
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return Endpoint(address, str(address), LOOPBACK_NAME if address.is_loopback else None)


class Pattern(Protocol):
    """One list element; it looks at whichever side of the connection it is about."""

    def matches(self, connection: Connection) -> bool: ...


class HostPattern(Protocol):
    def matches_host(self, host: Endpoint) -> bool: ...


# -- host patterns (client list, and the host part of daemon@host) ----------------------------


@dataclass(frozen=True, slots=True)
class _AnyHost:
    def matches_host(self, host: Endpoint) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class _LocalHost:
    """LOCAL: a host whose name has no dot; without DNS only loopback has a name."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.name is not None and "." not in host.name


@dataclass(frozen=True, slots=True)
class _KnownHost:
    """KNOWN: both name and address known; without DNS, loopback clients only."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is not None and host.name is not None


@dataclass(frozen=True, slots=True)
class _UnknownHost:
    """UNKNOWN: name or address unknown; without DNS, every client but loopback."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is None or host.name is None


@dataclass(frozen=True, slots=True)
class _ParanoidHost:
    """PARANOID: name and address disagree; it takes a DNS lookup to tell, and we make none."""

    def matches_host(self, host: Endpoint) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _Network:
    """An address, ``net/mask``, ``net/prefixlen``, ``[v6]`` or ``[v6net]/prefixlen``."""

    network: IPNetwork

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is not None and host.address in self.network


@dataclass(frozen=True, slots=True)
class _AddressPrefix:
    """``192.168.``: the address's first numeric fields."""

    prefix: str

    def matches_host(self, host: Endpoint) -> bool:
        return isinstance(host.address, ipaddress.IPv4Address) and host.text.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class _DomainSuffix:
    """``.example.com``: the name's last components."""

    suffix: str

    def matches_host(self, host: Endpoint) -> bool:
        return host.name is not None and host.name.endswith(self.suffix)


@dataclass(frozen=True, slots=True)
class _HostName:
    name: str

    def matches_host(self, host: Endpoint) -> bool:
        return host.name == self.name


@dataclass(frozen=True, slots=True)
class _Wildcard:
    """``*`` and ``?`` against the name or the address text."""

    pattern: str

    def matches_host(self, host: Endpoint) -> bool:
        if host.address is not None and fnmatch.fnmatchcase(host.text, self.pattern):
            return True
        return host.name is not None and fnmatch.fnmatchcase(host.name, self.pattern)


@dataclass(frozen=True, slots=True)
class _PatternFile:
    """``/path``: any of the host patterns listed in that file."""

    path: str
    patterns: tuple[HostPattern, ...]

    def matches_host(self, host: Endpoint) -> bool:
        return any(p.matches_host(host) for p in self.patterns)


# -- list elements ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ClientHost:
    host: HostPattern

    def matches(self, connection: Connection) -> bool:
        return self.host.matches_host(connection.client)


@dataclass(frozen=True, slots=True)
class _ClientUserAt:
    """``user@host``: we make no ident (RFC 1413) query, so the user is always unknown."""

    user_matches_unknown: bool
    host: HostPattern

    def matches(self, connection: Connection) -> bool:
        return self.user_matches_unknown and self.host.matches_host(connection.client)


@dataclass(frozen=True, slots=True)
class _Daemon:
    """A daemon name (None: ALL), optionally ``@host``: the local endpoint it was reached on."""

    name: str | None
    server: HostPattern | None = None

    def matches(self, connection: Connection) -> bool:
        if self.name is not None and self.name != connection.daemon:
            return False
        return self.server is None or self.server.matches_host(connection.server)


@dataclass(frozen=True, slots=True)
class PatternList:
    """``a b EXCEPT c EXCEPT d``: any of the first group, unless the (nested) exception matches."""

    patterns: tuple[Pattern, ...]
    exceptions: PatternList | None = None

    def matches(self, connection: Connection) -> bool:
        if not any(p.matches(connection) for p in self.patterns):
            return False
        return self.exceptions is None or not self.exceptions.matches(connection)


@dataclass(frozen=True, slots=True)
class Rule:
    """One readable line. `decision` is None when the file decides (allow file grants)."""

    path: str
    line: int
    daemons: PatternList
    clients: PatternList
    decision: bool | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, connection: Connection) -> bool:
        return self.daemons.matches(connection) and self.clients.matches(connection)
