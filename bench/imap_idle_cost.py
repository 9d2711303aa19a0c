"""What idle IMAP sessions cost a server at rest: `sealmail master` (imapd prefork=2) beside a
private Dovecot, each holding N sessions in IDLE on INBOXes where nothing happens.

    python bench/imap_idle_cost.py [-n 200] [-s 15] [--sealmail-only]

Printed per server: its processes' CPU time (user + system, from /proc, all its processes)
per idle session and second, measured for `secs` seconds once every session idles, and the
ratio sealmail/Dovecot. Dovecot's imap processes wait on inotify and use no CPU at all while
nothing changes; sealmail looks at each idling session's mailbox row every 0.25 s (one timer
per worker, docs/imapd.md). The sessions are bench/imap_stress.py's (LOGIN, SELECT INBOX, IDLE).
Run as root from the checkout, as bench/imap_stress.py.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from imap_stress import Idlers, dovecot, sealmail_master, tree_cpu
from tests.support.peers import traversable_tmpdir


def idle_cost(port: int, root_pid: int, sessions: int, secs: float) -> float:
    """Microseconds of the server's CPU per idle session and second."""
    with Idlers(port, sessions):
        time.sleep(2)  # the last sessions' IDLE answered
        before, started = tree_cpu(root_pid), time.monotonic()
        time.sleep(secs)
        cpu, wall = tree_cpu(root_pid) - before, time.monotonic() - started
    return 1e6 * cpu / wall / sessions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--sessions", type=int, default=200)
    parser.add_argument("-s", "--secs", type=float, default=15.0)
    parser.add_argument("--sealmail-only", action="store_true")
    args = parser.parse_args()
    with (
        traversable_tmpdir() as root,
        sealmail_master(root / "sealmail") as (ours, master_pid, _),
        contextlib.nullcontext((0, 0)) if args.sealmail_only else dovecot(root)
        as (theirs, dovecot_pid),
    ):
        sealmail = idle_cost(ours, master_pid, args.sessions, args.secs)
        print(f"sealmail (master, imapd prefork=2): {sealmail:.0f} us CPU per idle session and s")
        if not args.sealmail_only:
            theirs_cost = idle_cost(theirs, dovecot_pid, args.sessions, args.secs)
            if theirs_cost:
                print(f"dovecot: {theirs_cost:.1f} us CPU per idle session and s;"
                      f" sealmail/dovecot {sealmail / theirs_cost:.2f}x")
            else:  # inotify: nothing runs while nothing changes
                print(f"dovecot: not one CPU tick (10 ms) in {args.secs:.0f} s")


if __name__ == "__main__":
    main()
