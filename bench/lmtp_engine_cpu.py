"""CPU of lmtpd's delivery thread per message and per copy, in process (issue 18).

`bench/lmtp_throughput.py` times whole runs, which on a shared machine move with everyone's load
and disk. This runs what lmtpd's delivery thread runs for a batch (`DeliveryEngine.
deliver_batch` of B envelopes of R recipients, its log lines held and written at the end as
`DeliveryQueue` does) against a disk store as lmtpd opens it (Sieve, duplicate suppression),
and times each batch with the thread's CPU clock: Sieve lookups, duplicate checks and marks,
the stage files, the index rows, the links, the COMMIT and the log lines, without the event
loop, the LMTP parser or the sockets. On /dev/shm (the default) the fsyncs cost only their
system calls. Run it with each tree first on PYTHONPATH to compare two trees:

    PYTHONPATH=src python bench/lmtp_engine_cpu.py [-r 50] [-b 4] [-n 60] [--repeat 5]
        [-z 4096] [--dir /dev/shm] [--profile] [--loop] [--quota KIB]

Printed: CPU ms per message and microseconds per copy, the lowest and the median of `repeat`
runs (each on a fresh store); `--profile` adds cProfile's top functions of one more run.

`--loop` times the event loop's side of a message instead (the socket reads and writes
excepted): the LMTP core parsing a pipelined MAIL, R RCPTs and DATA, lmtpd's recipient check of
each RCPT (`LmtpSession._check_recipient` on the same store), the message's octets and its R
replies.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import importlib
import logging
import pstats
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.instance import create_inboxes, store_root_opt_in

from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.maillog import SecondsFormatter, lean_log_records
from sealmail.server.lmtpd import build_service

try:
    from sealmail.maillog import BatchingStreamHandler as Handler
    from sealmail.maillog import batched_lines
except ImportError:  # a tree from before issue 18's held lines, for A/B runs
    from contextlib import nullcontext as batched_lines  # type: ignore[assignment]
    from logging import StreamHandler as Handler  # type: ignore[assignment]


def make_message(number: int, size: int) -> bytes:
    head = (
        "From: Bench <bench@client.test.example>\r\nTo: undisclosed-recipients:;\r\n"
        f"Subject: bench message {number}\r\n"
        f"Message-ID: <{time.time_ns()}.{number}@client.test.example>\r\n"
        "Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq.\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


QUOTA_KIB = 0  # --quota: each user's INBOX a quota root of this many KiB (0: none)


def engine_in(root: Path, users: list[str]) -> DeliveryEngine:
    conf = root / "imapd.conf"
    for sub in ("config", "partition"):
        (root / sub).mkdir()
    conf.write_text(
        f"configdirectory: {root / 'config'}\npartition-default: {root / 'partition'}\n"
        "servername: sealmail.test.example\nlmtp_user_concurrency_limit: 0\n"
        + store_root_opt_in()
    )
    create_inboxes(conf, users)
    engine = build_service(load_imapd_conf(conf), []).engine
    if QUOTA_KIB:
        for user in users:
            engine.store.set_quota(f"user.{user}", QUOTA_KIB, None)  # type: ignore[attr-defined]
    return engine


def envelopes(engine: DeliveryEngine, users: list[str], count: int, size: int,
              first: int) -> list[tuple[Envelope, bytes]]:
    out = []
    for n in range(first, first + count):
        recipients = tuple(
            engine.check_recipient(user, "test.example", ignore_quota=False, fresh=i == 0)
            for i, user in enumerate(users)
        )
        out.append((Envelope("bench@client.test.example", recipients, f"S{n}"),
                    make_message(n, size)))
    return out


def run(args: argparse.Namespace, profile: cProfile.Profile | None = None,
        steps: dict[str, float] | None = None) -> list[float]:
    """CPU seconds of each timed batch; `steps` (--breakdown) is cleared after the warm-up."""
    users = ["bench", *(f"{i}bench" for i in range(2, args.r + 1))]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmtpcpu-") as tmp:
        engine = engine_in(Path(tmp), users)
        timings = []
        for round_ in range(args.n + 2):
            batch = envelopes(engine, users, args.b, args.z, round_ * args.b)
            if profile is not None and round_ >= 2:
                profile.enable()
            if steps is not None and round_ == 2:
                steps.clear()
            started = time.thread_time()
            with batched_lines():
                replies = engine.deliver_batch(batch)
            spent = time.thread_time() - started
            if profile is not None:
                profile.disable()
            if any(r.code != 250 for answer in replies for r in answer):
                raise SystemExit(f"a delivery failed: {replies[0][:3]}")
            if round_ >= 2:  # the first rounds open files and warm caches
                timings.append(spent)
        engine.store.close()
    return timings


def loop_side(args: argparse.Namespace) -> list[float]:
    """`--loop`: CPU seconds of the event loop's work per message, one value per message."""
    from types import SimpleNamespace

    from sealmail.delivery.replies import SENDER_OK, delivered
    from sealmail.proto.smtp import MailFrom, MessageData, Mode, RcptTo, ServerConnection
    from sealmail.proto.smtp.events import NeedData
    from sealmail.server.lmtpd import LmtpSession, Transaction

    users = ["bench", *(f"{i}bench" for i in range(2, args.r + 1))]
    commands = b"MAIL FROM:<bench@client.test.example>\r\n" + b"".join(
        f"RCPT TO:<{user}>\r\n".encode() for user in users) + b"DATA\r\n"  # as lmtp_throughput
    timings = []
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmtpcpu-") as tmp:
        engine = engine_in(Path(tmp), users)
        session = SimpleNamespace(service=SimpleNamespace(engine=engine), session_id="S1",
                                  client="local", txn=Transaction())
        conn = ServerConnection(Mode.LMTP, "bench.test.example", session_id="S1",
                                smtputf8=True)
        conn.receive_data(b"LHLO client.test.example\r\n")
        conn.next_event()
        conn.data_to_send()
        ok = delivered("S1")
        for number in range(args.n * args.b + 20):
            data = make_message(number, args.z) + b".\r\n"
            started = time.thread_time()
            for chunk in (commands, data):
                conn.receive_data(chunk)
                while not isinstance(event := conn.next_event(), NeedData):
                    if isinstance(event, MailFrom):
                        session.txn = Transaction(sender=event.reverse_path)
                        conn.answer(SENDER_OK)
                    elif isinstance(event, RcptTo):
                        conn.answer(LmtpSession._check_recipient(session, event))  # type: ignore[arg-type]
                    elif isinstance(event, MessageData):
                        for _ in session.txn.recipients:
                            conn.answer(ok)
                conn.data_to_send()
            spent = time.thread_time() - started
            if number >= 20:
                timings.append(spent)
        engine.store.close()
    return timings


# What --breakdown times (module, attribute): nested ones count inside their callers too.
BREAKDOWN = (
    ("sealmail.delivery.engine:DeliveryEngine", "_begin"),  # trace fields, Message-ID
    ("sealmail.delivery.engine:DeliveryEngine", "_plan"),  # Sieve, duplicates, slots
    ("sealmail.delivery.sieve:SieveFilter", "plan"),
    ("sealmail.store.duplicates:DuplicateDatabase", "seen_among"),
    ("sealmail.delivery.engine:DeliveryEngine", "_take_slots"),
    ("sealmail.delivery.engine:DeliveryEngine", "_store"),  # all of the store's work
    ("sealmail.store.disk.commit:GroupCommit", "_prepare"),  # stage file, header forms
    ("sealmail.store.disk.commit:GroupCommit", "_commit_batch"),
    ("sealmail.store.disk.commit:GroupCommit", "_append"),  # quota, link, rows noted
    ("sealmail.store.disk.index_writes:IndexWrites", "flush"),  # the rows' executemany
    ("sealmail.store.disk.commit", "fsync_together"),
    ("sealmail.delivery.engine:DeliveryEngine", "_mark"),  # duplicate marks
    ("sealmail.delivery.engine:DeliveryEngine", "_finish"),  # replies, log lines
    ("sealmail.delivery.engine:DeliveryEngine", "_log"),
    ("sealmail.maillog", "_write_held"),
)


def timed(spent: dict[str, float], name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        started = time.thread_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[name] += time.thread_time() - started
    return wrapper


def breakdown(args: argparse.Namespace) -> None:
    """CPU per message of each step in BREAKDOWN, over one run (the wrappers add ~1 us/call)."""
    spent: dict[str, float] = defaultdict(float)
    for where, attribute in BREAKDOWN:
        module_name, _, class_name = where.partition(":")
        module = importlib.import_module(module_name)
        owner = getattr(module, class_name) if class_name else module
        if hasattr(owner, attribute):
            setattr(owner, attribute, timed(spent, f"{class_name or module_name}.{attribute}",
                                            getattr(owner, attribute)))
    timings = run(args, steps=spent)
    messages = len(timings) * args.b
    print(f"whole batch: {sum(timings) * 1e3 / messages:.3f} ms per message")
    for name, seconds in spent.items():
        print(f"  {name:<40} {seconds * 1e3 / messages:7.3f} ms/msg"
              f" {seconds * 1e6 / messages / args.r:7.1f} us/copy")


def run_queue(args: argparse.Namespace, max_copies: int) -> tuple[float, float, float]:
    """`--sessions`: lmtpd's DeliveryQueue fed by that many sessions in a closed loop on one
    event loop, each burning `--loop-ms` of CPU per message on the loop first (lmtpd's RCPT and
    DATA work, which competes with the delivery thread for the GIL). Returns (p50, p99 seconds
    from the queue's `deliver` to its replies, messages/s)."""
    from sealmail.server.delivery_queue import DeliveryQueue

    users = ["bench", *(f"{i}bench" for i in range(2, args.r + 1))]
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="lmtpcpu-") as tmp:
        engine = engine_in(Path(tmp), users)
        queue = DeliveryQueue(engine, max_copies=max_copies)
        latencies: list[float] = []
        counter = iter(range(10**9))

        async def session(count: int) -> None:
            for _ in range(count):
                burn_until = time.thread_time() + args.loop_ms / 1000
                while time.thread_time() < burn_until:
                    pass
                [(env, content)] = envelopes(engine, users, 1, args.z, next(counter))
                started = time.perf_counter()
                replies = await queue.deliver(env, content)
                latencies.append(time.perf_counter() - started)
                assert all(r.code == 250 for r in replies), replies[:2]

        async def main() -> float:
            await asyncio.gather(*(session(2) for _ in range(args.sessions)))  # warm-up
            latencies.clear()
            began = time.perf_counter()
            await asyncio.gather(*(session(args.n) for _ in range(args.sessions)))
            return time.perf_counter() - began

        seconds = asyncio.run(main())
        queue.close()
        engine.store.close()
    ordered = sorted(latencies)
    return (ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))],
            len(ordered) / seconds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-r", type=int, default=50, help="recipients per message (50)")
    parser.add_argument("-b", type=int, default=4, help="messages per batch (4: 4 sessions)")
    parser.add_argument("-n", type=int, default=60, help="batches timed per run (60)")
    parser.add_argument("-z", type=int, default=4096, help="message size (4096)")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--breakdown", action="store_true", help="CPU per step (BREAKDOWN)")
    parser.add_argument("--quota", type=int, default=0, metavar="KIB",
                        help="each user's INBOX a quota root of KIB (as a Cyrus operator sets)")
    parser.add_argument("--loop", action="store_true",
                        help="the event loop's side: the LMTP core and the RCPT checks")
    parser.add_argument("--log", default="/dev/null", help="where the log lines go")
    parser.add_argument("--sessions", type=int, default=0,
                        help="closed loop through DeliveryQueue with this many sessions")
    parser.add_argument("--loop-ms", type=float, default=1.5,
                        help="CPU each message costs the event loop first (--sessions)")
    parser.add_argument("--copies", default="100,200",
                        help="DeliveryQueue max_copies to compare, interleaved (--sessions)")
    args = parser.parse_args()
    global QUOTA_KIB
    QUOTA_KIB = args.quota
    lean_log_records()
    handler = Handler(open(args.log, "a"))  # noqa: SIM115 (until exit)
    handler.setFormatter(SecondsFormatter("%(asctime)s %(name)s[%(process)d]: %(message)s",
                                          "%Y-%m-%dT%H:%M:%S"))  # as the daemons log
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.breakdown:
        breakdown(args)
        return 0
    if args.loop:
        runs = [statistics.median(loop_side(args)) for _ in range(args.repeat)]
        print(f"event loop's side of a {args.r}-recipient message, {args.z} bytes: CPU lowest"
              f" {min(runs) * 1e6:.0f} us, median {statistics.median(runs) * 1e6:.0f} us;"
              f" per recipient lowest {min(runs) * 1e6 / args.r:.2f} us ({args.repeat} runs)")
        if args.profile:
            profile = cProfile.Profile()
            profile.enable()
            loop_side(args)
            profile.disable()
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        return 0
    if args.sessions:
        bounds = [int(b) for b in args.copies.split(",")]
        found: dict[int, list[tuple[float, float, float]]] = {b: [] for b in bounds}
        for _ in range(args.repeat):
            for bound in bounds:
                found[bound].append(run_queue(args, bound))
        for bound, runs in found.items():
            print(f"max_copies {bound}: " + "; ".join(
                f"p50 {p50 * 1e3:.1f} p99 {p99 * 1e3:.1f} ms {rate:.0f} msg/s"
                for p50, p99, rate in runs))
        return 0
    per_message = []
    for _ in range(args.repeat):
        timings = run(args)
        per_message.append(statistics.median(timings) / args.b)
    low, median = min(per_message), statistics.median(per_message)
    print(f"{args.b} x {args.r} recipients, {args.z} bytes, batches of {args.b}: CPU per message"
          f" lowest {low * 1e3:.3f} ms, median {median * 1e3:.3f} ms; per copy lowest"
          f" {low * 1e6 / args.r:.1f} us ({args.repeat} runs of {args.n} batches)")
    if args.profile:
        profile = cProfile.Profile()
        run(args, profile)
        pstats.Stats(profile).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
