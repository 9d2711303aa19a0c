"""MTA throughput: sealmail's MTA beside a private Debian Postfix, both relaying over LMTP to the
same sink.

In one run, for each MTA: Postfix's own load generator `smtp-source` submits N messages over S
concurrent SMTP sessions; the MTA queues them durably and its LMTP client hands them to
Postfix's `smtp-sink -L` (a fast LMTP server that writes each message to a file). The clock runs
from the first connection until the sink holds all N messages, so queueing, the queue manager and
the LMTP client are all measured. Prints messages/s for each, the machine's busy CPU time per
message (both MTAs, the load generator and the sink) and the ratio sealmail/Postfix.

    python bench/mta_throughput.py [-n MESSAGES] [-s SESSIONS] [-z SIZE] [--only sealmail,postfix]

Run as root (Postfix and smtp-sink drop privileges). See bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
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


def bench(mta: str, root: Path, sink: Sink, messages: int, sessions: int, size: int) -> Run:
    sink.clear()
    warmup = max(10, sessions)
    if mta == "sealmail":
        process, port = start_sealmail(root, sink.port)
        try:
            run_load(port, warmup, sessions, size, sink)
            sink.clear()
            return run_load(port, messages, sessions, size, sink)
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(60)
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
        run_load(postfix.smtp_port, warmup, sessions, size, sink)
        sink.clear()
        return run_load(postfix.smtp_port, messages, sessions, size, sink)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, metavar="MESSAGES", help="default 1000")
    parser.add_argument("-s", type=int, default=10, metavar="SESSIONS", help="default 10")
    parser.add_argument("-z", type=int, default=4096, metavar="SIZE", help="bytes, default 4096")
    parser.add_argument("--only", default=",".join(MTAS))
    args = parser.parse_args(argv)
    chosen = [m for m in args.only.split(",") if m]
    if set(chosen) - set(MTAS) or not chosen:
        parser.error(f"--only takes {', '.join(MTAS)}")
    print(
        f"MTA throughput: {args.n} messages of {args.z} bytes over {args.s} SMTP sessions "
        f"(smtp-source), relayed over LMTP to smtp-sink -L; {os.cpu_count()} CPUs\n"
    )
    results: dict[str, Run] = {}
    with traversable_tmpdir("smbench-mta-") as root:
        shutil.chown(root, "postfix")
        sink = Sink(root)
        try:
            for mta in chosen:
                try:
                    results[mta] = bench(mta, root, sink, args.n, args.s, args.z)
                except PeerUnavailable as exc:
                    print(f"{mta}: skipped ({exc})")
        finally:
            sink.stop()
    print(f"{'MTA':10} {'seconds':>9} {'msg/s':>9} {'CPU ms/msg':>11}")
    for mta, run in results.items():
        cpu = 1000 * run.busy / args.n
        print(f"{mta:10} {run.seconds:9.2f} {args.n / run.seconds:9.1f} {cpu:11.2f}")
    if "sealmail" in results and "postfix" in results:
        ratio = results["postfix"].seconds / results["sealmail"].seconds
        print(f"sealmail/postfix: {ratio:.2f}x msg/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
