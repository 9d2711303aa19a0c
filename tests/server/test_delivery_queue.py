"""lmtpd's delivery thread (sealmail.server.delivery_queue): what queues while a batch runs is
the next batch, each session gets its own replies, and a failing batch answers 451, not a hang."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any, cast

from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.delivery.recipient import Recipient
from sealmail.proto.smtp import Reply
from sealmail.server.delivery_queue import DeliveryQueue


class FakeEngine:
    """Answers each envelope with 250 and its session id; the first batch waits for `release`."""

    def __init__(self, fail: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail = fail

    def deliver_batch(self, items: Sequence[tuple[Envelope, bytes]]) -> list[list[Reply]]:
        self.batches.append([envelope.session_id for envelope, _ in items])
        if len(self.batches) == 1:
            self.started.set()
            assert self.release.wait(30)
        if self.fail:
            raise RuntimeError("broken")
        return [[Reply(250, "2.1.5", envelope.session_id)] * len(envelope.recipients)
                for envelope, _ in items]


def envelope(session: str, count: int = 1) -> Envelope:
    recipient = cast(Recipient, object())
    return Envelope(sender="", recipients=(recipient,) * count, session_id=session)


def queue_for(engine: FakeEngine) -> DeliveryQueue:
    return DeliveryQueue(cast(DeliveryEngine, engine))


def test_what_queues_during_a_batch_is_the_next_batch_and_each_gets_its_replies() -> None:
    engine = FakeEngine()
    queue = queue_for(engine)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(queue.deliver(envelope("s0"), b""))
        await asyncio.to_thread(engine.started.wait, 30)
        others = [asyncio.ensure_future(queue.deliver(envelope(f"s{n}", n), b""))
                  for n in range(1, 4)]
        await asyncio.sleep(0)  # the three are queued behind the running batch
        engine.release.set()
        return await asyncio.gather(first, *others)

    results = asyncio.run(main())
    queue.close()
    assert engine.batches == [["s0"], ["s1", "s2", "s3"]]
    assert [[r.text for r in replies] for replies in results] == [
        ["s0"], ["s1"], ["s2", "s2"], ["s3", "s3", "s3"]
    ]


def test_a_batch_that_raises_answers_451_to_each_recipient() -> None:
    engine = FakeEngine(fail=True)
    engine.release.set()
    queue = queue_for(engine)

    async def main() -> list[Reply]:
        return await queue.deliver(envelope("s0", 2), b"")

    replies = asyncio.run(main())
    queue.close()
    assert [(r.code, r.enhanced) for r in replies] == [(451, "4.3.0")] * 2


def test_close_lets_the_queued_deliveries_finish() -> None:
    engine = FakeEngine()
    queue = queue_for(engine)

    async def main() -> None:
        pending = [asyncio.ensure_future(queue.deliver(envelope(f"s{n}"), b"")) for n in range(3)]
        await asyncio.to_thread(engine.started.wait, 30)
        closing = asyncio.ensure_future(asyncio.to_thread(queue.close))
        engine.release.set()
        await closing
        assert all(task.done() for task in pending)

    asyncio.run(main())
    assert sum(len(batch) for batch in engine.batches) == 3


def test_a_batch_holds_at_most_max_copies_recipients_but_always_one_envelope() -> None:
    engine = FakeEngine()
    queue = DeliveryQueue(cast(DeliveryEngine, engine), max_copies=5)

    async def main() -> list[Any]:
        first = asyncio.ensure_future(queue.deliver(envelope("s0"), b""))
        await asyncio.to_thread(engine.started.wait, 30)
        sizes = {"s1": 2, "s2": 3, "s3": 1, "s4": 9, "s5": 1}
        others = [asyncio.ensure_future(queue.deliver(envelope(name, count), b""))
                  for name, count in sizes.items()]
        await asyncio.sleep(0)  # all queued behind the running batch
        engine.release.set()
        return await asyncio.gather(first, *others)

    results = asyncio.run(main())
    queue.close()
    assert engine.batches == [["s0"], ["s1", "s2"], ["s3"], ["s4"], ["s5"]]
    assert [len(replies) for replies in results] == [1, 2, 3, 1, 9, 1]
