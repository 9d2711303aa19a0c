"""The first SORT and THREAD after new mail, in the session: CPU time per command.

A disk store of N messages (the bench's `imap_throughput.message`), one IMAP session on it
(`ImapSession.execute`, no network); each command once, then eight times: deliver one message,
NOOP (the session hears of it), and each command timed with `time.process_time` (what the
process spent on a CPU, so other work on the machine matters little). `--reply` makes each new
message a reply to an existing one (References), which THREAD REFERENCES adds as a child.
Prints the lowest and the median per command. Compare two trees by running this with each one's
`src` first on PYTHONPATH, one after the other.

    python bench/imap_orders.py [-n MESSAGES] [--reply] [COMMAND ...]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imap_throughput import message
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession
from sealmail.proto.imap import ParserLimits, parse_command, render
from sealmail.store.api import DeliveryTarget, MessageStore

COMMANDS = ("a THREAD REFERENCES UTF-8 ALL", "a THREAD ORDEREDSUBJECT UTF-8 ALL",
            "a SORT (SUBJECT) UTF-8 ALL", "a UID SORT (DATE) UTF-8 ALL",
            "a SORT (REVERSE ARRIVAL) UTF-8 ALL")
ROUNDS = 8


def run(session: ImapSession, line: str) -> bytes:
    command = parse_command(line.encode() + b"\r\n", ParserLimits())
    return b"".join(render(r) for r in session.execute(command))


def deliver(store: MessageStore, n: int, reply_to: int | None) -> None:
    raw = message(n)
    if reply_to is not None:
        raw = raw.replace(b"Message-ID:", b"References: <b%d@example.org>\r\nMessage-ID:"
                          % reply_to)
    store.deliver(raw, [DeliveryTarget("user.fred", ())], internaldate=1.7e9 + n)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, metavar="MESSAGES", help="default 10000")
    parser.add_argument("--reply", action="store_true", help="new mail replies to old mail")
    parser.add_argument("commands", nargs="*", default=COMMANDS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smbench-orders-") as root:
        store = open_store("disk", store_config(Path(root)))
        store.create_mailbox("user.fred")
        for n in range(args.n):
            deliver(store, n, None)
        session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
        run(session, "a SELECT INBOX")
        for line in args.commands:
            run(session, line)
        spent: dict[str, list[float]] = {line: [] for line in args.commands}
        for n in range(args.n, args.n + ROUNDS):
            deliver(store, n, n // 2 if args.reply else None)
            run(session, "b NOOP")
            for line in args.commands:
                began = time.process_time()
                run(session, line)
                spent[line].append(1000 * (time.process_time() - began))
        store.close()
    print(f"{args.n} messages, one new {'reply ' if args.reply else ''}before each round, "
          f"{ROUNDS} rounds: CPU ms of the first command after it")
    for line, times in spent.items():
        print(f"{line:40} min {min(times):6.2f}  median {statistics.median(times):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
