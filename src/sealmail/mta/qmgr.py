"""The queue manager: takes mail from incoming (and deferred, when due) and has it delivered.

For each message: move it to active, route every pending recipient (sealmail.mta.routing),
group recipients by (transport, nexthop), split each group into deliveries of at most
`<transport>_destination_recipient_limit` recipients, hand each delivery to the transport's
agent (at most master.cf maxproc deliveries at a time per transport, and per destination as
many as its concurrency window allows: slow start, dead destinations and session caching on
demand, sealmail.mta.concurrency), and record every recipient's result in the queue file
before going on. Then:

- all recipients done: the message is removed;
- some failed for good: one non-delivery notice (RFC 3464) goes to the sender, and the copies
  notify_classes asks for to the postmaster (sealmail.mta.notify), queued durably before those
  recipients are marked done;
- some deferred: the message goes to deferred/ with its next attempt time as the file's mtime
  (sealmail.mta.retry); once older than maximal_queue_lifetime it is returned instead. Once it
  has waited delay_warning_time, the sender gets one delay notice (Action: delayed).

Mail to the double-bounce address (double_bounce_sender) is discarded here, as Postfix's queue
manager does, so a postmaster notice that bounces ends the chain.

A transport that master.cf does not define, or whose agent is not part of this issue (local,
pipe, virtual), defers its mail with 4.3.0; a transport in defer_transports waits for a flush.
Everything that touches the disk runs in worker threads; the clock is injectable for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from sealmail.mta.agents import (
    DeliveryAgent,
    DeliveryRequest,
    QueuedRecipient,
    RecipientResult,
    Status,
)
from sealmail.mta.bounce import FailedRecipient, build_bounce
from sealmail.mta.cleanup import Cleanup, cleanup_from_config, queue_message
from sealmail.mta.concurrency import ConcurrencyPolicy, DestinationWindow
from sealmail.mta.config import MainConfig, MasterCf, MasterService, open_table
from sealmail.mta.config.parameters import (
    MAIN,
    transport_concurrency_limit,
    transport_failed_cohort_limit,
    transport_initial_concurrency,
    transport_recipient_limit,
)
from sealmail.mta.notify import (
    Notice,
    NotifySettings,
    Owed,
    delay_notices,
    failure_notices,
)
from sealmail.mta.queue import (
    AttemptResult,
    CorruptQueueFile,
    Envelope,
    Queue,
    QueuedRecipientEntry,
    QueueError,
    QueueFile,
    QueueName,
    RecipientRecord,
    RecipientState,
)
from sealmail.mta.retry import RetrySchedule
from sealmail.mta.routing import Route, Router, RoutingPolicy, batches, group_by_route

log = logging.getLogger("sealmail.mta.qmgr")


DESTINATIONS_KEPT = 1000  # past this many, idle destinations are forgotten
RETRIES_REMEMBERED = 1000  # postqueue -i requests not yet picked up; past this, forgotten


class TransportUnavailable(Exception):
    """No agent can serve this transport now; the text is the deferral reason."""


AgentFactory = Callable[[MasterService, MainConfig], DeliveryAgent]


@dataclass
class Transport:
    name: str
    agent: DeliveryAgent
    settings: MainConfig
    slots: asyncio.Semaphore | None  # None: no process limit (maxproc 0)
    command: str = ""  # master.cf command: its delivery lines log as that program (lmtp, smtp)
    concurrency: ConcurrencyPolicy = field(default_factory=ConcurrencyPolicy)
    recipient_limit: int = 50  # <transport>_destination_recipient_limit


@dataclass
class _Destination:
    """One destination's concurrency window, and the deliveries waiting for room in it."""

    window: DestinationWindow
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)


def result_line(queue_id: str, recipient: QueuedRecipient, result: RecipientResult,
                delays: tuple[float, float, float, float], status_text: str | None = None) -> str:
    """`QUEUEID: to=<..>, orig_to=<..>, relay=.., delay=.., delays=a/b/c/d, dsn=.., status=..
    (text)`, the shape of Postfix's delivery log lines."""
    total = sum(delays)
    parts = [f"{queue_id}: to=<{recipient.address}>"]
    if recipient.original and recipient.original != recipient.address:
        parts.append(f"orig_to=<{recipient.original}>")
    parts.append(f"relay={result.relay or 'none'}")
    parts.append(f"delay={_seconds(total)}")
    parts.append("delays=" + "/".join(_seconds(d) for d in delays))
    parts.append(f"dsn={result.dsn}")
    parts.append(f"status={status_text or result.status.value} ({result.text})")
    return ", ".join(parts)


def _seconds(value: float) -> str:
    """Seconds with at most two decimals, as delay_logging_resolution_limit = 2 prints them."""
    text = f"{max(value, 0.0):.2f}".rstrip("0").rstrip(".")
    return text or "0"


@dataclass
class QueueManager:
    queue: Queue
    main: MainConfig
    master_cf: MasterCf
    agent_factory: AgentFactory
    clock: Callable[[], float] = time.time
    schedule: RetrySchedule | None = None
    router: Router | None = None
    _transports: dict[str, Transport | str] = field(default_factory=dict)
    _in_flight: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _wakeup: asyncio.Event | None = None
    _flush_requested: bool = False
    _last_deferred_scan: float = float("-inf")
    _cleanup: Cleanup | None = None
    _destinations: dict[tuple[str, str], _Destination] = field(default_factory=dict)
    _retried: set[str] = field(default_factory=set)  # postqueue -i: revive their destinations

    def __post_init__(self) -> None:
        if self.schedule is None:
            self.schedule = RetrySchedule.from_config(self.main)
        if self.router is None:
            tables = [open_table(spec).lookup for spec in self.main.get(MAIN.transport_maps)]
            self.router = Router(RoutingPolicy.from_config(self.main), tables)
        self.defer_transports: frozenset[str] = frozenset(self.main.get(MAIN.defer_transports))
        self.soft_bounce = self.main.get(MAIN.soft_bounce)
        self.notify = NotifySettings.from_config(self.main)
        self.active_limit = max(1, self.main.get(MAIN.qmgr_message_active_limit))

    # -- control ------------------------------------------------------------------------------

    def wake(self) -> None:
        """New mail in incoming: look now."""
        if self._wakeup is not None:
            self._wakeup.set()

    def flush(self) -> None:
        """postqueue -f: every deferred message is tried now, defer_transports and dead
        destinations included."""
        self._flush_requested = True
        for destination in self._destinations.values():
            destination.window.revive()
        self.wake()

    def retry(self, queue_id: str) -> None:
        """postqueue -i (and the console's Retry): the message, already moved to incoming/ by
        the caller, is tried now, and the destinations it goes to are tried even if marked
        dead (Postfix's flush service asks its queue manager to forget dead destinations);
        the other deferred mail keeps its schedule."""
        if len(self._retried) >= RETRIES_REMEMBERED:
            self._retried.clear()  # ids of messages that never came (deleted meanwhile)
        self._retried.add(queue_id)
        self.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then wait for deliveries under way (they finish)."""
        self._wakeup = asyncio.Event()
        while not stop.is_set():
            self._wakeup.clear()
            await self.run_once(wait=False)
            delay = self._until_next_scan()
            waiter = asyncio.ensure_future(self._wakeup.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=delay,
                               return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks))

    def _until_next_scan(self) -> float:
        assert self.schedule is not None
        due = self._last_deferred_scan + self.schedule.queue_run_delay - self.clock()
        return max(0.05, min(due, self.schedule.queue_run_delay or 1.0))

    async def run_once(self, *, wait: bool = True) -> int:
        """Start deliveries of incoming mail and of deferred mail that is due; with `wait`,
        return when they are all done. Returns the number of messages started."""
        assert self.schedule is not None
        now = self.clock()
        flushing = self._flush_requested
        self._flush_requested = False
        deferred: list[str] = []
        if flushing or now - self._last_deferred_scan >= self.schedule.queue_run_delay:
            self._last_deferred_scan = now
            deferred = await asyncio.to_thread(
                self.queue.due, QueueName.DEFERRED, float("inf") if flushing else now)
        incoming = self.queue.ids(QueueName.INCOMING)
        started = 0
        for queue_id, source in [*((q, QueueName.INCOMING) for q in incoming),
                                 *((q, QueueName.DEFERRED) for q in deferred)]:
            if queue_id in self._in_flight:
                continue
            if len(self._in_flight) >= self.active_limit:
                break
            self._in_flight.add(queue_id)
            task = asyncio.create_task(self._guarded(queue_id, source, flushing))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started += 1
        if wait and self._tasks:
            await asyncio.wait(set(self._tasks))
        return started

    async def _guarded(self, queue_id: str, source: QueueName, flushing: bool) -> None:
        try:
            await self.deliver_message(queue_id, source, flushing=flushing)
        except FileNotFoundError:
            log.info("%s: removed while being delivered (postsuper -d)", queue_id)
        except Exception:
            log.exception("%s: delivery failed unexpectedly; it stays queued", queue_id)
        finally:
            self._in_flight.discard(queue_id)
            self._retried.discard(queue_id)

    async def close(self) -> None:
        for transport in self._transports.values():
            if isinstance(transport, Transport):
                with contextlib.suppress(Exception):
                    await transport.agent.close()
        self._transports.clear()

    # -- transports ---------------------------------------------------------------------------

    def transport(self, name: str) -> Transport | str:
        """The transport's agent, or why there is none (the deferral text)."""
        found = self._transports.get(name)
        if found is not None:
            return found
        service = self.master_cf.get(name, "unix")
        result: Transport | str
        if service is None:
            result = f"mail transport unavailable: no master.cf service {name!r}"
        else:
            settings = service.effective(self.main)
            try:
                agent = self.agent_factory(service, settings)
            except TransportUnavailable as exc:
                result = str(exc)
            else:
                # local(8) hands mailbox delivery to another transport and forwards mail into
                # the queue: it gets those two services from the queue manager.
                if getattr(agent, "pass_to", False) is None:
                    agent.pass_to = self.pass_to  # type: ignore[attr-defined]
                if getattr(agent, "resubmit", False) is None:
                    agent.resubmit = self.resubmit  # type: ignore[attr-defined]
                limit = service.process_limit(self.main)
                result = Transport(name, agent, settings,
                                   asyncio.Semaphore(limit) if limit > 0 else None,
                                   service.command, self._concurrency(name, settings),
                                   settings.get(transport_recipient_limit(name)))
        self._transports[name] = result
        return result

    def _concurrency(self, name: str, settings: MainConfig) -> ConcurrencyPolicy:
        assert self.schedule is not None
        return ConcurrencyPolicy(
            limit=max(0, settings.get(transport_concurrency_limit(name))),
            initial=max(1, settings.get(transport_initial_concurrency(name))),
            failed_cohort_limit=max(0, settings.get(transport_failed_cohort_limit(name))),
            dead_time=self.schedule.minimal_backoff,
        )

    async def pass_to(self, request: DeliveryRequest) -> list[RecipientResult]:
        """Deliver through another transport of master.cf (local(8)'s mailbox_transport and
        fallback_transport), with that transport's own settings and process limit."""
        transport = self.transport(request.transport)
        if isinstance(transport, str):
            return [RecipientResult(r.index, Status.DEFERRED, "4.3.0", transport, "none")
                    for r in request.recipients]
        handed = dataclasses.replace(request, settings=transport.settings)
        async with transport.slots or contextlib.nullcontext():
            return await transport.agent.deliver(handed)

    async def resubmit(self, sender: str, recipients: Sequence[str], content: bytes) -> str:
        """Queue a new message (local(8) forwarding by alias or .forward); its queue id."""
        if self._cleanup is None:
            self._cleanup = cleanup_from_config(self.main)
        queue_id, _ = await asyncio.to_thread(
            functools.partial(
                queue_message, self.queue, self._cleanup, sender=sender,
                recipients=[RecipientRecord(r, r) for r in recipients], content=content,
                arrival=self.clock(), protocol="local", client_name="localhost",
            )
        )
        self.wake()
        return queue_id

    # -- one message --------------------------------------------------------------------------

    async def deliver_message(self, queue_id: str, source: QueueName = QueueName.INCOMING,
                              *, flushing: bool = False) -> None:
        queue = self.queue

        def activate() -> QueueFile | None:
            try:
                queue.move(queue_id, source, QueueName.ACTIVE, durable=False)
            except QueueError:
                return None  # gone meanwhile (postsuper -d, or another scan took it)
            return queue.load(queue_id, QueueName.ACTIVE)

        activated = self.clock()
        try:
            entry = activate()
            if entry is None:
                return
        except CorruptQueueFile as exc:
            log.warning("%s: corrupt queue file moved to corrupt/: %s", queue_id, exc)
            await asyncio.to_thread(queue.set_corrupt, queue_id, QueueName.ACTIVE)
            return
        except QueueError:
            return
        envelope = entry.envelope
        log.info("%s: from=<%s>, size=%d, nrcpt=%d (queue active)", queue_id, envelope.sender,
                 envelope.size, len(entry.pending))
        await self._attempt(entry, activated, flushing)
        await self._finish(entry)

    async def _attempt(self, entry: QueueFile, activated: float, flushing: bool) -> None:
        assert self.router is not None
        immediate: list[tuple[QueuedRecipientEntry, RecipientResult]] = []
        routed: list[tuple[Route, QueuedRecipientEntry]] = []
        for r in entry.pending:
            if self._double_bounce(r.record.address):
                immediate.append((r, RecipientResult(
                    r.index, Status.SENT, "2.0.0",
                    "undeliverable postmaster notification discarded", "none")))
            else:
                routed.append((self.router.route(r.record.address), r))
        jobs = []
        for (transport_name, nexthop), members in group_by_route(routed).items():
            transport = self.transport(transport_name)
            if isinstance(transport, str):
                immediate += [(m, RecipientResult(m.index, Status.DEFERRED, "4.3.0", transport,
                                                  "none")) for m in members]
                continue
            if transport_name in self.defer_transports and not flushing:
                immediate += [(m, RecipientResult(m.index, Status.DEFERRED, "4.3.2",
                                                  "deferred transport", "none"))
                              for m in members]
                continue
            for batch in batches(members, transport.recipient_limit):
                jobs.append(self._delivery(entry, transport, nexthop, batch, activated))
        if immediate:
            await self._record(entry, immediate, activated, self.clock())
        if jobs:
            await asyncio.gather(*jobs)

    def _destination(self, transport: Transport, nexthop: str,
                     members: Sequence[QueuedRecipientEntry]) -> _Destination:
        """The scheduler's queue for a delivery: the transport's next hop, or the recipient
        when the transport takes one recipient at a time (Postfix's per-recipient queues)."""
        key = nexthop.lower()
        if transport.recipient_limit == 1 and len(members) == 1:
            key = members[0].record.address.lower()
        found = self._destinations.get((transport.name, key))
        if found is None:
            if len(self._destinations) >= DESTINATIONS_KEPT:
                self._forget_idle_destinations()
            found = _Destination(DestinationWindow(transport.concurrency))
            self._destinations[(transport.name, key)] = found
        return found

    def _forget_idle_destinations(self) -> None:
        """Per-recipient destinations would pile up for ever: drop the idle ones."""
        now = self.clock()
        for key in [k for k, d in self._destinations.items() if d.window.idle(now)]:
            del self._destinations[key]

    async def _scheduled(self, destination: _Destination, transport: Transport,
                         request: DeliveryRequest, members: Sequence[QueuedRecipientEntry]
                         ) -> tuple[float, list[RecipientResult]]:
        """Deliver when the destination's window (sealmail.mta.concurrency) and the
        transport's process limit let it; at once deferred while the destination is dead."""
        window = destination.window
        async with destination.changed:
            while not window.may_start(self.clock()):
                if window.dead(self.clock()):
                    return self.clock(), [
                        RecipientResult(m.index, Status.DEFERRED, window.dead_dsn,
                                        window.dead_reason, "none") for m in members]
                await destination.changed.wait()
            request = dataclasses.replace(request, cache_session=window.start(self.clock()))
        results: list[RecipientResult] = []
        try:
            async with transport.slots or contextlib.nullcontext():
                started = self.clock()
                results = await self._agent_deliver(transport, request, members)
        finally:
            async with destination.changed:
                hop = next((r for r in results if r.hop_failure), None)
                if hop is None:
                    window.succeeded(self.clock())
                elif window.failed(self.clock(), hop.dsn, hop.text):
                    log.info("%s: %s destination %s: %s", request.queue_id, transport.name,
                             request.nexthop, window.dead_reason)
                destination.changed.notify_all()
        return started, results

    async def _agent_deliver(self, transport: Transport, request: DeliveryRequest,
                             members: Sequence[QueuedRecipientEntry]) -> list[RecipientResult]:
        try:
            return await transport.agent.deliver(request)
        except Exception as exc:  # an agent bug: never lose the mail over it
            log.exception("%s: %s agent failed", request.queue_id, transport.name)
            return [RecipientResult(m.index, Status.DEFERRED, "4.3.0",
                                    f"delivery agent failed: {type(exc).__name__}", "none")
                    for m in members]

    def _double_bounce(self, address: str) -> bool:
        assert self.router is not None
        domain = address.rpartition("@")[2] if "@" in address else ""
        return self.notify.is_double_bounce(address, self.router.policy.is_local_domain(domain))

    async def _delivery(self, entry: QueueFile, transport: Transport, nexthop: str,
                        members: Sequence[QueuedRecipientEntry], activated: float) -> None:
        envelope = entry.envelope
        request = DeliveryRequest(
            queue_id=entry.queue_id,
            sender=envelope.sender,
            recipients=tuple(QueuedRecipient(m.record.address, m.record.original, m.index,
                                             m.record.notify) for m in members),
            transport=transport.name,
            nexthop=nexthop,
            message=entry.content,
            size=envelope.size,
            arrival_time=envelope.arrival,
            settings=transport.settings,
            smtputf8=envelope.smtputf8,
        )
        destination = self._destination(transport, nexthop, members)
        if entry.queue_id in self._retried:
            destination.window.revive()
        started, results = await self._scheduled(destination, transport, request, members)
        by_index = {r.index: r for r in results}
        paired = []
        for member in members:
            result = by_index.get(member.index) or RecipientResult(
                member.index, Status.DEFERRED, "4.3.0", "delivery agent gave no result", "none")
            paired.append((member, result))
        await self._record(entry, paired, activated, started, transport.command)

    async def _record(self, entry: QueueFile,
                      paired: Sequence[tuple[QueuedRecipientEntry, RecipientResult]],
                      activated: float, started: float, program: str = "") -> None:
        """Write results to the queue file (durably), then log them (as Postfix, under the
        delivery agent's program name)."""
        now = self.clock()
        sent: list[int] = []
        failed: list[int] = []
        records: list[AttemptResult] = []
        lines: list[str] = []
        for member, result in paired:
            status = result.status
            dsn = result.dsn
            if status is Status.BOUNCED and self.soft_bounce:
                status = Status.DEFERRED
                dsn = "4" + dsn[1:]
            if status is Status.SENT:
                sent.append(member.index)
            elif status is Status.BOUNCED:
                failed.append(member.index)
            records.append(AttemptResult(member.index, status.value, dsn, result.text,
                                         result.relay, now))
            shown = RecipientResult(result.index, status, dsn, result.text, result.relay)
            recipient = QueuedRecipient(member.record.address, member.record.original,
                                        member.index)
            delays = (activated - entry.envelope.arrival, started - activated, 0.0, now - started)
            lines.append(result_line(entry.queue_id, recipient, shown, delays))

        marks = {index: RecipientState.SENT for index in sent}
        marks.update((index, RecipientState.BOUNCED) for index in failed)
        if len(sent) == len(entry.pending) and len(sent) == len(paired):
            # Every recipient still pending is now delivered: _finish removes the file next,
            # so writing the marks first would only matter in a crash between the two, which
            # delivers at most once more either way.
            for index in sent:
                entry.recipients[index].state = RecipientState.SENT
            write = None
        else:
            def write() -> None:
                self.queue.update(entry, records, marks, durable=False)

        try:
            if write is not None:
                await asyncio.to_thread(write)
        except FileNotFoundError:
            log.info("%s: removed while being delivered (postsuper -d)", entry.queue_id)
            return
        logger = logging.getLogger(f"sealmail.mta.agents.{program}") if program else log
        for line in lines:
            logger.info("%s", line)

    async def _finish(self, entry: QueueFile) -> None:
        assert self.schedule is not None
        queue = self.queue
        queue_id = entry.queue_id
        now = self.clock()
        pending = entry.pending
        if pending and self.schedule.expired(entry.envelope.arrival, now,
                                             entry.envelope.is_bounce):
            expired = [r.index for r in pending]
            for r in pending:
                reason = r.last.text if r.last else "delivery temporarily suspended"
                log.info("%s: to=<%s>, dsn=%s, status=expired, returned to sender (%s)",
                         queue_id, r.record.address, r.last.dsn if r.last else "4.0.0", reason)
            await asyncio.to_thread(queue.mark, entry, expired, RecipientState.BOUNCED)
        if entry.bounced:
            await self._notify_sender(entry)
        if entry.finished:
            if queue.remove(queue_id, QueueName.ACTIVE, durable=False):
                log.info("%s: removed", queue_id)
            return
        attempts = entry.attempts + 1
        next_attempt = self.schedule.next_attempt(attempts, now)
        warned = await self._warn_sender(entry, now)

        def defer() -> None:
            queue.update(entry, (), attempt=(now, next_attempt), warned=warned)
            queue.move(queue_id, QueueName.ACTIVE, QueueName.DEFERRED, next_attempt,
                       durable=False)

        with contextlib.suppress(QueueError, FileNotFoundError):
            await asyncio.to_thread(defer)

    async def _warn_sender(self, entry: QueueFile, now: float) -> float | None:
        """delay_warning_time: once the message has waited that long, the sender (and with
        notify_classes delay, the postmaster) is told, once; returns when, for the W record."""
        warning_time = self.notify.delay_warning_time
        if warning_time <= 0 or entry.warned or now < entry.envelope.arrival + warning_time:
            return None
        owed = [Owed(_failed(r, "delayed"), r.record.notify) for r in entry.pending]
        await self._queue_notices(entry, delay_notices(self.notify, entry.envelope, owed))
        return now

    async def _notify_sender(self, entry: QueueFile) -> None:
        """Queue the RFC 3464 notices owed for every recipient in BOUNCED state (to the sender,
        and the postmaster's copies notify_classes asks for), then mark them DONE."""
        owed = entry.bounced
        notices, why_none = failure_notices(
            self.notify, entry.envelope, [Owed(_failed(r), r.record.notify) for r in owed])
        if notices:
            await self._queue_notices(entry, notices)
        elif entry.envelope.sender.lower() == self.notify.double_bounce_address.lower():
            log.warning("%s: %s", entry.queue_id, why_none)
        else:
            log.info("%s: %s", entry.queue_id, why_none)
        await asyncio.to_thread(self.queue.mark, entry, [r.index for r in owed],
                                RecipientState.DONE)

    async def _queue_notices(self, entry: QueueFile, notices: Sequence[Notice]) -> None:
        if not notices:
            return
        original = await asyncio.to_thread(entry.content.read)
        for notice in notices:
            now = self.clock()
            content = build_bounce(
                notice.request(self.notify, entry.queue_id, entry.envelope, original), now)
            envelope = Envelope(
                sender=notice.sender, recipients=(RecipientRecord(notice.recipient),),
                arrival=now, size=len(content), client="local", protocol="local",
                is_bounce=not notice.sender, smtputf8=entry.envelope.smtputf8)
            new_id = await asyncio.to_thread(self.queue.enqueue, envelope, content)
            log.info("%s: %s: %s", entry.queue_id, notice.what, new_id)
        self.wake()


def _failed(r: QueuedRecipientEntry, action: str = "failed") -> FailedRecipient:
    last = r.last
    return FailedRecipient(
        address=r.record.address,
        original=r.record.original,
        status=last.dsn if last else ("4.0.0" if action == "delayed" else "5.0.0"),
        diagnostic=last.text if last else "delivery failed",
        remote_mta=_remote_mta(last.relay if last else ""),
        action=action,
        orcpt=r.record.orcpt,
    )


def _remote_mta(relay: str) -> str:
    if not relay or relay == "none" or relay.startswith("/"):
        return ""
    return relay.split("[", 1)[0]


def static_agents(agents: Mapping[str, DeliveryAgent]) -> AgentFactory:
    """An AgentFactory from ready agents keyed by master.cf command name (for tests)."""

    def factory(service: MasterService, settings: MainConfig) -> DeliveryAgent:
        agent = agents.get(service.command)
        if agent is None:
            raise TransportUnavailable(f"4.3.0 transport {service.service} not available")
        return agent

    return factory
