"""The queue manager with fake agents and an injectable clock: splitting, results, retries,
expiry with a DSN, concurrency limits, unavailable transports."""

from __future__ import annotations

import asyncio
import email
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sealmail.mta.agents import DeliveryAgent, DeliveryRequest, RecipientResult, Status
from sealmail.mta.agents.discard import DiscardAgent
from sealmail.mta.agents.error import ErrorAgent
from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.config.master_cf import parse_master_cf
from sealmail.mta.master import load_agent
from sealmail.mta.qmgr import QueueManager, static_agents
from sealmail.mta.queue import Envelope, Queue, QueueName, RecipientRecord

MASTER_CF = """\
lmtp      unix  -       -       n       -       2       lmtp
cyrus     unix  -       n       n       -       -       lmtp
error     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
"""


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeAgent:
    """Answers by recipient: `outcomes[address]` or SENT; can hold deliveries on a gate."""

    outcomes: dict[str, tuple[Status, str, str]] = field(default_factory=dict)
    requests: list[DeliveryRequest] = field(default_factory=list)
    gate: asyncio.Event | None = None
    running: int = 0
    most_running: int = 0

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        self.requests.append(request)
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        try:
            if self.gate is not None:
                await self.gate.wait()
            else:
                await asyncio.sleep(0)
        finally:
            self.running -= 1
        assert request.message.read()
        results = []
        for r in request.recipients:
            status, dsn, text = self.outcomes.get(r.address, (Status.SENT, "2.0.0", "250 ok"))
            results.append(RecipientResult(r.index, status, dsn, text, "lmtp.test[127.0.0.1]"))
        return results

    async def close(self) -> None:
        return None


def make(tmp_path: Path, main_text: str, agent: DeliveryAgent,
         clock: Clock) -> tuple[Queue, QueueManager]:
    main = MainConfig.from_document(parse_main_cf(
        "mydestination = example.com\nlocal_transport = lmtp:unix:/lmtp\n"
        "default_transport = error:5.7.1 no relay\n" + main_text), hostname="mx.example.com")
    queue = Queue(tmp_path / "q", clock=clock)
    queue.create_directories()
    agents = {"lmtp": agent, "error": ErrorAgent(), "discard": DiscardAgent()}
    qmgr = QueueManager(queue, main, parse_master_cf(MASTER_CF), static_agents(agents),
                        clock=clock)
    return queue, qmgr


def submit(queue: Queue, *recipients: str, sender: str = "alice@example.org",
           arrival: float = 1_000_000.0) -> str:
    envelope = Envelope(sender, tuple(RecipientRecord(r, r) for r in recipients),
                        arrival=arrival, size=20)
    return queue.enqueue(envelope, b"Subject: t\r\n\r\nbody\r\n")


def run(coro: object) -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_recipient_limit_splits_deliveries(tmp_path: Path) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "lmtp_destination_recipient_limit = 2\n", agent, Clock())
    queue_id = submit(queue, *(f"u{i}@example.com" for i in range(5)))
    run(qmgr.run_once())
    assert [len(r.recipients) for r in agent.requests] == [2, 2, 1]
    assert {r.transport for r in agent.requests} == {"lmtp"}
    assert {r.nexthop for r in agent.requests} == {"unix:/lmtp"}
    assert queue.find(queue_id) is None  # all sent: removed


def test_default_recipient_limit_is_50(tmp_path: Path) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "", agent, Clock())
    submit(queue, *(f"u{i}@example.com" for i in range(120)))
    run(qmgr.run_once())
    assert [len(r.recipients) for r in agent.requests] == [50, 50, 20]


def test_per_service_override_applies(tmp_path: Path) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "local_transport = cyrus:unix:/c\n"
                       "cyrus_destination_recipient_limit = 300\n", agent, Clock())
    submit(queue, *(f"u{i}@example.com" for i in range(120)))
    run(qmgr.run_once())
    assert [len(r.recipients) for r in agent.requests] == [120]
    assert agent.requests[0].transport == "cyrus"


def test_mixed_results_bounce_one_deliver_others(tmp_path: Path) -> None:
    agent = FakeAgent({"bad@example.com": (Status.BOUNCED, "5.1.1", "550 5.1.1 unknown")})
    queue, qmgr = make(tmp_path, "", agent, Clock())
    queue_id = submit(queue, "good@example.com", "bad@example.com")
    run(qmgr.run_once())
    assert queue.find(queue_id) is None
    [notice] = list(queue.entries())  # the non-delivery notice, from <> to the sender
    assert notice.envelope.sender == ""
    assert notice.envelope.is_bounce
    assert [r.record.address for r in notice.recipients] == ["alice@example.org"]
    run(qmgr.run_once())  # alice@example.org is not ours: the error transport bounces the
    assert list(queue.entries()) == []  # notice, and a notice about a notice is dropped


def test_bounce_notice_content(tmp_path: Path) -> None:
    agent = FakeAgent({"bad@example.com": (Status.BOUNCED, "5.1.1", "550 5.1.1 unknown")})
    queue, qmgr = make(tmp_path, "", agent, Clock())
    submit(queue, "good@example.com", "bad@example.com", sender="sender@example.com")
    run(qmgr.run_once())
    run(qmgr.run_once())
    notices = [r for r in agent.requests if r.sender == ""]
    assert len(notices) == 1
    assert [r.address for r in notices[0].recipients] == ["sender@example.com"]


def test_deferred_then_retried_then_delivered(tmp_path: Path) -> None:
    clock = Clock()
    agent = FakeAgent({"bob@example.com": (Status.DEFERRED, "4.4.1", "connect refused")})
    queue, qmgr = make(tmp_path, "minimal_backoff_time = 100s\nmaximal_backoff_time = 400s\n"
                       "queue_run_delay = 50s\n", agent, clock)
    queue_id = submit(queue, "bob@example.com")
    run(qmgr.run_once())
    assert queue.find(queue_id) is QueueName.DEFERRED
    entry = queue.load(queue_id, QueueName.DEFERRED)
    assert entry.attempts == 1
    assert entry.mtime == pytest.approx(clock.now + 100)
    assert entry.recipients[0].last is not None
    assert entry.recipients[0].last.text == "connect refused"
    clock.now += 60  # a scan, but the message is not due
    run(qmgr.run_once())
    assert len(agent.requests) == 1
    clock.now += 60
    agent.outcomes.clear()
    run(qmgr.run_once())
    assert len(agent.requests) == 2
    assert queue.find(queue_id) is None


def test_backoff_doubles_between_attempts(tmp_path: Path) -> None:
    clock = Clock()
    agent = FakeAgent({"bob@example.com": (Status.DEFERRED, "4.4.1", "down")})
    queue, qmgr = make(tmp_path, "minimal_backoff_time = 100s\nmaximal_backoff_time = 250s\n"
                       "queue_run_delay = 1s\n", agent, clock)
    queue_id = submit(queue, "bob@example.com")
    waits = []
    for _ in range(4):
        run(qmgr.run_once())
        entry = queue.load(queue_id, QueueName.DEFERRED)
        waits.append(round(entry.mtime - clock.now))
        clock.now = entry.mtime
    assert waits == [100, 200, 250, 250]


def test_expiry_returns_mail_with_a_dsn(tmp_path: Path) -> None:
    clock = Clock()
    agent = FakeAgent({"bob@example.com": (Status.DEFERRED, "4.4.1", "connect refused")})
    queue, qmgr = make(tmp_path, "maximal_queue_lifetime = 1h\nminimal_backoff_time = 10m\n"
                       "queue_run_delay = 1s\n", agent, clock)
    queue_id = submit(queue, "bob@example.com", sender="sender@example.com",
                      arrival=clock.now)
    run(qmgr.run_once())
    assert queue.find(queue_id) is QueueName.DEFERRED
    clock.now += 3600
    agent.gate = None
    bounce_ids: list[str] = []
    original_enqueue = queue.enqueue

    def spy(envelope: Envelope, content: bytes, target: QueueName = QueueName.INCOMING) -> str:
        new_id = original_enqueue(envelope, content, target)
        bounce_ids.append(new_id)
        spied.append(content)
        return new_id

    spied: list[bytes] = []
    queue.enqueue = spy  # type: ignore[method-assign]
    agent.outcomes["sender@example.com"] = (Status.DEFERRED, "4.0.0", "hold it")
    run(qmgr.run_once())
    assert queue.find(queue_id) is None
    assert len(spied) == 1
    report = email.message_from_bytes(spied[0])
    status = report.get_payload()[1].get_payload()[1]
    assert status["Final-Recipient"] == "rfc822; bob@example.com"
    assert status["Action"] == "failed"
    assert status["Status"] == "4.4.1"
    assert "connect refused" in status["Diagnostic-Code"]


def test_notify_never_suppresses_the_notice(tmp_path: Path) -> None:
    agent = FakeAgent({"bad@example.com": (Status.BOUNCED, "5.1.1", "unknown")})
    queue, qmgr = make(tmp_path, "", agent, Clock())
    envelope = Envelope("sender@example.com",
                        (RecipientRecord("bad@example.com", notify=("NEVER",)),), size=3)
    queue.enqueue(envelope, b"x\r\n")
    run(qmgr.run_once())
    assert list(queue.entries()) == []


def test_soft_bounce_defers_instead(tmp_path: Path) -> None:
    agent = FakeAgent({"bad@example.com": (Status.BOUNCED, "5.1.1", "unknown")})
    queue, qmgr = make(tmp_path, "soft_bounce = yes\n", agent, Clock())
    queue_id = submit(queue, "bad@example.com")
    run(qmgr.run_once())
    entry = queue.load(queue_id, QueueName.DEFERRED)
    assert entry.recipients[0].last is not None
    assert entry.recipients[0].last.dsn == "4.1.1"


def test_unavailable_transports_defer_with_430(tmp_path: Path) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "local_transport = local\ntransport_maps = "
                       "inline:{ gone.test=nosuch: }\n", agent, Clock())
    first = submit(queue, "bob@example.com")
    second = submit(queue, "x@gone.test")
    run(qmgr.run_once())
    for queue_id in (first, second):
        entry = queue.load(queue_id, QueueName.DEFERRED)
        last = entry.recipients[0].last
        assert last is not None
        assert last.dsn == "4.3.0"
        assert "transport" in last.text
    assert agent.requests == []


def test_load_agent_by_command_name() -> None:
    services = parse_master_cf(MASTER_CF + "retry unix - - n - - retry\n")
    main = MainConfig.from_document(parse_main_cf(""), hostname="h.test")
    assert isinstance(load_agent(services.get("error") or _missing(), main), ErrorAgent)
    assert isinstance(load_agent(services.get("discard") or _missing(), main), DiscardAgent)
    from sealmail.mta.agents.local import LocalAgent
    from sealmail.mta.qmgr import TransportUnavailable

    assert isinstance(load_agent(services.get("local") or _missing(), main), LocalAgent)
    virtual = parse_master_cf("virtual unix - n n - - virtual\n").get("virtual")
    with pytest.raises(TransportUnavailable, match="not implemented yet"):
        load_agent(virtual or _missing(), main)


def _missing() -> object:
    raise AssertionError("service missing")


def test_defer_transports_wait_for_flush(tmp_path: Path) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "defer_transports = lmtp\n", agent, Clock())
    queue_id = submit(queue, "bob@example.com")
    run(qmgr.run_once())
    assert queue.find(queue_id) is QueueName.DEFERRED
    assert agent.requests == []
    qmgr.flush()
    run(qmgr.run_once())
    assert queue.find(queue_id) is None
    assert len(agent.requests) == 1


def test_maxproc_limits_parallel_deliveries(tmp_path: Path) -> None:
    agent = FakeAgent()

    async def scenario() -> None:
        agent.gate = asyncio.Event()
        queue, qmgr = make(tmp_path, "", agent, Clock())
        for i in range(6):
            submit(queue, f"u{i}@example.com")
        task = asyncio.create_task(qmgr.run_once())
        for _ in range(50):
            await asyncio.sleep(0.01)
            if agent.running == 2:
                break
        assert agent.running == 2  # master.cf maxproc of lmtp is 2
        agent.gate.set()
        await task
        assert agent.most_running == 2
        assert len(agent.requests) == 6

    run(scenario())


def test_agent_exception_defers_everything(tmp_path: Path) -> None:
    class Broken(FakeAgent):
        async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
            raise RuntimeError("bug")

    queue, qmgr = make(tmp_path, "", Broken(), Clock())
    queue_id = submit(queue, "a@example.com", "b@example.com")
    run(qmgr.run_once())
    entry = queue.load(queue_id, QueueName.DEFERRED)
    assert [r.last.dsn for r in entry.recipients if r.last] == ["4.3.0", "4.3.0"]


def test_interrupted_delivery_resumes_only_pending(tmp_path: Path) -> None:
    """A crash after some recipients were marked: after recovery, only the rest go out."""
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "", agent, Clock())
    queue_id = submit(queue, "a@example.com", "b@example.com")
    queue.move(queue_id, QueueName.INCOMING, QueueName.ACTIVE)
    entry = queue.load(queue_id, QueueName.ACTIVE)
    from sealmail.mta.queue import RecipientState

    queue.mark(entry, [0], RecipientState.SENT)  # then the process died
    queue.recover()
    run(qmgr.run_once())
    assert [r.address for req in agent.requests for r in req.recipients] == ["b@example.com"]


def test_corrupt_queue_file_is_set_aside(tmp_path: Path) -> None:
    queue, qmgr = make(tmp_path, "", FakeAgent(), Clock())
    queue_id = submit(queue, "a@example.com")
    queue.path_of(queue_id, QueueName.INCOMING).write_bytes(b"not a queue file\n")
    run(qmgr.run_once())
    assert queue.ids(QueueName.CORRUPT) == [queue_id]


def test_run_loop_wakes_and_stops(tmp_path: Path) -> None:
    agent = FakeAgent()

    async def scenario() -> None:
        queue, qmgr = make(tmp_path, "", agent, Clock())
        stop = asyncio.Event()
        runner = asyncio.create_task(qmgr.run(stop))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(submit, queue, "late@example.com")
        qmgr.wake()
        for _ in range(100):
            await asyncio.sleep(0.01)
            if agent.requests:
                break
        stop.set()
        await runner
        assert [r.recipients[0].address for r in agent.requests] == ["late@example.com"]

    run(scenario())



def test_message_deleted_during_delivery(tmp_path: Path) -> None:
    """postsuper -d while the agent works: nothing is recorded, nothing crashes."""
    agent = FakeAgent({"bad@example.com": (Status.BOUNCED, "5.1.1", "unknown")})

    async def scenario() -> None:
        agent.gate = asyncio.Event()
        queue, qmgr = make(tmp_path, "", agent, Clock())
        queue_id = submit(queue, "bad@example.com")
        task = asyncio.create_task(qmgr.run_once())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if agent.running:
                break
        assert queue.remove(queue_id)
        agent.gate.set()
        await task
        assert list(queue.entries()) == []  # and no notice about a message that is gone

    run(scenario())
