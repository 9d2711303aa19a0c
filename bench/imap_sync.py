"""CPU of the selected mailbox's per-command sync against the disk store, in process.

Every IMAP command ends with `SelectedMailbox.sync` (sealmail.imap.selected) and most look up
the mailbox's row first (the session's rights). This times those store calls alone, with the
thread's CPU clock, in three cases: nothing changed since the last command; another session
changed one message's flags; another session's delivery added a message (the \\Recent claim).
Run it with each tree first on PYTHONPATH to compare two trees (it only uses APIs both have):

    PYTHONPATH=src python bench/imap_sync.py [-n 3000] [--messages 500] [--expunged 5000]

`--expunged N` first delivers and expunges N more messages (another session's, which this one
is told of before the timing starts): the index keeps a row per message ever expunged (RFC 7162
VANISHED), which a mailbox under imaptest's stress profile gathers by the thousand a minute.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.imap.selected import SelectedMailbox, SyncOptions
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
NAME = "user.bench"


def cpu_per_call(rounds: int, change: Callable[[int], None], call: Callable[[], object]) -> float:
    """Microseconds of this thread's CPU per `call`, `change(i)` made (untimed) before each."""
    spent = 0.0
    for i in range(rounds):
        change(i)
        start = time.thread_time()
        call()
        spent += time.thread_time() - start
    return 1e6 * spent / rounds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="lowest of this many runs")
    parser.add_argument("--expunged", type=int, default=0,
                        help="messages delivered and expunged before the timing")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        config = parse_imapd_conf(
            f"configdirectory: {root / 'c'}\npartition-default: {root / 'p'}\n", "x")
        with DiskStore.from_config(config) as store, DiskStore.from_config(config) as other:
            store.create_mailbox(NAME)
            for _ in range(args.messages):
                store.deliver(MESSAGE, [DeliveryTarget(NAME)])
            view = SelectedMailbox.open(store, NAME, False, "bench", shows_recent=True)
            options = SyncOptions(condstore=True)
            for start in range(0, args.expunged, 500):
                count = min(500, args.expunged - start)
                for _ in range(count):
                    other.deliver(MESSAGE, [DeliveryTarget(NAME)])
                info = other.mailbox(NAME)
                assert info is not None
                other.expunge(NAME, list(range(info.uidnext - count, info.uidnext)))
            view.sync(store, options, True)

            def command() -> None:  # what a NOOP asks of the store: the row, then the sync
                store.mailbox(NAME)
                view.sync(store, options, True)

            def flag(i: int) -> None:
                uid = 1 + i % args.messages
                other.update_flags(NAME, [uid], ["\\Flagged"], "remove" if i % 2 else "add")

            def deliver(i: int) -> None:
                other.deliver(MESSAGE, [DeliveryTarget(NAME)])

            cases: list[tuple[str, Callable[[int], None]]] = [
                ("unchanged", lambda i: None),
                ("another session's STORE", flag),
                ("a new message (\\Recent claimed)", deliver),
            ]
            for label, change in cases:
                runs = [cpu_per_call(args.rounds, change, command) for _ in range(args.repeat)]
                print(f"{label}: {min(runs):.1f} us CPU per command"
                      f" (median {statistics.median(runs):.1f})")


if __name__ == "__main__":
    main()
