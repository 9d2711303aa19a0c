"""Address classes, transport_maps and recipient batches (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.routing import (
    AddressClass,
    Route,
    Router,
    RoutingPolicy,
    batches,
    group_by_route,
)


def config(text: str) -> MainConfig:
    return MainConfig.from_document(parse_main_cf(text), hostname="mx.example.com")


def policy(text: str = "") -> RoutingPolicy:
    return RoutingPolicy.from_config(config(
        "mydestination = $myhostname, example.com\ninet_interfaces = 127.0.0.1\n"
        "relay_domains = relay.test\nvirtual_mailbox_domains = vmail.test\n"
        "virtual_alias_domains = alias.test\nrecipient_delimiter = +\n" + text))


def test_address_classes() -> None:
    p = policy()
    assert p.address_class("EXAMPLE.com") is AddressClass.LOCAL
    assert p.address_class("mx.example.com") is AddressClass.LOCAL
    assert p.address_class("[127.0.0.1]") is AddressClass.LOCAL
    assert p.address_class("alias.test") is AddressClass.VIRTUAL_ALIAS
    assert p.address_class("vmail.test") is AddressClass.VIRTUAL_MAILBOX
    assert p.address_class("relay.test") is AddressClass.RELAY
    assert p.address_class("sub.relay.test") is AddressClass.RELAY  # parent_domain_matches...
    assert p.address_class("elsewhere.test") is AddressClass.DEFAULT
    assert not p.is_authorized_destination("elsewhere.test")
    assert p.is_authorized_destination("relay.test")


def test_class_transports_and_nexthops() -> None:
    p = policy("local_transport = cyrus:unix:/var/imap/socket/lmtp\nrelayhost = [gw.test]:2525\n")
    router = Router(p)
    assert router.route("bob@example.com") == Route(
        "cyrus", "unix:/var/imap/socket/lmtp", AddressClass.LOCAL)
    assert router.route("x@relay.test") == Route("relay", "[gw.test]:2525", AddressClass.RELAY)
    assert router.route("x@far.test") == Route("smtp", "[gw.test]:2525", AddressClass.DEFAULT)
    assert router.route("x@vmail.test") == Route("virtual", "vmail.test",
                                                 AddressClass.VIRTUAL_MAILBOX)
    assert router.route("x@alias.test").transport == "error"


def test_seed_local_transport_inet_form() -> None:
    # CYRUS_README section 6: local_transport=cyrus-inet:inet:cyrus.example.com:lmtp
    p = policy("local_transport = cyrus-inet:inet:cyrus.example.com:lmtp\n")
    assert Router(p).route("bob@example.com") == Route(
        "cyrus-inet", "inet:cyrus.example.com:lmtp", AddressClass.LOCAL)


def test_default_local_transport_nexthop_is_myhostname() -> None:
    assert Router(policy()).route("bob@example.com") == Route(
        "local", "mx.example.com", AddressClass.LOCAL)


def table(entries: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda key: entries.get(key.lower())


def test_transport_maps_search_order() -> None:
    p = policy()
    maps = table({
        "bob+list@example.com": "lmtp:unix:/ext",
        "bob@example.com": "lmtp:unix:/bob",
        "carol@": "lmtp:unix:/carol",
        "far.test": "smtp:[far-gw]",
        ".sub.test": "smtp:[sub-gw]",
        "*": "error:5.7.1 nothing else",
    })
    router = Router(p, [maps])
    assert router.route("bob+list@example.com").nexthop == "unix:/ext"
    assert router.route("bob+other@example.com").nexthop == "unix:/bob"
    assert router.route("carol@example.com").nexthop == "unix:/carol"
    assert router.route("carol@far.test").nexthop == "[far-gw]"  # user@ only for local domains
    assert router.route("x@a.sub.test").nexthop == "[sub-gw]"
    assert router.route("x@sub.test").transport == "error"  # .sub.test: subdomains only
    assert router.route("x@zzz.test") == Route("error", "5.7.1 nothing else",
                                               AddressClass.DEFAULT)


def test_transport_map_partial_results() -> None:
    p = policy()
    router = Router(p, [table({"a.test": ":[only-nexthop]", "b.test": "lmtp:",
                               "example.com": "cyrus"})])
    assert router.route("x@a.test") == Route("smtp", "[only-nexthop]", AddressClass.DEFAULT)
    assert router.route("x@b.test") == Route("lmtp", "b.test", AddressClass.DEFAULT)
    assert router.route("x@example.com") == Route("cyrus", "example.com", AddressClass.LOCAL)


@pytest.mark.parametrize(("count", "limit", "sizes"), [
    (5, 2, [2, 2, 1]),  # the proof: a limit of 2 for 5 recipients makes 3 requests
    (5, 50, [5]),
    (100, 50, [50, 50]),
    (3, 1, [1, 1, 1]),
    (3, 0, [3]),
    (0, 2, []),
])
def test_batches(count: int, limit: int, sizes: list[int]) -> None:
    items = list(range(count))
    made = batches(items, limit)
    assert [len(b) for b in made] == sizes
    assert [i for b in made for i in b] == items


def test_group_by_route_keeps_order() -> None:
    a = Route("lmtp", "unix:/a", AddressClass.LOCAL)
    b = Route("smtp", "[b]", AddressClass.DEFAULT)
    groups = group_by_route([(a, 1), (b, 2), (a, 3)])
    assert groups == {("lmtp", "unix:/a"): [1, 3], ("smtp", "[b]"): [2]}


@given(st.text(max_size=80))
def test_route_never_crashes(address: str) -> None:
    router = Router(policy(), [table({"*": "smtp:[gw]"})])
    route = router.route(address)
    assert route.transport in ("smtp", "error")
