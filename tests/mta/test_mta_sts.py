"""MTA-STS (RFC 8461): the TXT record, the policy file, MX patterns and the cache (pure, with a
clock and fakes), then the HTTPS fetch against a local server with a trustme CA."""

from __future__ import annotations

import asyncio
import http.server
import logging
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from tests.support.peers import NsdInstance, PeerUnavailable, traversable_tmpdir

from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, Status
from sealmail.mta.agents.mta_sts import (
    MAX_BODY,
    FetchError,
    PolicyCache,
    PolicyError,
    StsPolicy,
    fetch_policy,
    mx_matches,
    parse_policy,
    parse_txt,
)
from sealmail.mta.agents.smtp import SmtpAgent
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.queue import MessageContent
from sealmail.mta.smtpd_tls import smtpd_context

POLICY = (b"version: STSv1\r\nmode: enforce\r\nmx: mx1.example.com\r\nmx: *.example.net\r\n"
          b"max_age: 86400\r\n")


@pytest.mark.parametrize(("records", "expected"), [
    (["v=STSv1; id=20160831085700Z;"], "20160831085700Z"),
    (["v=STSv1;id=abc"], "abc"),
    (["v=spf1 -all", "v=STSv1; id=abc; ext=1"], "abc"),
    (["v=STSv1; id=a", "v=STSv1; id=b"], None),  # two records: none (RFC 8461 3.1)
    (["v=STSv1; id=bad-chars"], None),
    (["v=STSv1; id=" + "a" * 33], None),
    (["v=STSv1;"], None),
    ([], None),
])
def test_txt_record(records: list[str], expected: str | None) -> None:
    assert parse_txt(records) == expected


def test_policy_file() -> None:
    policy = parse_policy(POLICY, "abc")
    assert policy == StsPolicy("enforce", ("mx1.example.com", "*.example.net"), 86400, "abc")
    assert parse_policy(POLICY.replace(b"\r\n", b"\n")) == parse_policy(POLICY)
    assert parse_policy(POLICY.replace(b"86400", b"99999999")).max_age == 31_557_600
    assert parse_policy(b"version: STSv1\nmode: none\nmax_age: 10\n").mode == "none"
    assert parse_policy(POLICY + b"future: thing\n").mode == "enforce"


@pytest.mark.parametrize("body", [
    b"", POLICY.replace(b"STSv1", b"STSv2"), POLICY.replace(b"enforce", b"strict"),
    POLICY.replace(b"86400", b"-1"), POLICY.replace(b"86400", b"soon"),
    b"version: STSv1\nmode: enforce\nmax_age: 10\n", POLICY + b"no colon here\n",
    POLICY + b"mx: bad pattern\n", b"\xff\xfe", POLICY.replace(b"max_age: 86400\r\n", b""),
])
def test_bad_policy_files(body: bytes) -> None:
    with pytest.raises(PolicyError):
        parse_policy(body)


@pytest.mark.parametrize(("pattern", "host", "expected"), [
    ("mx1.example.com", "MX1.example.com.", True),
    ("mx1.example.com", "mx2.example.com", False),
    ("*.example.net", "mx.example.net", True),
    ("*.example.net", "a.b.example.net", False),  # one label only
    ("*.example.net", "example.net", False),
])
def test_mx_patterns(pattern: str, host: str, expected: bool) -> None:
    assert mx_matches(pattern, host) is expected


class Clock:
    now = 100.0

    def __call__(self) -> float:
        return self.now


class World:
    """A domain's TXT records and policy body as the cache sees them."""

    def __init__(self) -> None:
        self.records: list[str] | None = ["v=STSv1; id=one"]
        self.body: bytes | Exception = POLICY
        self.fetches = 0
        self.notes: list[str] = []

    async def txt(self, name: str) -> list[str] | None:
        assert name == "_mta-sts.example.com"
        return self.records

    async def fetch(self, domain: str) -> bytes:
        self.fetches += 1
        await asyncio.sleep(0)  # let other deliveries in meanwhile
        if isinstance(self.body, Exception):
            raise self.body
        return self.body


def test_cache_follows_rfc_8461_5_1() -> None:
    world, clock = World(), Clock()
    cache = PolicyCache(world.txt, world.fetch, clock=clock,
                        notes=lambda level, text: world.notes.append(text))

    def policy() -> StsPolicy | None:
        return asyncio.run(cache.policy("Example.COM."))

    first = policy()
    assert first is not None and first.enforced and first.id == "one"
    assert policy() == first and world.fetches == 1  # same id: the cache
    world.records = None  # the TXT lookup fails for now: the cached policy stays
    assert policy() == first
    world.records = []  # no record at all: still the cached one, until max_age
    assert policy() == first
    world.records = ["v=STSv1; id=two"]
    world.body = FetchError("mta-sts.example.com: HTTP status 404")
    assert policy() == first and world.fetches == 2  # a failed refetch keeps the old one
    assert "HTTP status 404; the cached policy stays in force" in world.notes[-1]
    world.body = POLICY.replace(b"enforce", b"testing")
    second = policy()
    assert second is not None and second.mode == "testing" and second.id == "two"
    world.records = []
    clock.now += 86400  # max_age over, no record: no policy
    assert policy() is None
    world.records = ["v=STSv1; id=three"]
    world.body = b"version: STSv1\nmode: none\nmax_age: 600\n"
    assert policy() is None  # mode none: no policy in force
    assert world.notes[0].startswith("MTA-STS policy for example.com: id=one mode=enforce")


def test_concurrent_deliveries_share_one_fetch() -> None:
    world = World()

    async def scenario() -> list[StsPolicy | None]:
        cache = PolicyCache(world.txt, world.fetch)
        return await asyncio.gather(*(cache.policy("example.com") for _ in range(5)))

    policies = asyncio.run(scenario())
    assert world.fetches == 1 and all(p is not None and p.enforced for p in policies)


def test_no_record_and_nothing_cached_is_no_policy() -> None:
    world = World()
    world.records = []
    assert asyncio.run(PolicyCache(world.txt, world.fetch).policy("example.com")) is None
    assert world.fetches == 0


# -- the HTTPS fetch ------------------------------------------------------------------------


class Handler(http.server.BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, str, bytes]] = {}

    def do_GET(self) -> None:
        host = self.headers.get("Host", "")
        status, content_type, body = self.routes.get(host, (404, "text/plain", b"no"))
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        if status == 301:
            self.send_header("Location", "https://elsewhere.test/")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def https() -> Iterator[tuple[trustme.CA, int, str]]:
    ca = trustme.CA()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("mta-sts.good.test", "mta-sts.moved.test", "mta-sts.html.test",
                  "mta-sts.big.test").configure_cert(context)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    Handler.routes = {
        "mta-sts.good.test": (200, "text/plain; charset=utf-8", POLICY),
        "mta-sts.moved.test": (301, "text/plain", b""),
        "mta-sts.html.test": (200, "text/html", POLICY),
        "mta-sts.big.test": (200, "text/plain", b"x" * (MAX_BODY + 1)),
    }
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with ca.cert_pem.tempfile() as cafile:
        yield ca, server.server_address[1], cafile
    server.shutdown()
    server.server_close()


def fetch(https: tuple[trustme.CA, int, str], domain: str, cafile: str | None = None) -> bytes:
    _, port, default_cafile = https
    hosts = {f"mta-sts.{d}": ("127.0.0.1", port)
             for d in ("good.test", "moved.test", "html.test", "big.test", "other.test")}
    return asyncio.run(fetch_policy(domain, cafile=cafile or default_cafile, hosts=hosts,
                                    timeout=10))


def test_fetch_over_https(https: tuple[trustme.CA, int, str]) -> None:
    assert fetch(https, "good.test") == POLICY


@pytest.mark.parametrize(("domain", "reason"), [
    ("moved.test", "HTTP status 301"),  # redirects are not followed
    ("html.test", "media type text/html"),
    ("big.test", "larger than"),
    ("other.test", "certificate verification failed"),  # the certificate names other hosts
])
def test_fetch_refuses(https: tuple[trustme.CA, int, str], domain: str, reason: str) -> None:
    with pytest.raises(FetchError, match=reason):
        fetch(https, domain)


def test_fetch_needs_a_trusted_chain(https: tuple[trustme.CA, int, str]) -> None:
    with (trustme.CA().cert_pem.tempfile() as other,
          pytest.raises(FetchError, match="certificate verification failed")):
        fetch(https, "good.test", other)


# -- the smtp client, end to end: a private nsd, the HTTPS server, a receiving smtpd ---------


@dataclass
class Internet:
    nsd: NsdInstance
    https_port: int
    smtp_port: int
    cafile: Path
    hits: list[str]


def sts_zone() -> str:
    lines = ["mx IN A 127.0.0.1", "rogue IN A 127.0.0.1"]
    for domain in ("enforce", "wrongcert", "testing", "nomatch", "plain"):
        if domain == "enforce":
            lines += [f"{domain} IN MX 10 rogue.sts.test.", f"{domain} IN MX 20 mx.sts.test."]
        else:
            lines.append(f"{domain} IN MX 10 rogue.sts.test.")
        if domain != "plain":
            lines.append(f'_mta-sts.{domain} IN TXT "v=STSv1; id=2026120601;"')
    return "\n".join(lines) + "\n"


STS_POLICIES = {
    "enforce": b"version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
    "wrongcert": b"version: STSv1\nmode: enforce\nmx: *.sts.test\nmax_age: 86400\n",
    "testing": b"version: STSv1\nmode: testing\nmx: mx.sts.test\nmax_age: 86400\n",
    "nomatch": b"version: STSv1\nmode: enforce\nmx: mx.sts.test\nmax_age: 86400\n",
}


@pytest.fixture(scope="module")
def internet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Internet]:
    from tests.mta.test_mta_smtpd import Server

    with traversable_tmpdir("smsts-") as root:
        nsd = NsdInstance(root, {"sts.test": sts_zone()})
        try:
            nsd.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        ca = trustme.CA()
        cafile = root / "ca.pem"
        ca.cert_pem.write_to_path(str(cafile))
        hits: list[str] = []

        class PolicyHandler(Handler):
            def do_GET(self) -> None:
                hits.append(self.headers.get("Host", ""))
                super().do_GET()

        Handler.routes = {f"mta-sts.{d}.sts.test": (200, "text/plain", body)
                          for d, body in STS_POLICIES.items()}
        web = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PolicyHandler)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ca.issue_cert(*(f"mta-sts.{d}.sts.test" for d in STS_POLICIES)).configure_cert(context)
        web.socket = context.wrap_socket(web.socket, server_side=True)
        threading.Thread(target=web.serve_forever, daemon=True).start()
        pem = root / "mx.pem"
        ca.issue_cert("mx.sts.test").private_key_and_cert_chain_pem.write_to_path(str(pem))
        text = (f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {pem}\n"
                "mydestination = " + ", ".join(f"{d}.sts.test" for d in
                                               (*STS_POLICIES, "plain")) + "\n")
        receiver = Server(tmp_path_factory.mktemp("receiver"), text,
                          tls_context=smtpd_context(MainConfig.from_document(
                              parse_main_cf(text), hostname="mx.sts.test")))
        try:
            with receiver:
                yield Internet(nsd, web.server_address[1], receiver.port, cafile, hits)
        finally:
            web.shutdown()
            web.server_close()
            nsd.stop()


def sts_settings(internet: Internet, tmp: Path, **more: str) -> MainConfig:
    values = {
        "queue_directory": str(tmp), "myhostname": "client.example.org",
        "sealmail_resolv_conf": str(internet.nsd.resolv_conf),
        "smtp_tcp_port": str(internet.smtp_port), "smtp_tls_security_level": "may",
        "smtp_tls_loglevel": "1", "smtp_tls_CAfile": str(internet.cafile),
        "smtp_connection_cache_on_demand": "no", "sealmail_mta_sts": "yes",
        "sealmail_mta_sts_CAfile": str(internet.cafile),
        "sealmail_mta_sts_hosts": " ".join(f"mta-sts.{d}.sts.test=127.0.0.1:"
                                           f"{internet.https_port}" for d in STS_POLICIES),
    }
    values.update(more)
    return MainConfig.from_document(
        parse_main_cf("".join(f"{k} = {v}\n" for k, v in values.items())),
        hostname="client.example.org")


def send(agent: SmtpAgent, config: MainConfig, tmp: Path, *domains: str) -> list[object]:
    message = tmp / "message"
    message.write_bytes(b"From: a@example.org\r\nSubject: sts\r\n\r\nhi\r\n")

    async def go() -> list[object]:
        results = []
        try:
            for domain in domains:
                [result] = await agent.deliver(DeliveryRequest(
                    queue_id="5A1B2C3D", sender="a@example.org",
                    recipients=(QueuedRecipient(f"u@{domain}", f"u@{domain}", 0),),
                    transport="smtp", nexthop=domain, message=MessageContent(message),
                    size=message.stat().st_size, arrival_time=time.time(), settings=config))
                results.append(result)
        finally:
            await agent.close()
        return results

    return asyncio.run(go())


def test_enforce_testing_and_no_policy(internet: Internet, tmp_path: Path,
                                       caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="sealmail.mta.agents")
    agent = SmtpAgent()
    config = sts_settings(internet, tmp_path)
    enforce, again, wrongcert, nomatch, testing, plain = send(
        agent, config, tmp_path, "enforce.sts.test", "enforce.sts.test", "wrongcert.sts.test",
        "nomatch.sts.test", "testing.sts.test", "plain.sts.test")
    port = internet.smtp_port
    log = caplog.text
    assert enforce.status is Status.SENT and again.status is Status.SENT  # type: ignore[attr-defined]
    assert ("MTA-STS policy for enforce.sts.test (mode enforce): MX host rogue.sts.test does not "
            "match mx.sts.test: skipped") in log
    assert f"Verified TLS connection established to mx.sts.test[127.0.0.1]:{port}" in log
    assert internet.hits.count("mta-sts.enforce.sts.test") == 1  # the second came from cache
    assert "MTA-STS policy for enforce.sts.test: id=2026120601 mode=enforce" in log
    # The pattern admits rogue.sts.test, whose certificate does not name it: not delivered.
    assert (wrongcert.status, wrongcert.dsn, wrongcert.text) == (  # type: ignore[attr-defined]
        Status.DEFERRED, "4.7.5", "Server certificate not verified")
    assert f"failed for rogue.sts.test[127.0.0.1]:{port}: num=62:hostname mismatch" in log
    assert (nomatch.status, nomatch.dsn) == (Status.DEFERRED, "4.7.5")  # type: ignore[attr-defined]
    assert "no MX host matches mx.sts.test" in nomatch.text  # type: ignore[attr-defined]
    assert testing.status is Status.SENT  # type: ignore[attr-defined]
    assert "rogue.sts.test does not match mx.sts.test; delivering anyway (testing)" in log
    assert plain.status is Status.SENT  # type: ignore[attr-defined]
    assert "MTA-STS policy for plain.sts.test" not in log


def test_the_postfix_way_a_socketmap_policy_server(internet: Internet, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    """smtp_tls_policy_maps = socketmap:... as sites plug postfix-mta-sts-resolver into
    Postfix: the server answers `secure match=<mx patterns> servername=hostname`."""
    from tests.mta.config.test_socketmap import SocketmapServer

    from sealmail.mta.config.tables import netstring

    def answer(query: str) -> bytes:
        if query == "postfix enforce.sts.test":
            return netstring(b"OK secure match=mx.sts.test servername=hostname")
        return netstring(b"NOTFOUND ")

    resolver = SocketmapServer(answer)
    caplog.set_level(logging.INFO, logger="sealmail.mta.agents")
    try:
        [result] = send(SmtpAgent(), sts_settings(
            internet, tmp_path, sealmail_mta_sts="no",
            smtp_tls_policy_maps=f"socketmap:inet:127.0.0.1:{resolver.port}:postfix"),
            tmp_path, "enforce.sts.test")
    finally:
        resolver.close()
    assert result.status is Status.SENT  # type: ignore[attr-defined]
    assert "postfix enforce.sts.test" in resolver.queries
    assert "Verified TLS connection established to" in caplog.text
    assert "MTA-STS policy" not in caplog.text
