"""sealmail.server.session: the SASL exchange every daemon runs, and the read every daemon waits on.

The daemons' own tests run the exchange through real clients and a real sasldb; these drive it
with a scripted mechanism and a host that records what it was asked to send, so each rule
(challenges, failures counted and limited, temporary failures, logs without secrets) is pinned
once. No test waits: the failure delay is 0 here, and the read tests use streams fed by hand.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

import pytest

from sealmail.auth.authenticator import MechanismUnavailable
from sealmail.auth.throttle import FailurePenalty
from sealmail.proto.sasl import Challenge, Failure, FailureReason, Success
from sealmail.server.session import Drain, Interruption, SaslExchange, read_client

log = logging.getLogger("sealmail.test.sasl")


class ScriptedMechanism:
    def __init__(self, name: str, results: Iterable[Challenge | Success | Failure]) -> None:
        self.name = name
        self.results = list(results)
        self.received: list[bytes | None] = []

    def step(self, data: bytes | None) -> Challenge | Success | Failure:
        self.received.append(data)
        return self.results.pop(0)


class FakeAuthenticator:
    """Serves the mechanisms it was given; anything else is UNKNOWN_MECHANISM."""

    def __init__(self, **mechanisms: ScriptedMechanism) -> None:
        self.mechanisms = mechanisms
        self.started: list[dict[str, object]] = []
        self.penalty = FailurePenalty()

    def start(
        self, mechanism: str, secure: bool, tls_peer: str | None = None, **options: object
    ) -> ScriptedMechanism:
        self.started.append({"mechanism": mechanism, "secure": secure, "peer": tls_peer, **options})
        if mechanism not in self.mechanisms:
            raise MechanismUnavailable(mechanism, FailureReason.UNKNOWN_MECHANISM)
        return self.mechanisms[mechanism]

    def available_mechanisms(self, secure: bool, service: str, **tls: object) -> tuple[str, ...]:
        names = tuple(self.mechanisms)
        return names if secure else tuple(n for n in names if n != "EXTERNAL")


class RecordingHost:
    def __init__(self, accept: bool = True) -> None:
        self.secure = True
        self.tls_bits: int | None = 256
        self.tls_peer: str | None = "alice@example.com"
        self.session_id = "S1"
        self.client = "[192.0.2.1]"
        self.sent: list[tuple[str, object]] = []
        self.accept = accept

    def sasl_challenge(self, data: bytes) -> None:
        self.sent.append(("challenge", data))

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.sent.append(("refuse", reason))

    async def sasl_accept(self, result: Success) -> bool:
        self.sent.append(("accept", result.authzid))
        return self.accept

    def sasl_give_up(self) -> None:
        self.sent.append(("give up", None))


def exchange(
    host: RecordingHost, authenticator: FakeAuthenticator, **options: object
) -> SaslExchange:
    return SaslExchange(
        host,
        authenticator,  # type: ignore[arg-type]
        "pop",
        log=log,
        **{"failure_delay": 0.0, **options},  # type: ignore[arg-type]
    )


BAD = Failure(FailureReason.BAD_CREDENTIALS, "wrong password for alice")
DOWN = Failure(FailureReason.TEMPORARY, "saslauthd is not answering")


def test_challenges_go_out_until_the_mechanism_decides() -> None:
    mechanism = ScriptedMechanism("SCRAM-SHA-256", [Challenge(b"c1"), Success("alice", "alice")])
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(**{"SCRAM-SHA-256": mechanism}))
    assert asyncio.run(auth.start("SCRAM-SHA-256", b"first")) is True
    assert host.sent == [("challenge", b"c1")]
    assert asyncio.run(auth.step(b"second")) is True
    assert host.sent[-1] == ("accept", "alice")
    assert mechanism.received == [b"first", b"second"]
    assert auth.mechanism is None and auth.mechanism_name == "SCRAM-SHA-256"


def test_the_connection_s_protection_reaches_the_authenticator() -> None:
    authenticator = FakeAuthenticator(PLAIN=ScriptedMechanism("PLAIN", [BAD]))
    auth = exchange(RecordingHost(), authenticator, success_data=True)
    asyncio.run(auth.start("PLAIN", None))
    assert authenticator.started == [
        {
            "mechanism": "PLAIN",
            "secure": True,
            "peer": "alice@example.com",
            "service": "pop",
            "tls_bits": 256,
            "success_data": True,
        }
    ]


def test_offered_mechanisms_follow_the_connection() -> None:
    host = RecordingHost()
    external, plain = ScriptedMechanism("EXTERNAL", []), ScriptedMechanism("PLAIN", [])
    auth = exchange(host, FakeAuthenticator(EXTERNAL=external, PLAIN=plain))
    assert auth.offered() == ("EXTERNAL", "PLAIN")
    host.secure = False
    assert auth.offered() == ("PLAIN",)


def test_a_mechanism_this_session_may_not_use_is_refused_and_not_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(), command="AUTHENTICATE")
    with caplog.at_level(logging.INFO, logger=log.name):
        assert asyncio.run(auth.start("GSSAPI", b"ticket")) is True
    assert host.sent == [("refuse", FailureReason.UNKNOWN_MECHANISM)]
    assert auth.failures == 0
    assert "S1: AUTHENTICATE GSSAPI refused from [192.0.2.1]: unknown mechanism" in caplog.text


def test_failures_are_counted_and_end_the_session_at_the_limit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mechanism = ScriptedMechanism("PLAIN", [BAD, BAD])
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(PLAIN=mechanism), max_failures=2)
    with caplog.at_level(logging.WARNING, logger=log.name):
        assert asyncio.run(auth.start("PLAIN", b"\0alice\0one")) is True
        assert asyncio.run(auth.start("PLAIN", b"\0alice\0two")) is False
    refusal = ("refuse", FailureReason.BAD_CREDENTIALS)
    assert host.sent == [refusal, refusal, ("give up", None)]  # the refusal goes out first
    assert auth.failures == 2
    failed = "badlogin: [192.0.2.1] PLAIN [SASL(-13): authentication failure: wrong password"
    assert caplog.text.count(failed) == 2 and "SESSIONID=<S1>" in caplog.text


def test_a_temporary_failure_is_not_the_client_s_unless_the_daemon_counts_it() -> None:
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(PLAIN=ScriptedMechanism("PLAIN", [DOWN])))
    assert asyncio.run(auth.start("PLAIN", b"x")) is True
    assert auth.failures == 0 and host.sent == [("refuse", FailureReason.TEMPORARY)]

    counting = exchange(
        RecordingHost(),
        FakeAuthenticator(PLAIN=ScriptedMechanism("PLAIN", [DOWN])),
        temporary_counts=True,
        max_failures=1,
    )
    assert asyncio.run(counting.start("PLAIN", b"x")) is False
    assert counting.failures == 1


def test_a_password_command_is_a_plain_exchange_and_never_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    mechanism = ScriptedMechanism("PLAIN", [BAD])
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(PLAIN=mechanism))
    with caplog.at_level(logging.DEBUG, logger=log.name):
        assert asyncio.run(auth.password("alice", "s3cret pass", "USER")) is True
    assert mechanism.received == [b"\0alice\0s3cret pass"]
    assert host.sent == [("refuse", FailureReason.BAD_CREDENTIALS)]
    assert "badlogin: [192.0.2.1] plaintext alice [SASL(-13)" in caplog.text
    assert "s3cret" not in caplog.text


def test_an_identity_the_host_refuses_after_success_counts_as_a_failure() -> None:
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator(), max_failures=1)
    refused: list[str] = []
    assert asyncio.run(auth.count_failure(lambda: refused.append("535"))) is False
    assert refused == ["535"] and host.sent == [("give up", None)]


def test_an_answer_with_no_exchange_under_way_is_malformed() -> None:
    host = RecordingHost()
    auth = exchange(host, FakeAuthenticator())
    assert asyncio.run(auth.step(b"stray")) is True
    assert host.sent == [("refuse", FailureReason.MALFORMED)]


def test_abort_forgets_the_mechanism(caplog: pytest.LogCaptureFixture) -> None:
    mechanism = ScriptedMechanism("LOGIN", [Challenge(b"Username:")])
    auth = exchange(RecordingHost(), FakeAuthenticator(LOGIN=mechanism))
    asyncio.run(auth.start("LOGIN", None))
    with caplog.at_level(logging.INFO, logger=log.name):
        auth.abort("cancelled by the client")
    assert auth.mechanism is None
    assert "S1: AUTH aborted from [192.0.2.1]: cancelled by the client" in caplog.text


# -- read_client ----------------------------------------------------------------------------


async def _read(
    fed: bytes | None, *, draining: bool, idle: bool | None, timeout: float = 5.0
) -> bytes | Interruption:
    reader = asyncio.StreamReader()
    if fed is not None:
        reader.feed_data(fed)
    stop = Drain()
    if draining:
        stop.set()
    return await read_client(
        reader, timeout=timeout, draining=stop, idle=None if idle is None else lambda: idle
    )


def test_read_client_gives_the_bytes_that_came() -> None:
    assert asyncio.run(_read(b"NOOP\r\n", draining=False, idle=True)) == b"NOOP\r\n"


def test_an_idle_session_stops_at_once_when_the_daemon_drains() -> None:
    assert asyncio.run(_read(b"NOOP\r\n", draining=True, idle=True)) is Interruption.SHUTDOWN


def test_a_busy_session_reads_on_while_the_daemon_drains() -> None:
    assert asyncio.run(_read(b"DATA\r\n", draining=True, idle=False)) == b"DATA\r\n"


def test_without_idle_a_drain_ends_the_wait() -> None:
    assert asyncio.run(_read(None, draining=True, idle=None)) is Interruption.SHUTDOWN


def test_a_silent_client_times_out() -> None:
    got = asyncio.run(_read(None, draining=False, idle=True, timeout=0.01))
    assert got is Interruption.IDLE_TIMEOUT


async def _drain_during_read(idle: bool) -> tuple[bytes | Interruption, bool]:
    """A drain that comes while the session waits; the client speaks a moment later."""
    reader, stop = asyncio.StreamReader(), Drain()
    waiting = asyncio.create_task(read_client(reader, timeout=60, draining=stop, idle=lambda: idle))
    await asyncio.sleep(0)
    stop.set()
    for _ in range(5):  # the timeout fires, then the task takes its cancellation
        await asyncio.sleep(0)
    ended_early = waiting.done()
    reader.feed_data(b".\r\n")
    return await waiting, ended_early


def test_a_drain_ends_an_idle_session_s_wait_under_way() -> None:
    assert asyncio.run(_drain_during_read(idle=True)) == (Interruption.SHUTDOWN, True)


def test_a_drain_lets_a_busy_session_s_wait_go_on() -> None:
    assert asyncio.run(_drain_during_read(idle=False)) == (b".\r\n", False)


def test_failures_in_other_sessions_lengthen_the_delay(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A client reconnecting after each refusal does not start again at one delay; neither does
    a user name guessed from many clients."""
    waited: list[float] = []

    async def sleep(seconds: float) -> None:
        waited.append(seconds)

    monkeypatch.setattr("sealmail.server.session.asyncio.sleep", sleep)
    authenticator = FakeAuthenticator(PLAIN=ScriptedMechanism("PLAIN", [BAD] * 20))
    with caplog.at_level(logging.INFO, logger=log.name):
        for _ in range(3):  # three sessions, one failure each, from one client
            auth = exchange(RecordingHost(), authenticator, failure_delay=2.0)
            asyncio.run(auth.password("alice", "guess", "LOGIN"))
        assert waited == [2.0, 4.0, 6.0]
        assert "3 recent failed logins from [192.0.2.1] or for alice; answering in 6s" in (
            caplog.text
        )
        for _ in range(10):
            auth = exchange(RecordingHost(), authenticator, failure_delay=2.0)
            asyncio.run(auth.start("PLAIN", b"\0alice\0guess"))
    assert max(waited) == 15.0  # PENALTY_DELAY_CAP
    host = RecordingHost()
    host.client = "[192.0.2.99]"  # another client claiming the same user
    auth = exchange(host, authenticator, failure_delay=2.0)
    asyncio.run(auth.password("alice", "guess", "LOGIN"))
    assert waited[-1] == 8.0  # alice's 4 password failures, not the other client's 13


def test_failure_penalty_forgets_after_its_window_and_beyond_its_capacity() -> None:
    now = [0.0]
    penalty = FailurePenalty(window=60.0, capacity=3, clock=lambda: now[0])
    assert penalty.record("client a") == 1
    assert penalty.record("client a", "user x") == 2
    now[0] = 61.0
    assert penalty.record("client a") == 1
    for key in ("b", "c", "d"):
        penalty.record(key)
    assert penalty.record("client a") == 1  # evicted: the oldest key went first
