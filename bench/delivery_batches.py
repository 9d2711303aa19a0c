"""The disk store's group commit as lmtpd's delivery threads drive it (issue 18): P processes
(lmtpd workers under `sealmail master`), each calling `deliver_batch` with B messages of R
recipients, N times, on one store; no LMTP, no load client, so it moves less with the machine's
other load than bench/lmtp_throughput.py does.

    PYTHONPATH=<tree>/src python bench/delivery_batches.py [-p 2] [-b 2] [-r 1] [-n 300]

Printed (one line of JSON): messages/s over the whole run, the mean round (one `deliver_batch`
of one process), and the CPU time and context switches per message of the processes together
(getrusage of the children). Compare trees by running it with each tree's src first on the
path, alternating, several times, and compare medians: `-p 2 -b 2` is the shape of two lmtpd
workers at four sessions, where two processes wait for each other's commit turn; `-p 1 -b 4` a
standalone lmtpd. Run from a checkout, as root or not; its files go under /tmp and are removed
at the end (after the clock stops).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore

LINE = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq.\r\n"
BODY = b"Subject: bench\r\n\r\n" + LINE * 52  # about 4 KiB


def open_store(root: Path) -> DiskStore:
    config = parse_imapd_conf(
        f"configdirectory: {root}/config\npartition-default: {root}/spool\n", "bench")
    return DiskStore.from_config(config)


def mailboxes(recipients: int) -> list[str]:
    return [f"user.r{k}" for k in range(recipients)]


def worker(root: Path, start: int, process: int, rounds: int, batch: int, recipients: int
           ) -> None:
    """One process's rounds, once the parent writes to `start` (in a forked child)."""
    targets = [DeliveryTarget(name) for name in mailboxes(recipients)]
    with open_store(root) as store:
        os.read(start, 1)
        for i in range(rounds):
            items = [(BODY + f"X-Id: {process}.{i}.{j}\r\n".encode(), targets)
                     for j in range(batch)]
            for results in store.deliver_batch(items):
                if not all(isinstance(result, AppendedMessage) for result in results):
                    os._exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", type=int, default=2, metavar="PROCESSES")
    parser.add_argument("-b", type=int, default=2, metavar="BATCH", help="messages per call")
    parser.add_argument("-r", type=int, default=1, metavar="RECIPIENTS")
    parser.add_argument("-n", type=int, default=300, metavar="ROUNDS", help="calls per process")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="delivery-batches-", dir="/tmp"))
    try:
        with open_store(root) as store:
            for name in mailboxes(args.r):
                store.create_mailbox(name)
        os.sync()
        time.sleep(6)  # inodes freed just before age out of ext4's recently-deleted window
        start, go = os.pipe()
        children = []
        for process in range(args.p):
            pid = os.fork()
            if pid == 0:
                os.close(go)
                worker(root, start, process, args.n, args.b, args.r)
                os._exit(0)
            children.append(pid)
        os.close(start)
        time.sleep(1)  # every child has opened the store
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        began = time.perf_counter()
        os.write(go, b"x" * args.p)
        failed = sum(os.waitpid(pid, 0)[1] != 0 for pid in children)
        seconds = time.perf_counter() - began
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    messages = args.p * args.b * args.n
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    switches = (after.ru_nvcsw + after.ru_nivcsw) - (before.ru_nvcsw + before.ru_nivcsw)
    print(json.dumps({
        "processes": args.p, "batch": args.b, "recipients": args.r,
        "msg_per_s": round(messages / seconds), "round_ms": round(1e3 * seconds / args.n, 2),
        "cpu_ms_per_msg": round(1e3 * cpu / messages, 3),
        "switches_per_msg": round(switches / messages, 1), "failed_processes": failed,
        "load": os.getloadavg()[0],
    }))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
