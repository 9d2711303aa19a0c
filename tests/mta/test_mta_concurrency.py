"""Per-destination concurrency with slow start, and dead destinations: the pure window
(sealmail.mta.concurrency), then the queue manager with gated fake agents and a fake clock."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.mta.test_mta_qmgr import Clock, make, submit

from sealmail.mta.agents import DeliveryRequest, RecipientResult, Status
from sealmail.mta.concurrency import ConcurrencyPolicy, DestinationWindow
from sealmail.mta.queue import QueueName


def test_slow_start_grows_by_one_per_success_up_to_the_limit() -> None:
    window = DestinationWindow(ConcurrencyPolicy(limit=4, initial=2))
    assert window.window == 2
    window.start(0.0)
    window.start(0.0)
    assert not window.may_start(0.0)
    window.succeeded(0.0)
    assert window.window == 3 and window.may_start(0.0)
    for _ in range(5):
        window.start(0.0)
        window.succeeded(0.0)
    assert window.window == 4  # the limit
    assert DestinationWindow(ConcurrencyPolicy(limit=2, initial=5)).window == 2


def test_failures_shrink_the_window_then_kill_the_destination() -> None:
    window = DestinationWindow(ConcurrencyPolicy(limit=10, initial=5, dead_time=60.0))
    outcomes = []
    for _ in range(4):
        window.start(0.0)
        outcomes.append(window.failed(100.0, "4.4.1", "connect to x: Connection refused"))
    # 1/5 + 1/4 + 1/3 + 1/2 of a failed cohort: dead at the fourth failure, as Postfix.
    assert outcomes == [False, False, False, True]
    assert window.dead(159.0) and not window.may_start(159.0)
    assert window.dead_reason == "delivery temporarily suspended: connect to x: " \
                                 "Connection refused"
    assert not window.dead(160.0)  # rested: back with the initial window
    assert window.window == 5 and window.failed_cohorts == 0.0


def test_a_success_forgives_failures_and_no_cohort_limit_never_kills() -> None:
    window = DestinationWindow(ConcurrencyPolicy(limit=0, initial=1, failed_cohort_limit=2))
    window.start(0.0)
    assert not window.failed(0.0, "4.4.1", "x")  # half way
    window.start(0.0)
    window.succeeded(0.0)
    assert window.failed_cohorts == 0.0
    immortal = DestinationWindow(ConcurrencyPolicy(initial=1, failed_cohort_limit=0))
    for _ in range(10):
        immortal.start(0.0)
        assert not immortal.failed(0.0, "4.4.1", "x")
    assert immortal.window == 1
    with pytest.raises(ValueError):
        ConcurrencyPolicy(initial=0)


@dataclass
class GatedAgent:
    """Each delivery waits until the test releases it; `hop` makes every delivery fail at the
    destination's door (a refused connection)."""

    hop: bool = False
    waiting: list[asyncio.Event] = field(default_factory=list)
    calls: int = 0
    running: int = 0
    most_running: int = 0
    released_all: bool = False

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        gate = asyncio.Event()
        self.waiting.append(gate)
        if not self.released_all:
            await gate.wait()
        self.running -= 1
        if self.hop:
            return [RecipientResult(r.index, Status.DEFERRED, "4.4.1",
                                    "connect to lmtp.test: Connection refused", "none",
                                    hop_failure=True) for r in request.recipients]
        return [RecipientResult(r.index, Status.SENT, "2.0.0", "250 ok", "lmtp.test")
                for r in request.recipients]

    async def close(self) -> None:
        return None

    def release_one(self) -> None:
        for gate in self.waiting:
            if not gate.is_set():
                gate.set()
                return


async def settle(condition: object = None, rounds: int = 500) -> None:
    """Let the queue manager's tasks (and their disk threads) run: until `condition` holds, or
    without one for a few rounds of the loop."""
    for _ in range(rounds if condition is not None else 10):
        await asyncio.sleep(0.01)
        if condition is not None and condition():  # type: ignore[operator]
            return
    assert condition is None, "the queue manager did not get there"


def test_the_queue_manager_starts_slowly_and_stays_under_the_limit(tmp_path: Path) -> None:
    agent = GatedAgent()
    # cyrus: no process limit in the test's master.cf, so only the scheduler limits.
    queue, qmgr = make(tmp_path, "local_transport = cyrus:unix:/lmtp\n"
                       "cyrus_initial_destination_concurrency = 1\n"
                       "cyrus_destination_concurrency_limit = 3\n", agent, Clock())
    for n in range(8):
        submit(queue, f"user{n}@example.com")
    running_seen: list[int] = []

    async def scenario() -> None:
        run = asyncio.create_task(qmgr.run_once())
        await settle(lambda: len(queue.ids(QueueName.ACTIVE)) == 8 and agent.running >= 1)
        await settle()
        running_seen.append(agent.running)  # slow start: one at first
        while agent.calls < 8 or agent.running:
            agent.release_one()
            await settle()
            running_seen.append(agent.running)
        await run

    asyncio.run(scenario())
    assert running_seen[0] == 1
    assert agent.most_running == 3  # grew to the limit, never past it
    assert list(queue.entries()) == []


def test_a_dead_destination_defers_its_waiting_mail_without_trying(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    agent = GatedAgent(hop=True, released_all=True)
    queue, qmgr = make(tmp_path, "local_transport = cyrus:unix:/lmtp\n"
                       "initial_destination_concurrency = 1\nminimal_backoff_time = 100s\n"
                       "queue_run_delay = 1s\n", agent, clock)
    ids = [submit(queue, f"user{n}@example.com") for n in range(5)]
    caplog.set_level("INFO", logger="sealmail")
    asyncio.run(qmgr.run_once())
    assert agent.calls == 1  # one refused connection: the destination is dead
    assert [queue.find(i) for i in ids] == [QueueName.DEFERRED] * 5, agent.calls
    reasons = {queue.load(i, QueueName.DEFERRED).recipients[0].last.text  # type: ignore[union-attr]
               for i in ids}
    assert reasons == {"connect to lmtp.test: Connection refused",
                       "delivery temporarily suspended: connect to lmtp.test: Connection refused"}
    assert "status=deferred (delivery temporarily suspended: connect to lmtp.test" in caplog.text
    clock.now += 100  # its rest is over and the mail is due: tried again, one at a time
    agent.hop = False
    asyncio.run(qmgr.run_once())
    assert agent.calls == 6
    assert list(queue.entries()) == []


def test_sessions_are_cached_once_deliveries_come_back_to_back() -> None:
    window = DestinationWindow(ConcurrencyPolicy(initial=5))
    assert window.start(100.0) is False  # a first delivery: nothing to reuse a session for
    assert window.start(100.0) is False  # a burst is not a stream yet
    window.succeeded(100.5)
    window.succeeded(100.6)
    assert window.start(101.0) is True  # within a second of the last one: keep sessions
    window.succeeded(101.2)
    assert window.start(101.9) is True
    window.succeeded(102.0)
    assert window.start(200.0) is False  # the stream ran dry
    assert window.busy == 1


def test_flush_revives_a_dead_destination_and_idle_ones_are_forgotten() -> None:
    window = DestinationWindow(ConcurrencyPolicy(initial=1, dead_time=300.0))
    window.start(0.0)
    assert window.failed(0.0, "4.4.1", "refused")
    assert window.dead(10.0)
    window.revive()  # postqueue -f
    assert not window.dead(10.0) and window.may_start(10.0)
    window.start(10.0)
    assert not window.idle(10.1)  # busy
    window.succeeded(10.2)
    assert not window.idle(10.5)  # finished within the last second
    assert window.idle(11.5)


def test_postqueue_flush_tries_a_dead_destination_again(tmp_path: Path) -> None:
    clock = Clock()
    agent = GatedAgent(hop=True, released_all=True)
    queue, qmgr = make(tmp_path, "local_transport = cyrus:unix:/lmtp\n"
                       "initial_destination_concurrency = 1\nminimal_backoff_time = 1h\n",
                       agent, clock)
    ids = [submit(queue, f"user{n}@example.com") for n in range(3)]
    asyncio.run(qmgr.run_once())
    assert agent.calls == 1
    agent.hop = False
    qmgr.flush()  # the operator knows the destination is back
    asyncio.run(qmgr.run_once())
    assert agent.calls == 4
    assert all(queue.find(i) is None for i in ids)


def test_postqueue_i_tries_one_message_and_its_dead_destination_now(tmp_path: Path) -> None:
    from sealmail.mta.pickup import control_request
    from sealmail.mta.showq import retry_now

    clock = Clock()
    agent = GatedAgent(hop=True, released_all=True)
    queue, qmgr = make(tmp_path, "local_transport = cyrus:unix:/lmtp\n"
                       "initial_destination_concurrency = 1\nminimal_backoff_time = 1h\n",
                       agent, clock)
    ids = [submit(queue, f"user{n}@example.com") for n in range(3)]
    asyncio.run(qmgr.run_once())
    assert agent.calls == 1 and all(queue.find(i) is QueueName.DEFERRED for i in ids)
    agent.hop = False
    assert not retry_now(queue, ids[1])  # no master: moved, and tried when one starts
    assert queue.find(ids[1]) is QueueName.INCOMING
    assert control_request(f"retry {ids[1]}\n".encode()) == ("retry", ids[1])
    qmgr.retry(ids[1])  # what the master does with that line
    asyncio.run(qmgr.run_once())
    assert agent.calls == 2  # that message, though its destination was dead for an hour
    assert queue.find(ids[1]) is None
    assert [queue.find(i) for i in (ids[0], ids[2])] == [QueueName.DEFERRED] * 2  # not flushed


def test_control_lines_are_one_known_word_and_a_queue_id_where_one_belongs() -> None:
    from sealmail.mta.pickup import control_request

    assert control_request(b"wake\n") == ("wake", "")
    assert control_request(b"flush\r\n") == ("flush", "")
    for bad in (b"wake BCDFGH\n", b"retry\n", b"retry ../etc\n", b"retry BCD FGH\n",
                b"reboot\n", b"", b"\xff\n"):
        assert control_request(bad) is None, bad
