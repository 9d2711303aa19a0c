"""sealmail.mta.dns against a real authoritative server (nsd) with a test zone, and a fake clock
for the cache: answers are kept for their TTL (at most MAX_TTL), negative answers for the SOA's
negative TTL, temporary failures not at all."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.peers import NsdInstance, PeerUnavailable, traversable_tmpdir

from sealmail.mta.dns import (
    MAX_TTL,
    DnsUnavailable,
    MxRecord,
    NoSuchDomain,
    NoSuchRecord,
    NullMx,
    Resolver,
    TemporaryDnsError,
)

ZONE = """
@ IN MX 20 b.dns.test.
@ IN MX 10 A.dns.test.
a IN A 192.0.2.1
b IN A 192.0.2.2
b IN AAAA 2001:db8::2
six IN AAAA 2001:db8::6
null IN MX 0 .
long 86400 IN A 192.0.2.9
"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def nsd() -> Iterator[NsdInstance]:
    with traversable_tmpdir("smdns-") as root:
        server = NsdInstance(root, {"dns.test": ZONE, "broken.test": None})
        try:
            server.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            yield server
        finally:
            server.stop()


def resolver(nsd: NsdInstance, clock: Clock | None = None) -> Resolver:
    return Resolver(str(nsd.resolv_conf), clock=clock or Clock())


def test_mx_by_preference(nsd: NsdInstance) -> None:
    records = asyncio.run(resolver(nsd).mx("dns.test"))
    assert records == [MxRecord(10, "a.dns.test"), MxRecord(20, "b.dns.test")]


def test_null_mx(nsd: NsdInstance) -> None:
    with pytest.raises(NullMx, match=r"Domain null\.dns\.test does not accept mail \(nullMX\)"):
        asyncio.run(resolver(nsd).mx("null.dns.test"))


def test_addresses_both_families(nsd: NsdInstance) -> None:
    found = asyncio.run(resolver(nsd).addresses("b.dns.test"))
    assert found == [ipaddress.ip_address("192.0.2.2"), ipaddress.ip_address("2001:db8::2")]
    assert asyncio.run(resolver(nsd).addresses("six.dns.test", (4, 6))) == [
        ipaddress.ip_address("2001:db8::6")]


def test_failures_in_postfix_words(nsd: NsdInstance) -> None:
    r = resolver(nsd)
    with pytest.raises(NoSuchDomain) as nx:
        asyncio.run(r.mx("nosuch.dns.test"))
    assert nx.value.text == ("Host or domain name not found. Name service error for "
                             "name=nosuch.dns.test type=MX: Host not found")
    with pytest.raises(NoSuchRecord):
        asyncio.run(r.mx("a.dns.test"))
    with pytest.raises(NoSuchRecord):
        asyncio.run(r.addresses("dns.test"))
    with pytest.raises(TemporaryDnsError) as servfail:
        asyncio.run(r.mx("broken.test"))
    assert servfail.value.text.endswith("type=MX: Host not found, try again")


def test_cache_keeps_answers_for_their_ttl(nsd: NsdInstance) -> None:
    clock = Clock()
    r = resolver(nsd, clock)

    async def go() -> None:
        assert await r.addresses("a.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.1")]
        assert await r.addresses("long.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.9")]
        with pytest.raises(NoSuchDomain):
            await r.addresses("new.dns.test", (4,))
        with pytest.raises(TemporaryDnsError):
            await r.mx("broken.test")
        await asyncio.to_thread(nsd.set_zone, "dns.test", ZONE.replace("192.0.2.1", "192.0.2.11")
                                .replace("192.0.2.9", "192.0.2.19") + "new IN A 192.0.2.3\n")
        await asyncio.to_thread(nsd.set_zone, "broken.test", "@ IN MX 10 a.dns.test.")
        clock.now += 59
        assert await r.addresses("a.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.1")]
        with pytest.raises(NoSuchDomain):  # the SOA's negative TTL is 60 s (RFC 2308)
            await r.addresses("new.dns.test", (4,))
        assert await r.mx("broken.test") == [MxRecord(10, "a.dns.test")]  # never kept
        clock.now += 2
        assert await r.addresses("new.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.3")]
        clock.now += 240  # 301 s: past the zone's $TTL 300
        assert await r.addresses("a.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.11")]
        assert await r.addresses("long.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.9")]
        clock.now += MAX_TTL  # a day's TTL is kept MAX_TTL at most
        assert await r.addresses("long.dns.test", (4,)) == [ipaddress.ip_address("192.0.2.19")]

    try:
        asyncio.run(go())
    finally:
        nsd.set_zone("dns.test", ZONE)
        nsd.set_zone("broken.test", None)


def test_missing_resolv_conf(tmp_path: Path) -> None:
    with pytest.raises(DnsUnavailable):
        Resolver(str(tmp_path / "resolv.conf"))
    (tmp_path / "resolv.conf").write_text("# no servers\n")
    with pytest.raises(DnsUnavailable):
        Resolver(str(tmp_path / "resolv.conf"))
