"""The restriction engine of one smtpd service: its lists, the settings the checks read, and
the injected services (DNS, lookup tables, policy servers). Built once from main.cf (with the
master.cf entry's -o overrides); `session(facts)` gives each SMTP session its state."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import LookupTable, MainConfig, open_table
from sealmail.mta.config.main_cf import split_table_list
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.restrictions.evaluator import Session
from sealmail.mta.restrictions.model import (
    RECIPIENT,
    STAGES,
    ClientNames,
    Facts,
    NameStatus,
    Stage,
    Status,
)
from sealmail.mta.routing import RoutingPolicy
from sealmail.mta.sender_login import SenderLoginMaps

if TYPE_CHECKING:
    from sealmail.mta.restrictions.policy_client import PolicyClient

log = logging.getLogger("sealmail.mta.smtpd")

__all__ = ["Codes", "Engine", "NameResolver", "parse_networks"]

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

# The checks that refuse an unauthorized destination: without one the server is an open relay.
RELAY_GUARDS = frozenset({"reject", "defer", "reject_unauth_destination",
                          "defer_unauth_destination"})


class NameResolver(Protocol):
    """The DNS questions checks ask (sealmail.mta.dns.Resolver answers them)."""

    async def addresses(self, host: str, families: Sequence[int] = (4, 6)) -> list[Any]: ...
    async def mx(self, domain: str) -> list[Any]: ...
    async def txt(self, name: str) -> list[str]: ...
    async def ptr(self, address: str) -> list[str]: ...


def parse_networks(words: Sequence[str]) -> tuple[Network, ...]:
    """mynetworks: `127.0.0.0/8`, `[::1]/128`, `[::1]`, `10.1.2.3` (tables are not supported).
    ValueError names a word that is none of these."""
    networks = []
    for word in words:
        text = word.replace("[", "").replace("]", "")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{word!r} is not a network address (CIDR)") from None
    return tuple(networks)


@dataclass(frozen=True)
class Codes:
    """The reply codes main.cf may change (Postfix's *_reject_code parameters)."""

    reject: int = 554
    defer: int = 450
    relay: int = 554
    map_reject: int = 554
    map_defer: int = 450
    unknown_client: int = 450
    unknown_hostname: int = 450
    invalid_hostname: int = 501
    non_fqdn: int = 504
    unknown_address: int = 450
    maps_rbl: int = 554
    plaintext: int = 450
    multi_recipient_bounce: int = 550
    unknown_local_recipient: int = 550

    @classmethod
    def from_config(cls, config: MainConfig) -> Codes:
        return cls(
            reject=config.get(MAIN.reject_code), defer=config.get(MAIN.defer_code),
            relay=config.get(MAIN.relay_domains_reject_code),
            map_reject=config.get(MAIN.access_map_reject_code),
            map_defer=config.get(MAIN.access_map_defer_code),
            unknown_client=config.get(MAIN.unknown_client_reject_code),
            unknown_hostname=config.get(MAIN.unknown_hostname_reject_code),
            invalid_hostname=config.get(MAIN.invalid_hostname_reject_code),
            non_fqdn=config.get(MAIN.non_fqdn_reject_code),
            unknown_address=config.get(MAIN.unknown_address_reject_code),
            maps_rbl=config.get(MAIN.maps_rbl_reject_code),
            plaintext=config.get(MAIN.plaintext_reject_code),
            multi_recipient_bounce=config.get(MAIN.multi_recipient_bounce_reject_code),
            unknown_local_recipient=config.get(MAIN.unknown_local_recipient_reject_code),
        )


@dataclass
class Engine:
    """Everything the checks read, and the lists by parameter name."""

    lists: dict[str, tuple[str, ...]]
    routing: RoutingPolicy
    mynetworks: tuple[Network, ...] = ()
    classes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    delay_reject: bool = True
    soft_bounce: bool = False
    reject_unlisted_sender: bool = False
    reject_unlisted_recipient: bool = True
    local_recipients: tuple[LookupTable, ...] = ()
    delimiter: str = ""
    codes: Codes = field(default_factory=Codes)
    default_rbl_reply: str = ("$rbl_code Service unavailable; $rbl_class [$rbl_what] blocked "
                              "using $rbl_domain${rbl_reason?; $rbl_reason}")
    rbl_reply_maps: tuple[LookupTable, ...] = ()
    null_access_key: str = "<>"
    parent_domain_matches: bool = True
    tempfail_actions: dict[str, str] = field(default_factory=dict)
    resolver: NameResolver | None = None
    peername_lookup: bool = True  # smtpd_peername_lookup: no leaves every client "unknown"
    open_table: Callable[[str], LookupTable] = open_table
    policy_clients: dict[str, PolicyClient] = field(default_factory=dict)
    compatibility_level: str = "3.6"
    mail_version: str = "3.7.0"
    sender_logins: SenderLoginMaps | None = None  # smtpd_sender_login_maps
    sasl_enabled: bool = False  # smtpd_sasl_auth_enable (the login checks need it)
    _tables: dict[str, LookupTable] = field(default_factory=dict)

    @classmethod
    def from_config(cls, config: MainConfig, *, resolver: NameResolver | None = None) -> Engine:
        from sealmail.mta.restrictions.checks import CHECKS

        lists = {stage.parameter: _restriction_words(config, stage.parameter)
                 for stage in STAGES}
        classes = {name.lower(): _restriction_words(config, name)
                   for name in config.get(MAIN.smtpd_restriction_classes)}
        relay_lists = (*lists["smtpd_relay_restrictions"], *lists["smtpd_recipient_restrictions"])
        if not RELAY_GUARDS & {w.lower() for w in relay_lists}:
            # As Postfix: refuse to run as an open relay.
            raise config.error(
                MAIN.smtpd_relay_restrictions,
                "specify at least one working instance of: reject_unauth_destination, "
                "defer_unauth_destination, reject, defer (in smtpd_relay_restrictions or "
                "smtpd_recipient_restrictions)",
            )
        try:
            mynetworks = parse_networks(config.get(MAIN.mynetworks))
        except ValueError as exc:
            raise config.error(MAIN.mynetworks, str(exc)) from None
        engine = cls(
            lists=lists,
            routing=RoutingPolicy.from_config(config),
            mynetworks=mynetworks,
            classes=classes,
            delay_reject=config.get(MAIN.smtpd_delay_reject),
            soft_bounce=config.get(MAIN.soft_bounce),
            reject_unlisted_sender=config.get(MAIN.smtpd_reject_unlisted_sender),
            reject_unlisted_recipient=config.get(MAIN.smtpd_reject_unlisted_recipient),
            local_recipients=tuple(open_table(s) for s in config.get(MAIN.local_recipient_maps)),
            delimiter=config.get(MAIN.recipient_delimiter),
            codes=Codes.from_config(config),
            # Its $rbl_* names are expanded at each refusal, not as main.cf parameters.
            default_rbl_reply=config.raw(MAIN.default_rbl_reply) or "",
            rbl_reply_maps=tuple(open_table(s) for s in config.get(MAIN.rbl_reply_maps)),
            null_access_key=config.get(MAIN.smtpd_null_access_lookup_key),
            parent_domain_matches="smtpd_access_maps" in config.get(
                MAIN.parent_domain_matches_subdomains),
            tempfail_actions={
                "helo": config.get(MAIN.unknown_helo_hostname_tempfail_action).lower(),
                "address": config.get(MAIN.unknown_address_tempfail_action).lower(),
            },
            resolver=resolver,
            peername_lookup=config.get(MAIN.smtpd_peername_lookup),
            compatibility_level=config.get(MAIN.compatibility_level),
            sasl_enabled=config.get(MAIN.smtpd_sasl_auth_enable),
        )
        login_maps = config.get(MAIN.smtpd_sender_login_maps)
        if login_maps:
            engine.sender_logins = SenderLoginMaps(
                tuple(open_table(spec) for spec in login_maps), engine.delimiter,
                engine.routing.is_local_domain)
        words = [w for ws in (*lists.values(), *classes.values()) for w in ws]
        engine.policy_clients = _policy_clients(config, words)
        if resolver is None and any(CHECKS[w.lower()].uses_dns for w in words
                                    if w.lower() in CHECKS):
            from sealmail.mta.dns import DnsUnavailable, Resolver

            try:
                engine.resolver = Resolver(config.get(MAIN.sealmail_resolv_conf))
            except DnsUnavailable as exc:
                raise config.error(MAIN.sealmail_resolv_conf, str(exc)) from None
        for word in words:  # open the tables now: a bad one stops the start, as Postfix
            if ":" in word and word.split(":", 1)[0] not in ("inet", "unix"):
                try:
                    engine.table(word)
                except ConfigError:
                    raise
        return engine

    # -- what the session and the checks ask ---------------------------------------------------

    def session(self, facts: Facts) -> Session:
        return Session(self, facts)

    @property
    def needs_client_names(self) -> bool:
        """Whether a configured check reads the client's name (then smtpd looks it up)."""
        from sealmail.mta.restrictions.checks import CHECKS

        words = [w.lower() for ws in (*self.lists.values(), *self.classes.values()) for w in ws]
        return self.resolver is not None and self.peername_lookup and any(
            CHECKS[w].uses_client_name for w in words if w in CHECKS)

    async def client_names(self, address: str) -> ClientNames:
        """The client's PTR name, verified by its forward lookup (Postfix's smtpd_peer)."""
        from sealmail.mta.dns import DnsError, TemporaryDnsError

        if not address or self.resolver is None:
            return ClientNames()
        try:
            names = await self.resolver.ptr(address)
        except TemporaryDnsError:
            return ClientNames(name_status=NameStatus.TEMPORARY,
                               reverse_status=NameStatus.TEMPORARY)
        except DnsError:
            return ClientNames()
        if not names:
            return ClientNames()
        reverse = names[0].lower().rstrip(".")
        try:
            forward = await self.resolver.addresses(reverse)
        except TemporaryDnsError:
            return ClientNames("unknown", NameStatus.TEMPORARY, reverse, NameStatus.OK)
        except DnsError:
            return ClientNames("unknown", NameStatus.FORGED, reverse, NameStatus.OK)
        ip = ipaddress.ip_address(address)
        if any(found == ip for found in forward):
            return ClientNames(reverse, NameStatus.OK, reverse, NameStatus.OK)
        log.warning("hostname %s does not resolve to address %s", reverse, address)
        return ClientNames("unknown", NameStatus.FORGED, reverse, NameStatus.OK)

    def table(self, spec: str) -> LookupTable:
        table = self._tables.get(spec)
        if table is None:
            table = self._tables[spec] = self.open_table(spec)
        return table

    def in_mynetworks(self, address: str) -> bool:
        if not address:
            return True  # a local (UNIX-socket) client
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.mynetworks)

    async def unlisted(self, session: Session, address: str, stage: Stage) -> Status:
        """local_recipient_maps: an address in a local domain must be in one of the tables
        (the full address, without +extension, the local part alone, as Postfix)."""
        from sealmail.mta.restrictions.evaluator import Scope

        if stage is RECIPIENT:
            session.local_recipient_checked = True
        local, _, domain = address.rpartition("@")
        if not self.local_recipients or not self.routing.is_local_domain(domain):
            return Status.DUNNO
        base = local
        for char in self.delimiter:
            base = base.split(char, 1)[0]
        keys = dict.fromkeys((address, f"{base}@{domain}", local, base))
        scope = Scope(address, stage)
        for table in self.local_recipients:
            for key in keys:
                try:
                    if table.lookup(key) is not None:
                        return Status.DUNNO
                except ConfigError as exc:
                    log.warning("%s: local_recipient_maps lookup failed: %s", address, exc)
                    return session.lookup_failed(scope)
        return session.refuse(scope, self.codes.unknown_local_recipient,
                              "5.1.1" if stage is RECIPIENT else "5.1.0",
                              "User unknown in local recipient table")


def _restriction_words(config: MainConfig, name: str) -> tuple[str, ...]:
    """A restriction list: words split on commas and spaces, `{...}` kept whole."""
    return split_table_list(config.value(name))


def _policy_clients(config: MainConfig, words: Sequence[str]) -> dict[str, PolicyClient]:
    servers = [words[i + 1] for i, w in enumerate(words[:-1])
               if w.lower() == "check_policy_service"]
    if not servers:
        return {}
    from sealmail.mta.restrictions.policy_client import PolicyClient, PolicySettings

    settings = PolicySettings.from_config(config)
    clients = {}
    for server in servers:
        try:
            clients[server] = PolicyClient(server, settings, config.get(MAIN.queue_directory))
        except ValueError as exc:
            raise config.error(MAIN.smtpd_recipient_restrictions, str(exc)) from None
    return clients
