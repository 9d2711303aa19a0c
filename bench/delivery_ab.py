"""deliver_batch latency of two source trees, interleaved finely (issue 18): one worker process
per tree (its `src` first on the path), each with its own store under TMPDIR, run in
alternating blocks of K calls, so that a shared machine's slow moments fall on both alike.

    python bench/delivery_ab.py --a /work/main/src --b ./src [-b 1] [-r 1] [-k 50] [--blocks 12]

Printed per tree: per-call p50 / p90 / p99 (one call = one lmtpd delivery batch: its stage
files, their fsync round, the commit), CPU per message, each block's median, and in how many
paired blocks B was faster. One process, so no commit turn: the shape of a standalone lmtpd
(`-b 1`: one session, `-b 4`: four). bench/delivery_batches.py has the multi-process shapes.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

WORKER = r'''
import json, shutil, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
root = Path(tempfile.mkdtemp())
config = parse_imapd_conf(f"configdirectory: {root}/c\npartition-default: {root}/p\n", "ab")
store = DiskStore.from_config(config)
batch, recipients = int(sys.argv[2]), int(sys.argv[3])
names = [f"user.u{i}" for i in range(max(batch * recipients, 4))]
for name in names:
    store.create_mailbox(name)
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
            messages.append((body + f"{sent}\r\n".encode(), targets))
        start = time.perf_counter()
        store.deliver_batch(messages)
        latencies.append(time.perf_counter() - start)
    print(json.dumps({"latencies": latencies, "cpu": time.process_time() - cpu}), flush=True)
store.close()
shutil.rmtree(root)  # after the last block's clock stopped
'''


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", required=True, metavar="SRC", help="tree A's src directory")
    parser.add_argument("--b", required=True, metavar="SRC", help="tree B's src directory")
    parser.add_argument("-b", dest="batch", type=int, default=1, help="messages per call")
    parser.add_argument("-r", dest="recipients", type=int, default=1)
    parser.add_argument("-k", dest="calls", type=int, default=50, help="calls per block")
    parser.add_argument("--blocks", type=int, default=12, help="blocks per tree")
    args = parser.parse_args()
    trees = {"A": args.a, "B": args.b}
    workers = {
        name: subprocess.Popen(
            [sys.executable, "-c", WORKER, src, str(args.batch), str(args.recipients)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for name, src in trees.items()
    }
    latencies: dict[str, list[float]] = {name: [] for name in trees}
    cpu = dict.fromkeys(trees, 0.0)
    blocks: dict[str, list[float]] = {name: [] for name in trees}
    for block in range(args.blocks):
        for name in ("A", "B") if block % 2 == 0 else ("B", "A"):
            worker = workers[name]
            assert worker.stdin is not None and worker.stdout is not None
            worker.stdin.write(f"{args.calls}\n")
            worker.stdin.flush()
            out = json.loads(worker.stdout.readline())
            latencies[name] += out["latencies"]
            cpu[name] += out["cpu"]
            blocks[name].append(statistics.median(out["latencies"]))
    for worker in workers.values():
        assert worker.stdin is not None
        worker.stdin.close()
        worker.wait()
    calls = args.calls * args.blocks
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
