"""The TLS policy of the smtp/lmtp clients, without a network: policy table values, keys,
protocol lists, and Postfix's certificate name checks."""

from __future__ import annotations

import ssl

import pytest

from sealmail.mta.agents.tls_policy import (
    Defaults,
    TlsPolicy,
    TlsPolicyError,
    client_context,
    global_policy,
    lookup_policy,
    matches,
    parse_policy,
    policy_keys,
    protocol_range,
)

DEFAULTS = Defaults(protocols=("!SSLv2", "!SSLv3"), mandatory_protocols=(">=TLSv1.2",))


def test_global_levels_take_main_cf_defaults() -> None:
    assert global_policy("", DEFAULTS) == TlsPolicy("none")
    assert global_policy("may", DEFAULTS) == TlsPolicy("may", (), ("!SSLv2", "!SSLv3"))
    assert global_policy("VERIFY", DEFAULTS) == TlsPolicy("verify", ("hostname",), (">=TLSv1.2",))
    assert global_policy("secure", DEFAULTS).match == ("nexthop", "dot-nexthop")


@pytest.mark.parametrize("level", ["dane", "dane-only", "fingerprint"])
def test_dane_is_refused_by_name(level: str) -> None:
    with pytest.raises(TlsPolicyError, match=f"{level} is not implemented"):
        global_policy(level, DEFAULTS)


@pytest.mark.parametrize(("text", "expected"), [
    ("none", TlsPolicy("none")),
    ("none match=x", TlsPolicy("none")),  # Postfix ignores attributes with TLS off
    ("encrypt", TlsPolicy("encrypt", (), (">=TLSv1.2",))),
    ("may protocols=!SSLv3", TlsPolicy("may", (), ("!SSLv3",))),
    ("verify match=hostname:nexthop", TlsPolicy("verify", ("hostname", "nexthop"),
                                                (">=TLSv1.2",))),
    ("secure match=.example.com, match=mx.example.net servername=hostname",
     TlsPolicy("secure", (".example.com", "mx.example.net"), (">=TLSv1.2",), "hostname")),
    ("Verify protocols=>=TLSv1.3", TlsPolicy("verify", ("hostname",), (">=TLSv1.3",))),
])
def test_policy_values(text: str, expected: TlsPolicy) -> None:
    assert parse_policy(text, "t", DEFAULTS) == expected


@pytest.mark.parametrize(("text", "why"), [
    ("", "invalid empty policy"),
    ("must", "not a TLS security level"),
    ("dane", "dane is not implemented"),
    ("may match=x", 'attribute "match" invalid at security level "may"'),
    ("verify ciphers=high", "'ciphers' is not implemented"),
    ("verify exclude=3DES", "'exclude' is not implemented"),
    ("verify match", "malformed attribute/value pair"),
    ("verify match=", "malformed attribute/value pair"),
    ("encrypt protocols=TLSv9", "unknown TLS protocol"),
])
def test_bad_policy_values_are_refused(text: str, why: str) -> None:
    with pytest.raises(TlsPolicyError, match=why) as raised:
        parse_policy(text, "hash:/etc/tls_policy, next-hop destination \"x\"", DEFAULTS)
    assert str(raised.value).startswith("hash:/etc/tls_policy")


def test_policy_keys_walk_parent_domains_only_for_plain_domains() -> None:
    assert policy_keys("mail.example.com") == ["mail.example.com", ".example.com", ".com"]
    assert policy_keys("[mx.example.com]:587") == ["[mx.example.com]:587"]
    assert policy_keys("example.com:2525") == ["example.com:2525"]


def test_lookup_first_key_first_table() -> None:
    first = {".example.com": "encrypt"}
    second = {"mail.example.com": "verify", ".com": "none"}
    tables = [("t1", first.get), ("t2", second.get)]
    default = TlsPolicy("may")
    assert lookup_policy("mail.example.com", tables, default, DEFAULTS).level == "verify"
    assert lookup_policy("x.example.com", tables, default, DEFAULTS).level == "encrypt"
    assert lookup_policy("other.org", tables, default, DEFAULTS) is default


@pytest.mark.parametrize(("words", "expected"), [
    ([], (None, None)),
    ([">=TLSv1"], (ssl.TLSVersion.TLSv1, None)),
    ([">=TLSv1.2", "<=TLSv1.2"], (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2)),
    (["!SSLv2, !SSLv3"], (ssl.TLSVersion.TLSv1, None)),
    (["!SSLv2:!SSLv3:!TLSv1:!TLSv1.1"], (ssl.TLSVersion.TLSv1_2, None)),
    (["TLSv1.2 TLSv1.3"], (ssl.TLSVersion.TLSv1_2, None)),
    (["!TLSv1.3"], (None, ssl.TLSVersion.TLSv1_2)),
])
def test_protocol_lists(words: list[str], expected: tuple[object, object]) -> None:
    assert protocol_range(words) == expected


def test_protocol_list_that_leaves_nothing_is_refused() -> None:
    with pytest.raises(TlsPolicyError, match="leave no version"):
        protocol_range([">=TLSv1.3", "<=TLSv1.2"])
    with pytest.raises(TlsPolicyError, match=r"TLSv1\.2 on"):
        client_context(verify=False, cafile="", capath="", append_default_ca=False,
                       protocols=["<=TLSv1.1"])


def test_context_floor_and_verification() -> None:
    context = client_context(verify=True, cafile="", capath="", append_default_ca=False,
                             protocols=[">=TLSv1.3"])
    assert context.verify_mode is ssl.CERT_REQUIRED and not context.check_hostname
    assert context.minimum_version is ssl.TLSVersion.TLSv1_3
    loose = client_context(verify=False, cafile="", capath="", append_default_ca=False,
                           protocols=[">=TLSv1"])
    assert loose.verify_mode is ssl.CERT_NONE
    assert loose.minimum_version >= ssl.TLSVersion.TLSv1_2  # never below Python's floor


def cert(*dns: str, cn: str = "", ips: tuple[str, ...] = ()) -> dict[str, object]:
    alt = tuple(("DNS", d) for d in dns) + tuple(("IP Address", i) for i in ips)
    return {"subject": ((("commonName", cn),),) if cn else (), "subjectAltName": alt}


@pytest.mark.parametrize(("strategies", "peer", "ok"), [
    (["hostname"], cert("mx.example.com"), True),
    (["hostname"], cert("MX.Example.COM."), True),
    (["hostname"], cert("other.example.com"), False),
    (["hostname"], cert("*.example.com"), True),
    (["hostname"], cert("*.com"), False),  # one label only: *.com is not mx.example.com
    (["nexthop"], cert("example.com"), True),
    (["nexthop"], cert("mx.example.com"), False),
    (["dot-nexthop"], cert("mx.example.com"), True),
    (["dot-nexthop"], cert("example.com"), False),  # a proper subdomain only
    (["nexthop", "dot-nexthop"], cert("example.com"), True),
    ([".example.com"], cert("a.b.example.com"), True),
    (["mx.example.net"], cert("mx.example.net"), True),
    # The CommonName counts only without DNS subjectAltNames (Postfix, RFC 6125).
    (["hostname"], cert(cn="mx.example.com"), True),
    (["hostname"], cert("x.example.com", cn="mx.example.com"), False),
])
def test_certificate_names(strategies: list[str], peer: dict[str, object], ok: bool) -> None:
    assert matches(strategies, peer, hostname="mx.example.com", nexthop="example.com") is ok


def test_address_literal_matches_an_ip_subject_alt_name() -> None:
    peer = cert("localhost", ips=("127.0.0.1",))
    assert matches(["hostname"], peer, hostname="127.0.0.1", nexthop="127.0.0.1")
    assert not matches(["hostname"], peer, hostname="127.0.0.2", nexthop="127.0.0.2")
