"""Index pages written per delivered copy: the WAL frames one many-recipient delivery adds
(issue 18). Counted, not timed, so a shared machine's load does not move it; the delivery
thread's CPU is printed beside it. Run it with each tree first on the path to compare two trees:

    PYTHONPATH=src python bench/index_pages.py [-r 50] [-k 100] [-n 20] [--rich] [--tables]
                                               [--dir DIR]

Makes R mailboxes holding K messages each (so that each copy's rows land on a page of their
own, as in a store in use), then N times: a TRUNCATE checkpoint (from a connection of its own),
one `deliver_batch` of one message to the R mailboxes, and a PASSIVE checkpoint whose count of
frames in the WAL is what that delivery (and the clearing of its `unconfirmed` rows by the next
one) wrote; now and then the store's own checkpoint thread restarts the WAL first and a delivery
counts a handful (the min column): the median is the figure. `--rich`: a header as a
mailing-list reply carries (Received, Cc, References, a long Subject, List-Id) instead of the
bench's five short fields; what decides whether a copy's `header_index` row fits its page or
spills to an overflow page (rows over ~1,000 octets do).
`--tables`: the frames by the table or index their page belongs to (SQLite's dbstat).
"""

from __future__ import annotations

import argparse
import collections
import sqlite3
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

RICH = (
    "Return-Path: <alice@example.org>\r\n"
    "Received: from mx.example.org (mx.example.org [192.0.2.1])\r\n"
    "\tby mail.example.com with ESMTPS id 4Hx{n}; Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    "From: Alice Example <alice@example.org>\r\n"
    "To: Bob <bob@example.com>, Carol Someone <carol@example.com>\r\n"
    "Cc: team-list@lists.example.com\r\n"
    "Subject: Re: [team] Quarterly planning meeting notes and follow-ups {n}\r\n"
    "Date: Mon, 7 Dec 2026 10:00:00 +0000\r\n"
    "Message-ID: <CAF{n}abcd5678efgh@mail.example.org>\r\n"
    "In-Reply-To: <CAF1111aaaa2222bbbb@mail.example.com>\r\n"
    "References: <CAF0000zzzz1111yyyy@mail.example.com> <CAF1111aaaa2222bbbb@mail.example.com>\r\n"
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "List-Id: Team <team.lists.example.com>\r\n\r\n"
)
PLAIN = (
    "From: Bench <bench@client.test.example>\r\nTo: undisclosed-recipients:;\r\n"
    "Subject: bench message {n}\r\nMessage-ID: <{n}@client.test.example>\r\n"
    "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
)
BODY = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq.\r\n" * 50


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", type=int, default=50, help="recipients (mailboxes) per message")
    parser.add_argument("-k", type=int, default=100, help="messages in each mailbox first")
    parser.add_argument("-n", type=int, default=20, help="deliveries counted")
    parser.add_argument("--rich", action="store_true", help="a mailing-list reply's header")
    parser.add_argument("--dir", default=None, help="where the store goes (default TMPDIR)")
    parser.add_argument("--tables", action="store_true", help="frames by table (dbstat)")
    args = parser.parse_args()
    head = RICH if args.rich else PLAIN
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="indexpages-") as tmp:
        root = Path(tmp)
        config = parse_imapd_conf(
            f"configdirectory: {root}/c\npartition-default: {root}/p\n", "bench")
        store = DiskStore.from_config(config)
        names = [f"user.u{i}" for i in range(args.r)]
        for name in names:
            store.create_mailbox(name)
        targets = [DeliveryTarget(name) for name in names]

        def message(n: int) -> bytes:
            return head.format(n=n).encode() + BODY

        for n in range(args.k):
            store.deliver_batch([(message(n), targets)])
        probe = sqlite3.connect(root / "c" / "mailboxes.db", isolation_level=None, timeout=60)
        frames, cpu = [], []
        tables: collections.Counter[str] = collections.Counter()
        for n in range(args.k, args.k + args.n):
            probe.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            started = time.thread_time()
            store.deliver_batch([(message(n), targets)])
            cpu.append(time.thread_time() - started)
            time.sleep(0.05)  # the deferred round's clearing, if it comes
            if args.tables:
                tables.update(frames_by_table(probe, root / "c" / "mailboxes.db-wal"))
            frames.append(probe.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()[1])
        probe.close()
        store.close()
    median = statistics.median(frames)
    print(f"{'rich' if args.rich else 'plain'} header, {args.r} recipients, {args.k} messages"
          f" a mailbox first, {args.n} deliveries")
    print(f"WAL frames per message: median {median:.0f} (min {min(frames)}, max {max(frames)}),"
          f" {median / args.r:.2f} per copy")
    print(f"delivery thread CPU: median {statistics.median(cpu) * 1000:.2f} ms per message")
    for table, count in tables.most_common():
        print(f"  {table:24} {count / args.n / args.r:.2f} frames per copy")


def frames_by_table(conn: sqlite3.Connection, wal: Path) -> collections.Counter[str]:
    """The page numbers of the WAL's frames (each after a 24-octet frame header; the file's
    own header is 32 octets), counted by the table or index that owns the page now."""
    owner = dict((page, name) for name, page in conn.execute("SELECT name, pageno FROM dbstat"))
    data = wal.read_bytes()
    counts: collections.Counter[str] = collections.Counter()
    if len(data) < 32:
        return counts
    size = struct.unpack(">I", data[8:12])[0]
    for at in range(32, len(data) - 24, 24 + size):
        page = struct.unpack(">I", data[at : at + 4])[0]
        counts[owner.get(page, "(freed)")] += 1
    return counts


if __name__ == "__main__":
    sys.exit(main())
