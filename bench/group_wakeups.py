"""Wake-ups of the group commits' hand-offs, in process: context switches and CPU per join.

imapd's command threads meet in group commits (sealmail.store.disk.batches: a leader commits
the batch, followers sleep until it is done). Under imaptest the machine's load moves every
count of a whole server; this runs only the hand-off: THREADS threads calling `Batches.join`
ROUNDS times each, the leader's commit a 0.5 ms sleep (the fsync's stand-in, without the GIL)
and a little Python per waiter, each caller a little Python of its own between joins. Printed:
voluntary and involuntary context switches of the process per join (getrusage) and its CPU
per join. Compare two trees by running this with each one's `src` first on PYTHONPATH,
interleaved:

    PYTHONPATH=src python bench/group_wakeups.py [--threads 6] [--rounds 3000]
"""

from __future__ import annotations

import argparse
import resource
import threading
import time

from sealmail.store.disk.batches import Batches, Waiter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3000)
    args = parser.parse_args()
    batches: Batches[Waiter] = Batches()

    def lead() -> None:
        time.sleep(0.0005)
        for _ in batches.batch():
            sum(range(50))

    def caller() -> None:
        for _ in range(args.rounds):
            batches.join(Waiter(), lead)
            sum(range(300))

    threads = [threading.Thread(target=caller) for _ in range(args.threads)]
    before = resource.getrusage(resource.RUSAGE_SELF)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    after = resource.getrusage(resource.RUSAGE_SELF)
    joins = args.threads * args.rounds
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    print(f"{args.threads} threads, {joins} joins: per join"
          f" {(after.ru_nvcsw - before.ru_nvcsw) / joins:.2f} voluntary and"
          f" {(after.ru_nivcsw - before.ru_nivcsw) / joins:.2f} involuntary context switches,"
          f" {1e6 * cpu / joins:.1f} us CPU")


if __name__ == "__main__":
    main()
