"""`sealmail postqueue [-c DIR] -p|-f` and `sealmail mailq`, as Postfix's postqueue(1).

`-p` lists the queue the way Postfix does: queue id (`*` active, `!` on hold), size, arrival
time and sender, then the last deferral reason in parentheses and the recipients still pending.
`-f` asks the running master to try every deferred message now.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterable

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, MainConfig, load_mta_config
from sealmail.mta.queue import QueueFile, QueueName, RecipientState

MARKS = {QueueName.ACTIVE: "*", QueueName.HOLD: "!"}


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help="configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-v", "--verbose", action="store_true")


def add_postqueue_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("-p", dest="list", action="store_true", help="list the queue")
    action.add_argument("-f", dest="flush", action="store_true", help="flush the queue")


def add_mailq_arguments(parser: argparse.ArgumentParser) -> None:
    _common(parser)


def render_queue(entries: Iterable[QueueFile]) -> str:
    """The `postqueue -p` listing."""
    blocks: list[str] = []
    total_size = 0
    count = 0
    for entry in entries:
        pending = [r for r in entry.recipients if not r.state.final]
        if not pending:
            continue
        count += 1
        total_size += entry.envelope.size
        mark = MARKS.get(entry.queue, " ")
        when = time.strftime("%a %b %d %H:%M:%S", time.localtime(entry.envelope.arrival))
        sender = entry.envelope.sender or "MAILER-DAEMON"
        lines = [f"{entry.queue_id + mark:<11s} {entry.envelope.size:>8d} {when}  {sender}"]
        reasons: dict[str, list[str]] = {}
        for r in pending:
            reason = r.last.text if (r.last and r.state is RecipientState.PENDING
                                     and r.last.status != "sent") else ""
            reasons.setdefault(reason, []).append(r.record.address)
        for reason, addresses in reasons.items():
            if reason:
                lines.append(f"({reason[:76]})")
            lines += [" " * 41 + address for address in addresses]
        blocks.append("\n".join(lines))
    if not count:
        return "Mail queue is empty\n"
    header = "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    kbytes = (total_size + 1023) // 1024
    noun = "Request" if count == 1 else "Requests"
    return header + "\n" + "\n\n".join(blocks) + f"\n\n-- {kbytes} Kbytes in {count} {noun}.\n"


def _main(args: argparse.Namespace) -> MainConfig:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    return load_mta_config(directory).main


def run_postqueue(args: argparse.Namespace) -> int:
    from sealmail.mta.pickup import send_control
    from sealmail.mta.queue import Queue

    queue = Queue.from_config(_main(args))
    if args.flush:
        if not send_control(queue.control_socket, "flush"):
            print("sealmail postqueue: fatal: Cannot flush mail queue - mail system is down",
                  file=sys.stderr)
            return 69  # EX_UNAVAILABLE
        return 0
    sys.stdout.write(render_queue(queue.entries()))
    return 0


def run_mailq(args: argparse.Namespace) -> int:
    args.flush = False
    args.list = True
    return run_postqueue(args)
