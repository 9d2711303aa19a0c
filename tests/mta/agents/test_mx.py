"""Server order and loop checks of the smtp agent, without DNS: the pure half of mx.py."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from sealmail.mta.agents.mx import (
    LookupFailure,
    Server,
    ServerPolicy,
    _cut_at_self,
    local_addresses,
    order,
    servers,
)
from sealmail.mta.dns import MxRecord


def s(host: str, address: str, preference: int) -> Server:
    return Server(host, address, 25, preference)


FOUND = [s("b", "192.0.2.2", 20), s("a6", "2001:db8::1", 10), s("a", "192.0.2.1", 10),
         s("c", "192.0.2.3", 30)]


def test_by_preference_then_family() -> None:
    policy = ServerPolicy(randomize=False, preference="ipv4")
    assert [x.host for x in order(FOUND, policy)] == ["a", "a6", "b", "c"]
    policy = ServerPolicy(randomize=False, preference="ipv6")
    assert [x.host for x in order(FOUND, policy)] == ["a6", "a", "b", "c"]


def test_address_limit() -> None:
    policy = ServerPolicy(randomize=False, address_limit=2)
    assert len(order(FOUND, policy)) == 2
    assert len(order(FOUND, ServerPolicy(randomize=False, address_limit=0))) == 4


def test_shuffle_stays_within_a_preference() -> None:
    for seed in range(20):
        policy = ServerPolicy(rng=random.Random(seed))
        ordered = order(FOUND, policy)
        assert [x.preference for x in ordered] == [10, 10, 20, 30]


def test_cut_at_self() -> None:
    mine = ServerPolicy(own_addresses=frozenset({"192.0.2.2"}))
    kept = _cut_at_self(sorted(FOUND, key=lambda x: x.preference), mine, "example.com", 10)
    assert {x.host for x in kept} == {"a", "a6"}  # better than us; us and worse are gone
    with pytest.raises(LookupFailure) as loop:
        _cut_at_self([s("me", "192.0.2.2", 10)], mine, "example.com", 10)
    assert (loop.value.dsn, loop.value.text) == (
        "5.4.6", "mail for example.com loops back to myself")
    with pytest.raises(LookupFailure) as primary:
        _cut_at_self([s("me", "192.0.2.2", 20)], mine, "example.com", 10)
    assert (primary.value.dsn, primary.value.text) == (
        "4.4.4", "unable to find primary relay for example.com")


def test_literal_loops_only_on_port_25() -> None:
    policy = ServerPolicy(own_addresses=frozenset({"127.0.0.1"}))
    with pytest.raises(LookupFailure, match=r"mail for \[127.0.0.1\] loops back to myself"):
        asyncio.run(servers("127.0.0.1", 25, explicit=True, policy=policy, resolver=None))
    found = asyncio.run(servers("127.0.0.1", 2525, explicit=True, policy=policy, resolver=None))
    assert found == [Server("127.0.0.1", "127.0.0.1", 2525)]


def test_local_addresses(tmp_path: Path) -> None:
    (tmp_path / "fib_trie").write_text(
        "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n"
        "     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.0\n           /8 host LOCAL\n"
        "        |-- 127.0.0.1\n           /32 host LOCAL\n"
        "     |-- 192.0.2.7\n        /32 host LOCAL\n     |-- 192.0.2.255\n"
        "        /32 link BROADCAST\n")
    (tmp_path / "if_inet6").write_text(
        "00000000000000000000000000000001 01 80 10 80       lo\n"
        "20010db8000000000000000000000007 02 40 00 80     eth0\n")
    assert local_addresses(["all"], tmp_path) == {"127.0.0.1", "192.0.2.7", "::1",
                                                   "2001:db8::7"}
    assert local_addresses(["loopback-only"], tmp_path) == {"127.0.0.1", "::1"}
    assert local_addresses(["192.0.2.9", "[::1]", "mail.example"], tmp_path) == {
        "192.0.2.9", "::1"}
    assert local_addresses(["all"], tmp_path / "missing") == {"127.0.0.1", "::1"}


def test_an_mx_host_written_as_an_address_is_used_as_is() -> None:
    class OneMx:
        async def mx(self, domain: str) -> list[MxRecord]:
            return [MxRecord(10, "192.0.2.5")]

    found = asyncio.run(servers("example.com", 25, explicit=False, policy=ServerPolicy(),
                                resolver=OneMx()))  # type: ignore[arg-type]
    assert found == [Server("192.0.2.5", "192.0.2.5", 25, 10)]
