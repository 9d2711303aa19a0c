"""smtpd's anvil limits: how many connections, and how much of each event, one client may have
(smtpd_client_*_limit), with Postfix's replies and warning lines.

The counts are the master's anvil (sealmail.mta.anvil), so they hold across every smtpd process.
Clients in smtpd_client_event_limit_exceptions (default $mynetworks) are neither limited nor
counted, as Postfix's "hogger list". A limit of 0 is no limit; a count over the limit refuses:

    connect  421 4.7.0 HOST Error: too many connections from ADDR      (count and rate)
    MAIL     450 4.7.1 Error: too much mail from ADDR
    RCPT     450 4.7.1 Error: too many recipients from ADDR
    STARTTLS 454 4.7.0 Error: too many new TLS sessions from HOST[ADDR]
             (in wrapper mode, before the handshake: no reply, the connection is closed)
    new TLS  421 4.7.0 HOST Error: too many new TLS sessions from HOST[ADDR]
             (after the handshake of the session that went over the rate; the end)
    AUTH     450 4.7.1 Error: too many AUTH commands from ADDR
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Protocol

from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.proto.smtp import Reply

log = logging.getLogger("sealmail.mta.smtpd")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class Anvil(Protocol):
    async def request(self, verb: str, ident: str) -> list[int] | None: ...


@dataclass(frozen=True)
class ClientLimits:
    connection_count: int = 0
    connection_rate: int = 0
    message_rate: int = 0
    recipient_rate: int = 0
    new_tls_rate: int = 0
    auth_rate: int = 0
    exceptions: tuple[Network, ...] = ()
    time_unit: float = 60.0

    @classmethod
    def from_config(cls, config: MainConfig) -> ClientLimits:
        from sealmail.mta.restrictions import parse_networks

        try:
            exceptions = parse_networks(config.get(MAIN.smtpd_client_event_limit_exceptions))
        except ValueError as exc:
            raise config.error(MAIN.smtpd_client_event_limit_exceptions, str(exc)) from None
        return cls(
            connection_count=config.get(MAIN.smtpd_client_connection_count_limit),
            connection_rate=config.get(MAIN.smtpd_client_connection_rate_limit),
            message_rate=config.get(MAIN.smtpd_client_message_rate_limit),
            recipient_rate=config.get(MAIN.smtpd_client_recipient_rate_limit),
            new_tls_rate=config.get(MAIN.smtpd_client_new_tls_session_rate_limit),
            auth_rate=config.get(MAIN.smtpd_client_auth_rate_limit),
            exceptions=exceptions,
            time_unit=float(config.get(MAIN.anvil_rate_time_unit)),
        )

    @property
    def active(self) -> bool:
        return any((self.connection_count, self.connection_rate, self.message_rate,
                    self.recipient_rate, self.new_tls_rate, self.auth_rate))

    def exempt(self, address: str) -> bool:
        if not address:
            return True  # a local client (UNIX socket)
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.exceptions)


class ClientLimiter:
    """One session's questions to anvil; each answers a refusal or None."""

    def __init__(self, limits: ClientLimits, anvil: Anvil, service: str, address: str,
                 client: str, hostname: str) -> None:
        self.limits = limits
        self.anvil = anvil
        self.service = service
        self.address = address
        self.client = client  # host[addr], as the warning lines name it
        self.hostname = hostname
        self.ident = f"{service}:{address}"
        self.counted = limits.active and not limits.exempt(address)
        self.connected = False

    def _warn(self, what: str, value: int) -> None:
        log.warning("%s limit exceeded: %d from %s for service %s", what, value, self.client,
                    self.service)

    async def connect(self) -> Reply | None:
        if not self.counted:
            return None
        answer = await self.anvil.request("connect", self.ident)
        if not answer or len(answer) < 2:
            return None
        self.connected = True
        count, rate = answer[:2]
        limits = self.limits
        refusal = Reply(421, "4.7.0",
                        f"{self.hostname} Error: too many connections from {self.address}")
        if limits.connection_count and count > limits.connection_count:
            self._warn("Connection concurrency", count)
            return refusal
        if limits.connection_rate and rate > limits.connection_rate:
            self._warn("Connection rate", rate)
            return refusal
        return None

    async def disconnect(self) -> None:
        if self.connected:
            self.connected = False
            await self.anvil.request("disconnect", self.ident)

    async def _event(self, verb: str, limit: int) -> int | None:
        """The rate after this event when it is over `limit`, else None."""
        if not self.counted or not limit:
            return None
        answer = await self.anvil.request(verb, self.ident)
        if not answer or answer[0] <= limit:
            return None
        return answer[0]

    async def mail(self) -> Reply | None:
        rate = await self._event("mail", self.limits.message_rate)
        if rate is None:
            return None
        self._warn("Message delivery request rate", rate)
        return Reply(450, "4.7.1", f"Error: too much mail from {self.address}")

    async def rcpt(self) -> Reply | None:
        rate = await self._event("rcpt", self.limits.recipient_rate)
        if rate is None:
            return None
        self._warn("Recipient address rate", rate)
        return Reply(450, "4.7.1", f"Error: too many recipients from {self.address}")

    async def auth(self) -> Reply | None:
        rate = await self._event("auth", self.limits.auth_rate)
        if rate is None:
            return None
        self._warn("AUTH command rate", rate)
        return Reply(450, "4.7.1", f"Error: too many AUTH commands from {self.address}")

    async def _new_tls_rate(self) -> int | None:
        """The new-TLS-session rate so far when it is over the limit, else None. As Postfix's
        smtpd (smtpd.c: `rate > var_smtpd_cntls_limit`): the session that makes the rate go
        over the limit is still made, and refused after its handshake (`tls_started`)."""
        limit = self.limits.new_tls_rate
        if not self.counted or not limit:
            return None
        answer = await self.anvil.request("newtls_stat", self.ident)
        if not answer or answer[0] <= limit:
            return None
        return answer[0]

    async def starttls(self) -> Reply | None:
        """Before STARTTLS's 220: over the new-session rate, Postfix's 454 and warning (both
        naming the client as name[address], unlike the other limits' replies)."""
        if await self._new_tls_rate() is None:
            return None
        log.warning("Refusing STARTTLS request from %s for service %s", self.client, self.service)
        return Reply(454, "4.7.0", f"Error: too many new TLS sessions from {self.client}")

    async def implicit_tls_refused(self) -> bool:
        """smtpd_tls_wrappermode, before the handshake: over the new-session rate Postfix's
        smtpd says nothing and hangs up (a reply in clear means nothing to a TLS client, and a
        handshake only to refuse is the CPU the limit is there to save)."""
        if await self._new_tls_rate() is None:
            return False
        log.warning("Refusing TLS service request from %s for service %s", self.client,
                    self.service)
        return True

    async def tls_started(self) -> Reply | None:
        """A new (not resumed) TLS session is made: count it; over the rate, Postfix's warning
        and 421 (smtpd.c: too late to save the handshake's CPU, but it says why the next
        STARTTLS or wrappermode connection will be refused), and the session ends."""
        rate = await self._event("newtls", self.limits.new_tls_rate)
        if rate is None:
            return None
        self._warn("New TLS session rate", rate)
        return Reply(421, "4.7.0",
                     f"{self.hostname} Error: too many new TLS sessions from {self.client}")
