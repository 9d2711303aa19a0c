"""Failed-login cost: sealmail's imapd beside a private Dovecot, both with memory-hard hashes.

A brute-force client opens many connections at once and sends wrong passwords. What each server
pays for that is the issue: sealmail's sasldb checks scrypt (N=2**15, r=8: 32 MiB a check),
Dovecot's passwd-file here holds ARGON2ID (libsodium, m=64 MiB, t=3). In one run, per server:
C clients log in at once with a wrong password for a known user, then with an unknown user, R
rounds each; printed are failed logins/s and the growth of the serving processes' memory (the
sum of VmHWM, the peak resident size, over sealmail's imapd or Dovecot's processes, minus their
resident size before). Both servers run with auth_failure_delay 0, so the hashing is measured,
not the delay.

    python bench/login_cost.py [-c CLIENTS] [-r ROUNDS]

Run as root from the checkout (Dovecot drops to its own users). See bench/README.md.
"""

from __future__ import annotations

import argparse
import imaplib
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import (
    DovecotInstance,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

USER, PASSWORD = "bench", "secret"


@contextmanager
def sealmail_server(root: Path) -> Iterator[tuple[int, list[int]]]:
    with SealmailInstance(
        root / "sealmail",
        [USER],
        imapd_conf_extra={"allowplaintext": "yes", "auth_failure_delay": "0",
                          "auth_max_failures": "1000"},
    ) as instance:
        subprocess.run(
            [*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c", USER],
            input=PASSWORD + "\n", text=True, check=True,
        )
        port = free_tcp_port()
        process = subprocess.Popen(
            [*SEALMAIL, "imapd", "-C", str(instance.conf_path), "--listen", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, process)
            yield port, [process.pid]
        finally:
            process.terminate()
            process.wait(30)


class HashedDovecot(DovecotInstance):
    """The test peer, with its passwd-file holding ARGON2ID hashes instead of {PLAIN}."""

    def start(self) -> None:
        super().start()
        hashed = subprocess.run(
            ["doveadm", "pw", "-s", "ARGON2ID", "-p", PASSWORD],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        (self.root / "users").write_text(f"{USER}:{hashed}::::\n")


@contextmanager
def dovecot_server(root: Path) -> Iterator[tuple[int, list[int]]]:
    port = free_tcp_port()
    extra = (
        "protocols = lmtp imap\ndisable_plaintext_auth = no\nauth_failure_delay = 0\n"
        "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
        f"    port = {port}\n  }}\n}}\n"
    )
    with HashedDovecot(root, (USER,), conf_extra=extra) as dovecot:
        wait_until_accepting(("127.0.0.1", port), 30.0)
        master = dovecot._process
        assert master is not None
        yield port, [master.pid]


def tree(pids: Sequence[int]) -> list[int]:
    """The processes and all their descendants."""
    found, todo = [], list(pids)
    while todo:
        pid = todo.pop()
        found.append(pid)
        children = Path(f"/proc/{pid}/task/{pid}/children")
        if children.exists():
            todo.extend(int(c) for c in children.read_text().split())
    return found


def memory_kib(pids: Sequence[int], field: str) -> int:
    total = 0
    for pid in tree(pids):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except FileNotFoundError:
            continue
        for line in status.splitlines():
            if line.startswith(field + ":"):
                total += int(line.split()[1])
    return total


def failed_login(port: int, user: str) -> None:
    client = imaplib.IMAP4("127.0.0.1", port, timeout=120)
    try:
        client.login(user, "wrong-password")
    except imaplib.IMAP4.error:
        pass
    else:
        raise SystemExit(f"WRONG: {user} logged in with a wrong password")
    client.logout()


def measure(port: int, pids: list[int], clients: int, rounds: int) -> tuple[float, float, int]:
    before = memory_kib(pids, "VmRSS")
    rates = []
    for user in (USER, "nobody-here"):
        start = time.monotonic()
        with ThreadPoolExecutor(clients) as pool:
            for _ in range(rounds):
                list(pool.map(failed_login, [port] * clients, [user] * clients))
        rates.append(clients * rounds / (time.monotonic() - start))
    return rates[0], rates[1], memory_kib(pids, "VmHWM") - before


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-c", "--clients", type=int, default=32)
    parser.add_argument("-r", "--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    results = {}
    with traversable_tmpdir("smbench-") as root:
        for name, server in (("sealmail", sealmail_server), ("dovecot", dovecot_server)):
            with server(root) as (port, pids):
                failed_login(port, USER)  # warm-up: the auth process, the first hash
                results[name] = measure(port, pids, args.clients, args.rounds)
    print(f"{args.clients} clients at once, {args.rounds} rounds, wrong passwords")
    print(f"{'server':10} {'known user/s':>13} {'unknown/s':>10} {'peak growth MiB':>16}")
    for name, (known, unknown, growth) in results.items():
        print(f"{name:10} {known:13.1f} {unknown:10.1f} {growth / 1024:16.1f}")
    sm, dc = results["sealmail"], results["dovecot"]
    print(f"ratio sealmail/dovecot: known {sm[0] / dc[0]:.2f}x, unknown {sm[1] / dc[1]:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
