"""`sealmail qshape [-s] [-p] [-m N] [-b N] [-t MIN] [-l] [-w WIDTH] [-c DIR] [QUEUE...]`, as
Postfix's qshape(1): recipient (or, -s, sender) domains by message age. The queues default to
incoming and active, as Postfix's. The table is sealmail.mta.qshape's, made from postqueue -j's
objects (sealmail.mta.showq). Postfix's -N and -n (interim results on a terminal) are accepted
and ignored: the whole queue is read before the one table is printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from sealmail.mta.config import DEFAULT_CONFIG_DIRECTORY, load_mta_config
from sealmail.mta.queue import Queue, QueueName


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None)
    parser.add_argument("-s", dest="senders", action="store_true", help="sender domains")
    parser.add_argument("-p", dest="parents", action="store_true", help="parent domains too")
    parser.add_argument("-m", dest="min_subdomains", type=int, default=5)
    parser.add_argument("-b", dest="buckets", type=int, default=10)
    parser.add_argument("-t", dest="bucket_minutes", type=int, default=5)
    parser.add_argument("-l", dest="linear", action="store_true", help="linear buckets")
    parser.add_argument("-w", dest="width", type=int, default=80)
    parser.add_argument("-N", dest="batch_messages", type=int, default=0)
    parser.add_argument("-n", dest="batch_domains", type=int, default=0)
    parser.add_argument("queues", nargs="*", metavar="QUEUE")


def run(args: argparse.Namespace) -> int:
    from sealmail.mta.qshape import QshapeOptions, render_qshape
    from sealmail.mta.showq import iter_entries

    try:
        queues = [QueueName(q) for q in args.queues] or [QueueName.INCOMING, QueueName.ACTIVE]
    except ValueError as exc:
        print(f"sealmail qshape: {exc}", file=sys.stderr)
        return 64
    options = QshapeOptions(args.senders, args.parents,
                            args.min_subdomains if args.min_subdomains > 0 else 5,
                            args.buckets if args.buckets > 0 else 10,
                            args.bucket_minutes if args.bucket_minutes > 0 else 5,
                            args.linear, args.width)
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    queue = Queue.from_config(load_mta_config(directory).main)
    sys.stdout.write(render_qshape(iter_entries(queue, queues), time.time(), options))
    return 0
