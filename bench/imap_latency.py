"""The one-connection latency rows of bench/imap_throughput.py, in the session: CPU per command.

A disk store of N messages (the bench's `imap_throughput.message`), one IMAP session on it
(`ImapSession.execute`, no network; streamed FETCH output collected as the daemon would send
it), and each row timed R times with the thread's CPU clock: SELECT and EXAMINE of the mailbox
again, FETCH 1:* (FLAGS UID), SORT (SUBJECT) repeated, and SORT (SUBJECT) as the first command
after one new message (delivered, then a NOOP, untimed). Prints the lowest and the median per
row. Compare two trees by running this with each one's `src` first on PYTHONPATH, interleaved.

    PYTHONPATH=src python bench/imap_latency.py [-n MESSAGES] [-r ROUNDS]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imap_throughput import message
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession
from sealmail.proto.imap import ParserLimits, Response, parse_command, render
from sealmail.store.api import DeliveryTarget, MessageStore


class Session:
    """One session on `store`'s user.fred, its commands' output collected."""

    def __init__(self, store: MessageStore) -> None:
        self.session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
        self.streamed: list[bytes] = []
        self.session.stream = self._stream

    def _stream(self, responses: list[Response]) -> None:
        self.streamed.append(b"".join(render(r) for r in responses))

    def run(self, line: str) -> bytes:
        command = parse_command(line.encode() + b"\r\n", ParserLimits())
        out = b"".join(render(r) for r in self.session.execute(command))
        data = b"".join(self.streamed) + out
        self.streamed.clear()
        return data


def timed(rounds: int, step: Callable[[], object], before: Callable[[], object] | None = None
          ) -> list[float]:
    spent = []
    for _ in range(rounds):
        if before is not None:
            before()
        began = time.thread_time()
        step()
        spent.append(1000 * (time.thread_time() - began))
    return spent


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, metavar="MESSAGES", help="default 10000")
    parser.add_argument("-r", type=int, default=10, metavar="ROUNDS", help="default 10")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="smbench-latency-") as root:
        store = open_store("disk", store_config(Path(root)))
        store.create_mailbox("user.fred")
        target = [DeliveryTarget("user.fred", ())]
        for n in range(args.n):
            store.deliver(message(n), target, internaldate=1.7e9 + n)
        session = Session(store)
        session.run("a SELECT INBOX")
        delivered = [args.n]

        def new_mail() -> None:
            store.deliver(message(delivered[0]), target, internaldate=1.7e9 + delivered[0])
            delivered[0] += 1
            session.run("b NOOP")

        rows = {
            "SELECT INBOX (again)": timed(args.r, lambda: session.run("a SELECT INBOX")),
            "EXAMINE INBOX (again)": timed(args.r, lambda: session.run("a EXAMINE INBOX")),
        }
        session.run("a SELECT INBOX")
        rows["FETCH 1:* (FLAGS UID)"] = timed(
            args.r, lambda: session.run("a FETCH 1:* (FLAGS UID)"))
        sort = "a SORT (SUBJECT) UTF-8 ALL"
        session.run(sort)
        rows["SORT (SUBJECT), repeated"] = timed(args.r, lambda: session.run(sort))
        rows["SORT (SUBJECT), after new mail"] = timed(args.r, lambda: session.run(sort),
                                                       new_mail)
        store.close()
    print(f"{args.n} messages, {args.r} rounds: thread CPU ms per command")
    for name, spent in rows.items():
        print(f"{name:34} min {min(spent):6.2f}  median {statistics.median(spent):6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
