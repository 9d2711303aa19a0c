"""MTA throughput: sealmail's MTA beside a private Debian Postfix, both relaying over LMTP to the
same sink.

In one run, both MTAs up, in alternating rounds: Postfix's own load generator `smtp-source`
submits N messages over S
concurrent SMTP sessions; the MTA queues them durably and its LMTP client hands them to
Postfix's `smtp-sink -L` (a fast LMTP server that writes each message to a file). The clock runs
from the first connection until the sink holds all N messages, so queueing, the queue manager and
the LMTP client are all measured. Prints messages/s for each, the machine's busy CPU time per
message (both MTAs, the load generator and the sink) and the ratio sealmail/Postfix.

    python bench/mta_throughput.py [-n MESSAGES] [-s SESSIONS] [-z SIZE] [-r ROUNDS]
                                   [--only sealmail,postfix]

Run as root (Postfix and smtp-sink drop privileges). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.peers import (
    PeerUnavailable,
    PostfixInstance,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
DOMAIN = "bench.example"
MTAS = ("sealmail", "postfix")


class Sink:
    """smtp-sink speaking LMTP, one file per message it accepted."""

    def __init__(self, root: Path) -> None:
        self.directory = root / "sink"
        self.directory.mkdir()
        shutil.chown(self.directory, "postfix")
        self.port = free_tcp_port()
        self.process = subprocess.Popen(
            [
                SMTP_SINK,
                "-L",
                "-u",
                "postfix",
                "-d",
                f"{self.directory}/%M.",
                f"127.0.0.1:{self.port}",
                "256",
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_until_accepting(("127.0.0.1", self.port), 20.0, self.process)

    def count(self) -> int:
        return sum(1 for _ in os.scandir(self.directory))

    def clear(self) -> None:
        for entry in os.scandir(self.directory):
            os.unlink(entry.path)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start_sealmail(root: Path, sink_port: int) -> tuple[subprocess.Popen[bytes], int]:
    config = root / "sealmail-mta"
    config.mkdir()
    port = free_tcp_port()
    (config / "main.cf").write_text(
        f"queue_directory = {root}/sealmail-spool\n"
        f"data_directory = {root}/sealmail-data\n"
        "myhostname = mx.bench.example\n"
        f"mydestination = {DOMAIN}\n"
        "inet_interfaces = loopback-only\n"
        "mynetworks = 127.0.0.0/8\n"
        f"local_transport = lmtp:inet:127.0.0.1:{sink_port}\n"
    )
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "lmtp unix - - n - - lmtp\n"
        "error unix - - n - - error\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sealmail", "postfix", "-c", str(config), "start-fg"],
        stdout=subprocess.DEVNULL,
        stderr=(root / "sealmail-mta.log").open("wb"),
    )
    wait_until_accepting(("127.0.0.1", port), 30.0, process)
    return process, port


def busy_seconds() -> float:
    """CPU seconds the whole machine spent busy (all CPUs; not idle, not waiting for the disk):
    the MTA, smtp-source and the sink alike, so short-lived Postfix processes count too."""
    with open("/proc/stat") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Run:
    seconds: float  # from the first submission until the sink holds every message
    busy: float  # CPU seconds the machine was busy meanwhile


def run_load(port: int, messages: int, sessions: int, size: int, sink: Sink) -> Run:
    began, busy = time.perf_counter(), busy_seconds()
    subprocess.run(
        [
            SMTP_SOURCE,
            "-s",
            str(sessions),
            "-m",
            str(messages),
            "-l",
            str(size),
            "-f",
            f"sender@{DOMAIN}",
            "-t",
            f"user@{DOMAIN}",
            f"127.0.0.1:{port}",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while sink.count() < messages:
        if time.monotonic() > deadline:
            raise SystemExit(f"only {sink.count()} of {messages} messages reached the sink")
        time.sleep(0.02)
    return Run(time.perf_counter() - began, busy_seconds() - busy)


@contextlib.contextmanager
def running(mta: str, root: Path, sink: Sink) -> Iterator[int]:
    """The MTA up, relaying to the sink; yields its SMTP port."""
    if mta == "sealmail":
        process, port = start_sealmail(root, sink.port)
        try:
            yield port
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
        return
    postfix = PostfixInstance(
        root / "postfix-peer",
        {
            "local_transport": f"lmtp:inet:127.0.0.1:{sink.port}",
            "mydestination": DOMAIN,
            "mydomain": DOMAIN,
        },
        domain=DOMAIN,
    )
    with postfix:
        yield postfix.smtp_port


def measure(ports: dict[str, int], sink: Sink, args: argparse.Namespace) -> dict[str, list[Run]]:
    """Both MTAs stay up; the rounds alternate which goes first, so a slow moment of the
    machine (its disk's fsyncs vary by a factor of two here) does not land on one of them."""
    runs: dict[str, list[Run]] = {mta: [] for mta in ports}
    for port in ports.values():  # warm-up: processes started, caches filled
        sink.clear()
        run_load(port, max(10, args.s), args.s, args.z, sink)
    order = list(ports)
    for number in range(args.rounds):
        for mta in order if number % 2 == 0 else reversed(order):
            sink.clear()
            runs[mta].append(run_load(ports[mta], args.n, args.s, args.z, sink))
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, metavar="MESSAGES", help="default 1000")
    parser.add_argument("-s", type=int, default=10, metavar="SESSIONS", help="default 10")
    parser.add_argument("-z", type=int, default=4096, metavar="SIZE", help="bytes, default 4096")
    parser.add_argument("-r", "--rounds", type=int, default=3, help="default 3")
    parser.add_argument("--only", default=",".join(MTAS))
    args = parser.parse_args(argv)
    chosen = [m for m in args.only.split(",") if m]
    if set(chosen) - set(MTAS) or not chosen or args.rounds < 1:
        parser.error(f"--only takes {', '.join(MTAS)}; --rounds at least 1")
    print(
        f"MTA throughput: {args.n} messages of {args.z} bytes over {args.s} SMTP sessions "
        f"(smtp-source), relayed over LMTP to smtp-sink -L; {args.rounds} alternating rounds; "
        f"{os.cpu_count()} CPUs\n"
    )
    with traversable_tmpdir("smbench-mta-") as root:
        shutil.chown(root, "postfix")
        sink = Sink(root)
        try:
            with contextlib.ExitStack() as stack:
                ports = {}
                for mta in chosen:
                    try:
                        ports[mta] = stack.enter_context(running(mta, root, sink))
                    except PeerUnavailable as exc:
                        print(f"{mta}: skipped ({exc})")
                runs = measure(ports, sink, args)
        finally:
            sink.stop()
    print(f"{'MTA':10} {'round':>5} {'seconds':>9} {'msg/s':>9} {'CPU ms/msg':>11}")
    for mta, mta_runs in runs.items():
        for number, run in enumerate(mta_runs, 1):
            cpu = 1000 * run.busy / args.n
            rate = args.n / run.seconds
            print(f"{mta:10} {number:5} {run.seconds:9.2f} {rate:9.1f} {cpu:11.2f}")
    if "sealmail" in runs and "postfix" in runs:
        pairs = zip(runs["sealmail"], runs["postfix"], strict=True)
        ratios = [postfix.seconds / sealmail.seconds for sealmail, postfix in pairs]
        shown = " ".join(f"{r:.2f}" for r in ratios)
        print(f"sealmail/postfix msg/s by round: {shown}; median {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
