"""The lmtp and smtp delivery agents against sealmail's lmtpd, Dovecot, Cyrus, scripted servers."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import trustme
from tests.server.test_lmtpd_auth import PASSWORD, make_instance
from tests.support.instance import SealmailInstance
from tests.support.peers import CyrusInstance, DovecotInstance, PeerUnavailable, traversable_tmpdir

from sealmail.mta.agents import (
    DeliveryRequest,
    QueuedRecipient,
    RecipientResult,
    Status,
)
from sealmail.mta.agents.lmtp import LmtpAgent
from sealmail.mta.agents.session import (
    Endpoint,
    NexthopError,
    parse_nexthop,
    sasl_password,
    sasl_password_keys,
)
from sealmail.mta.agents.smtp import SmtpAgent
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.queue import MessageContent
from sealmail.mta.routing import split_transport

MESSAGE = (
    b"From: sender@example.org\r\nTo: alice@example.com\r\nSubject: agent test\r\n"
    b"Message-ID: <agent-test@example.org>\r\n\r\nHello.\r\n.a line with a leading dot\r\n"
)


def settings(tmp: Path, **values: str) -> MainConfig:
    base = {"queue_directory": str(tmp), "myhostname": "mx.test.example"}
    base.update(values)
    text = "".join(f"{k} = {v}\n" for k, v in base.items())
    return MainConfig.from_document(
        parse_main_cf(text, str(tmp / "main.cf")), hostname="mx.test.example"
    )


def request(
    tmp: Path,
    nexthop: str,
    recipients: list[str],
    config: MainConfig,
    queue_id: str = "4F2A1B3C",
    content: bytes = MESSAGE,
) -> DeliveryRequest:
    message = tmp / f"{queue_id}.msg"
    message.write_bytes(content)
    return DeliveryRequest(
        queue_id=queue_id,
        sender="sender@example.org",
        recipients=tuple(QueuedRecipient(r, r, i) for i, r in enumerate(recipients)),
        transport="lmtp",
        nexthop=nexthop,
        message=MessageContent(message),
        size=len(content),
        arrival_time=time.time(),
        settings=config,
    )


def deliver(
    agent: LmtpAgent | SmtpAgent, *requests: DeliveryRequest
) -> list[list[RecipientResult]]:
    async def go() -> list[list[RecipientResult]]:
        try:
            return [await agent.deliver(r) for r in requests]
        finally:
            await agent.close()

    return asyncio.run(go())


# -- next hops and password maps --------------------------------------------------------------


@pytest.mark.parametrize(
    ("nexthop", "expected"),
    [
        ("unix:/var/imap/socket/lmtp", Endpoint(path="/var/imap/socket/lmtp")),
        ("unix:private/cyrus", Endpoint(path="/q/private/cyrus")),
        ("inet:cyrus.example.com:2003", Endpoint(host="cyrus.example.com", port=2003)),
        ("inet:[127.0.0.1]:2003", Endpoint(host="127.0.0.1", port=2003)),
        ("inet:[::1]:24", Endpoint(host="::1", port=24)),
        ("inet:[ipv6:::1]:24", Endpoint(host="::1", port=24)),
        ("inet:cyrus.example.com", Endpoint(host="cyrus.example.com", port=24)),
        ("inet:localhost:smtp", Endpoint(host="localhost", port=25)),
        ("[relay.example]:587", Endpoint(host="relay.example", port=587)),
        ("relay.example", Endpoint(host="relay.example", port=24)),
    ],
)
def test_parse_nexthop(nexthop: str, expected: Endpoint) -> None:
    found = parse_nexthop(nexthop, default_port=24, queue_directory="/q")
    assert (found.path, found.host, found.port) == (expected.path, expected.host, expected.port)


@pytest.mark.parametrize(
    "nexthop", ["", "unix:", "inet:[1.2.3.4", "inet:host:99999", "inet:host:nosuchservice", "[a]x"]
)
def test_bad_nexthops(nexthop: str) -> None:
    with pytest.raises(NexthopError):
        parse_nexthop(nexthop, default_port=24, queue_directory="/q")


def test_seed_lmtp_service_name_without_a_services_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """`lmtp:inet:127.0.0.1:lmtp` on Debian, whose services file has no lmtp: IANA's 24."""
    debian = tmp_path / "services"
    debian.write_text("smtp\t\t25/tcp\t\tmail\n")
    transport, nexthop = split_transport("lmtp:inet:127.0.0.1:lmtp")
    caplog.set_level(logging.INFO, "sealmail.config.services")
    found = parse_nexthop(nexthop, default_port=2003, queue_directory="/q", services_file=debian)
    assert (transport, found.host, found.port) == ("lmtp", "127.0.0.1", 24)
    [line] = [r.getMessage() for r in caplog.records if r.name == "sealmail.config.services"]
    assert "'lmtp'" in line and "port 24" in line and str(debian) in line
    with pytest.raises(NexthopError, match=r"unknown service 'lmtpx'.*in next hop"):
        parse_nexthop("inet:127.0.0.1:lmtpx", default_port=24, queue_directory="/q",
                      services_file=debian)


def test_unix_nexthop_is_lmtp_only() -> None:
    with pytest.raises(NexthopError, match="not supported"):
        parse_nexthop("unix:/x", default_port=25, queue_directory="/q", unix_allowed=False)


def test_password_map_keys(tmp_path: Path) -> None:
    table = tmp_path / "sasl_passwd"
    table.write_text("cyrus.example.com lmtpuser:one\nother.example:2003 u2:two:with:colons\n")
    config = settings(tmp_path, lmtp_sasl_password_maps=f"texthash:{table}")
    maps = MAIN.lmtp_sasl_password_maps
    cyrus = parse_nexthop("inet:cyrus.example.com:2003", default_port=24, queue_directory="/")
    assert sasl_password(config, maps, "inet:cyrus.example.com:2003", cyrus) == (
        "lmtpuser",
        "one",
    )
    other = parse_nexthop("inet:other.example:2003", default_port=24, queue_directory="/")
    assert sasl_password(config, maps, "inet:other.example:2003", other) == (
        "u2",
        "two:with:colons",
    )
    nobody = parse_nexthop("inet:nobody.example", default_port=24, queue_directory="/")
    assert sasl_password(config, maps, "inet:nobody.example", nobody) is None
    assert sasl_password_keys("inet:nobody.example", nobody) == [
        "nobody.example", "nobody.example:24", "[nobody.example]:24"]
    seed = parse_nexthop("inet:localhost:lmtp", default_port=24, queue_directory="/")
    assert sasl_password_keys("inet:localhost:lmtp", seed) == [
        "localhost:lmtp", "localhost:24", "[localhost]:24", "localhost"]


def test_bad_tls_level_defers_as_configuration_error(tmp_path: Path) -> None:
    config = settings(tmp_path, lmtp_tls_security_level="dane-only")
    [[result]] = deliver(LmtpAgent(), request(tmp_path, "unix:/nonexistent", ["a@x"], config))
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.3.5")


# -- sealmail's lmtpd -------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SealmailInstance]:
    with SealmailInstance(tmp_path / "store", users=["alice", "bob"], verbose=True) as inst:
        yield inst


def test_unix_socket_mixed_results(store: SealmailInstance, tmp_path: Path) -> None:
    config = settings(tmp_path)
    req = request(
        tmp_path,
        f"unix:{store.socket_path}",
        ["alice@example.com", "nobody@example.com", "bob@example.com"],
        config,
    )
    [results] = deliver(LmtpAgent(), req)
    assert [r.status for r in results] == [Status.SENT, Status.BOUNCED, Status.SENT]
    assert results[1].dsn == "5.1.1"
    relay = f"mx.test.example[{store.socket_path}]"
    assert results[1].text.startswith(f"host {relay} said: 550 5.1.1")
    assert results[1].text.endswith("(in reply to RCPT TO command)")
    assert store.message_count("alice") == 1 and store.message_count("bob") == 1
    assert results[0].relay == relay and results[0].text.startswith("250 2.")
    with store.store() as disk:
        [record] = disk.messages("user.alice")
        body = disk.message_bytes("user.alice", record.uid)
    assert body.endswith(b"Hello.\r\n.a line with a leading dot\r\n")


def test_relative_unix_socket_is_under_the_queue_directory(
    store: SealmailInstance, tmp_path: Path
) -> None:
    socket_dir = Path(store.socket_path).parent
    config = settings(socket_dir.parent)
    [[result]] = deliver(
        LmtpAgent(),
        request(tmp_path, f"unix:{socket_dir.name}/lmtp", ["alice@example.com"], config),
    )
    assert result.status is Status.SENT, result


def test_connection_reuse_one_connect_two_transactions(
    store: SealmailInstance, tmp_path: Path
) -> None:
    config = settings(tmp_path, lmtp_cache_connection="yes")  # the seed's old name
    first = request(tmp_path, f"unix:{store.socket_path}", ["alice@example.com"], config, "Q1")
    second = request(tmp_path, f"unix:{store.socket_path}", ["bob@example.com"], config, "Q2")
    results = deliver(LmtpAgent(), first, second)
    assert [r.status for batch in results for r in batch] == [Status.SENT, Status.SENT]
    log = store.log_text()
    sessions = re.findall(r"(\S+): from=<sender@example\.org>, to=<\S+>, .*status=sent", log)
    assert len(sessions) == 2 and sessions[0] == sessions[1], log
    # One connect for the session, plus the harness's own readiness probe.
    assert len(re.findall(r": connect from", log)) == 2, log


def test_cache_off_connects_per_delivery(store: SealmailInstance, tmp_path: Path) -> None:
    config = settings(tmp_path, lmtp_connection_cache_on_demand="no")
    first = request(tmp_path, f"unix:{store.socket_path}", ["alice@example.com"], config, "Q1")
    second = request(tmp_path, f"unix:{store.socket_path}", ["bob@example.com"], config, "Q2")
    deliver(LmtpAgent(), first, second)
    log = store.log_text()
    sessions = re.findall(r"(\S+): from=<sender@example\.org>, to=<\S+>, .*status=sent", log)
    assert len(sessions) == 2 and sessions[0] != sessions[1], log


def test_down_server_defers(tmp_path: Path) -> None:
    config = settings(tmp_path)
    [[unix]] = deliver(
        LmtpAgent(), request(tmp_path, f"unix:{tmp_path}/no-socket", ["alice@example.com"], config)
    )
    assert (unix.status, unix.dsn, unix.relay) == (Status.DEFERRED, "4.4.1", "none")
    assert unix.text == (
        f"connect to mx.test.example[{tmp_path}/no-socket]: No such file or directory"
    )
    from tests.support.peers import closed_tcp_port

    with closed_tcp_port() as port:
        [[tcp]] = deliver(
            LmtpAgent(),
            request(tmp_path, f"inet:127.0.0.1:{port}", ["alice@example.com"], config),
        )
    assert (tcp.status, tcp.dsn) == (Status.DEFERRED, "4.4.1")
    assert tcp.text == f"connect to 127.0.0.1[127.0.0.1]:{port}: Connection refused"


# -- TCP with SASL and TLS ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tcp_store(tmp_path: Path, ca: trustme.CA) -> Iterator[SealmailInstance]:
    (tmp_path / "tcp").mkdir()
    inst = make_instance(tmp_path / "tcp", ca, lmtp_allowplaintext="no")
    inst.verbose = True
    with inst:
        yield inst


def sasl_settings(tmp: Path, **extra: str) -> MainConfig:
    table = tmp / "sasl_passwd"
    table.write_text(f"127.0.0.1 lmtpuser:{PASSWORD}\n")
    table.chmod(0o600)
    values = {
        "lmtp_sasl_auth_enable": "yes",
        "lmtp_sasl_password_maps": f"texthash:{table}",
        "lmtp_sasl_security_options": "noanonymous, noplaintext",
    }
    return settings(tmp, **{**values, **extra})


def test_sasl_noplaintext_chooses_scram(
    tcp_store: SealmailInstance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    host, port = tcp_store.tcp_address
    req = request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], sasl_settings(tmp_path))
    with caplog.at_level(logging.DEBUG, logger="sealmail.mta.agents"):
        [[result]] = deliver(LmtpAgent(), req)
    assert "as lmtpuser with SCRAM-SHA-256" in caplog.text
    assert "no SASL password" not in caplog.text
    assert result.status is Status.SENT, result
    assert result.relay == f"127.0.0.1[127.0.0.1]:{port}"
    log = tcp_store.log_text()
    assert "authenticated as lmtpuser" in log


def test_no_password_for_the_next_hop_names_the_keys_tried(
    tcp_store: SealmailInstance, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The seed's 2.2.1.2 map holds `cyrus.example.com`, the next hop is `localhost`: the agent
    logs the keys it tried, and the server's 530 bounce says no password was found for them."""
    _, port = tcp_store.tcp_address
    table = tmp_path / "cyrus_lmtp_sasl_pass"
    table.write_text(f"cyrus.example.com lmtpuser:{PASSWORD}\n")
    config = settings(
        tmp_path, lmtp_sasl_auth_enable="yes", lmtp_sasl_password_maps=f"texthash:{table}"
    )
    req = request(tmp_path, f"inet:localhost:{port}", ["alice@example.com"], config)
    with caplog.at_level(logging.INFO, logger="sealmail.mta.agents"):
        [[result]] = deliver(LmtpAgent(), req)
    missing = (
        f"no SASL password found in lmtp_sasl_password_maps (texthash:{table}) for the keys "
        f"localhost:{port}, [localhost]:{port}, localhost"
    )
    [line] = [r.getMessage() for r in caplog.records if "no SASL password" in r.getMessage()]
    assert line == f"4F2A1B3C: lmtp: {missing}; delivering without authentication"
    assert (result.status, result.dsn) == (Status.BOUNCED, "5.7.0"), result
    assert "said: 530 5.7.0 " in result.text and result.text.endswith(f"; {missing}")
    assert PASSWORD not in caplog.text and PASSWORD not in result.text
    # Without lmtp_sasl_auth_enable no map is read: the 530 stands alone, nothing is logged.
    caplog.clear()
    plain = request(tmp_path, f"inet:localhost:{port}", ["alice@example.com"], settings(tmp_path))
    with caplog.at_level(logging.INFO, logger="sealmail.mta.agents"):
        [[result]] = deliver(LmtpAgent(), plain)
    assert (result.status, result.dsn) == (Status.BOUNCED, "5.7.0"), result
    assert result.text.endswith("(in reply to MAIL FROM command)")
    assert "no SASL password" not in caplog.text


def test_sasl_mechanism_filter_picks_cram_md5(tcp_store: SealmailInstance, tmp_path: Path) -> None:
    host, port = tcp_store.tcp_address
    config = sasl_settings(tmp_path, lmtp_sasl_mechanism_filter="cram-md5, plain")
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], config)
    )
    assert result.status is Status.SENT, result


def test_sasl_wrong_password_defers(tcp_store: SealmailInstance, tmp_path: Path) -> None:
    host, port = tcp_store.tcp_address
    table = tmp_path / "bad_passwd"
    table.write_text("127.0.0.1 lmtpuser:wrong\n")
    config = settings(
        tmp_path, lmtp_sasl_auth_enable="yes", lmtp_sasl_password_maps=f"texthash:{table}"
    )
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], config)
    )
    assert result.status is Status.DEFERRED and result.dsn.startswith("4.")
    assert result.text.startswith("SASL authentication failed; server 127.0.0.1[127.0.0.1]")


def test_sasl_no_acceptable_mechanism_defers(tcp_store: SealmailInstance, tmp_path: Path) -> None:
    host, port = tcp_store.tcp_address
    config = sasl_settings(tmp_path, lmtp_sasl_mechanism_filter="plain, login")
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], config)
    )
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.7.0")
    assert "no mechanism available" in result.text


@pytest.mark.parametrize("level", ["encrypt", "verify"])
def test_tls_then_plain_auth(
    tcp_store: SealmailInstance, tmp_path: Path, ca: trustme.CA, level: str
) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    host, port = tcp_store.tcp_address
    # Under TLS lmtpd offers PLAIN too; the filter makes the agent use it.
    config = sasl_settings(
        tmp_path,
        lmtp_tls_security_level=level,
        lmtp_tls_CAfile=str(tmp_path / "ca.pem"),
        lmtp_sasl_security_options="noanonymous",
        lmtp_sasl_mechanism_filter="plain",
    )
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], config)
    )
    assert result.status is Status.SENT, result
    with tcp_store.store() as disk:
        [record] = disk.messages("user.alice")
        assert b"with LMTPSA" in disk.message_bytes("user.alice", record.uid)


def test_tls_verify_with_the_wrong_ca_defers(tcp_store: SealmailInstance, tmp_path: Path) -> None:
    trustme.CA().cert_pem.write_to_path(str(tmp_path / "other-ca.pem"))
    host, port = tcp_store.tcp_address
    config = sasl_settings(
        tmp_path, lmtp_tls_security_level="verify", lmtp_tls_CAfile=str(tmp_path / "other-ca.pem")
    )
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"inet:{host}:{port}", ["alice@example.com"], config)
    )
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.7.5")
    assert tcp_store.message_count("alice") == 0


def test_tls_encrypt_without_starttls_defers(store: SealmailInstance, tmp_path: Path) -> None:
    config = settings(tmp_path, lmtp_tls_security_level="encrypt")
    [[result]] = deliver(
        LmtpAgent(), request(tmp_path, f"unix:{store.socket_path}", ["alice@example.com"], config)
    )
    assert (result.status, result.dsn) == (Status.DEFERRED, "4.7.4")


# -- scripted servers: timeouts and lost connections ------------------------------------------


async def scripted(
    script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(script, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, port


async def _lines_until(reader: asyncio.StreamReader, marker: bytes) -> None:
    while (line := await reader.readline()) and not line.startswith(marker):
        pass


def test_no_reply_after_end_of_data_defers_with_duplicate_warning(tmp_path: Path) -> None:
    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 scripted LMTP\r\n")
        await reader.readline()
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        await _lines_until(reader, b"DATA")
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
        await _lines_until(reader, b".\r\n")
        writer.write(b"250 2.0.0 first saved\r\n")  # then silence for the second recipient
        await reader.read()

    async def go() -> list[RecipientResult]:
        server, port = await scripted(server_side)
        config = settings(tmp_path, lmtp_data_done_timeout="1s")
        agent = LmtpAgent()
        try:
            return await agent.deliver(
                request(
                    tmp_path, f"inet:127.0.0.1:{port}", ["a@example.com", "b@example.com"], config
                )
            )
        finally:
            await agent.close()
            server.close()

    first, second = asyncio.run(go())
    assert first.status is Status.SENT and first.text == "250 2.0.0 first saved"
    assert (second.status, second.dsn) == (Status.DEFERRED, "4.4.2")
    assert second.text == (
        "conversation with 127.0.0.1[127.0.0.1] timed out "
        "while sending end of data -- message may be sent more than once"
    )
    assert re.fullmatch(r"127\.0\.0\.1\[127\.0\.0\.1\]:\d+", second.relay)  # relay= has the port


@pytest.mark.parametrize("stale", ["closed", "refuses RSET"])
def test_a_stale_cached_session_is_replaced_without_a_deferral(
    tmp_path: Path, stale: str
) -> None:
    """The cached session's RSET leads the pipelined group; when the server has gone away
    meanwhile (or refuses the RSET), the delivery goes over a new connection."""
    connections: list[int] = []

    async def transaction(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await _lines_until(reader, b"DATA")
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n354 go\r\n")
        await _lines_until(reader, b".\r\n")
        writer.write(b"250 2.0.0 saved\r\n")
        await writer.drain()

    async def server_side(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        writer.write(b"220 scripted LMTP\r\n")
        await reader.readline()
        writer.write(b"250-scripted\r\n250 PIPELINING\r\n")
        await transaction(reader, writer)
        if stale == "refuses RSET":
            await reader.readline()
            writer.write(b"421 4.4.2 idle too long\r\n")
            await writer.drain()
        writer.close()

    async def go() -> list[list[RecipientResult]]:
        server, port = await scripted(server_side)
        config = settings(tmp_path)
        agent = LmtpAgent()
        nexthop = f"inet:127.0.0.1:{port}"
        try:
            first = await agent.deliver(request(tmp_path, nexthop, ["a@example.com"], config))
            await asyncio.sleep(0.05)  # the server hangs up meanwhile
            second = await agent.deliver(
                request(tmp_path, nexthop, ["b@example.com"], config, "5A3B2C1D"))
            return [first, second]
        finally:
            await agent.close()
            server.close()

    results = asyncio.run(go())
    assert [(r.status, r.text) for batch in results for r in batch] == [
        (Status.SENT, "250 2.0.0 saved"), (Status.SENT, "250 2.0.0 saved")]
    assert len(connections) == 2


def test_greeting_refusal_and_lost_connection(tmp_path: Path) -> None:
    async def refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"554 5.3.2 no service\r\n")
        await writer.drain()
        writer.close()

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 hi\r\n")
        await reader.readline()
        writer.close()

    async def go(
        script: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
    ) -> RecipientResult:
        server, port = await scripted(script)
        agent = LmtpAgent()
        try:
            [result] = await agent.deliver(
                request(tmp_path, f"inet:127.0.0.1:{port}", ["a@example.com"], settings(tmp_path))
            )
            return result
        finally:
            await agent.close()
            server.close()

    refused = asyncio.run(go(refuse))
    assert (refused.status, refused.dsn) == (Status.DEFERRED, "4.3.2")
    assert "said: 554 5.3.2 no service (in reply to initial greeting)" in refused.text
    lost = asyncio.run(go(hang_up))
    assert (lost.status, lost.dsn) == (Status.DEFERRED, "4.4.2")
    assert lost.text.startswith("lost connection with 127.0.0.1[127.0.0.1]")
    assert lost.text.endswith("while performing the LHLO handshake")


def test_smtp_agent_relays_through_relayhost(tmp_path: Path) -> None:
    seen: list[bytes] = []

    async def relay(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"220 relay ESMTP\r\n")
        await reader.readline()
        writer.write(b"250-relay\r\n250-SIZE 100000\r\n250 PIPELINING\r\n")
        await _lines_until(reader, b"DATA")
        writer.write(b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n354 go\r\n")
        while (line := await reader.readline()) != b".\r\n":
            seen.append(line)
        writer.write(b"250 2.0.0 Ok: queued as ABC\r\n")
        await reader.readline()
        writer.write(b"221 bye\r\n")
        await writer.drain()
        writer.close()

    async def go() -> list[RecipientResult]:
        server, port = await scripted(relay)
        config = settings(
            tmp_path, relayhost=f"[127.0.0.1]:{port}", smtp_connection_cache_on_demand="no"
        )
        agent = SmtpAgent()
        try:
            return await agent.deliver(
                request(tmp_path, "example.com", ["a@example.com", "b@example.com"], config)
            )
        finally:
            await agent.close()
            server.close()

    ok, refused = asyncio.run(go())
    assert ok.status is Status.SENT and ok.text == "250 2.0.0 Ok: queued as ABC"
    assert refused.status is Status.BOUNCED and refused.dsn == "5.1.1"
    assert b"..a line with a leading dot\r\n" in seen


# -- real peers ---------------------------------------------------------------------------------


@pytest.mark.peer
def test_dovecot_lmtp(tmp_path: Path) -> None:
    with traversable_tmpdir() as root:
        try:
            dovecot = DovecotInstance(root)
            dovecot.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            config = settings(tmp_path, lmtp_cache_connection="yes")
            unix = request(
                tmp_path,
                f"unix:{dovecot.socket_path}",
                ["alice@test.example", "nobody@test.example"],
                config,
                "D1",
            )
            host, port = dovecot.tcp_address
            tcp = request(tmp_path, f"inet:{host}:{port}", ["bob@test.example"], config, "D2")
            first, second = deliver(LmtpAgent(), unix, tcp)
            assert [r.status for r in first] == [Status.SENT, Status.BOUNCED], first
            assert first[1].dsn.startswith("5.1.")
            assert second[0].status is Status.SENT, second
            assert dovecot.message_count("alice") == 1 and dovecot.message_count("bob") == 1
        finally:
            dovecot.stop()


@pytest.mark.peer
def test_cyrus_lmtpd(tmp_path: Path) -> None:
    with traversable_tmpdir() as root:
        try:
            cyrus = CyrusInstance(root)
            cyrus.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            config = settings(tmp_path)
            reqs = [
                request(
                    tmp_path, f"unix:{cyrus.socket_path}", ["alice", "nobody", "bob"], config, "C1"
                ),
                request(
                    tmp_path,
                    f"inet:{cyrus.tcp_address[0]}:{cyrus.tcp_address[1]}",
                    ["carol"],
                    config,
                    "C2",
                ),
            ]
            first, second = deliver(LmtpAgent(), *reqs)
            assert [r.status for r in first] == [Status.SENT, Status.BOUNCED, Status.SENT], first
            assert second[0].status is Status.SENT, second
            # start() delivered one setup message each.
            assert cyrus.message_count("alice") == 2 and cyrus.message_count("carol") == 2
        finally:
            cyrus.stop()
