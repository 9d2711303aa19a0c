"""DNS for the MTA: MX and address lookups (dnspython's async resolver), with a TTL-bounded cache.

Why our own cache and not the resolver's: a negative answer (NXDOMAIN, no record of the type)
is kept for its SOA's negative TTL (RFC 2308 section 5) as a positive one is for its own TTL,
a temporary failure (SERVFAIL, a timeout, every server refusing) is never kept, so the next
attempt asks again, and the clock is injectable, so tests see expiry without sleeping. Nothing
stays longer than `MAX_TTL`, and the cache holds at most `MAX_ENTRIES` names (oldest dropped).

The name servers come from a resolv.conf: /etc/resolv.conf, or the one main.cf's
`sealmail_resolv_conf` names (sealmail's own parameter; Postfix always uses the system's).
Names are asked as written, fully qualified: no search list (Postfix leaves RES_DNSRCH off).

Failures are typed by what the mail system does with them, and carry Postfix's words
(`Host or domain name not found. Name service error for name=N type=T: REASON`); which DSN
each becomes is decided once, by the SMTP client (sealmail.mta.agents.mx).
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import dns.asyncresolver
import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import dns.resolver
import dns.reversename

__all__ = [
    "MAX_ENTRIES",
    "MAX_TTL",
    "Address",
    "DnsError",
    "DnsUnavailable",
    "MxRecord",
    "NoSuchDomain",
    "NoSuchRecord",
    "NullMx",
    "Resolver",
    "TemporaryDnsError",
]

MAX_TTL = 3600.0  # seconds any answer is kept at most, whatever its TTL says
MAX_ENTRIES = 10_000
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class DnsError(Exception):
    """A lookup that gave no usable answer, in Postfix's words."""

    reason = "Host not found"

    def __init__(self, name: str, rdtype: str, ttl: float = 0.0) -> None:
        self.name = name
        self.rdtype = rdtype
        self.ttl = ttl  # how long a negative answer may be kept (RFC 2308); 0: not at all
        super().__init__(self.text)

    @property
    def text(self) -> str:
        return (f"Host or domain name not found. Name service error for name={self.name} "
                f"type={self.rdtype}: {self.reason}")


class TemporaryDnsError(DnsError):
    """SERVFAIL, a timeout, every server refusing: ask again later."""

    reason = "Host not found, try again"


class NoSuchDomain(DnsError):
    """NXDOMAIN: the name does not exist."""

    reason = "Host not found"


class NoSuchRecord(DnsError):
    """The name exists but has no record of this type (NOERROR, empty answer)."""

    reason = "Host found but no data record of requested type"


class NullMx(Exception):
    """RFC 7505: the domain's only MX is `0 .`: it accepts no mail."""

    def __init__(self, domain: str) -> None:
        self.domain = domain
        super().__init__(f"Domain {domain} does not accept mail (nullMX)")


class DnsUnavailable(Exception):
    """The resolv.conf cannot be read or names no server: a configuration error."""


@dataclass(frozen=True, slots=True)
class MxRecord:
    preference: int
    host: str  # without the trailing dot


@dataclass(frozen=True, slots=True)
class _Cached:
    expires: float
    records: tuple[object, ...] | None = None
    error: DnsError | None = None


class Resolver:
    """Async MX, A, AAAA (and TXT, PTR for smtpd's checks) lookups through the servers of one
    resolv.conf, cached."""

    def __init__(self, resolv_conf: str = "/etc/resolv.conf", *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        try:
            self._resolver = dns.asyncresolver.Resolver(filename=resolv_conf)
        except dns.resolver.NoResolverConfiguration as exc:
            raise DnsUnavailable(f"no name servers from {resolv_conf}: {exc}") from None
        self._resolver.cache = None  # ours below: negative answers and an injectable clock
        self.resolv_conf = resolv_conf
        self.clock = clock
        self._cache: OrderedDict[tuple[str, str], _Cached] = OrderedDict()

    @property
    def nameservers(self) -> list[str]:
        return [str(server) for server in self._resolver.nameservers]

    async def mx(self, domain: str) -> list[MxRecord]:
        """The domain's MX records by preference; NullMx for RFC 7505's `0 .`; a DnsError
        (NoSuchDomain, NoSuchRecord: the caller looks up addresses instead) otherwise."""
        records = [r for r in await self._lookup(domain, "MX") if isinstance(r, MxRecord)]
        if any(r.host == "" for r in records):
            # RFC 7505 3: a null MX is the only MX; a stray "." beside real ones is skipped.
            if len(records) == 1 and records[0].preference == 0:
                raise NullMx(domain)
            records = [r for r in records if r.host]
            if not records:
                raise NoSuchRecord(domain, "MX")
        return sorted(records, key=lambda r: r.preference)

    async def addresses(self, host: str, families: Sequence[int] = (4, 6)) -> list[Address]:
        """A and/or AAAA records of `host` (in `families` order). Found any: those. Else the
        worst failure: temporary before no-such-domain before no-such-record, named by the last
        type asked, as Postfix's log shows `type=AAAA`."""
        found: list[Address] = []
        failures: list[DnsError] = []
        for family in families:
            rdtype = "A" if family == 4 else "AAAA"
            try:
                found += [r for r in await self._lookup(host, rdtype)
                          if isinstance(r, ipaddress.IPv4Address | ipaddress.IPv6Address)]
            except NoSuchDomain as exc:
                failures.append(exc)
                break  # the name does not exist for any type
            except DnsError as exc:
                failures.append(exc)
        if found:
            return found
        for kind in (TemporaryDnsError, NoSuchDomain):
            matching = [f for f in failures if isinstance(f, kind)]
            if matching:
                raise type(matching[-1])(host, failures[-1].rdtype)
        raise NoSuchRecord(host, failures[-1].rdtype if failures else "A")

    async def txt(self, name: str) -> list[str]:
        """The TXT records of `name`, each one string (a DNS list's reason)."""
        return [r for r in await self._lookup(name, "TXT") if isinstance(r, str)]

    async def ptr(self, address: str) -> list[str]:
        """The PTR names of an IP address (the client's reverse name), without the final dot."""
        name = dns.reversename.from_address(address).to_text(omit_final_dot=True)
        return [r for r in await self._lookup(name, "PTR") if isinstance(r, str)]

    # -- the cache ------------------------------------------------------------------------------

    async def _lookup(self, name: str, rdtype: str) -> tuple[object, ...]:
        key = (name.lower().rstrip("."), rdtype)
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and cached.expires > now:
            if cached.error is not None:
                raise type(cached.error)(name, rdtype)
            assert cached.records is not None
            return cached.records
        try:
            records, ttl = await self._query(key[0], rdtype)
        except (NoSuchDomain, NoSuchRecord) as exc:
            if exc.ttl > 0:
                self._store(key, _Cached(now + min(exc.ttl, MAX_TTL), error=exc))
            raise
        if ttl > 0:
            self._store(key, _Cached(now + min(ttl, MAX_TTL), records=records))
        return records

    def _store(self, key: tuple[str, str], entry: _Cached) -> None:
        self._cache[key] = entry
        self._cache.move_to_end(key)
        while len(self._cache) > MAX_ENTRIES:
            self._cache.popitem(last=False)

    async def _query(self, name: str, rdtype: str) -> tuple[tuple[object, ...], float]:
        """One question to the servers: the records and their TTL, or a typed DnsError (a
        negative one carries the TTL it may be kept for as `ttl`)."""
        qname = dns.name.from_text(name)  # absolute: "example.com" is "example.com."
        try:
            answer = await self._resolver.resolve(qname, rdtype, search=False,
                                                  raise_on_no_answer=False)
        except dns.resolver.NXDOMAIN as exc:
            responses = list(exc.responses().values())  # type: ignore[no-untyped-call]
            raise NoSuchDomain(name, rdtype, _negative_ttl(responses[-1]) if responses else 0.0
                               ) from None
        except (dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout,
                dns.resolver.NoAnswer, dns.exception.DNSException, OSError):
            # SERVFAIL/REFUSED from every server, no reply in time, a broken reply.
            raise TemporaryDnsError(name, rdtype) from None
        if answer.rrset is None:
            raise NoSuchRecord(name, rdtype, _negative_ttl(answer.response))
        ttl = float(answer.chaining_result.minimum_ttl)
        records: list[object] = []
        for rdata in answer.rrset:
            if rdtype == "TXT":
                records.append(b"".join(rdata.strings).decode("utf-8", "replace"))
            elif rdtype == "PTR":
                records.append(rdata.target.to_text(omit_final_dot=True).lower())
            elif rdtype == "MX":
                exchange = rdata.exchange
                host = "" if exchange == dns.name.root else exchange.to_text(omit_final_dot=True)
                records.append(MxRecord(int(rdata.preference), host.lower()))
            else:
                records.append(ipaddress.ip_address(rdata.address))
        return tuple(records), ttl


def _negative_ttl(response: dns.message.Message) -> float:
    """RFC 2308 5: a negative answer lives min(SOA TTL, SOA MINIMUM); none without an SOA."""
    for rrset in response.authority:
        if rrset.rdtype == dns.rdatatype.SOA:
            return float(min(rrset.ttl, *(rdata.minimum for rdata in rrset)))
    return 0.0
