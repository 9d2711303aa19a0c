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

import time
from collections.abc import Callable

from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.agents import DeliveryRequest, Status
from sealmail.mta.agents.mx import LookupFailure, ServerPolicy, local_addresses, servers
from sealmail.mta.agents.session import ClientAgent, DeliveryFailure, Endpoint, NexthopError
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN, SMTP_CLIENT
from sealmail.mta.dns import DnsUnavailable, Resolver
from sealmail.proto.smtp import Mode

__all__ = ["SmtpAgent"]

_SMTP_PORT = 25


class SmtpAgent(ClientAgent):
    """SMTP (RFC 5321) to MX hosts or a relay, sharing the client core and driver with lmtp."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(SMTP_CLIENT, Mode.SMTP, _SMTP_PORT, clock)
        self._resolvers: dict[str, Resolver] = {}
        self._server_policies: dict[int, tuple[MainConfig, ServerPolicy]] = {}

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
