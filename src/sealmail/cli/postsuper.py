"""`sealmail postsuper [-c DIR] -d QUEUEID|ALL|- [-h ...] [-H ...] [QUEUE...]`, as postsuper(1).

`-d` deletes messages (`ALL` every message, `-` ids from standard input), `-h` puts messages on
hold (they are not delivered until released), `-H` releases them to deferred for the next run.
QUEUE names (incoming, active, deferred, hold) limit ALL to those queues. A message the queue
manager is delivering right now is deleted too; it notices and stops recording results.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, load_mta_config
from sealmail.mta.config.parameters import MAIN
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
    if not (args.delete or args.hold or args.release):
        print("sealmail postsuper: fatal: nothing to do: use -d, -h or -H", file=sys.stderr)
        return 64
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    queue = Queue(Path(load_mta_config(directory).main.instance_path(MAIN.queue_directory)))
    try:
        queues = tuple(QueueName(q) for q in args.queues) or ENVELOPE_QUEUES
    except ValueError as exc:
        print(f"sealmail postsuper: fatal: {exc}", file=sys.stderr)
        return 64
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
    for count, what in ((deleted, "Deleted"), (held, "Placed on hold"),
                        (released, "Released from hold")):
        if count:
            noun = "message" if count == 1 else "messages"
            print(f"sealmail postsuper: {what}: {count} {noun}", file=sys.stderr)
    return 0
