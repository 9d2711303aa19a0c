"""The disk store's IMAP writes that promise nothing (issue 17): a \\Recent claim, FETCH's save
of a kept parse, and a relaxed write transaction, measured in one process, alone and while
another thread keeps the index's write queue busy with group commits of STOREs (each held
through its WAL fsync, as another imapd worker's under imaptest's `logout=0`).

    PYTHONPATH=<tree>/src python bench/store_write_queue.py [-n 2000]

Printed (JSON): CPU per call (thread CPU time, microseconds: what the machine's other load
does not inflate) and the median and 90th percentile wall time per call while the queue is
busy. Compare trees by running this with each tree's src first on the path, alternating, and
keep the lowest of several runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"


def measure(call: Callable[[int], object], count: int, pause: float = 0.0
            ) -> tuple[float, list[float]]:
    """(thread CPU per call in us, wall times in us); `pause` seconds between calls (a session
    claims now and then: back to back, the caller would hold the lock half the time and starve
    the other process's commits)."""
    walls: list[float] = []
    cpu = 0.0
    for i in range(1, count + 1):
        if pause:
            time.sleep(pause)
        start, started = time.perf_counter(), time.thread_time()
        call(i)
        cpu += time.thread_time() - started
        walls.append((time.perf_counter() - start) * 1e6)
    return cpu / count * 1e6, walls


def summary(cpu: float, walls: list[float]) -> dict[str, float]:
    walls = sorted(walls)
    return {"cpu_us": round(cpu, 1), "wall_p50_us": round(statistics.median(walls), 1),
            "wall_p90_us": round(walls[int(len(walls) * 0.9)], 1),
            "wall_mean_us": round(statistics.fmean(walls), 1), "wall_max_us": round(walls[-1])}


def keep_busy(root: str) -> None:
    """Two threads of STOREs on user.b until terminated."""
    config = parse_imapd_conf(
        f"configdirectory: {root}/config\npartition-default: {root}/spool\n", "x")
    store = DiskStore.from_config(config)

    def work(offset: int) -> None:
        flag = offset
        while True:
            flag += 1
            store.update_flags("user.b", [1], [f"$k{flag % 7}"], "set")

    for offset in (0, 3):
        threading.Thread(target=work, args=(offset,), daemon=True).start()
    time.sleep(0.2)
    print("busy", flush=True)
    threading.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=2000)
    parser.add_argument("--busy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.busy:
        keep_busy(args.busy)
        return
    with tempfile.TemporaryDirectory(dir=Path(__file__).resolve().parent.parent) as root:
        config = parse_imapd_conf(
            f"configdirectory: {root}/config\npartition-default: {root}/spool\n", "x")
        store = DiskStore.from_config(config)
        store.create_mailbox("user.a")
        store.create_mailbox("user.b")
        store.deliver_all([(MESSAGE, DeliveryTarget("user.a"), None)] * (2 * args.n + 1))
        store.deliver(MESSAGE, [DeliveryTarget("user.b")])
        results: dict[str, dict[str, float]] = {}
        n = args.n

        def claim(i: int, base: int = 0) -> object:
            return store.claim_recent("user.a", base + i, "a")

        def save(i: int, base: int = 0) -> None:
            store.save_message_structures("user.a", {base + i: b"parsed %d" % i})

        def relaxed(i: int) -> None:
            with store.spool.index.transaction(durable=False) as conn:
                conn.execute("INSERT OR REPLACE INTO settings VALUES ('bench', ?)", (i,))

        results["claim_alone"] = summary(*measure(claim, n))
        results["save_alone"] = summary(*measure(save, n))
        results["relaxed_transaction_alone"] = summary(*measure(relaxed, n))
        # Another imapd process's group commits of STOREs, each through its WAL fsync.
        busy = subprocess.Popen([sys.executable, __file__, "--busy", root],
                                stdout=subprocess.PIPE)
        try:
            assert busy.stdout is not None and busy.stdout.readline() == b"busy\n"
            results["claim_busy"] = summary(*measure(lambda i: claim(i, n), n, 0.002))
            results["save_busy"] = summary(*measure(lambda i: save(i, n), n, 0.002))
        finally:
            busy.terminate()
            busy.wait()
        store.close()
    json.dump({"tree": sys.modules["sealmail"].__file__, **results}, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
