"""The restriction engine without sockets: each stage, Postfix's evaluation order and its reply
texts, warn_if_reject / defer_if_permit / defer_if_reject, access-table actions, restriction
classes, and the DNS checks against a fake resolver (the real one is in test_dns_checks)."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.dns import MxRecord, NoSuchDomain, NoSuchRecord, NullMx, TemporaryDnsError
from sealmail.mta.restrictions import ClientNames, Engine, Facts, NameStatus, Session

BASE = "myhostname = mx.example.com\nmydestination = example.com\nmynetworks = 10.0.0.0/8\n"


class FakeResolver:
    """Answers from dicts; a name missing is NXDOMAIN, a name mapped to "temp" SERVFAILs."""

    def __init__(self, a: dict[str, object] | None = None, mx: dict[str, object] | None = None,
                 txt: dict[str, list[str]] | None = None) -> None:
        self.a, self.mx_records, self.txt_records = a or {}, mx or {}, txt or {}

    async def addresses(self, host: str, families: object = (4, 6)) -> list[object]:
        found = self.a.get(host)
        if found == "temp":
            raise TemporaryDnsError(host, "A")
        if found is None:
            raise NoSuchDomain(host, "A")
        return [ipaddress.ip_address(found)]

    async def mx(self, domain: str) -> list[MxRecord]:
        found = self.mx_records.get(domain)
        if found == "temp":
            raise TemporaryDnsError(domain, "MX")
        if found == "null":
            raise NullMx(domain)
        if found is None:
            raise NoSuchRecord(domain, "MX")
        return [MxRecord(10, str(found))]

    async def txt(self, name: str) -> list[str]:
        return self.txt_records.get(name, [])

    async def ptr(self, address: str) -> list[str]:
        raise NoSuchDomain(address, "PTR")


def engine(main_cf: str, resolver: FakeResolver | None = None) -> Engine:
    config = MainConfig.from_document(parse_main_cf(BASE + main_cf), hostname="mx.example.com")
    return Engine.from_config(config, resolver=resolver or FakeResolver())


def session(main_cf: str, *, address: str = "192.0.2.1", helo: str | None = "client.test",
            sender: str | None = "alice@sender.test", resolver: FakeResolver | None = None,
            **facts: object) -> Session:
    facts.setdefault("where", "RCPT")
    return engine(main_cf, resolver).session(
        Facts(client_address=address, helo=helo, sender=sender, protocol="ESMTP",
              **facts))  # type: ignore[arg-type]


def rcpt(s: Session, recipient: str = "bob@example.com") -> str | None:
    reply = asyncio.run(s.rcpt(recipient))
    return None if reply is None else reply.render().decode().strip()


@pytest.fixture
def table(tmp_path: Path):  # type: ignore[no-untyped-def]
    def make(text: str) -> str:
        path = tmp_path / f"t{len(list(tmp_path.iterdir()))}"
        path.write_text(text)
        return f"texthash:{path}"
    return make


# Each stage's refusal, as Postfix words it (the delayed stages answer at RCPT).
@pytest.mark.parametrize(("main_cf", "facts", "recipient", "expected"), [
    ("smtpd_client_restrictions = check_client_access inline:{192.0.2.1=REJECT}", {},
     "bob@example.com", "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied"),
    ("smtpd_client_restrictions = reject", {}, "bob@example.com",
     "554 5.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied"),
    ("smtpd_client_restrictions = 192.0.2.0/24", {}, "bob@example.com",
     "451 4.3.5 Server configuration error"),  # a bare word that is no check
    ("smtpd_client_restrictions = inline:{192.0.2=DEFER}", {}, "bob@example.com",
     "450 4.7.1 <unknown[192.0.2.1]>: Client host rejected: Access denied"),
    ("smtpd_helo_restrictions = reject_non_fqdn_helo_hostname", {"helo": "client"},
     "bob@example.com", "504 5.5.2 <client>: Helo command rejected: need fully-qualified hostname"),
    ("smtpd_helo_restrictions = reject_invalid_helo_hostname", {"helo": "a..b"},
     "bob@example.com", "501 5.5.2 <a..b>: Helo command rejected: Invalid name"),
    ("smtpd_helo_restrictions = reject_invalid_helo_hostname", {"helo": "[300.1.1.1]"},
     "bob@example.com", "501 5.5.2 <[300.1.1.1]>: Helo command rejected: invalid ip address"),
    ("smtpd_helo_restrictions = reject_non_fqdn_helo_hostname", {"helo": "[192.0.2.1]"},
     "bob@example.com", None),
    ("smtpd_helo_restrictions = check_helo_access inline:{test=REJECT}", {},
     "bob@example.com", "554 5.7.1 <client.test>: Helo command rejected: Access denied"),
    ("smtpd_sender_restrictions = reject_non_fqdn_sender", {"sender": "alice@localhost"},
     "bob@example.com",
     "504 5.5.2 <alice@localhost>: Sender address rejected: need fully-qualified address"),
    ("smtpd_sender_restrictions = reject_non_fqdn_sender", {"sender": ""}, "bob@example.com",
     None),
    ("smtpd_sender_restrictions = check_sender_access inline:{<>=REJECT}", {"sender": ""},
     "bob@example.com", "554 5.7.1 <>: Sender address rejected: Access denied"),
    ("smtpd_sender_restrictions = check_sender_access inline:{sender.test=REJECT}", {},
     "bob@example.com", "554 5.7.1 <alice@sender.test>: Sender address rejected: Access denied"),
    ("smtpd_sender_restrictions = check_sender_access inline:{alice@=REJECT}", {},
     "bob@example.com", "554 5.7.1 <alice@sender.test>: Sender address rejected: Access denied"),
    ("smtpd_recipient_restrictions = reject_non_fqdn_recipient, permit", {"address": "10.0.0.1"},
     "bob@example",
     "504 5.5.2 <bob@example>: Recipient address rejected: need fully-qualified address"),
    ("", {}, "bob@else.test", "454 4.7.1 <bob@else.test>: Relay access denied"),
    ("smtpd_relay_restrictions = reject_unauth_destination", {}, "bob@else.test",
     "554 5.7.1 <bob@else.test>: Relay access denied"),
    ("", {"address": "10.1.2.3"}, "bob@else.test", None),  # permit_mynetworks
    ("", {"sasl_username": "alice"}, "bob@else.test", None),  # permit_sasl_authenticated
    ("relay_domains_reject_code = 550\nsmtpd_relay_restrictions = reject_unauth_destination",
     {}, "bob@else.test", "550 5.7.1 <bob@else.test>: Relay access denied"),
    ("smtpd_client_restrictions = reject", {}, "postmaster", None),  # always accepted
    ("smtpd_recipient_restrictions = reject", {}, "bob@example.com",
     "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    ("smtpd_recipient_restrictions = defer", {}, "bob@example.com",
     "450 4.3.2 <bob@example.com>: Recipient address rejected: Try again later"),
    ("soft_bounce = yes\nsmtpd_recipient_restrictions = reject", {}, "bob@example.com",
     "454 4.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    ("smtpd_recipient_restrictions = check_nonsense", {}, "bob@example.com",
     "451 4.3.5 Server configuration error"),
    ("smtpd_recipient_restrictions = reject_unauth_pipelining", {"ill_pipelining": True},
     "bob@example.com",
     "503 5.5.0 <bob@example.com>: Recipient address rejected: Improper use of SMTP command "
     "pipelining"),
    ("smtpd_recipient_restrictions = reject_plaintext_session", {}, "bob@example.com",
     "450 4.7.1 Session encryption is required"),
    ("smtpd_recipient_restrictions = reject_plaintext_session", {"tls_protocol": "TLSv1.3"},
     "bob@example.com", None),
    # A stage's permit ends only that stage: the recipient's lists still run.
    ("smtpd_client_restrictions = permit\nsmtpd_recipient_restrictions = reject", {},
     "bob@example.com", "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    # warn_if_reject: the next check only warns.
    ("smtpd_recipient_restrictions = warn_if_reject reject", {}, "bob@example.com", None),
    ("smtpd_recipient_restrictions = warn_if_reject reject_non_fqdn_recipient reject", {},
     "bob@example.com",
     "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    # defer_if_permit: a later permit becomes 450; defer_if_reject: a later 5xx becomes 450.
    ("smtpd_client_restrictions = defer_if_permit\nsmtpd_recipient_restrictions = permit", {},
     "bob@example.com",
     "450 4.7.0 <unknown[192.0.2.1]>: Client host rejected: defer_if_permit requested"),
    ("smtpd_recipient_restrictions = defer_if_permit reject", {}, "bob@example.com",
     "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    ("smtpd_recipient_restrictions = defer_if_reject reject", {}, "bob@example.com",
     "450 4.7.0 <bob@example.com>: Recipient address rejected: defer_if_reject requested"),
    ("smtpd_recipient_restrictions = defer_if_reject permit", {}, "bob@example.com", None),
    ("smtpd_recipient_restrictions = warn_if_reject defer_if_permit permit", {},
     "bob@example.com", None),
    # Restriction classes, named in a list or answered by a table.
    ("smtpd_restriction_classes = strict\nstrict = reject_non_fqdn_sender, reject\n"
     "smtpd_sender_restrictions = strict", {}, "bob@example.com",
     "554 5.7.1 <alice@sender.test>: Sender address rejected: Access denied"),
    ("smtpd_restriction_classes = strict\nstrict = reject\nsmtpd_recipient_restrictions = "
     "check_recipient_access inline:{bob@example.com=strict}", {}, "bob@example.com",
     "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    ("smtpd_recipient_restrictions = check_recipient_access inline:{example.com=hash:/x}", {},
     "bob@example.com", "451 4.3.5 Server configuration error"),
])
def test_stage_replies(main_cf: str, facts: dict[str, object], recipient: str,
                       expected: str | None) -> None:
    assert rcpt(session(main_cf, **facts), recipient) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(("entry", "expected"), [
    ("REJECT", "554 5.7.1 <bob@example.com>: Recipient address rejected: Access denied"),
    ("REJECT 5.7.2 go away", "554 5.7.2 <bob@example.com>: Recipient address rejected: go away"),
    ("DEFER come back later",
     "450 4.7.1 <bob@example.com>: Recipient address rejected: come back later"),
    ("452 4.2.2 mailbox full",
     "452 4.2.2 <bob@example.com>: Recipient address rejected: mailbox full"),
    ("550 not here", "550 5.7.1 <bob@example.com>: Recipient address rejected: not here"),
    ("DEFER_IF_PERMIT maybe",
     "450 4.7.1 <bob@example.com>: Recipient address rejected: maybe"),
    ("OK", None), ("RELAY", None), ("12345", None), ("DUNNO", None), ("WARN look", None),
    ("FILTER smtp:[127.0.0.1]:10025", "451 4.3.5 Server configuration error"),
    ("BCC x@example.com", "451 4.3.5 Server configuration error"),
])
def test_access_table_actions(table, entry: str, expected: str | None) -> None:  # type: ignore[no-untyped-def]
    spec = table(f"bob@example.com {entry}\n")
    assert rcpt(session(f"smtpd_recipient_restrictions = check_recipient_access {spec}")) \
        == expected


def test_actions_for_the_message(table) -> None:  # type: ignore[no-untyped-def]
    spec = table("bob@example.com HOLD held for review\ncarol@example.com PREPEND X-Seen: yes\n"
                 "dave@example.com REDIRECT boss@example.com\n"
                 "erin@example.com PREPEND not a header\n")
    s = session(f"smtpd_recipient_restrictions = check_recipient_access {spec}")
    for recipient in ("bob@example.com", "carol@example.com", "dave@example.com",
                      "erin@example.com"):
        assert rcpt(s, recipient) is None
    assert s.actions.hold == "<bob@example.com>: Recipient address held for review"
    assert s.actions.prepend == ["X-Seen: yes"]
    assert s.actions.redirect == "boss@example.com"
    s.reset_transaction()
    assert not s.actions.hold and not s.actions.prepend


def test_discard_stops_the_lists(table) -> None:  # type: ignore[no-untyped-def]
    spec = table("sender.test DISCARD\n")
    s = session(f"smtpd_sender_restrictions = check_sender_access {spec}, reject")
    assert rcpt(s) is None
    assert s.actions.discard == "<alice@sender.test>: Sender address triggers DISCARD action"


def test_log_lines_are_postfix_s(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sealmail.mta.smtpd")
    rcpt(session("smtpd_recipient_restrictions = warn_if_reject reject_non_fqdn_recipient, "
                 "reject", address="10.0.0.1"), "bob@example")
    assert [r.getMessage() for r in caplog.records] == [
        "NOQUEUE: reject_warning: RCPT from unknown[10.0.0.1]: 504 5.5.2 <bob@example>: "
        "Recipient address rejected: need fully-qualified address; from=<alice@sender.test> "
        "to=<bob@example> proto=ESMTP helo=<client.test>",
        "NOQUEUE: reject: RCPT from unknown[10.0.0.1]: 554 5.7.1 <bob@example>: Recipient "
        "address rejected: Access denied; from=<alice@sender.test> to=<bob@example> "
        "proto=ESMTP helo=<client.test>",
    ]


def test_without_delay_reject_each_stage_answers_at_its_command() -> None:
    lists = ("smtpd_delay_reject = no\nsmtpd_client_restrictions = check_client_access "
             "inline:{192.0.2.9=REJECT}\nsmtpd_helo_restrictions = reject_non_fqdn_helo_hostname\n"
             "smtpd_sender_restrictions = reject_non_fqdn_sender\n")
    refused = session(lists, address="192.0.2.9", helo=None, sender=None, where="CONNECT")
    reply = asyncio.run(refused.connect())
    assert reply is not None and reply.render() == (
        b"554 5.7.1 <unknown[192.0.2.9]>: Client host rejected: Access denied\r\n")
    s = session(lists, helo="x", sender=None)
    assert asyncio.run(s.connect()) is None
    assert asyncio.run(s.helo()) is not None
    s.facts.helo, s.facts.sender = "client.test", "a@b"
    assert asyncio.run(s.helo()) is None
    reply = asyncio.run(s.mail())
    assert reply is not None and reply.code == 504
    s.facts.sender = "a@b.test"
    assert asyncio.run(s.mail()) is None
    assert rcpt(s) is None  # not evaluated again at RCPT


def test_data_and_end_of_data_stages() -> None:
    s = session("smtpd_data_restrictions = reject_unauth_pipelining\n"
                "smtpd_end_of_data_restrictions = reject_multi_recipient_bounce",
                sender="", where="DATA", ill_pipelining=True)
    reply = asyncio.run(s.data())
    assert reply is not None and reply.render() == (
        b"503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining\r\n")
    s.facts.where, s.facts.recipient_count = "END-OF-MESSAGE", 2
    reply = asyncio.run(s.end_of_data())
    assert reply is not None and reply.render() == (
        b"550 5.5.3 <END-OF-MESSAGE>: End-of-data rejected: Multi-recipient bounce\r\n")


def test_unlisted_recipient_and_sender(tmp_path: Path) -> None:
    users = tmp_path / "users"
    users.write_text("bob x\n")
    cf = f"local_recipient_maps = texthash:{users}\nsmtpd_reject_unlisted_sender = yes\n"
    assert rcpt(session(cf)) is None
    assert rcpt(session(cf), "eve@example.com") == (
        "550 5.1.1 <eve@example.com>: Recipient address rejected: User unknown in local "
        "recipient table")
    assert rcpt(session(cf, sender="eve@example.com")) == (
        "550 5.1.0 <eve@example.com>: Sender address rejected: User unknown in local "
        "recipient table")
    assert rcpt(session(cf + "smtpd_reject_unlisted_recipient = no"), "eve@example.com") is None


# -- DNS checks, with a fake resolver ----------------------------------------------------------

RESOLVER = FakeResolver(
    a={"mx.sender.test": "192.0.2.5", "client.test": "192.0.2.1",
       "1.2.0.192.zen.test": "127.0.0.2", "1.2.0.192.wl.test": "127.0.0.5",
       "1.2.0.192.low.test": "127.0.0.9", "bad.test.dbl.test": "127.0.1.2",
       "temp.test": "temp"},
    mx={"sender.test": "mx.sender.test", "null.test": "null", "temp.test": "temp"},
    txt={"1.2.0.192.zen.test": ["listed: see https://zen.test/"]})


@pytest.mark.parametrize(("main_cf", "facts", "expected"), [
    ("smtpd_sender_restrictions = reject_unknown_sender_domain", {}, None),
    ("smtpd_sender_restrictions = reject_unknown_sender_domain", {"sender": "a@nx.test"},
     "450 4.1.8 <a@nx.test>: Sender address rejected: Domain not found"),
    ("unknown_address_reject_code = 550\n"
     "smtpd_sender_restrictions = reject_unknown_sender_domain", {"sender": "a@nx.test"},
     "550 5.1.8 <a@nx.test>: Sender address rejected: Domain not found"),
    ("smtpd_sender_restrictions = reject_unknown_sender_domain", {"sender": "a@null.test"},
     "550 5.7.27 <a@null.test>: Sender address rejected: Domain null.test does not accept "
     "mail (nullMX)"),
    # The DNS failed: a later permit is deferred, a later reject still refuses.
    ("smtpd_sender_restrictions = reject_unknown_sender_domain", {"sender": "a@temp.test"},
     "450 4.1.8 <a@temp.test>: Sender address rejected: Domain not found"),
    ("unknown_address_tempfail_action = defer\n"
     "smtpd_sender_restrictions = reject_unknown_sender_domain", {"sender": "a@temp.test"},
     "450 4.1.8 <a@temp.test>: Sender address rejected: Domain not found"),
    ("smtpd_sender_restrictions = reject_unknown_sender_domain, reject",
     {"sender": "a@temp.test"},
     "554 5.7.1 <a@temp.test>: Sender address rejected: Access denied"),
    ("smtpd_helo_restrictions = reject_unknown_helo_hostname", {}, None),
    ("smtpd_helo_restrictions = reject_unknown_helo_hostname", {"helo": "nx.test"},
     "450 4.7.1 <nx.test>: Helo command rejected: Host not found"),
    ("smtpd_client_restrictions = reject_rbl_client zen.test", {},
     "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.test; "
     "listed: see https://zen.test/"),
    ("smtpd_client_restrictions = reject_rbl_client zen.test=127.0.0.3", {}, None),
    ("smtpd_client_restrictions = reject_rbl_client low.test=127.0.0.[2..10]", {},
     "554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using low.test"),
    ("maps_rbl_reject_code = 450\nsmtpd_client_restrictions = reject_rbl_client zen.test",
     {"address": "192.0.2.2"}, None),
    ("smtpd_client_restrictions = permit_dnswl_client wl.test, reject_rbl_client zen.test",
     {}, None),
    ("smtpd_sender_restrictions = reject_rhsbl_sender dbl.test", {"sender": "a@bad.test"},
     "554 5.7.1 Service unavailable; Sender address [a@bad.test] blocked using dbl.test"),
    ("smtpd_recipient_restrictions = reject_unknown_recipient_domain", {}, None),
])
def test_dns_checks(main_cf: str, facts: dict[str, object], expected: str | None) -> None:
    recipient = "bob@sender.test" if "recipient_domain" in main_cf else "bob@example.com"
    cf = main_cf + ("\nrelay_domains = sender.test" if "recipient_domain" in main_cf else "")
    s = session(cf, resolver=RESOLVER, **facts)  # type: ignore[arg-type]
    assert rcpt(s, recipient) == expected


@pytest.mark.parametrize(("status", "expected"), [
    (NameStatus.OK, None),
    (NameStatus.TEMPORARY,
     "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]"),
    (NameStatus.FORGED,
     "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.1]"),
])
def test_unknown_client_hostname(status: NameStatus, expected: str | None) -> None:
    names = ClientNames("client.test" if status is NameStatus.OK else "unknown", status,
                        "client.test", NameStatus.OK)
    s = session("smtpd_client_restrictions = reject_unknown_client_hostname", names=names)
    assert rcpt(s) == expected


# -- never an open relay, whatever else the lists say ------------------------------------------

PURE = ["permit", "dunno", "reject", "defer", "warn_if_reject", "defer_if_permit",
        "defer_if_reject", "permit_mynetworks", "permit_sasl_authenticated",
        "reject_non_fqdn_helo_hostname", "reject_invalid_helo_hostname",
        "reject_non_fqdn_sender", "reject_non_fqdn_recipient", "permit_auth_destination",
        "reject_unauth_pipelining", "check_client_access inline:{192.0.2.1=OK}"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(PURE), max_size=4), min_size=4, max_size=4))
def test_an_outsider_never_relays(lists: list[list[str]]) -> None:
    """The default smtpd_relay_restrictions refuse an unauthorized destination for a client
    outside mynetworks without SASL, whatever the client, HELO, sender and recipient lists
    permit."""
    names = ("smtpd_client_restrictions", "smtpd_helo_restrictions",
             "smtpd_sender_restrictions", "smtpd_recipient_restrictions")
    cf = "".join(f"{name} = {', '.join(words)}\n" for name, words in zip(names, lists,
                                                                          strict=True))
    reply = rcpt(session(cf), "bob@else.test")
    assert reply is not None and reply[0] in "45"


def test_regexp_and_pcre_tables(tmp_path: Path) -> None:
    rules = tmp_path / "helo.pcre"
    rules.write_text("/^[0-9.]+$/ REJECT numeric HELO\n/\\.local$/ 550 5.7.9 no .local names\n")
    for kind in ("regexp", "pcre"):
        cf = f"smtpd_helo_restrictions = check_helo_access {kind}:{rules}"
        assert rcpt(session(cf, helo="1.2.3.4")) == (
            "554 5.7.1 <1.2.3.4>: Helo command rejected: numeric HELO")
        assert rcpt(session(cf, helo="box.local")) == (
            "550 5.7.9 <box.local>: Helo command rejected: no .local names")
        assert rcpt(session(cf)) is None


INTERNET_MAIN_CF = """\
smtpd_helo_required = yes
smtpd_delay_reject = yes
smtpd_restriction_classes = strict
strict = reject_unknown_sender_domain, reject_rhsbl_sender dbl.example.net
smtpd_client_restrictions = permit_mynetworks, reject_unknown_reverse_client_hostname,
    reject_rbl_client zen.example.net=127.0.0.[2..11], permit_dnswl_client list.example.org
smtpd_helo_restrictions = permit_mynetworks, reject_invalid_helo_hostname,
    reject_non_fqdn_helo_hostname, reject_unknown_helo_hostname
smtpd_sender_restrictions = reject_non_fqdn_sender, strict
smtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated,
    reject_unauth_destination
smtpd_recipient_restrictions = reject_non_fqdn_recipient, reject_unknown_recipient_domain,
    reject_unlisted_recipient, check_policy_service unix:private/policyd-spf,
    check_policy_service inet:127.0.0.1:10023
smtpd_data_restrictions = reject_unauth_pipelining, reject_multi_recipient_bounce
smtpd_end_of_data_restrictions = warn_if_reject reject_plaintext_session
smtpd_policy_service_timeout = 30s
unknown_address_reject_code = 550
default_rbl_reply = $rbl_code 5.7.1 Blocked: $rbl_class [$rbl_what] listed at $rbl_domain
"""


def test_an_internet_facing_main_cf_is_accepted(tmp_path: Path,
                                                caplog: pytest.LogCaptureFixture) -> None:
    from sealmail.mta.config import load_mta_config
    from sealmail.mta.config.checks import audit

    (tmp_path / "main.cf").write_text(BASE + INTERNET_MAIN_CF)
    (tmp_path / "master.cf").write_text("")
    config = load_mta_config(tmp_path)
    found = audit(config)
    assert found.refusals == [] and found.warnings == []
    built = Engine.from_config(config.main, resolver=FakeResolver())
    assert set(built.policy_clients) == {"unix:private/policyd-spf", "inet:127.0.0.1:10023"}
    assert built.default_rbl_reply.startswith("$rbl_code 5.7.1 Blocked")
    assert "undefined parameter" not in caplog.text


def test_dns_list_names_and_patterns() -> None:
    from sealmail.mta.restrictions.dnsxl import (
        address_query,
        domain_query,
        expand_template,
        reply_matches,
    )

    assert address_query("192.0.2.1", "zen.test") == "1.2.0.192.zen.test"
    assert address_query("::ffff:192.0.2.1", "zen.test") == "1.2.0.192.zen.test"
    assert address_query("2001:db8::1", "z.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.z.test")
    assert domain_query("a@Bad.Example", "dbl.test") == "Bad.Example.dbl.test"
    assert domain_query("a@[192.0.2.1]", "dbl.test") is None  # an address literal
    assert domain_query("host.123", "dbl.test") is None  # a numeric last label
    assert domain_query("bad name", "dbl.test") is None
    assert reply_matches("127.0.0.[2..11;20]", "127.0.0.20")
    assert reply_matches("127.0.0.[2..11;20]", "127.0.0.11")
    assert not reply_matches("127.0.0.[2..11;20]", "127.0.0.12")
    assert not reply_matches("127.0.0.2", "127.0.1.2")
    assert not reply_matches("nonsense", "127.0.0.2")
    values = {"rbl_code": "554", "rbl_reason": "", "rbl_domain": "z.test"}
    template = "$rbl_code ${rbl_domain}${rbl_reason?; $rbl_reason}${rbl_reason:; no reason}"
    assert expand_template(template, values) == "554 z.test; no reason"
    assert expand_template(template, {**values, "rbl_reason": "x"}) == "554 z.test; x"
