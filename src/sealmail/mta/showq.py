"""The queue as Postfix's showq(8) reports it: `postqueue -j`'s JSON objects, and `postqueue -p`'s
table made from them.

One source: `queue_entries` reads the queue files once into Postfix's JSON objects (queue_name,
queue_id, arrival_time, message_size, forced_expire, sender, recipients [{address,
delay_reason}]), and everything else that shows the queue (`postqueue -p`, `mailq`, qshape, the
web console, the metrics' queue gauges) starts from those dicts, so they cannot disagree. The
table is Postfix 3.x's, byte for byte (tests/cli/test_showq_postfix.py renders the JSON of a real
Postfix's queue and compares with its own `postqueue -p`): the id with `*` (active) or `!`
(hold), the size, asctime's first 20 characters, the sender (MAILER-DAEMON for <>); a delay
reason, right-aligned to column 79, whenever it differs from the previous recipient's; each
pending recipient at column 41; `-- N Kbytes in M Requests.` with N the total size floored.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from typing import Any

from sealmail.mta.queue import (
    ENVELOPE_QUEUES,
    Queue,
    QueueError,
    QueueFile,
    QueueName,
    RecipientState,
)

__all__ = [
    "HEADER",
    "QUEUE_ORDER",
    "entry_json",
    "iter_entries",
    "json_lines",
    "queue_entries",
    "render_listing",
    "retry_now",
]

# showq's order: incoming, active, deferred, hold (Postfix lists maildrop first; ours is apart).
QUEUE_ORDER = ENVELOPE_QUEUES
HEADER = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
MARKS = {QueueName.ACTIVE.value: "*", QueueName.HOLD.value: "!"}
REASON_COLUMN = 79  # a delay reason ends here (Postfix right-aligns it)
RECIPIENT_COLUMN = 41


def entry_json(entry: QueueFile) -> dict[str, Any]:
    """One message as postqueue -j's object; done recipients left out, as Postfix's showq does.

    A recipient whose last attempt failed carries that attempt's text as delay_reason; one not
    yet tried (or in delivery now) has none, as in Postfix."""
    recipients: list[dict[str, str]] = []
    for r in entry.recipients:
        if r.state.final:
            continue
        item = {"address": r.record.address}
        if r.last is not None and r.last.text and (r.last.status != "sent"
                                                   or r.state is RecipientState.BOUNCED):
            item["delay_reason"] = r.last.text
        recipients.append(item)
    return {
        "queue_name": entry.queue.value,
        "queue_id": entry.queue_id,
        "arrival_time": int(entry.envelope.arrival),
        "message_size": entry.envelope.size,
        "forced_expire": False,
        "sender": entry.envelope.sender or "MAILER-DAEMON",
        "recipients": recipients,
    }


def iter_entries(queue: Queue, queues: Iterable[QueueName] = QUEUE_ORDER
                 ) -> Iterator[dict[str, Any]]:
    """`queue_entries`, one at a time (a large queue is not held in memory by postqueue -j)."""
    for entry in queue.entries(queues):
        yield entry_json(entry)


def queue_entries(queue: Queue, queues: Iterable[QueueName] = QUEUE_ORDER
                  ) -> list[dict[str, Any]]:
    """Every readable message in `queues` as postqueue -j's objects (the console's source)."""
    return list(iter_entries(queue, queues))


def json_lines(entries: Iterable[dict[str, Any]]) -> Iterator[str]:
    """postqueue -j: one JSON object per line, keys in Postfix's order, UTF-8 left as is."""
    for item in entries:
        yield json.dumps(item, ensure_ascii=False) + "\n"


def _message_block(item: dict[str, Any]) -> list[str]:
    mark = MARKS.get(str(item["queue_name"]), "")
    when = time.asctime(time.localtime(int(item["arrival_time"])))[:20]
    lines = [f"{item['queue_id'] + mark:<11s} {int(item['message_size']):>7d} {when:>20s} "
             f"{item['sender'] or 'MAILER-DAEMON'}"]
    previous = ""
    for recipient in item["recipients"]:
        reason = str(recipient.get("delay_reason", ""))
        if reason and reason != previous:
            lines.append(f"({reason})".rjust(REASON_COLUMN))
        previous = reason or previous
        lines.append(" " * RECIPIENT_COLUMN + str(recipient["address"]))
    return lines


def render_listing(entries: Iterable[dict[str, Any]]) -> str:
    """postqueue -p (and mailq) from postqueue -j's objects: Postfix's table."""
    out: list[str] = []
    total = count = 0
    for item in entries:
        if not out:
            out.append(HEADER)
        out += _message_block(item)
        out.append("")
        total += int(item["message_size"])
        count += 1
    if not count:
        return "Mail queue is empty\n"
    noun = "Request" if count == 1 else "Requests"
    out.append(f"-- {total // 1024} Kbytes in {count} {noun}.")
    return "\n".join(out) + "\n"


def retry_now(queue: Queue, queue_id: str) -> bool:
    """postqueue -i and the console's Retry, one path: a deferred message moves to incoming/,
    as Postfix's flush service does, and the running master is asked to try it now, its
    destinations even if marked dead (the request Postfix's flush sends its queue manager;
    other deferred mail keeps its schedule). False when no master runs (the message is then
    delivered when one starts)."""
    from sealmail.mta.pickup import send_control

    if queue.locate(queue_id, QueueName.DEFERRED) is not None:
        # QueueError: taken by the queue manager meanwhile, so it is being delivered.
        with contextlib.suppress(QueueError):
            queue.move(queue_id, QueueName.DEFERRED, QueueName.INCOMING)
    return send_control(queue.control_socket, "retry", queue_id=queue_id)
