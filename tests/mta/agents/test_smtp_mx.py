"""The smtp agent on the Internet's terms: MX lookups against a real authoritative DNS server (nsd)
with test zones, delivery to real receiving MTAs (Postfix's smtp-sink, a private Postfix with
STARTTLS) on loopback addresses at port 25, and outbound TLS policy with trustme and self-signed
certificates. Root only (ports 25 and 53); as another user these skip with the reason.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import smtplib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import (
    NsdInstance,
    PeerUnavailable,
    PostfixInstance,
    SmtpSink,
    free_loopback_address,
    free_tcp_port,
    traversable_tmpdir,
)

from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, RecipientResult, Status
from sealmail.mta.agents.smtp import SmtpAgent
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.queue import MessageContent

MESSAGE = (b"From: sender@example.org\r\nTo: someone\r\nSubject: mx test\r\n"
           b"Message-ID: <mx-test@example.org>\r\n\r\nHello over the Internet.\r\n")
TLS_HOST = "smtp.mx.test"  # the name in the receiving Postfix's certificate


@dataclass
class World:
    """The DNS server, the receiving MTAs and their addresses."""

    root: Path
    nsd: NsdInstance
    sink_a: SmtpSink
    sink_b: SmtpSink
    dead: str  # an address where nothing listens: connection refused
    postfix: PostfixInstance
    postfix_address: str
    cert_pem: Path  # the receiving Postfix's self-signed certificate
    six_port: int  # a sink on [::1]:six_port (IPv6)
    sink_six: SmtpSink
    sink_local: SmtpSink  # on 127.0.0.1, a port of its own
    sink_soft: SmtpSink  # answers RCPT with 4xx
    sink_hard: SmtpSink  # answers RCPT with 5xx


def self_signed(name: str, directory: Path) -> tuple[Path, Path]:
    """A self-signed server certificate for `name` (and its key), as many MXs on the
    Internet have."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def zone(world_addresses: dict[str, str]) -> str:
    a, b, dead, tls, soft, hard = (world_addresses[k]
                                   for k in ("a", "b", "dead", "tls", "soft", "hard"))
    return f"""
sink-soft IN A {soft}
sink-hard IN A {hard}
soft IN MX 10 sink-soft.mx.test.
soft IN MX 20 sink-a.mx.test.
hard IN MX 10 sink-hard.mx.test.
hard IN MX 20 sink-a.mx.test.
sink-a IN A {a}
sink-b IN A {b}
dead IN A {dead}
self IN A 127.0.0.1
six IN AAAA ::1
dual IN A {dead}
dual IN AAAA ::1
{TLS_HOST.split('.')[0]} IN A {tls}
other IN A {tls}
pref IN MX 10 dead.mx.test.
pref IN MX 20 sink-a.mx.test.
plain IN A {b}
null IN MX 0 .
loop IN MX 10 self.mx.test.
backup IN MX 10 sink-a.mx.test.
backup IN MX 20 self.mx.test.
primary-gone IN MX 10 noaddress.mx.test.
primary-gone IN MX 20 self.mx.test.
v6 IN MX 10 six.mx.test.
both IN MX 10 dual.mx.test.
tls IN MX 10 {TLS_HOST}.
@ IN MX 10 {TLS_HOST}.
alias IN MX 10 other.mx.test.
"""


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    with traversable_tmpdir("smmx-") as root:
        addresses: dict[str, str] = {}
        for name in ("a", "b", "dead", "tls", "soft", "hard"):
            addresses[name] = free_loopback_address(25, avoid=list(addresses.values()))
        nsd = NsdInstance(root, {"mx.test": None, "flaky.test": None, "late.test": None})
        try:
            nsd.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        cert, key = self_signed(TLS_HOST, root)
        six_port = free_tcp_port()
        sinks = [SmtpSink(root, addresses["a"]), SmtpSink(root, addresses["b"]),
                 SmtpSink(root, "[::1]", six_port), SmtpSink(root, "127.0.0.1", free_tcp_port()),
                 SmtpSink(root, addresses["soft"], options=["-r", "RCPT"]),
                 SmtpSink(root, addresses["hard"], options=["-f", "RCPT"])]
        postfix = PostfixInstance(root, {
            "smtpd_tls_cert_file": str(cert), "smtpd_tls_key_file": str(key),
            "smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1",
            "mydestination": "$myhostname, localhost, mx.test, tls.mx.test, alias.mx.test",
            "local_transport": "discard:delivered",
        }, f"{addresses['tls']}:25 inet n - n - - smtpd\n"
           "tlsmgr unix - - n 1000? 1 tlsmgr\n", hostname=TLS_HOST, domain="mx.test")
        try:
            for sink in sinks:
                sink.start()
            postfix.start()
            nsd.set_zone("mx.test", zone(addresses))
            yield World(root, nsd, sinks[0], sinks[1], addresses["dead"], postfix,
                        addresses["tls"], cert, six_port, *sinks[2:])
        finally:
            postfix.stop()
            for sink in sinks:
                sink.stop()
            nsd.stop()


def settings(world: World, tmp: Path, **values: str) -> MainConfig:
    base = {
        "queue_directory": str(tmp),
        "myhostname": "client.example.org",
        "sealmail_resolv_conf": str(world.nsd.resolv_conf),
        "inet_interfaces": "loopback-only",
        "smtp_connection_cache_on_demand": "no",
    }
    base.update(values)
    text = "".join(f"{k} = {v}\n" for k, v in base.items())
    return MainConfig.from_document(parse_main_cf(text, str(tmp / "main.cf")),
                                    hostname="client.example.org")


def request(tmp: Path, domain: str, config: MainConfig, *recipients: str) -> DeliveryRequest:
    message = tmp / "message"
    message.write_bytes(MESSAGE)
    addresses = recipients or (f"someone@{domain}",)
    return DeliveryRequest(
        queue_id="5A1B2C3D", sender="sender@example.org",
        recipients=tuple(QueuedRecipient(r, r, i) for i, r in enumerate(addresses)),
        transport="smtp", nexthop=domain, message=MessageContent(message),
        size=len(MESSAGE), arrival_time=time.time(), settings=config)


def deliver(agent: SmtpAgent, *requests: DeliveryRequest) -> list[list[RecipientResult]]:
    async def go() -> list[list[RecipientResult]]:
        try:
            return [await agent.deliver(r) for r in requests]
        finally:
            await agent.close()

    return asyncio.run(go())


def one(world: World, tmp: Path, domain: str, **values: str) -> RecipientResult:
    [[result]] = deliver(SmtpAgent(), request(tmp, domain, settings(world, tmp, **values)))
    return result


def delivered_to(sink: SmtpSink, recipient: str) -> bool:
    return any(f"X-Rcpt-Args: <{recipient}>" in m for m in sink.messages())


@pytest.fixture
def agent_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="sealmail.mta.agents")
    return caplog


# -- MX, A and AAAA ---------------------------------------------------------------------------


def test_first_mx_refuses_connection_the_second_gets_the_mail(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    result = one(world, tmp_path, "pref.mx.test")
    assert result.status is Status.SENT, result
    assert result.relay == f"sink-a.mx.test[{world.sink_a.address}]:25"
    assert delivered_to(world.sink_a, "someone@pref.mx.test")
    assert (f"5A1B2C3D: connect to dead.mx.test[{world.dead}]:25: Connection refused"
            in agent_log.text)


def test_a_4xx_reply_sends_the_recipient_to_the_next_mx_a_5xx_bounces(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    result = one(world, tmp_path, "soft.mx.test")
    assert result.status is Status.SENT, result
    assert result.relay.startswith("sink-a.mx.test[")
    # Postfix's reason names host[address], no port (smtp_proto.c's namaddr); relay= has it.
    assert f"5A1B2C3D: host sink-soft.mx.test[{world.sink_soft.address}] said: 4" \
        in agent_log.text
    hard = one(world, tmp_path, "hard.mx.test")
    assert (hard.status, hard.dsn[0]) == (Status.BOUNCED, "5")
    assert hard.relay.startswith("sink-hard.mx.test[")
    assert not delivered_to(world.sink_a, "someone@hard.mx.test")


def test_session_limit_stops_before_the_next_mx(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "soft.mx.test", smtp_mx_session_limit="1")
    assert (result.status, result.dsn[0]) == (Status.DEFERRED, "4")
    assert result.text.startswith(f"host sink-soft.mx.test[{world.sink_soft.address}] said: 4")
    assert result.relay == f"sink-soft.mx.test[{world.sink_soft.address}]:25"
    # A refused connection is no session: the limit does not stop the fallback after it.
    assert one(world, tmp_path, "pref.mx.test", smtp_mx_session_limit="1").status is Status.SENT


def test_no_mx_record_means_the_domains_own_address(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "plain.mx.test")
    assert result.status is Status.SENT, result
    assert result.relay == f"plain.mx.test[{world.sink_b.address}]:25"
    assert delivered_to(world.sink_b, "someone@plain.mx.test")


def test_null_mx_bounces_at_once(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "null.mx.test")
    assert (result.status, result.dsn) == (Status.BOUNCED, "5.1.10")
    assert result.text == "Domain null.mx.test does not accept mail (nullMX)"
    assert result.relay == "none"


def test_a_domain_that_does_not_exist_bounces(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "nosuch.mx.test")
    assert (result.status, result.dsn) == (Status.BOUNCED, "5.1.2")
    assert result.text.startswith("Host or domain name not found. Name service error for "
                                  "name=nosuch.mx.test type=A")
    assert result.text.endswith(": Host not found")


def test_servfail_defers_and_a_later_attempt_delivers(world: World, tmp_path: Path) -> None:
    agent = SmtpAgent()
    config = settings(world, tmp_path)

    async def go() -> tuple[RecipientResult, RecipientResult]:
        try:
            [first] = await agent.deliver(request(tmp_path, "flaky.test", config))
            await asyncio.to_thread(world.nsd.set_zone, "flaky.test",
                                    "@ IN MX 10 sink-b.mx.test.")
            [second] = await agent.deliver(request(tmp_path, "flaky.test", config))
            return first, second
        finally:
            await agent.close()

    first, second = asyncio.run(go())
    assert (first.status, first.dsn) == (Status.DEFERRED, "4.4.3")
    assert first.text == ("Host or domain name not found. Name service error for "
                          "name=flaky.test type=MX: Host not found, try again")
    assert second.status is Status.SENT, second  # the failure was not cached
    assert delivered_to(world.sink_b, "someone@flaky.test")


def test_ipv6_mx_host(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "v6.mx.test", smtp_tcp_port=str(world.six_port))
    assert result.status is Status.SENT, result
    assert result.relay == f"six.mx.test[::1]:{world.six_port}"
    assert delivered_to(world.sink_six, "someone@v6.mx.test")


@pytest.mark.parametrize(("preference", "tried_ipv4"), [("ipv6", False), ("ipv4", True)])
def test_address_preference(world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture,
                            preference: str, tried_ipv4: bool) -> None:
    # dual.mx.test has a dead IPv4 address and an IPv6 one with a sink.
    result = one(world, tmp_path, "both.mx.test", smtp_tcp_port=str(world.six_port),
                 smtp_address_preference=preference)
    assert result.status is Status.SENT, result
    assert result.relay == f"dual.mx.test[::1]:{world.six_port}"
    assert (f"dual.mx.test[{world.dead}]" in agent_log.text) is tried_ipv4


def test_native_lookup_uses_the_system_resolver(world: World, tmp_path: Path) -> None:
    # /etc/hosts knows localhost; our DNS server refuses the name (not its zone): try again.
    port = str(world.sink_local.port)
    result = one(world, tmp_path, "localhost", smtp_host_lookup="native", smtp_tcp_port=port)
    assert result.status is Status.SENT, result
    assert result.relay == f"localhost[127.0.0.1]:{port}"
    dns_only = one(world, tmp_path, "[localhost]", smtp_tcp_port=port)
    assert (dns_only.status, dns_only.dsn) == (Status.DEFERRED, "4.4.3")


# -- mail for ourselves -------------------------------------------------------------------------


def test_best_mx_is_us_loops_back(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "loop.mx.test")
    assert (result.status, result.dsn) == (Status.BOUNCED, "5.4.6")
    assert result.text == "mail for loop.mx.test loops back to myself"


def test_backup_mx_delivers_only_to_better_ones(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "backup.mx.test")
    assert result.status is Status.SENT, result
    assert result.relay.startswith("sink-a.mx.test[")
    gone = one(world, tmp_path, "primary-gone.mx.test")
    assert (gone.status, gone.dsn) == (Status.DEFERRED, "4.4.4")
    assert gone.text == "unable to find primary relay for primary-gone.mx.test"


def test_relayhost_that_does_not_resolve_waits(world: World, tmp_path: Path) -> None:
    result = one(world, tmp_path, "pref.mx.test", relayhost="nosuch.mx.test")
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.3.5")


# -- outbound TLS --------------------------------------------------------------------------------


def test_may_with_a_self_signed_certificate_is_untrusted_and_delivered(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    result = one(world, tmp_path, "tls.mx.test", smtp_tls_security_level="may",
                 smtp_tls_loglevel="1")
    assert result.status is Status.SENT, result
    assert (f"Untrusted TLS connection established to {TLS_HOST}[{world.postfix_address}]:25: "
            "TLSv1.3 with cipher TLS_") in agent_log.text
    # The receiving side saw TLS too (Postfix: the client sent no certificate).
    world.postfix.wait_for_log(r"Anonymous TLS connection established from unknown\[127\.0\.0"
                               r"\.1\]: TLSv1\.3")


def test_may_with_the_certificate_trusted_says_trusted(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    result = one(world, tmp_path, "tls.mx.test", smtp_tls_security_level="may",
                 smtp_tls_loglevel="1", smtp_tls_CAfile=str(world.cert_pem))
    assert result.status is Status.SENT, result
    assert f"Trusted TLS connection established to {TLS_HOST}[" in agent_log.text


def test_verify_with_the_right_name_is_verified(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    # verify: the MX host's name; secure: the next hop or a subdomain (mx.test's MX is
    # smtp.mx.test, tls.mx.test's is not under tls.mx.test: a forged MX could point anywhere).
    cases = [("verify", "tls.mx.test", Status.SENT), ("secure", "mx.test", Status.SENT),
             ("secure", "tls.mx.test", Status.DEFERRED)]
    for level, domain, status in cases:
        result = one(world, tmp_path, domain, smtp_tls_security_level=level,
                     smtp_tls_loglevel="1", smtp_tls_CAfile=str(world.cert_pem))
        assert result.status is status, (level, domain, result)
    assert agent_log.text.count(f"Verified TLS connection established to {TLS_HOST}[") == 2


def test_verify_with_a_wrong_name_defers(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    # alias.mx.test's MX is other.mx.test, which the certificate does not name.
    result = one(world, tmp_path, "alias.mx.test", smtp_tls_security_level="verify",
                 smtp_tls_loglevel="1", smtp_tls_CAfile=str(world.cert_pem))
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.7.5")
    assert result.text == "Server certificate not verified"
    namaddr = f"other.mx.test[{world.postfix_address}]:25"
    assert (f"server certificate verification failed for {namaddr}: num=62:hostname mismatch"
            in agent_log.text)
    assert f"Trusted TLS connection established to {namaddr}" in agent_log.text


def test_verify_without_a_trusted_ca_defers(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    ca = trustme.CA()
    ca.cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    result = one(world, tmp_path, "tls.mx.test", smtp_tls_security_level="verify",
                 smtp_tls_CAfile=str(tmp_path / "other-ca.pem"))
    assert (result.status, result.dsn, result.text) == (
        Status.DEFERRED, "4.7.5", "Server certificate not trusted")
    assert (f"certificate verification failed for {TLS_HOST}[{world.postfix_address}]:25: "
            "self-signed certificate") in agent_log.text


def test_policy_map_overrides_the_level_per_destination(
        world: World, tmp_path: Path) -> None:
    table = tmp_path / "tls_policy"
    table.write_text(f"alias.mx.test verify match={TLS_HOST}\n.mx.test encrypt\n"
                     "plain.mx.test none\n")
    values = {"smtp_tls_security_level": "may", "smtp_tls_CAfile": str(world.cert_pem),
              "smtp_tls_policy_maps": f"texthash:{table}"}
    # match= names the certificate's name, so the alias verifies.
    assert one(world, tmp_path, "alias.mx.test", **values).status is Status.SENT
    # .mx.test: encrypt, and the smtp-sink offers no STARTTLS.
    required = one(world, tmp_path, "pref.mx.test", **values)
    assert (required.status, required.dsn) == (Status.DEFERRED, "4.7.4")
    assert required.text.startswith("TLS is required, but was not offered by host sink-a")
    assert one(world, tmp_path, "plain.mx.test", **values).status is Status.SENT


def test_a_policy_map_entry_sealmail_cannot_apply_defers(
        world: World, tmp_path: Path, agent_log: pytest.LogCaptureFixture) -> None:
    table = tmp_path / "tls_policy"
    table.write_text("tls.mx.test dane\n")
    result = one(world, tmp_path, "tls.mx.test", smtp_tls_policy_maps=f"texthash:{table}")
    assert (result.status, result.dsn, result.text) == (
        Status.DEFERRED, "4.7.5", "client TLS configuration problem")
    assert "dane is not implemented" in agent_log.text


# -- through the whole MTA: smtpd, the queue, the smtp agent, the log ----------------------------


def test_mta_relays_by_mx_with_tls_and_retries_after_servfail(
        world: World, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_tcp_port()
    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        "mydestination = mx.example.com\n"
        f"queue_directory = {tmp_path / 'spool'}\ndata_directory = {tmp_path / 'data'}\n"
        "inet_interfaces = loopback-only\nmynetworks = 127.0.0.0/8\n"
        f"sealmail_resolv_conf = {world.nsd.resolv_conf}\n"
        "smtp_tls_security_level = may\nsmtp_tls_loglevel = 1\n" + mail_owner_opt_in())
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "smtp      unix  -       -       n       -       -       smtp\n"
        "error     unix  -       -       n       -       -       error\n")
    caplog.set_level(logging.INFO, logger="sealmail")
    recipients = ["one@tls.mx.test", "two@pref.mx.test", "three@null.mx.test", "four@late.test"]
    with RunningMta(config) as mta:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            assert client.sendmail("sender@example.org", recipients, MESSAGE) == {}

        def line(recipient: str, status: str) -> str:
            found = [r.getMessage() for r in caplog.records
                     if f"to=<{recipient}>" in r.getMessage() and f"status={status}" in
                     r.getMessage()]
            return found[-1] if found else ""

        wait_for(lambda: all(line(r, s) for r, s in [
            ("one@tls.mx.test", "sent"), ("two@pref.mx.test", "sent"),
            ("three@null.mx.test", "bounced"), ("four@late.test", "deferred")]), timeout=60)
        world.nsd.set_zone("late.test", "@ IN MX 10 sink-b.mx.test.")
        qmgr = mta.master.qmgr
        assert qmgr is not None

        def flushed() -> bool:
            """postqueue -f tries what is in deferred/ then; the deferred line is logged before
            the message gets there (later on a loaded machine): flush again until it is sent."""
            mta.loop.call_soon_threadsafe(qmgr.flush)
            deadline = time.monotonic() + 1.0
            while not line("four@late.test", "sent") and time.monotonic() < deadline:
                time.sleep(0.05)
            return bool(line("four@late.test", "sent"))

        wait_for(flushed, timeout=60)
    assert f"relay={TLS_HOST}[{world.postfix_address}]:25" in line("one@tls.mx.test", "sent")
    assert f"relay=sink-a.mx.test[{world.sink_a.address}]:25" in line("two@pref.mx.test", "sent")
    assert ("dsn=5.1.10, status=bounced (Domain null.mx.test does not accept mail (nullMX))"
            in line("three@null.mx.test", "bounced"))
    assert ("dsn=4.4.3, status=deferred (Host or domain name not found. Name service error "
            "for name=late.test type=MX: Host not found, try again)"
            in line("four@late.test", "deferred"))
    assert f"relay=sink-b.mx.test[{world.sink_b.address}]:25" in line("four@late.test", "sent")
    tls_lines = [r for r in caplog.records if "TLS connection established" in r.getMessage()]
    assert [r.name for r in tls_lines] == ["sealmail.mta.agents.smtp"]  # as smtp(8) logs it
    assert tls_lines[0].getMessage().startswith(
        f"Untrusted TLS connection established to {TLS_HOST}[{world.postfix_address}]:25: TLSv1.3")
    assert delivered_to(world.sink_b, "four@late.test")
