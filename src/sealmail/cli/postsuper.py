"""`sealmail postsuper [-c DIR] [-s] [-d|-h|-H|-r QUEUEID|ALL|-] [QUEUE...]`, as postsuper(1).

`-d` deletes messages (`ALL` every message, `-` ids from standard input), `-h` puts messages on
hold (they are not delivered until released), `-H` releases them to deferred for the next run,
`-r` requeues them: the queue file moves to maildrop/, and pickup gives it a new queue id after
cleanup again (virtual_alias_maps as they are now, a Received: header), with the recipients not
yet delivered; a running master is told at once. QUEUE names (incoming, active, deferred, hold)
limit ALL to those queues. A message the queue manager is delivering right now is deleted (or
requeued) too; it notices and stops recording results.

`-s` (also what postsuper does when given nothing else, and what the master does at start) puts
every queue file where hash_queue_names and hash_queue_depth want it, one rename at a time.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, load_mta_config
from sealmail.mta.queue import ENVELOPE_QUEUES, Queue, QueueError, QueueName, is_queue_id


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # -h is "hold" here, as in postsuper(1); --help stays. The dispatcher made the parser with
    # the usual -h/--help, so let this definition take -h over.
    parser.conflict_handler = "resolve"
    parser._optionals.conflict_handler = "resolve"
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help="configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-d", dest="delete", action="append", default=[], metavar="QUEUEID")
    parser.add_argument("-h", dest="hold", action="append", default=[], metavar="QUEUEID")
    parser.add_argument("-H", dest="release", action="append", default=[], metavar="QUEUEID")
    parser.add_argument("-r", dest="requeue", action="append", default=[], metavar="QUEUEID")
    parser.add_argument("-s", dest="structure", action="store_true",
                        help="move queue files to where hash_queue_names/depth want them")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("queues", nargs="*", metavar="QUEUE")


def _ids(queue: Queue, given: list[str], queues: tuple[QueueName, ...]) -> list[str]:
    found: list[str] = []
    for item in given:
        if item == "ALL":
            for name in queues:
                found += queue.ids(name)
        elif item == "-":
            found += [line.strip() for line in sys.stdin if line.strip()]
        else:
            found.append(item)
    return found


def _checked(ids: Iterable[str]) -> list[str]:
    out = []
    for queue_id in ids:
        if is_queue_id(queue_id):
            out.append(queue_id)
        else:
            print(f"sealmail postsuper: warning: invalid mail queue id: {queue_id}",
                  file=sys.stderr)
    return out


def run(args: argparse.Namespace) -> int:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    queue = Queue.from_config(load_mta_config(directory).main)
    try:
        queues = tuple(QueueName(q) for q in args.queues) or ENVELOPE_QUEUES
    except ValueError as exc:
        print(f"sealmail postsuper: fatal: {exc}", file=sys.stderr)
        return 64
    if args.structure or not (args.delete or args.hold or args.release or args.requeue):
        # Postfix: -s (and -p) are done before the other operations, and by default.
        moved = queue.restructure()
        if moved:
            _report(len(moved), "Moved to match hash_queue_names and hash_queue_depth")
    deleted = held = released = 0
    for queue_id in _checked(_ids(queue, args.delete, queues)):
        if queue.remove(queue_id):
            print(f"sealmail postsuper: {queue_id}: removed", file=sys.stderr)
            deleted += 1
    for queue_id in _checked(_ids(queue, args.hold, tuple(q for q in queues
                                                          if q is not QueueName.HOLD))):
        source = queue.find(queue_id)
        if source in (QueueName.INCOMING, QueueName.DEFERRED, QueueName.ACTIVE):
            try:
                queue.move(queue_id, source, QueueName.HOLD)
            except QueueError:
                continue
            print(f"sealmail postsuper: {queue_id}: placed on hold", file=sys.stderr)
            held += 1
    for queue_id in _checked(_ids(queue, args.release, (QueueName.HOLD,))):
        if queue.find(queue_id) is QueueName.HOLD:
            try:
                queue.move(queue_id, QueueName.HOLD, QueueName.DEFERRED)
            except QueueError:
                continue
            print(f"sealmail postsuper: {queue_id}: released from hold", file=sys.stderr)
            released += 1
    requeued = _requeue(queue, _checked(_ids(queue, args.requeue, queues)), queues)
    for count, what, asked in ((requeued, "Requeued", args.requeue),
                               (deleted, "Deleted", args.delete),
                               (held, "Placed on hold", args.hold),
                               (released, "Released from hold", args.release)):
        if asked:
            _report(count, what)
    return 0


def _requeue(queue: Queue, ids: list[str], queues: tuple[QueueName, ...]) -> int:
    """Move each message to maildrop/ for pickup (see sealmail.mta.pickup); tell the master."""
    from sealmail.mta.pickup import send_control

    requeued = 0
    for queue_id in ids:
        source = next((q for q in queues if queue.locate(queue_id, q) is not None), None)
        if source is None:
            continue
        try:
            queue.requeue(queue_id, source)
        except QueueError as exc:
            print(f"sealmail postsuper: warning: {exc}", file=sys.stderr)
            continue
        print(f"sealmail postsuper: {queue_id}: requeued", file=sys.stderr)
        requeued += 1
    if requeued:
        send_control(queue.control_socket, "pickup")  # none running: pickup at its start
    return requeued


def _report(count: int, what: str) -> None:
    noun = "message" if count == 1 else "messages"
    print(f"sealmail postsuper: {what}: {count} {noun}", file=sys.stderr)
