"""imaptest's scripted groups (its tests/ directory) against sealmail's imapd and Dovecot.

Compliance, not speed: each server gets a fresh user (and a second one for `urlauth2`), imaptest
runs every group of `<imaptest>/tests`, and its summary is printed per server: groups run,
groups failed, and the individual commands failed (base protocol, extensions), with the name of
every failing group. docs/benchmarks.md ("imaptest") has the figures and what a failure of
`urlauth2` means (that group declares no messages, so its first FETCH meets an empty mailbox).

    python bench/imaptest_scripted.py --imaptest /work/imaptest-build/src/imaptest [--no-dovecot]

Run as root from the checkout (it imports tests.support; Dovecot drops to its own users).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections.abc import Iterator
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

USERS, PASSWORD = ("itest", "itest2"), "secret"  # DovecotInstance's password too


@contextmanager
def sealmail_imapd(root: Path) -> Iterator[int]:
    """A standalone imapd with imaptest's users; `altnamespace: yes` puts the test mailbox at
    the top level, as imaptest expects."""
    with SealmailInstance(
        root / "sealmail",
        USERS,
        imapd_conf_extra={
            "allowplaintext": "yes",
            "altnamespace": "yes",
            "servername": "imaptest.example",
        },
    ) as instance:
        for user in USERS:
            subprocess.run(
                [*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c", user],
                input=PASSWORD + "\n", text=True, check=True,
            )
        # urlauth2's second user fetches from a mailbox `imaptest` of its own
        instance.sealmail("mailbox", "-C", str(instance.conf_path), "create",
                          f"user.{USERS[1]}.imaptest")
        port = free_tcp_port()
        process = subprocess.Popen(
            [*SEALMAIL, "imapd", "-C", str(instance.conf_path), "--listen", f"127.0.0.1:{port}"],
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, process)
            yield port
        finally:
            process.terminate()
            process.wait(30)


@contextmanager
def dovecot_imapd(root: Path) -> Iterator[int]:
    port = free_tcp_port()
    extra = (
        "protocols = lmtp imap\ndisable_plaintext_auth = no\n"
        "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
        f"    port = {port}\n  }}\n}}\n"
    )
    with DovecotInstance(root, USERS, conf_extra=extra):
        yield port


def run_groups(binary: str, port: int) -> str:
    tests = Path(binary).parent / "tests"
    argv = [
        binary, "host=127.0.0.1", f"port={port}", f"user={USERS[0]}", f"user2={USERS[1]}",
        f"pass={PASSWORD}", f"test={tests}",
    ]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    return done.stdout + done.stderr


def summary(output: str) -> str:
    """imaptest's own totals, and the name of each group it reported a failure in (its
    `*** Test NAME command i/n (line l)` headers)."""
    lines = output.splitlines()
    totals = [line for line in lines if re.search(r"test groups|individual commands", line)]
    failing = sorted({m.group(1) for line in lines if (m := re.match(r"\*\*\* Test (\S+)", line))})
    return "\n".join([*totals, f"failing groups: {', '.join(failing) or 'none'}"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imaptest", required=True)
    parser.add_argument("--no-dovecot", action="store_true")
    parser.add_argument("--full", action="store_true", help="print imaptest's whole output")
    args = parser.parse_args()
    with traversable_tmpdir() as root:
        servers = [("sealmail", sealmail_imapd)]
        if not args.no_dovecot:
            servers.append(("dovecot", dovecot_imapd))
        for name, server in servers:
            with server(root) as port:
                output = run_groups(args.imaptest, port)
            print(f"== {name}")
            print(output if args.full else summary(output))


if __name__ == "__main__":
    main()
