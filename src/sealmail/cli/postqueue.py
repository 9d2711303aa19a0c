"""`sealmail postqueue [-c DIR] -p|-j|-f|-i QUEUEID` and `sealmail mailq`, as postqueue(1).

`-j` prints the queue as Postfix 3.x's JSON lines (sealmail.mta.showq: the one reading of the
queue), `-p` (and mailq) Postfix's table made from those objects. `-f` asks the running master to
try every deferred message now; `-i QUEUEID` just that one: as Postfix's flush service does, the
message moves from deferred/ to incoming/ and the queue manager is woken.
"""

from __future__ import annotations

import argparse
import os
import sys

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, MainConfig, load_mta_config
from sealmail.mta.queue import Queue, is_queue_id

EX_UNAVAILABLE = 69
DOWN = "sealmail postqueue: fatal: Cannot flush mail queue - mail system is down"


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help="configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-v", "--verbose", action="store_true")


def add_postqueue_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("-p", dest="list", action="store_true", help="list the queue")
    action.add_argument("-j", dest="json", action="store_true",
                        help="list the queue as JSON lines (Postfix 3.x's postqueue -j)")
    action.add_argument("-f", dest="flush", action="store_true", help="flush the queue")
    action.add_argument("-i", dest="deliver", metavar="QUEUEID",
                        help="deliver one deferred message now")


def add_mailq_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def _main(args: argparse.Namespace) -> MainConfig:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    return load_mta_config(directory).main


def run_postqueue(args: argparse.Namespace) -> int:
    from sealmail.mta.pickup import send_control
    from sealmail.mta.showq import iter_entries, json_lines, render_listing

    queue = Queue.from_config(_main(args))
    if args.flush:
        if not send_control(queue.control_socket, "flush"):
            print(DOWN, file=sys.stderr)
            return EX_UNAVAILABLE
        return 0
    if getattr(args, "deliver", None):
        return deliver_now(queue, args.deliver)
    if getattr(args, "json", False):
        for line in json_lines(iter_entries(queue)):
            sys.stdout.write(line)
        return 0
    sys.stdout.write(render_listing(iter_entries(queue)))
    return 0


def deliver_now(queue: Queue, queue_id: str) -> int:
    """postqueue -i QUEUEID (sealmail.mta.showq.retry_now)."""
    from sealmail.mta.showq import retry_now

    if not is_queue_id(queue_id):
        print(f"sealmail postqueue: fatal: invalid mail queue id: {queue_id}", file=sys.stderr)
        return 64
    if not retry_now(queue, queue_id):
        print(DOWN, file=sys.stderr)
        return EX_UNAVAILABLE
    return 0


def run_mailq(args: argparse.Namespace) -> int:
    args.flush = False
    args.list = True
    return run_postqueue(args)
