"""The console's view of the MTA's queue, and what it may do to a message: retry, hold,
release, delete; read and changed through sealmail.mta.queue exactly as `postqueue -p` and
`postsuper` do (one rename or unlink per action, the running master told over its control
socket), so the console and the command line never disagree about a message.

Retry is Postfix's `postqueue -i QUEUEID`, by the same code (sealmail.mta.showq.retry_now): the
deferred file moves back to incoming/ and the master is asked to try that message now, its
destinations even if marked dead (a message whose cause was just fixed must not wait out the
dead time); the other deferred mail keeps its schedule.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from sealmail.mta.pickup import send_control
from sealmail.mta.queue import Queue, QueueError, QueueFile, QueueName, RecipientState, is_queue_id
from sealmail.mta.showq import retry_now

log = logging.getLogger("sealmail.console")

ACTIONS = ("retry", "hold", "release", "delete")


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One message as the queue page lists it (postqueue -p's columns and a bit more)."""

    queue_id: str
    queue: str  # incoming, active, deferred, hold
    size: int
    arrival: float
    sender: str
    message_id: str
    recipients: tuple[tuple[str, str], ...]  # (address, last deferral reason or "")
    next_attempt: float | None  # deferred mail: when the queue manager tries it again

    def matches(self, needle: str) -> bool:
        """The search box: a queue id, a sender, a recipient or a Message-ID containing it."""
        wanted = needle.strip().lower()
        if not wanted:
            return True
        fields = [self.queue_id, self.sender, self.message_id,
                  *(address for address, _ in self.recipients)]
        return any(wanted in field.lower() for field in fields)


def row_of(entry: QueueFile) -> QueueRow | None:
    pending = [r for r in entry.recipients if not r.state.final]
    if not pending:
        return None
    recipients = tuple(
        (r.record.address,
         r.last.text if (r.last and r.state is RecipientState.PENDING
                         and r.last.status != "sent") else "")
        for r in pending
    )
    return QueueRow(
        entry.queue_id, entry.queue.value, entry.envelope.size, entry.envelope.arrival,
        entry.envelope.sender or "MAILER-DAEMON", entry.envelope.message_id, recipients,
        entry.mtime if entry.queue is QueueName.DEFERRED else None,
    )


def queue_rows(queue: Queue, needle: str = "", limit: int = 500) -> tuple[list[QueueRow], int]:
    """Matching messages, oldest first (at most `limit`), and how many matched in all."""
    rows: list[QueueRow] = []
    total = 0
    for entry in queue.entries():
        row = row_of(entry)
        if row is None or not row.matches(needle):
            continue
        total += 1
        if len(rows) < limit:
            rows.append(row)
    rows.sort(key=lambda r: r.arrival)
    return rows, total


@dataclass(frozen=True, slots=True)
class Outcome:
    ok: bool
    text: str


def act(queue: Queue, action: str, queue_id: str, who: str) -> Outcome:
    """Do `action` to one message; what happened, in postsuper's words."""
    if action not in ACTIONS:
        return Outcome(False, f"unknown action {action!r}")
    if not is_queue_id(queue_id):
        return Outcome(False, f"invalid mail queue id: {queue_id}")
    where = queue.find(queue_id)
    if where is None:
        return Outcome(False, f"{queue_id}: no such message in the queue")
    try:
        outcome = _ACTIONS[action](queue, queue_id, where)
    except QueueError as exc:
        return Outcome(False, str(exc))
    if outcome.ok:
        log.info("console: %s: %s (by %s)", queue_id, outcome.text.partition(": ")[2], who)
    return outcome


def retry(queue: Queue, queue_id: str, where: QueueName) -> Outcome:
    if where is QueueName.HOLD:
        return Outcome(False, f"{queue_id}: on hold: release it first")
    if not retry_now(queue, queue_id):
        return Outcome(True, f"{queue_id}: queued for delivery; the MTA is not running: "
                             "it is tried when the MTA starts")
    return Outcome(True, f"{queue_id}: scheduled for immediate delivery")


def hold(queue: Queue, queue_id: str, where: QueueName) -> Outcome:
    if where is QueueName.HOLD:
        return Outcome(False, f"{queue_id}: already on hold")
    queue.move(queue_id, where, QueueName.HOLD)
    return Outcome(True, f"{queue_id}: placed on hold")


def release(queue: Queue, queue_id: str, where: QueueName) -> Outcome:
    if where is not QueueName.HOLD:
        return Outcome(False, f"{queue_id}: not on hold")
    queue.move(queue_id, QueueName.HOLD, QueueName.DEFERRED)
    return Outcome(True, f"{queue_id}: released from hold")


def delete(queue: Queue, queue_id: str, where: QueueName) -> Outcome:
    if not queue.remove(queue_id):
        return Outcome(False, f"{queue_id}: no such message in the queue")
    return Outcome(True, f"{queue_id}: removed")


_ACTIONS = {"retry": retry, "hold": hold, "release": release, "delete": delete}


def flush(queue: Queue, who: str) -> Outcome:
    """postqueue -f: every deferred message now."""
    if not send_control(queue.control_socket, "flush"):
        return Outcome(False, "Cannot flush mail queue - mail system is down")
    log.info("console: queue flushed (by %s)", who)
    return Outcome(True, "every deferred message is being tried now")


def age(seconds: float, now: float | None = None) -> str:
    """How long ago (or, negative, how soon), as an operator reads it: 5s, 3m, 2h, 4d."""
    delta = (time.time() if now is None else now) - seconds
    sign = "in " if delta < 0 else ""
    value = abs(delta)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size:
            return f"{sign}{int(value // size)}{unit}"
    return f"{sign}{int(value)}s"


def ids_of(rows: Iterable[QueueRow]) -> list[str]:
    return [row.queue_id for row in rows]
