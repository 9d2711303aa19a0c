"""deliver_batch latency of two source trees, interleaved finely (issue 18): one worker process
per tree (its `src` first on the path), each with its own store under TMPDIR, run in
alternating blocks of K calls, so that a shared machine's slow moments fall on both alike.

    python bench/delivery_ab.py --a /work/main/src --b ./src [-p 1] [-b 1] [-r 1] [-k 50]
                                [--blocks 12]

Printed per tree: per-call p50 / p90 / p99 (one call = one lmtpd delivery batch: its stage
files, their fsync round, the commit), CPU per message, each block's median, and in how many
paired blocks B was faster. `-p 1`: the shape of a standalone lmtpd (`-b 1`: one session, `-b
4`: four); `-p 2 -b 2`: two lmtpd workers under `sealmail master` at four sessions (P processes
per tree on one store, running each block together, so they share the commit turn).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile

WORKER = r'''
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
root, batch, recipients = sys.argv[4], int(sys.argv[2]), int(sys.argv[3])
config = parse_imapd_conf(f"configdirectory: {root}/c\npartition-default: {root}/p\n", "ab")
store = DiskStore.from_config(config)
names = [f"user.u{i}" for i in range(max(batch * recipients, 4))]
if sys.argv[5] == "0":  # the first worker of the tree makes the mailboxes
    for name in names:
        store.create_mailbox(name)
print("ready", flush=True)
body = b"Subject: b\r\n\r\n" + b"The quick brown fox jumps over the lazy dog 0123456789.\r\n" * 70
sent = 0
for line in sys.stdin:
    latencies, cpu = [], time.process_time()
    for _ in range(int(line)):
        messages = []
        for j in range(batch):
            sent += 1
            targets = [DeliveryTarget(names[(j * recipients + r) % len(names)])
                       for r in range(recipients)]
            messages.append((body + f"{os.getpid()} {sent}\r\n".encode(), targets))
        start = time.perf_counter()
        store.deliver_batch(messages)
        latencies.append(time.perf_counter() - start)
    print(json.dumps({"latencies": latencies, "cpu": time.process_time() - cpu}), flush=True)
store.close()
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, metavar="SRC", help="tree A's src directory")
    parser.add_argument("--b", required=True, metavar="SRC", help="tree B's src directory")
    parser.add_argument("-p", dest="processes", type=int, default=1, help="workers per tree")
    parser.add_argument("-b", dest="batch", type=int, default=1, help="messages per call")
    parser.add_argument("-r", dest="recipients", type=int, default=1)
    parser.add_argument("-k", dest="calls", type=int, default=50, help="calls per block")
    parser.add_argument("--blocks", type=int, default=12, help="blocks per tree")
    args = parser.parse_args()
    trees = {"A": args.a, "B": args.b}
    roots = {name: tempfile.mkdtemp() for name in trees}
    workers: dict[str, list[subprocess.Popen[str]]] = {name: [] for name in trees}
    for name, src in trees.items():
        for number in range(args.processes):  # one at a time: the first makes the mailboxes
            worker = subprocess.Popen(
                [sys.executable, "-c", WORKER, src, str(args.batch), str(args.recipients),
                 roots[name], str(number)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            assert worker.stdout is not None and worker.stdout.readline() == "ready\n"
            workers[name].append(worker)
    latencies: dict[str, list[float]] = {name: [] for name in trees}
    cpu = dict.fromkeys(trees, 0.0)
    blocks: dict[str, list[float]] = {name: [] for name in trees}
    for block in range(args.blocks):
        for name in ("A", "B") if block % 2 == 0 else ("B", "A"):
            for worker in workers[name]:
                assert worker.stdin is not None
                worker.stdin.write(f"{args.calls}\n")
                worker.stdin.flush()
            these: list[float] = []
            for worker in workers[name]:
                assert worker.stdout is not None
                out = json.loads(worker.stdout.readline())
                these += out["latencies"]
                cpu[name] += out["cpu"]
            latencies[name] += these
            blocks[name].append(statistics.median(these))
    for worker in [w for group in workers.values() for w in group]:
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
    for root in roots.values():
        shutil.rmtree(root)  # after the last block's clock stopped
    calls = args.calls * args.blocks * args.processes
    for name, src in trees.items():
        ordered = sorted(latencies[name])
        p50, p90, p99 = (ordered[int(calls * q)] * 1e3 for q in (0.5, 0.9, 0.99))
        print(f"{name} ({src}): per call p50 {p50:.3f} ms, p90 {p90:.3f}, p99 {p99:.3f};"
              f" CPU {cpu[name] / calls / args.batch * 1e3:.3f} ms/msg; block medians"
              f" {' '.join(f'{x * 1e3:.2f}' for x in blocks[name])}")
    wins = sum(b < a for a, b in zip(blocks["A"], blocks["B"], strict=True))
    print(f"B faster in {wins}/{args.blocks} paired blocks;"
          f" p50 B/A {statistics.median(latencies['B']) / statistics.median(latencies['A']):.2f}")


if __name__ == "__main__":
    main()
