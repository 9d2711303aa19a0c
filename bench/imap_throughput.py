"""IMAP throughput: sealmail's imapd beside a private Dovecot imapd, on the same mailbox contents.

In one run: N messages are delivered over LMTP into one user's INBOX on each server, both
servers stay up, and Python's imaplib times, on one connection per server, each operation:
SELECT, FETCH 1:* (FLAGS UID), UID FETCH of full bodies, SEARCH on a header, and STORE of a flag
on every message. The timed calls alternate between the two servers (sealmail first in one
round, Dovecot first in the next), so whatever else the machine does slows both alike. Prints
operations/s per server (repeats / time spent in them), the ratios sealmail/Dovecot, and the CPU
time the serving process spent per operation (from /proc; the connection's process found with
`ss`): where the client's own parsing bounds a row, that is where the servers differ.

    python bench/imap_throughput.py [-n MESSAGES] [-r REPEATS] [--more [--new-mail]]

Run as root (Dovecot drops to its own users). See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import imaplib
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import (
    DovecotInstance,
    LmtpClient,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

USER, PASSWORD = "bench", "secret"


def message(n: int) -> bytes:
    body = b"".join(
        b"line %d of message %d, some text to make it longer\r\n" % (i, n) for i in range(60)
    )
    return (
        f"From: sender{n % 50}@example.org\r\nTo: {USER}@example.com\r\n"
        f"Subject: message {n} topic{n % 10}\r\nMessage-ID: <b{n}@example.org>\r\n"
        "Date: Wed, 25 Nov 2026 10:00:00 +0000\r\n\r\n"
    ).encode() + body


def fill(lmtp_address: str, messages: int) -> None:
    with LmtpClient(lmtp_address) as client:
        for n in range(messages):
            client.deliver("sender@example.org", [f"{USER}@example.com"], message(n))


@contextmanager
def sealmail_server(root: Path, messages: int) -> Iterator[tuple[int, str]]:
    with SealmailInstance(
        root / "sealmail",
        [USER],
        imapd_conf_extra={"allowplaintext": "yes", "servername": "bench.example"},
    ) as instance:
        subprocess.run(
            [*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c", USER],
            input=PASSWORD + "\n",
            text=True,
            check=True,
        )
        fill(instance.socket_path, messages)
        port = free_tcp_port()
        process = subprocess.Popen(
            [*SEALMAIL, "imapd", "-C", str(instance.conf_path), "--listen", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, process)
            yield port, instance.socket_path
        finally:
            process.terminate()
            process.wait(30)


@contextmanager
def dovecot_server(root: Path, messages: int) -> Iterator[tuple[int, str]]:
    port = free_tcp_port()
    extra = (
        "protocols = lmtp imap\ndisable_plaintext_auth = no\n"
        "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
        f"    port = {port}\n  }}\n}}\n"
    )
    with DovecotInstance(root, (USER,), conf_extra=extra) as dovecot:
        fill(dovecot.socket_path, messages)
        yield port, dovecot.socket_path


OPERATIONS: dict[str, Callable[[imaplib.IMAP4], object]] = {
    "SELECT": lambda c: c.select("INBOX"),
    "FETCH 1:* (FLAGS UID)": lambda c: c.fetch("1:*", "(FLAGS UID)"),
    "UID FETCH 100 bodies": lambda c: c.uid("FETCH", "1:100", "(BODY.PEEK[])"),
    "SEARCH HEADER Subject": lambda c: c.search(None, "HEADER", "Subject", "topic3"),
    "STORE +FLAGS 1:*": lambda c: c.store("1:*", "+FLAGS.SILENT", "(\\Flagged)"),
}
# Beyond the five (`--more`): what webmail and desktop clients also send on a listing.
MORE_OPERATIONS: dict[str, Callable[[imaplib.IMAP4], object]] = {
    "UID SORT (DATE)": lambda c: c.uid("SORT", "(DATE)", "UTF-8", "ALL"),
    "SORT (REVERSE ARRIVAL)": lambda c: c.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL"),
    "SORT (SUBJECT)": lambda c: c.sort("(SUBJECT)", "UTF-8", "ALL"),
    "THREAD REFERENCES": lambda c: c.thread("REFERENCES", "UTF-8", "ALL"),
    "FETCH 1:* ENVELOPE": lambda c: c.fetch("1:*", "(UID ENVELOPE)"),
    "FETCH 1:* HEADER.FIELDS": lambda c: c.fetch(
        "1:*", "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (FROM TO SUBJECT DATE)])"),
}


def connect(port: int) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", port)
    client.login(USER, PASSWORD)
    client.select("INBOX")
    for operation in OPERATIONS.values():
        operation(client)  # warm-up: caches, parsed structures
    return client


def serving_processes(client: imaplib.IMAP4) -> list[int]:
    """The processes holding the server's end of this client's connection (Dovecot: the imap
    process its login process handed the connection to)."""
    port = client.sock.getsockname()[1]
    listing = subprocess.run(
        ["ss", "-Htnp", "state", "established", f"( dport = :{port} )"],
        capture_output=True, text=True, check=True,
    ).stdout
    return sorted({int(pid) for pid in re.findall(r"pid=(\d+)", listing)})


def cpu_seconds(pids: Sequence[int]) -> float:
    """Time these processes (all their threads) have run on a CPU so far: the scheduler's
    nanosecond count, since one call can take less than a clock tick of /proc/PID/stat."""
    nanoseconds = 0
    for pid in pids:
        for thread in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(FileNotFoundError), open(
                f"/proc/{pid}/task/{thread}/schedstat"
            ) as schedstat:
                nanoseconds += int(schedstat.read().split()[0])
    return nanoseconds / 1e9


class NewMail:
    """`--new-mail`: one more message delivered over LMTP (and seen by the session with a NOOP,
    untimed) before each timed SORT or THREAD, so that each is the first after new mail."""

    def __init__(self, lmtp_addresses: dict[str, str], first: int) -> None:
        self._addresses = lmtp_addresses
        self._next = dict.fromkeys(lmtp_addresses, first)

    def before(self, server: str, client: imaplib.IMAP4, name: str) -> None:
        if "SORT" not in name and "THREAD" not in name:
            return
        with LmtpClient(self._addresses[server]) as lmtp:
            lmtp.deliver("sender@example.org", [f"{USER}@example.com"],
                         message(self._next[server]))
        self._next[server] += 1
        client.noop()


def timed(client: imaplib.IMAP4, name: str) -> float:
    began = time.perf_counter()
    typ, _ = cast(tuple[str, object], OPERATIONS[name](client))
    spent = time.perf_counter() - began
    assert typ == "OK", (name, typ)
    return spent


def measure(
    ports: dict[str, int], repeats: int, new_mail: NewMail | None = None
) -> dict[str, dict[str, tuple[float, float]]]:
    """(ops/s, server CPU ms per operation) per server and operation; the servers take turns
    call by call."""
    clients = {server: connect(port) for server, port in ports.items()}
    serving = {server: serving_processes(client) for server, client in clients.items()}
    order = list(clients)
    results: dict[str, dict[str, tuple[float, float]]] = {server: {} for server in clients}
    for name in OPERATIONS:
        spent = dict.fromkeys(clients, 0.0)
        cpu = dict.fromkeys(clients, 0.0)
        for round_number in range(repeats):
            for server in order if round_number % 2 == 0 else reversed(order):
                if new_mail is not None:
                    new_mail.before(server, clients[server], name)
                before = cpu_seconds(serving[server])
                spent[server] += timed(clients[server], name)
                cpu[server] += cpu_seconds(serving[server]) - before
        for server in clients:
            results[server][name] = (repeats / spent[server], 1000 * cpu[server] / repeats)
    for client in clients.values():
        client.logout()
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, metavar="MESSAGES", help="default 10000")
    parser.add_argument("-r", type=int, default=10, metavar="REPEATS", help="default 10")
    parser.add_argument("--more", action="store_true",
                        help="also SORT, THREAD, FETCH ENVELOPE and HEADER.FIELDS of every message")
    parser.add_argument("--new-mail", action="store_true",
                        help="with --more: deliver a message before each SORT and THREAD")
    args = parser.parse_args(argv)
    print(
        f"IMAP throughput: {args.n} messages in one INBOX, {args.r} repeats of each "
        f"operation on one connection; {os.cpu_count()} CPUs\n"
    )
    with (
        traversable_tmpdir("smbench-imap-") as root,
        sealmail_server(root, args.n) as ours,
        dovecot_server(root, args.n) as theirs,
    ):
        if args.more:
            OPERATIONS.update(MORE_OPERATIONS)
        new_mail = (NewMail({"sealmail": ours[1], "dovecot": theirs[1]}, args.n)
                    if args.new_mail else None)
        results = measure({"sealmail": ours[0], "dovecot": theirs[0]}, args.r, new_mail)
    print(f"{'operation':24} {'sealmail/s':>11} {'dovecot/s':>11} {'ratio':>7}"
          f"   server CPU ms/op: {'sealmail':>8} {'dovecot':>8}")
    for name in OPERATIONS:
        (our_rate, our_cpu), (their_rate, their_cpu) = (results["sealmail"][name],
                                                        results["dovecot"][name])
        print(f"{name:24} {our_rate:11.1f} {their_rate:11.1f} {our_rate / their_rate:6.2f}x"
              f"   {'':17}{our_cpu:8.2f} {their_cpu:8.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
