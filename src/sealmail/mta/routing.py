"""Where each recipient goes: address classes, transport_maps, and recipient batches. Pure.

Address classes, as Postfix's trivial-rewrite resolves them (ADDRESS_CLASS_README), first match:

    local           domain in mydestination, or [addr] of inet_interfaces  -> local_transport
    virtual alias   domain in virtual_alias_domains (no alias matched in cleanup)
                                                   -> error: "User unknown in virtual alias table"
    virtual mailbox domain in virtual_mailbox_domains                      -> virtual_transport
    relay           domain in relay_domains (subdomains too, as parent_domain_matches_subdomains
                    says by default)                                       -> relay_transport
    default         anything else                                          -> default_transport

A transport setting is `transport[:nexthop]`. The next hop, in decreasing precedence: the one in
the class's transport setting, $relayhost (relay and default classes), then the recipient domain
($myhostname for the local class).

transport_maps (transport(5)) override the class's choice. Keys tried, first match wins:
`user+ext@domain`, `user@domain`, for local domains `user+ext@` and `user@`, then `domain`, then
each parent `.parent.domain`, then `*`. A result `transport:nexthop` replaces both; an empty part
keeps the class's (`:[relay]:25` changes only the next hop, `smtp:` only the transport, an empty
nexthop then meaning the recipient domain). `error:text` and `discard:text` put text in the next
hop.

Batches: recipients with the same (transport, nexthop) go together, at most
`<transport>_destination_recipient_limit` per delivery (the seed's section 6).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from sealmail.config.schema import Option
from sealmail.mta.config.parameters import MAIN

T = TypeVar("T")


class AddressClass(enum.Enum):
    LOCAL = "local"
    VIRTUAL_ALIAS = "virtual_alias"
    VIRTUAL_MAILBOX = "virtual_mailbox"
    RELAY = "relay"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Route:
    transport: str
    nexthop: str
    address_class: AddressClass


Lookup = Callable[[str], "str | None"]


def _domain_set(words: Iterable[str]) -> frozenset[str]:
    return frozenset(w.lower().rstrip(".") for w in words if w and ":" not in w)


def _interface_literals(words: Iterable[str]) -> frozenset[str]:
    """inet_interfaces as address literals: `[127.0.0.1]`, `[ipv6:::1]` (RFC 5321 4.1.3)."""
    found: set[str] = set()
    for word in words:
        word = word.lower()
        if word in ("all", "loopback-only"):
            candidates = ["127.0.0.1", "::1"] if word == "loopback-only" else []
        else:
            candidates = [word.strip("[]")]
        for text in candidates:
            try:
                address = ipaddress.ip_address(text)
            except ValueError:
                continue
            found.add(f"[{address}]" if address.version == 4 else f"[ipv6:{address}]")
    return frozenset(found)


def split_transport(text: str) -> tuple[str, str]:
    """`transport:nexthop` -> (transport, nexthop); `smtp` -> ("smtp", "")."""
    transport, _, nexthop = text.strip().partition(":")
    return transport, nexthop


@dataclass(frozen=True)
class RoutingPolicy:
    """The main.cf settings routing needs, already expanded (see `from_config`)."""

    myhostname: str
    mydestination: frozenset[str]
    interface_literals: frozenset[str] = frozenset()
    relay_domains: frozenset[str] = frozenset()
    virtual_alias_domains: frozenset[str] = frozenset()
    virtual_mailbox_domains: frozenset[str] = frozenset()
    local_transport: str = "local"
    virtual_transport: str = "virtual"
    relay_transport: str = "relay"
    default_transport: str = "smtp"
    relayhost: str = ""
    recipient_delimiter: str = ""

    @classmethod
    def from_config(cls, config: MainConfigLike) -> RoutingPolicy:
        return cls(
            myhostname=config.get(MAIN.myhostname).lower(),
            mydestination=_domain_set(config.get(MAIN.mydestination)),
            interface_literals=_interface_literals(config.get(MAIN.inet_interfaces)),
            relay_domains=_domain_set(config.get(MAIN.relay_domains)),
            virtual_alias_domains=_domain_set(config.get(MAIN.virtual_alias_domains)),
            virtual_mailbox_domains=_domain_set(config.get(MAIN.virtual_mailbox_domains)),
            local_transport=config.get(MAIN.local_transport).strip(),
            virtual_transport=config.get(MAIN.virtual_transport).strip(),
            relay_transport=config.get(MAIN.relay_transport).strip(),
            default_transport=config.get(MAIN.default_transport).strip(),
            relayhost=config.get(MAIN.relayhost).strip(),
            recipient_delimiter=config.get(MAIN.recipient_delimiter),
        )

    # -- classes ------------------------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        domain = domain.lower().rstrip(".")
        return domain in self.mydestination or domain in self.interface_literals

    def address_class(self, domain: str) -> AddressClass:
        domain = domain.lower().rstrip(".")
        if not domain or self.is_local_domain(domain):
            return AddressClass.LOCAL
        if domain in self.virtual_alias_domains:
            return AddressClass.VIRTUAL_ALIAS
        if domain in self.virtual_mailbox_domains:
            return AddressClass.VIRTUAL_MAILBOX
        if _in_domains(domain, self.relay_domains):
            return AddressClass.RELAY
        return AddressClass.DEFAULT

    def is_authorized_destination(self, domain: str) -> bool:
        """reject_unauth_destination's test: mail for this domain is ours to take."""
        return self.address_class(domain) is not AddressClass.DEFAULT

    def split_extension(self, local_part: str) -> tuple[str, str]:
        """`user+ext` -> ("user", "+ext") with the delimiter kept; no delimiter -> (local, "")."""
        for index, char in enumerate(local_part):
            if index and char in self.recipient_delimiter:
                return local_part[:index], local_part[index:]
        return local_part, ""

    # -- routes -------------------------------------------------------------------------------

    def class_route(self, address: str) -> Route:
        _local_part, domain = split_address(address)
        address_class = self.address_class(domain)
        if address_class is AddressClass.LOCAL:
            transport, nexthop = split_transport(self.local_transport)
            return Route(transport, nexthop or self.myhostname, address_class)
        if address_class is AddressClass.VIRTUAL_ALIAS:
            return Route("error", "5.1.1 User unknown in virtual alias table", address_class)
        if address_class is AddressClass.VIRTUAL_MAILBOX:
            transport, nexthop = split_transport(self.virtual_transport)
            return Route(transport, nexthop or domain.lower(), address_class)
        setting = (self.relay_transport if address_class is AddressClass.RELAY
                   else self.default_transport)
        transport, nexthop = split_transport(setting)
        return Route(transport, nexthop or self.relayhost or domain.lower(), address_class)

    def transport_keys(self, address: str) -> list[str]:
        """transport_maps keys for `address`, most specific first (see the module text)."""
        local_part, domain = split_address(address)
        domain = domain.lower()
        user, extension = self.split_extension(local_part)
        keys: list[str] = []
        if domain:
            if extension:
                keys.append(f"{local_part}@{domain}")
            keys.append(f"{user}@{domain}")
        if not domain or self.is_local_domain(domain):
            if extension:
                keys.append(f"{local_part}@")
            keys.append(f"{user}@")
        labels = domain.split(".") if domain else []
        if domain:
            keys.append(domain)
            for index in range(1, len(labels)):
                keys.append("." + ".".join(labels[index:]))
        keys.append("*")
        return keys


class MainConfigLike(Protocol):
    """What routing reads of a MainConfig."""

    def get(self, parameter: Option[T]) -> T: ...

    def value(self, name: str) -> str: ...

    def words(self, name: str) -> tuple[str, ...]: ...


def _in_domains(domain: str, domains: frozenset[str]) -> bool:
    """Exact match, or a subdomain of a listed domain (`.example.com` forms too)."""
    if domain in domains or "." + domain in domains:
        return True
    labels = domain.split(".")
    for index in range(1, len(labels)):
        parent = ".".join(labels[index:])
        if parent in domains or "." + parent in domains:
            return True
    return False


def split_address(address: str) -> tuple[str, str]:
    """`local@domain` -> (local, domain); the last `@` separates them; no `@` -> (address, "")."""
    local_part, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local_part, domain


class Router:
    """Routes addresses with a policy and transport_maps lookups (functions key -> value)."""

    def __init__(self, policy: RoutingPolicy, transport_maps: Sequence[Lookup] = ()) -> None:
        self.policy = policy
        self.transport_maps = list(transport_maps)

    def _lookup(self, key: str) -> str | None:
        for table in self.transport_maps:
            found = table(key)
            if found is not None:
                return found
        return None

    def route(self, address: str) -> Route:
        route = self.policy.class_route(address)
        if not self.transport_maps:
            return route
        for key in self.policy.transport_keys(address):
            found = self._lookup(key)
            if found is None:
                continue
            transport, nexthop = split_transport(found)
            if transport in ("error", "discard"):
                return Route(transport, nexthop, route.address_class)
            _, domain = split_address(address)
            return Route(
                transport or route.transport,
                nexthop or (route.nexthop if not transport else
                            domain.lower() or self.policy.myhostname),
                route.address_class,
            )
        return route


def batches(items: Sequence[T], limit: int) -> list[tuple[T, ...]]:
    """Split into groups of at most `limit` (0 or less: one group), order kept."""
    if not items:
        return []
    if limit <= 0:
        return [tuple(items)]
    return [tuple(items[start:start + limit]) for start in range(0, len(items), limit)]


def group_by_route(routed: Iterable[tuple[Route, T]]) -> dict[tuple[str, str], list[T]]:
    """(transport, nexthop) -> items, in first-seen order."""
    groups: dict[tuple[str, str], list[T]] = {}
    for route, item in routed:
        groups.setdefault((route.transport, route.nexthop), []).append(item)
    return groups
