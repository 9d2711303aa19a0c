"""anvil: the counts (pure, with a clock), the service over a real UNIX socket from two streams,
and smtpd's client limits on a running master with two smtpd processes (Postfix's replies and
warning lines)."""

from __future__ import annotations

import asyncio
import smtplib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port

from sealmail.mta.anvil import AnvilClient, AnvilTable, LocalAnvil, serve_anvil
from sealmail.mta.smtpd_limits import ClientLimiter, ClientLimits


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_counts_and_fixed_windows() -> None:
    clock = Clock()
    table = AnvilTable(60, clock)
    assert table.connect("smtp:1.2.3.4", "a") == (1, 1)
    assert table.connect("smtp:1.2.3.4", "b") == (2, 2)
    assert table.connect("smtp:5.6.7.8", "a") == (1, 1)
    table.disconnect("smtp:1.2.3.4", "a")
    assert table.connect("smtp:1.2.3.4", "a") == (2, 3)
    assert [table.event("smtp:1.2.3.4", "mail") for _ in range(3)] == [1, 2, 3]
    clock.now += 59
    assert table.event("smtp:1.2.3.4", "mail") == 4
    clock.now += 1  # the window ends: rates start over, connections stay
    assert table.event("smtp:1.2.3.4", "mail") == 1
    assert table.connect("smtp:1.2.3.4", "a") == (3, 1)
    assert table.rate("smtp:1.2.3.4", "newtls") == 0


def test_a_closed_stream_gives_back_its_connections() -> None:
    table = AnvilTable(60, Clock())
    table.connect("smtp:1.2.3.4", "a")
    table.connect("smtp:1.2.3.4", "a")
    table.connect("smtp:1.2.3.4", "b")
    table.forget("a")
    table.disconnect("smtp:1.2.3.4", "a")  # late: must not take b's
    assert table.entries["smtp:1.2.3.4"].count == 1


def test_idle_entries_are_purged() -> None:
    clock = Clock()
    table = AnvilTable(60, clock)
    for n in range(1000):
        table.event(f"smtp:10.0.{n // 256}.{n % 256}", "mail")
    table.connect("smtp:9.9.9.9", "a")
    clock.now += 61
    table.event("smtp:8.8.8.8", "mail")
    assert set(table.entries) == {"smtp:9.9.9.9", "smtp:8.8.8.8"}


def test_statistics_lines_are_anvils() -> None:
    clock = Clock()
    table = AnvilTable(60, clock)
    assert table.statistics() == []
    table.connect("smtp:1.2.3.4", "a")
    table.connect("smtp:1.2.3.4", "b")
    table.connect("smtp:5.6.7.8", "a")
    table.event("smtp:5.6.7.8", "mail")
    lines = table.statistics()
    assert [line.split(" at ")[0] for line in lines] == [
        "statistics: max connection count 2 for (smtp:1.2.3.4)",
        "statistics: max connection rate 2/60s for (smtp:1.2.3.4)",
        "statistics: max message rate 1/60s for (smtp:5.6.7.8)",
        "statistics: max cache size 2"]
    assert table.statistics() == []  # reported once


@pytest.mark.parametrize("line", ["", "connect", "connect a b", "frob smtp:1.2.3.4",
                                  "\x00\xff"])
def test_bad_requests_are_answered_with_an_error(line: str) -> None:
    assert AnvilTable(60).answer(line, None).startswith("error")


def test_the_service_is_shared_by_two_streams(tmp_path: Path) -> None:
    async def scenario() -> None:
        table = AnvilTable(60)
        path = tmp_path / "anvil"
        server = await serve_anvil(table, path)
        one, two = AnvilClient(path), AnvilClient(path)
        assert await one.request("connect", "smtp:1.2.3.4") == [1, 1]
        assert await two.request("connect", "smtp:1.2.3.4") == [2, 2]
        assert await two.request("mail", "smtp:1.2.3.4") == [1]
        assert await one.request("bogus", "x") is None
        await one.close()  # its connection ends with its stream
        for _ in range(100):
            if table.entries["smtp:1.2.3.4"].count == 1:
                break
            await asyncio.sleep(0.01)
        assert await two.request("connect", "smtp:1.2.3.4") == [2, 3]
        server.close()
        await server.wait_closed()
        await two.close()
        path.unlink()
        assert await two.request("connect", "smtp:1.2.3.4") is None  # no anvil: no limit

    asyncio.run(scenario())


def test_starttls_and_auth_limits(caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        limits = ClientLimits(new_tls_rate=1, auth_rate=2)
        anvil = LocalAnvil(AnvilTable(60))
        limiter = ClientLimiter(limits, anvil, "smtp", "1.2.3.4", "unknown[1.2.3.4]", "mx")
        assert await limiter.starttls() is None
        assert await limiter.tls_started() is None
        # As Postfix (smtpd.c: rate > limit): at the limit STARTTLS is still taken; the session
        # that goes over it is refused after its handshake, the next STARTTLS before.
        assert await limiter.starttls() is None
        refusal = await limiter.tls_started()
        assert refusal is not None and refusal.render() == (
            b"421 4.7.0 mx Error: too many new TLS sessions from unknown[1.2.3.4]\r\n")
        assert ("New TLS session rate limit exceeded: 2 from unknown[1.2.3.4] for service smtp"
                in caplog.text)
        refusal = await limiter.starttls()
        assert refusal is not None and refusal.render() == (
            b"454 4.7.0 Error: too many new TLS sessions from unknown[1.2.3.4]\r\n")
        assert "Refusing STARTTLS request from unknown[1.2.3.4] for service smtp" in caplog.text
        assert await limiter.auth() is None
        assert await limiter.auth() is None
        refusal = await limiter.auth()
        assert refusal is not None and refusal.render() == (
            b"450 4.7.1 Error: too many AUTH commands from 1.2.3.4\r\n")
        exempt = ClientLimiter(ClientLimits(auth_rate=1, exceptions=(
            __import__("ipaddress").ip_network("1.2.3.0/24"),)), anvil, "smtp", "1.2.3.4",
            "unknown[1.2.3.4]", "mx")
        assert [await exempt.auth() for _ in range(3)] == [None, None, None]

    asyncio.run(scenario())


# -- on a running master, two smtpd processes -----------------------------------------------


@dataclass
class Site:
    root: Path
    counted: int  # count limit 2, message rate 2, recipient rate 3
    rated: int  # connection rate 3

    def maillog(self) -> str:
        return (self.root / "maillog").read_text()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("anvil")
    config = root / "etc"
    config.mkdir()
    counted, rated = free_tcp_port(), free_tcp_port()
    (config / "main.cf").write_text(
        "myhostname = mx.example.com\nmydestination = example.com\n"
        f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
        f"maillog_file = {root / 'maillog'}\n"
        "local_transport = discard:\ndefault_transport = discard:\n"
        "smtpd_client_event_limit_exceptions =\nanvil_rate_time_unit = 1h\n"
        + mail_owner_opt_in())
    (config / "master.cf").write_text(
        f"127.0.0.1:{counted} inet n - n - 2 smtpd\n"
        "  -o smtpd_client_connection_count_limit=2\n"
        "  -o smtpd_client_message_rate_limit=2\n"
        "  -o smtpd_client_recipient_rate_limit=3\n"
        f"127.0.0.1:{rated} inet n - n - 1 smtpd\n"
        "  -o smtpd_client_connection_rate_limit=3\n"
        "discard unix - - n - - discard\n")
    # counted: two smtpd processes (or one per CPU, if fewer) asking the master's anvil over
    # its socket; rated: smtpd inside the master, asking the same table directly.
    with RunningMta(config):
        yield Site(root, counted, rated)
    # At the end, anvil(8)'s statistics lines.
    log = (root / "maillog").read_text()
    assert "postfix/anvil[" in log
    assert "statistics: max connection count 3 for (127.0.0.1:" in log


def connect(port: int, source: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=10,
                                    source_address=(source, 0))
    return sock


def greeting(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(1000)
        if not chunk:
            break
        data += chunk
    return data


def test_connection_count_limit_across_processes(site: Site) -> None:
    held = [connect(site.counted, "127.0.0.2") for _ in range(2)]
    try:
        assert all(greeting(sock).startswith(b"220 ") for sock in held)
        with connect(site.counted, "127.0.0.2") as third:
            assert greeting(third) == (
                b"421 4.7.0 mx.example.com Error: too many connections from 127.0.0.2\r\n")
        with connect(site.counted, "127.0.0.3") as other:  # another client is not limited
            assert greeting(other).startswith(b"220 ")
    finally:
        held.pop().close()
    log = site.maillog()
    assert ("warning: Connection concurrency limit exceeded: 3 from unknown[127.0.0.2] for "
            f"service 127.0.0.1:{site.counted}") in log

    def admitted() -> bool:
        with connect(site.counted, "127.0.0.2") as again:
            return greeting(again).startswith(b"220 ")

    wait_for(admitted, what="a connection once another ended")
    for sock in held:
        sock.close()


def test_connection_rate_limit(site: Site) -> None:
    replies = []
    for _ in range(4):
        with connect(site.rated, "127.0.0.4") as sock:
            replies.append(greeting(sock)[:3])
    assert replies == [b"220", b"220", b"220", b"421"]
    assert ("warning: Connection rate limit exceeded: 4 from unknown[127.0.0.4] for service "
            f"127.0.0.1:{site.rated}") in site.maillog()


def test_message_and_recipient_rate_limits(site: Site) -> None:
    with smtplib.SMTP("127.0.0.1", site.counted, timeout=10,
                      source_address=("127.0.0.5", 0)) as client:
        client.ehlo("client.test")
        assert client.mail("a@example.org")[0] == 250
        assert [client.rcpt(f"u{n}@example.com")[0] for n in range(4)] == [250, 250, 250, 450]
        client.rset()
        assert client.mail("a@example.org")[0] == 250
        assert client.rcpt("u@example.com") == (
            450, b"4.7.1 Error: too many recipients from 127.0.0.5")
        client.rset()
        assert client.mail("a@example.org") == (
            450, b"4.7.1 Error: too much mail from 127.0.0.5")
    log = site.maillog()
    assert "warning: Message delivery request rate limit exceeded: 3 from unknown[127.0.0.5]" \
        in log
    assert "warning: Recipient address rate limit exceeded: 4 from unknown[127.0.0.5]" in log
