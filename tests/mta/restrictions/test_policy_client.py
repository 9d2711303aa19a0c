"""check_policy_service's client against a scripted policy server (asyncio, in the test): the
request as Postfix 3.7 sends it, one connection reused, max_idle/max_ttl on an injected clock,
request_limit, timeouts and bad answers giving the default action, over inet: and unix:."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.restrictions import Engine, Facts
from sealmail.mta.restrictions.policy_client import PolicyClient, PolicySettings

ATTRIBUTES_37 = [
    "request", "protocol_state", "protocol_name", "client_address", "client_name", "client_port",
    "reverse_client_name", "server_address", "server_port", "helo_name", "sender", "recipient",
    "recipient_count", "queue_id", "instance", "size", "etrn_domain", "stress", "sasl_method",
    "sasl_username", "sasl_sender", "ccert_subject", "ccert_issuer", "ccert_fingerprint",
    "ccert_pubkey_fingerprint", "encryption_protocol", "encryption_cipher",
    "encryption_keysize", "policy_context", "compatibility_level", "mail_version",
]


class PolicyServer:
    """Answers each request with the next scripted answer (None: say nothing; bytes: raw)."""

    def __init__(self, answers: list[bytes | None]) -> None:
        self.answers = answers
        self.requests: list[list[str]] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                lines = []
                while (line := await reader.readline()) not in (b"\n", b""):
                    lines.append(line.decode().rstrip("\n"))
                if not lines:
                    return
                self.requests.append(lines)
                answer = self.answers.pop(0) if self.answers else b"action=DUNNO\n\n"
                if answer is None:
                    await asyncio.sleep(30)
                    return
                writer.write(answer)
                await writer.drain()
        finally:
            writer.close()


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _engine(server: str, extra: str = "") -> Engine:
    text = ("mydestination = example.com\nmynetworks = 10.0.0.0/8\n"
            f"smtpd_recipient_restrictions = check_policy_service {server}\n"
            "smtpd_policy_service_retry_delay = 0s\nsmtpd_peername_lookup = no\n" + extra)
    return Engine.from_config(MainConfig.from_document(parse_main_cf(text),
                                                       hostname="mx.example.com"))


def run(answers: list[bytes | None],
        body: Callable[[Engine, PolicyServer], Awaitable[object]], extra: str = "",
        unix: Path | None = None) -> PolicyServer:
    server = PolicyServer(answers)

    async def main() -> None:
        if unix is not None:
            listener = await asyncio.start_unix_server(server.handle, str(unix))
            spec = f"unix:{unix}"
        else:
            listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
            spec = f"inet:127.0.0.1:{listener.sockets[0].getsockname()[1]}"
        engine = _engine(spec, extra)
        try:
            await body(engine, server)
        finally:
            for client in engine.policy_clients.values():
                client.close()
            listener.close()

    asyncio.run(main())
    return server


def facts(**more: object) -> Facts:
    values: dict[str, object] = {"client_address": "192.0.2.1", "client_port": "40000",
                                 "server_address": "192.0.2.25", "server_port": "25",
                                 "helo": "client.test", "sender": "a@sender.test",
                                 "protocol": "ESMTP", "where": "RCPT", "instance": "1.2.3"}
    values.update(more)
    return Facts(**values)  # type: ignore[arg-type]


async def rcpt(engine: Engine, recipient: str = "bob@example.com", **more: object) -> str | None:
    reply = await engine.session(facts(**more)).rcpt(recipient)
    return None if reply is None else reply.render().decode().strip()


def test_the_request_is_postfix_3_7_s() -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        assert await rcpt(engine) is None

    server = run([b"action=DUNNO\n\n"], body)
    [request] = server.requests
    assert [line.split("=", 1)[0] for line in request] == ATTRIBUTES_37
    values = dict(line.split("=", 1) for line in request)
    assert values["request"] == "smtpd_access_policy"
    assert values["protocol_state"] == "RCPT"
    assert values["client_name"] == "unknown"
    assert values["sender"] == "a@sender.test"
    assert values["recipient"] == "bob@example.com"
    assert values["recipient_count"] == "0"  # only counted at DATA and END-OF-MESSAGE
    assert values["instance"] == "1.2.3"


@pytest.mark.parametrize(("answer", "expected"), [
    (b"action=OK\n\n", None),
    (b"action=REJECT no thanks\n\n",
     "554 5.7.1 <bob@example.com>: Recipient address rejected: no thanks"),
    (b"action=defer_if_permit Greylisted\n\n",
     "450 4.7.1 <bob@example.com>: Recipient address rejected: Greylisted"),
    (b"action=550 5.7.23 SPF fail\nother=x\n\n",
     "550 5.7.23 <bob@example.com>: Recipient address rejected: SPF fail"),
    (b"garbage\n\n",
     "451 4.3.5 <bob@example.com>: Recipient address rejected: Server configuration problem"),
    (b"other=1\n\n",
     "451 4.3.5 <bob@example.com>: Recipient address rejected: Server configuration problem"),
])
def test_answers(answer: bytes, expected: str | None) -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        assert await rcpt(engine) == expected

    # A bad answer is tried once more (try_limit 2) on a new connection, then the default.
    run([answer, answer], body)


def test_a_bad_answer_is_retried_on_a_new_connection() -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        assert await rcpt(engine) is None
        assert server.connections == 2

    run([b"nonsense\n\n", b"action=OK\n\n"], body)


def test_silence_times_out_to_the_default_action(caplog: pytest.LogCaptureFixture) -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        assert await rcpt(engine) is None  # default action DUNNO

    run([None], body, "smtpd_policy_service_timeout = 1s\nsmtpd_policy_service_try_limit = 1\n"
        "smtpd_policy_service_default_action = DUNNO\n")
    assert "problem talking to server inet:127.0.0.1:" in caplog.text
    assert caplog.records[0].levelno == logging.WARNING


def test_one_connection_reused_until_idle_or_old() -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        [client] = engine.policy_clients.values()
        clock = Clock()
        client.clock = clock
        for _ in range(3):
            await rcpt(engine)
        assert server.connections == 1
        clock.now += 301  # past smtpd_policy_service_max_idle (300s)
        await rcpt(engine)
        assert server.connections == 2
        for _ in range(4):
            clock.now += 299
            await rcpt(engine)
        assert server.connections == 3  # past smtpd_policy_service_max_ttl (1000s)

    run([], body)


def test_request_limit() -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        for _ in range(3):
            await rcpt(engine)
        assert server.connections == 3

    run([], body, "smtpd_policy_service_request_limit = 1\n")


def test_over_a_unix_socket(tmp_path: Path) -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        assert await rcpt(engine) == (
            "450 4.7.1 <bob@example.com>: Recipient address rejected: later")

    run([b"action=DEFER later\n\n"], body, unix=tmp_path / "policy")


def test_bad_endpoints_are_refused() -> None:
    for spec in ("inet:nohost", "tcp:1.2.3.4:9", "unix:"):
        with pytest.raises(ValueError):
            PolicyClient(spec, PolicySettings())


def test_an_idle_connection_is_closed_in_time() -> None:
    async def body(engine: Engine, server: PolicyServer) -> None:
        await rcpt(engine)
        [client] = engine.policy_clients.values()
        assert client._streams is not None
        for _ in range(200):  # smtpd_policy_service_max_idle = 1s: the timer closes it
            if client._streams is None:
                break
            await asyncio.sleep(0.05)
        assert client._streams is None
        await rcpt(engine)
        assert server.connections == 2

    run([], body, "smtpd_policy_service_max_idle = 1s\n")
