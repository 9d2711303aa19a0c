"""LMTP delivery throughput: sealmail's lmtpd side by side with Cyrus lmtpd and Dovecot LMTP.

Starts a private instance of each server in one run, delivers the same N messages over S
concurrent sessions (threads, each a real-socket LMTP client on the server's UNIX socket), each
message to R recipients, and prints per server: messages/s, recipient-deliveries/s and the p50 /
p99 end-of-data latency (from sending the final "." to the last recipient's reply, RFC 2033 4.2),
then the ratios of sealmail's better shape to the faster peer. It measures this machine's
durable-write floor first (4 KiB new file + fsync + directory fsync, median), and checks
afterwards that every server really stored N*R messages.

The servers: `sealmail` (a standalone `sealmail lmtpd`), `sealmail-master` (lmtpd preforked on
every core under `sealmail master`, the deployed shape), `cyrus` (Debian's Cyrus 3.6 with its
INBOXes created over IMAP by an admin, as a Cyrus operator does; not lmtpd's autocreate, which
gives every user a quota root and halves Cyrus's rate) and `dovecot` (Debian's 2.3).

    python bench/lmtp_throughput.py [-n MESSAGES] [-s SESSIONS] [-r RECIPIENTS] [-z SIZE]
                                    [--only sealmail,sealmail-master,cyrus,dovecot]
    python bench/lmtp_throughput.py --matrix [-n MESSAGES]    # 1/10/50 rcpt x 4/100 KiB x 1/4/16
    python bench/lmtp_throughput.py --huge 10000              # one transaction, N recipients
    python bench/lmtp_throughput.py --client smtp-source ...  # Postfix's load tool, not ours

The load client is Python threads by default, which give per-message latencies; `--client
smtp-source` runs Postfix's `smtp-source -L` instead (C, no latencies, no Python on the client
side), to show the Python client is not what limits the faster servers.

Every server's files stay on disk until the bench ends (`kept_tmpdir`): on an ext4 without a
journal, as this machine's root is, creating a file skips every inode freed in the last seconds
to minutes in its directory's block group (`recently_deleted` in the kernel's inode allocator),
so a server run right after another's files were removed spent half its CPU in that scan
(docs/benchmarks.md, issue 18). Run as root (the peers drop to their own users). See
bench/README.md.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import itertools
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
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

SERVERS = ("sealmail", "sealmail-master", "cyrus", "dovecot")
CLIENTS = ("python", "smtp-source")
PEERS = ("cyrus", "dovecot")


@dataclass
class RunResult:
    server: str
    messages: int
    recipients: int
    seconds: float
    latencies: list[float] = field(default_factory=list)  # end-of-data, seconds, per message
    failures: list[str] = field(default_factory=list)
    stored: int = 0  # new messages found in the store afterwards
    cpu_seconds: float = math.nan  # the server's processes over the timed run (sealmail only)
    user_seconds: float = math.nan  # the user-space part of it

    @property
    def messages_per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def deliveries_per_second(self) -> float:
        return self.messages * self.recipients / self.seconds

    @property
    def cpu_ms_per_message(self) -> float:
        return self.cpu_seconds * 1000 / self.messages

    @property
    def user_ms_per_message(self) -> float:
        return self.user_seconds * 1000 / self.messages

    def percentile(self, fraction: float) -> float:
        """NaN when the client measured no latencies (smtp-source)."""
        ordered = sorted(self.latencies)
        if not ordered:
            return math.nan
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
            timings.append(time.perf_counter() - started)  # kept: see kept_tmpdir
    finally:
        os.close(dir_fd)
    return statistics.median(timings)


def process_tree_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds (utime + stime, and utime) of `pid` and its live children (master's
    lmtpds): the measure a shared machine's noise hurts least (wall time is everyone's). User
    time alone leaves out the kernel's, which moves with other work on the machine (file
    removals nearby make every file creation scan more inodes: the module docstring)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = user = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # gone meanwhile
        if int(entry) == pid or int(fields[1]) == pid:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick
            user += int(fields[11]) / tick
    return total, user


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


RECENTLY_DELETED_SECONDS = 6.0  # ext4's RECENTCY_MIN (5 s), and a second's rounding
_LEFT: list[Path] = []  # every server's directory, removed when the bench exits


@contextlib.contextmanager
def kept_tmpdir(prefix: str) -> Iterator[Path]:
    """A mode 0755 directory under $TMPDIR (/tmp unless set), removed at exit, not after its
    server: files freed between two servers' runs would slow the next one's file creations (the
    module docstring). `TMPDIR=/dev/shm` takes the disk out: what is left is CPU, the measure a
    shared machine's noise hurts least when comparing two trees (docs/benchmarks.md, issue 18)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if not _LEFT:
        atexit.register(_remove_left)
    _LEFT.append(path)
    yield path


def settle() -> None:
    """Let inodes freed before the bench (an earlier run's files) age out of ext4's recently-
    deleted window: 5 s once their inode table blocks are written (300 s while dirty)."""
    os.sync()
    time.sleep(RECENTLY_DELETED_SECONDS)


def _remove_left() -> None:
    for path in _LEFT:
        shutil.rmtree(path, ignore_errors=True)


def recipient_names(count: int) -> list[str]:
    """What smtp-source -r COUNT -t bench sends to (2bench, ..., COUNTbench, bench), so both
    load clients deliver to the same mailboxes."""
    return ["bench", *(f"{i}bench" for i in range(2, count + 1))]


def smtp_source(
    server: str, address: str, count: int, recipients: Sequence[str], sessions: int, size: int
) -> RunResult:
    """The same load from Postfix's smtp-source speaking LMTP: messages of about `size` bytes
    (its payload plus ~120 bytes of header), each with its own Message-Id."""
    program = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
    command = [
        program, "-L", "-d", "-s", str(sessions), "-m", str(count),
        "-l", str(max(1, size - 120)), "-r", str(len(recipients)),
        "-f", "bench@client.test.example", "-M", "client.test.example",
        "-t", recipients[0], f"unix:{address}",
    ]
    result = RunResult(server, count, len(recipients), 0.0)
    began = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    result.seconds = time.perf_counter() - began
    if done.returncode != 0:
        result.failures.append(f"smtp-source exit {done.returncode}: {done.stderr.strip()[:300]}")
    return result


def warm_up(address: str, recipients: Sequence[str], sessions: int, size: int) -> None:
    """One delivery per session, untimed: first-use costs (index files, caches) stay out."""
    messages = [make_message(i, size, f"warmup{time.time_ns()}") for i in range(sessions)]
    result = deliver_all("warm-up", address, messages, recipients, sessions)
    if result.failures:
        raise PeerUnavailable(f"warm-up failed on {address}: {result.failures[:3]}")


def run_server(
    server: str,
    tmp: Path,
    messages: Sequence[bytes],
    users: Sequence[str],
    sessions: int,
    size: int,
    client: str = "python",
) -> RunResult:
    instance: SealmailInstance | CyrusInstance | DovecotInstance
    # lmtp_user_concurrency_limit (10 by default) answers 451 4.4.5 past 10 sessions to one
    # user; 16 sessions to one user would measure that limit, which the peers here do not set.
    unlimited = {"lmtp_user_concurrency_limit": "0"}
    if server == "sealmail":
        instance = SealmailInstance(tmp / "sealmail", users, imapd_conf_extra=unlimited)
    elif server == "sealmail-master":
        instance = SealmailInstance(tmp / "sealmail", users, master_prefork=os.cpu_count() or 2,
                                    imapd_conf_extra=unlimited)
    elif server == "cyrus":
        instance = CyrusInstance(tmp, users, prefork=sessions, create_over_imap=True)
    else:
        instance = DovecotInstance(tmp, users)
    with instance:
        address = instance.socket_path
        warm_up(address, users, sessions, size)
        count: Callable[[str], int] = instance.message_count
        before = {u: count(u) for u in users}
        pid = instance.pid if isinstance(instance, SealmailInstance) else None
        cpu_before = process_tree_cpu(pid) if pid is not None else (math.nan, math.nan)
        if client == "smtp-source":
            result = smtp_source(server, address, len(messages), users, sessions, size)
        else:
            result = deliver_all(server, address, messages, users, sessions)
        if pid is not None:
            total, user = process_tree_cpu(pid)
            result.cpu_seconds, result.user_seconds = total - cpu_before[0], user - cpu_before[1]
        result.stored = sum(count(u) - before[u] for u in users)
    return result


def run_row(
    chosen: Sequence[str], messages: Sequence[bytes], users: Sequence[str], sessions: int,
    size: int, client: str = "python",
) -> dict[str, RunResult]:
    results: dict[str, RunResult] = {}
    for server in chosen:
        with kept_tmpdir(f"smbench-{server}-") as tmp:
            try:
                results[server] = run_server(server, tmp, messages, users, sessions, size, client)
            except PeerUnavailable as exc:
                print(f"{server}: skipped ({exc})")
    return results


def best_ratio(results: dict[str, RunResult]) -> str:
    """sealmail's better shape over the faster peer, in recipient-deliveries/s."""
    ours = [r for name, r in results.items() if name.startswith("sealmail")]
    peers = [r for name, r in results.items() if name in PEERS]
    if not ours or not peers:
        return "-"
    mine = max(ours, key=lambda r: r.deliveries_per_second)
    other = max(peers, key=lambda r: r.deliveries_per_second)
    return f"{mine.deliveries_per_second / other.deliveries_per_second:.2f}x {other.server}"


def print_row(results: dict[str, RunResult], expected: int) -> bool:
    header = (f"{'server':<16}{'msg/s':>9}{'rcpt/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
              f"{'CPU ms/msg':>11}{'user':>6}  stored")
    print(header)
    print("-" * len(header))
    ok = True
    for server, r in results.items():
        verdict = "ok" if r.stored == expected and not r.failures else "WRONG"
        ok &= verdict == "ok"
        print(
            f"{server:<16}{r.messages_per_second:>9.1f}{r.deliveries_per_second:>10.1f}"
            f"{r.percentile(0.5) * 1000:>9.2f}{r.percentile(0.99) * 1000:>9.2f}"
            f"{r.cpu_ms_per_message:>11.2f}{r.user_ms_per_message:>6.2f}"
            f"  {r.stored}/{expected} {verdict}"
        )
        for failure in r.failures[:5]:
            print(f"    {failure}")
    print(f"sealmail (better shape) / faster peer: {best_ratio(results)}")
    return ok


def cell(result: RunResult | None) -> str:
    if result is None:
        return f"{'-':>17}"
    return f"{result.deliveries_per_second:>10.0f} p99 {result.percentile(0.99) * 1000:>3.0f}"


def matrix(chosen: Sequence[str], count: int, client: str) -> bool:
    """Every row the delivery issue asks for; one summary table at the end."""
    summary = []
    ok = True
    for recipients in (1, 10, 50):
        for size in (4096, 102400):
            for sessions in (1, 4, 16):
                users = recipient_names(recipients)
                run_id = f"{os.getpid()}.{time.time_ns()}"
                n = max(sessions * 4, count // max(1, recipients // 10 or 1))
                messages = [make_message(i, size, run_id) for i in range(n)]
                print(f"\n== {recipients} rcpt, {size // 1024} KiB, {sessions} session(s), "
                      f"{n} messages")
                results = run_row(chosen, messages, users, sessions, size, client)
                ok &= print_row(results, n * recipients)
                summary.append((recipients, size, sessions, results))
    print("\nrcpt  KiB  sess  " + "".join(f"{s:>17}" for s in chosen) + "  ratio")
    for recipients, size, sessions, results in summary:
        cells = "".join(cell(results.get(s)) for s in chosen)
        print(f"{recipients:>4} {size // 1024:>4} {sessions:>5}  {cells}  {best_ratio(results)}")
    return ok


def huge(count: int, size: int) -> bool:
    """One LMTP transaction to `count` recipients: a reply each, all stored, one file."""
    users = [f"user{i}" for i in range(1, count + 1)]
    message = make_message(0, size, f"huge{time.time_ns()}")
    with traversable_tmpdir("smbench-huge-") as tmp:
        instance = SealmailInstance(
            tmp / "sealmail", users, imapd_conf_extra={"lmtp_max_recipients": str(count)}
        )
        started = time.perf_counter()
        with instance:
            print(f"{count} INBOXes created in {time.perf_counter() - started:.1f}s")
            with LmtpClient(instance.socket_path) as client:
                began = time.perf_counter()
                outcome = client.deliver("bench@client.test.example", users, message)
                seconds = time.perf_counter() - began
            replies = len(outcome.data)
            delivered = sum(1 for _, reply in outcome.data if reply.positive)
            with instance.store() as store:
                inodes = {
                    (store.mailbox_path(f"user.{u}") / f"{store.messages(f'user.{u}')[-1].uid}.")
                    .stat().st_ino
                    for u in users[:: max(1, count // 200)]
                }
    print(f"one transaction, {count} recipients, {len(message)} bytes: {seconds:.2f}s from MAIL "
          f"to the last reply; {replies} replies, {delivered} positive; sampled inodes: "
          f"{len(inodes)} (1 = one stored file)")
    return delivered == count and replies == count and len(inodes) == 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=500, metavar="MESSAGES", help="default 500")
    parser.add_argument("-s", type=int, default=4, metavar="SESSIONS", help="default 4")
    parser.add_argument("-r", type=int, default=1, metavar="RECIPIENTS", help="default 1")
    parser.add_argument("-z", type=int, default=4096, metavar="SIZE", help="bytes, default 4096")
    parser.add_argument(
        "--only", default=",".join(SERVERS), help="comma-separated subset of " + ",".join(SERVERS)
    )
    parser.add_argument("--matrix", action="store_true", help="1/10/50 rcpt x 4/100 KiB x 1/4/16")
    parser.add_argument("--huge", type=int, metavar="N", help="one transaction to N recipients")
    parser.add_argument("--client", choices=CLIENTS, default="python",
                        help="the load client: Python threads (default) or Postfix's smtp-source")
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(chosen) - set(SERVERS)
    if unknown or not chosen:
        parser.error(f"--only takes {', '.join(SERVERS)}; got {args.only!r}")
    if min(args.n, args.s, args.r, args.z) < 1:
        parser.error("-n, -s, -r and -z must be positive")
    if args.huge:
        settle()
        return 0 if huge(args.huge, args.z) else 1

    settle()
    with kept_tmpdir("smbench-floor-") as probe_dir:
        floor = fsync_floor(probe_dir)
    print(
        f"fsync floor (4 KiB new file + fsync + directory fsync, median): {floor * 1000:.2f} ms"
        f" = {1 / floor:,.0f} serial durable writes/s; {os.cpu_count()} CPUs"
    )
    if args.matrix:
        return 0 if matrix(chosen, args.n, args.client) else 1

    users = recipient_names(args.r)
    run_id = f"{os.getpid()}.{time.time_ns()}"
    messages = [make_message(i, args.z, run_id) for i in range(args.n)]
    print(
        f"LMTP throughput: {args.n} messages of {len(messages[0])} bytes, {args.r} recipient(s) "
        f"each, {args.s} concurrent session(s) on the UNIX socket, load client {args.client}\n"
    )
    results = run_row(chosen, messages, users, args.s, args.z, args.client)
    return 0 if print_row(results, args.n * args.r) else 1


if __name__ == "__main__":
    sys.exit(main())
