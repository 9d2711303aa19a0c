"""LMTP delivery throughput: sealmail's lmtpd side by side with Cyrus lmtpd and Dovecot LMTP.

Starts a private instance of each server in one run, delivers the same N messages over S
concurrent sessions (threads, each a real-socket LMTP client on the server's UNIX socket), each
message to R recipients, and prints per server: messages/s, recipient-deliveries/s and the p50 /
p99 end-of-data latency (from sending the final "." to the last recipient's reply, RFC 2033 4.2),
then the ratios sealmail/Cyrus and sealmail/Dovecot. It measures this machine's durable-write
floor first (4 KiB new file + fsync + directory fsync, median), and checks afterwards that every
server really stored N*R messages.

    python bench/lmtp_throughput.py [-n MESSAGES] [-s SESSIONS] [-r RECIPIENTS] [-z SIZE]
                                    [--only sealmail,cyrus,dovecot]

Run as root (the peers drop to their own users). See bench/README.md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

# The harness lives with the tests; this script runs from a checkout, not an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.instance import SealmailInstance
from tests.support.peers import (
    CyrusInstance,
    DovecotInstance,
    LmtpClient,
    PeerUnavailable,
    traversable_tmpdir,
)

SERVERS = ("sealmail", "cyrus", "dovecot")


@dataclass
class RunResult:
    server: str
    messages: int
    recipients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # end-of-data, seconds, per message
    failures: list[str] = field(default_factory=list)
    stored: int = 0  # new messages found in the store afterwards

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def deliveries_per_second(self) -> float:
        return self.messages * self.recipients / self.seconds

    def percentile(self, fraction: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def fsync_floor(directory: Path, samples: int = 200) -> float:
    """Median seconds for a new 4 KiB file + fsync + fsync of its directory: one durable write."""
    payload = os.urandom(4096)
    timings = []
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for i in range(samples):
            path = directory / f"probe.{i}"
            started = time.perf_counter()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, payload)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.fsync(dir_fd)
            timings.append(time.perf_counter() - started)
            path.unlink()
    finally:
        os.close(dir_fd)
    return statistics.median(timings)


def make_message(number: int, size: int, run_id: str) -> bytes:
    """A message of about `size` bytes with a unique Message-ID (Cyrus suppresses duplicates)."""
    head = (
        f"From: Bench <bench@client.test.example>\r\n"
        f"To: undisclosed-recipients:;\r\n"
        f"Subject: bench message {number}\r\n"
        f"Message-ID: <{run_id}.{number}@client.test.example>\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
    ).encode()
    line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq.\r\n"
    body_lines = max(1, (size - len(head)) // len(line))
    return head + line * body_lines


def deliver_all(
    server: str,
    address: str,
    messages: Sequence[bytes],
    recipients: Sequence[str],
    sessions: int,
) -> RunResult:
    """Deliver `messages` over `sessions` concurrent LMTP sessions; time the whole run."""
    result = RunResult(server, len(messages), len(recipients), 0.0)
    next_index = itertools.count()
    lock = threading.Lock()
    clients = [LmtpClient(address) for _ in range(sessions)]  # connected before the clock starts
    start = threading.Barrier(sessions + 1)

    def session(client: LmtpClient) -> None:
        latencies: list[float] = []
        failures: list[str] = []
        start.wait()
        try:
            while (i := next(next_index)) < len(messages):
                outcome = client.deliver("bench@client.test.example", recipients, messages[i])
                bad = [
                    f"{r}: {reply.code} {reply.text}"
                    for r, reply in outcome.data
                    if not reply.positive
                ]
                refused = [
                    f"{r}: {reply.code} {reply.text}"
                    for r, reply in outcome.rcpt
                    if not reply.positive
                ]
                if bad or refused or len(outcome.data) != len(recipients):
                    failures.append(f"message {i}: {refused + bad}")
                latencies.append(outcome.end_of_data_seconds)
        except Exception as exc:  # a dead session must show in the report, not hang the run
            failures.append(f"session error: {exc!r}")
        finally:
            client.quit()
            with lock:
                result.latencies.extend(latencies)
                result.failures.extend(failures)

    threads = [threading.Thread(target=session, args=(c,)) for c in clients]
    for thread in threads:
        thread.start()
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    result.seconds = time.perf_counter() - began
    return result


def warm_up(address: str, recipients: Sequence[str], sessions: int, size: int) -> None:
    """One delivery per session, untimed: first-use costs (index files, caches) stay out."""
    messages = [make_message(i, size, f"warmup{time.time_ns()}") for i in range(sessions)]
    result = deliver_all("warm-up", address, messages, recipients, sessions)
    if result.failures:
        raise SystemExit(f"warm-up failed on {address}: {result.failures[:3]}")


def run_server(
    server: str,
    tmp: Path,
    messages: Sequence[bytes],
    users: Sequence[str],
    sessions: int,
    size: int,
) -> RunResult:
    instance: SealmailInstance | CyrusInstance | DovecotInstance
    if server == "sealmail":
        instance = SealmailInstance(tmp / "sealmail", users)
    elif server == "cyrus":
        instance = CyrusInstance(tmp, users, prefork=sessions)
    else:
        instance = DovecotInstance(tmp, users)
    with instance:
        address = instance.socket_path
        warm_up(address, users, sessions, size)
        count: Callable[[str], int] = instance.message_count
        before = {u: count(u) for u in users}
        result = deliver_all(server, address, messages, users, sessions)
        result.stored = sum(count(u) - before[u] for u in users)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, metavar="MESSAGES", help="default 500")
    parser.add_argument("-s", type=int, default=4, metavar="SESSIONS", help="default 4")
    parser.add_argument("-r", type=int, default=1, metavar="RECIPIENTS", help="default 1")
    parser.add_argument("-z", type=int, default=4096, metavar="SIZE", help="bytes, default 4096")
    parser.add_argument(
        "--only", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS)
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SERVERS)
    if unknown or not chosen:
        parser.error(f"--only takes {', '.join(SERVERS)}; got {args.only!r}")
    if min(args.n, args.s, args.r, args.z) < 1:
        parser.error("-n, -s, -r and -z must be positive")

    users = [f"user{i}" for i in range(1, args.r + 1)]
    run_id = f"{os.getpid()}.{time.time_ns()}"
    messages = [make_message(i, args.z, run_id) for i in range(args.n)]
    print(
        f"LMTP throughput: {args.n} messages of {len(messages[0])} bytes, {args.r} recipient(s) "
        f"each, {args.s} concurrent session(s) on the UNIX socket; {os.cpu_count()} CPUs"
    )
    with tempfile.TemporaryDirectory(dir="/tmp") as probe_dir:
        floor = fsync_floor(Path(probe_dir))
    print(
        f"fsync floor (4 KiB new file + fsync + directory fsync, median): {floor * 1000:.2f} ms"
        f" = {1 / floor:,.0f} serial durable writes/s\n"
    )

    results: dict[str, RunResult] = {}
    for server in chosen:
        with traversable_tmpdir(f"smbench-{server}-") as tmp:
            try:
                results[server] = run_server(server, tmp, messages, users, args.s, args.z)
            except PeerUnavailable as exc:
                print(f"{server}: skipped ({exc})")

    header = f"{'server':<10}{'msg/s':>10}{'rcpt/s':>10}{'p50 ms':>10}{'p99 ms':>10}  stored"
    print(header)
    print("-" * len(header))
    ok = True
    for server, r in results.items():
        expected = args.n * args.r
        verdict = "ok" if r.stored == expected and not r.failures else "WRONG"
        ok &= verdict == "ok"
        print(
            f"{server:<10}{r.messages_per_second:>10.1f}{r.deliveries_per_second:>10.1f}"
            f"{r.percentile(0.5) * 1000:>10.2f}{r.percentile(0.99) * 1000:>10.2f}"
            f"  {r.stored}/{expected} {verdict}"
        )
        for failure in r.failures[:5]:
            print(f"    {failure}")
    if "sealmail" in results:
        mine = results["sealmail"]
        for peer in ("cyrus", "dovecot"):
            if peer in results:
                other = results[peer]
                print(
                    f"sealmail/{peer}: {mine.messages_per_second / other.messages_per_second:.2f}x"
                    f" msg/s, p50 latency {mine.percentile(0.5) / other.percentile(0.5):.2f}x"
                )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
