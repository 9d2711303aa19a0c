"""The smtp delivery agent (Postfix's smtp(8)): mail to the Internet by MX records, or to a relay.

The next hop is the one routing chose (`[host]:port`, `host:port`, a domain), or `relayhost`
when the queue manager leaves it empty or names the recipient domain itself. An unbracketed
next hop is looked up as a mail domain (MX, then A/AAAA: sealmail.mta.agents.mx); a bracketed
one is connected to as written. The servers are tried in order until the mail is sent or
bounced: a temporary failure at one server (no connection, a 4xx reply, a TLS failure) sends
what is left to the next, as Postfix does, within `smtp_mx_address_limit` addresses and
`smtp_mx_session_limit` sessions. Lookup failures become Postfix's replies (mx.py's table);
those of `relayhost` wait (4.3.5, a configuration problem), never bounce. Parameters are the
`smtp_*` family; the shared session machinery is in session.py, TLS policy in tls_policy.py.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.agents import DeliveryRequest, Status, tls_policy
from sealmail.mta.agents.client_settings import Delivery, Policy
from sealmail.mta.agents.mta_sts import PolicyCache, fetch_policy
from sealmail.mta.agents.mx import LookupFailure, ServerPolicy, local_addresses, servers
from sealmail.mta.agents.session import ClientAgent, DeliveryFailure, Endpoint, NexthopError
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN, SMTP_CLIENT
from sealmail.mta.dns import DnsError, DnsUnavailable, Resolver, TemporaryDnsError
from sealmail.proto.smtp import Mode

__all__ = ["SmtpAgent", "parse_sts_hosts"]

_SMTP_PORT = 25


def parse_sts_hosts(words: tuple[str, ...] | list[str]) -> dict[str, tuple[str, int]]:
    """sealmail_mta_sts_hosts: `mta-sts.example.com=127.0.0.1:8443` words (tests)."""
    hosts: dict[str, tuple[str, int]] = {}
    for word in words:
        name, sep, target = word.partition("=")
        address, colon, port = target.rpartition(":")
        if not sep or not colon or not port.isdigit() or not address:
            raise ValueError(f"sealmail_mta_sts_hosts: {word!r} is not HOST=ADDRESS:PORT")
        hosts[name.lower().rstrip(".")] = (address.strip("[]"), int(port))
    return hosts


class SmtpAgent(ClientAgent):
    """SMTP (RFC 5321) to MX hosts or a relay, sharing the client core and driver with lmtp."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(SMTP_CLIENT, Mode.SMTP, _SMTP_PORT, clock)
        self._resolvers: dict[str, Resolver] = {}
        self._server_policies: dict[int, tuple[MainConfig, ServerPolicy]] = {}
        self._sts: dict[tuple[object, ...], PolicyCache] = {}

    def nexthop_for(self, request: DeliveryRequest) -> str:
        relayhost = request.settings.get(MAIN.relayhost).strip()
        nexthop = request.nexthop.strip()
        names_a_domain = bool(nexthop) and ":" not in nexthop and "[" not in nexthop
        if relayhost and (not nexthop or names_a_domain):
            return relayhost
        return nexthop or relayhost

    def default_port_for(self, settings: MainConfig) -> int:
        text = settings.get(MAIN.smtp_tcp_port).strip()
        if text.isdigit() and 0 < int(text) < 65536:
            return int(text)
        try:
            return service_port(text, DEFAULT_SERVICES_FILE)
        except UnknownService as exc:
            raise NexthopError(f"smtp_tcp_port = {text}: {exc}") from None

    async def targets(self, request: DeliveryRequest, nexthop: str,
                      endpoint: Endpoint) -> list[Endpoint]:
        settings = request.settings
        try:
            policy = self._server_policy(settings)
            resolver = self._resolver(settings.get(MAIN.sealmail_resolv_conf)) \
                if policy.dns else None
            found = await servers(endpoint.host, endpoint.port, explicit=endpoint.bracketed,
                                  policy=policy, resolver=resolver)
        except (ValueError, DnsUnavailable) as exc:
            raise DeliveryFailure(Status.DEFERRED, "4.3.5",
                                  f"mail system configuration error: {exc}") from None
        except LookupFailure as exc:
            if not exc.temporary and nexthop == settings.get(MAIN.relayhost).strip():
                # Postfix: a relayhost that does not resolve is the operator's to fix.
                self._log.warning("%s: relayhost configuration problem", request.queue_id)
                raise DeliveryFailure(Status.DEFERRED, "4.3.5", exc.text) from None
            status = Status.DEFERRED if exc.temporary else Status.BOUNCED
            raise DeliveryFailure(status, exc.dsn, exc.text) from None
        return [Endpoint(host=s.host, port=s.port, address=s.address) for s in found]

    async def secure_targets(self, request: DeliveryRequest, endpoint: Endpoint,
                             servers: list[Endpoint], plan: Delivery,
                             policy: Policy) -> tuple[list[Endpoint], Delivery]:
        """MTA-STS (sealmail.mta.agents.mta_sts) for mail to a domain's MX hosts, not to a relayhost
        or a bracketed host: enforce keeps the MX hosts its patterns admit and requires TLS
        that verifies for their names; testing only says what enforce would have skipped."""
        settings = request.settings
        if (not settings.get(MAIN.sealmail_mta_sts) or endpoint.bracketed or endpoint.is_unix
                or self.nexthop_for(request) == settings.get(MAIN.relayhost).strip()):
            return servers, plan
        domain = endpoint.host
        try:
            sts = await self._sts_cache(settings).policy(domain)
        except (DnsUnavailable, ValueError) as exc:
            raise DeliveryFailure(Status.DEFERRED, "4.3.5",
                                  f"mail system configuration error: {exc}") from None
        if sts is None:
            return servers, plan
        admitted = [server for server in servers if sts.admits(server.host)]
        for host in dict.fromkeys(s.host for s in servers if not sts.admits(s.host)):
            self._log.info("%s: MTA-STS policy for %s (mode %s): MX host %s does not match "
                           "%s%s", request.queue_id, domain, sts.mode, host, ", ".join(sts.mx),
                           ": skipped" if sts.enforced else "; delivering anyway (testing)")
        if not sts.enforced:
            return servers, plan
        if not admitted:
            raise DeliveryFailure(Status.DEFERRED, "4.7.5",
                                  f"MTA-STS policy for {domain}: no MX host matches "
                                  f"{', '.join(sts.mx)}")
        tls = tls_policy.mta_sts_policy(plan.tls, policy.tls_defaults)
        return admitted, dataclasses.replace(plan, tls=tls)

    def _sts_cache(self, settings: MainConfig) -> PolicyCache:
        resolv_conf = settings.get(MAIN.sealmail_resolv_conf)
        cafile = settings.get(MAIN.sealmail_mta_sts_CAfile).strip()
        hosts = parse_sts_hosts(settings.get(MAIN.sealmail_mta_sts_hosts))
        timeout = float(settings.get(MAIN.sealmail_mta_sts_timeout))
        key = (resolv_conf, cafile, tuple(sorted(hosts.items())), timeout)
        cache = self._sts.get(key)
        if cache is None:
            resolver = self._resolver(resolv_conf)

            async def txt(name: str) -> list[str] | None:
                try:
                    return await resolver.txt(name)
                except TemporaryDnsError:
                    return None
                except DnsError:
                    return []

            async def fetch(domain: str) -> bytes:
                return await fetch_policy(domain, cafile=cafile, hosts=hosts, timeout=timeout)

            def note(level: str, text: str) -> None:
                (self._log.warning if level == "warning" else self._log.info)("%s", text)

            cache = self._sts[key] = PolicyCache(txt, fetch, clock=self.clock, notes=note)
        return cache

    def _resolver(self, resolv_conf: str) -> Resolver:
        resolver = self._resolvers.get(resolv_conf)
        if resolver is None:
            resolver = self._resolvers[resolv_conf] = Resolver(resolv_conf, clock=self.clock)
        return resolver

    def _server_policy(self, settings: MainConfig) -> ServerPolicy:
        cached = self._server_policies.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
        lookups = {w.lower() for w in settings.get(MAIN.smtp_host_lookup)}
        if not lookups or lookups - {"dns", "native"}:
            raise ValueError(f"smtp_host_lookup = {' '.join(sorted(lookups))}: use dns, native "
                             "or both")
        preference = settings.get(MAIN.smtp_address_preference).strip().lower()
        if preference not in ("any", "ipv4", "ipv6"):
            raise ValueError(f"smtp_address_preference = {preference}: use ipv4, ipv6 or any")
        policy = ServerPolicy(
            dns="dns" in lookups,
            native="native" in lookups,
            preference=preference,
            randomize=settings.get(MAIN.smtp_randomize_addresses),
            address_limit=settings.get(MAIN.smtp_mx_address_limit),
            own_addresses=local_addresses(settings.get(MAIN.inet_interfaces)),
        )
        self._server_policies[id(settings)] = (settings, policy)
        return policy
