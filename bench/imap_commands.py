"""CPU of IMAP command bodies (`ImapSession.execute`) under an imaptest-like mix, in process.

imaptest's `logout=0` profile (bench/imap_stress.py) is ten sessions on one INBOX sending
STATUS, LIST, FETCH, STORE, EXPUNGE and APPEND, each command's sync carrying the others'
changes. Under `sealmail master` its figures move with the machine's load; this runs the same
kind of mix in one thread against a disk store (several `ImapSession`s taking turns, the
commands drawn from a seeded generator), and times each command with the thread's CPU clock:
the command bodies and the store, without the event loop, the parser or the sockets. Each
session's commands follow imaptest's shapes: FETCH of up to 100 random messages with 1-4 random
items (UID, FLAGS, ENVELOPE, INTERNALDATE, BODY, BODYSTRUCTURE, RFC822.SIZE or
BODY.PEEK[HEADER.FIELDS (...)]), a FETCH of one body, STORE +/-FLAGS of random flags on a few
messages, EXPUNGE, STATUS (MESSAGES UNSEEN RECENT) and LIST of the INBOX, APPEND of a small
message. Run it with each tree first on PYTHONPATH to compare two trees:

    PYTHONPATH=src python bench/imap_commands.py [-n 3000] [--sessions 10] [--repeat 3]
        [--dir /dev/shm]

Printed: microseconds of CPU per command of each kind, the lowest of `repeat` runs (each from
a fresh store and the same seed), and over all commands.

With `--statements`, one run, untimed: the SQL statements per command of each kind (the index's
and the \\Recent marks' files), from a trace callback on every SQLite connection the store opens,
and the most frequent of them with their literals written `?` (an executemany counts once per
row, as the callback hears it). The sync after each command counts with its command.

With `--syscalls`, one run under `strace -f -y` (which must be installed), untimed: the system
calls per command of each kind, and for the ones that touch files (fsync, fdatasync, flock,
fcntl, pread64, pwrite64, openat, unlink, link) which file: the process marks each command's
start and end with a `stat` of a path under /SEALMAIL-BENCH-MARK, and strace's log is cut there.
Use a directory on a real disk (not --dir /dev/shm) to see the fsyncs as a server makes them.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from contextlib import suppress
from pathlib import Path
from typing import Any

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.imap import ImapSession
from sealmail.proto.imap import ParserLimits, parse_command
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

INBOX = "user.bench"
ITEMS = ("UID", "FLAGS", "ENVELOPE", "INTERNALDATE", "BODY", "BODYSTRUCTURE", "RFC822.SIZE")
FIELDS = ("From", "To", "Cc", "Subject", "References", "In-Reply-To", "Message-ID")
BODIES = ("BODY.PEEK[HEADER]", "RFC822.HEADER", "BODY.PEEK[]", "BODY.PEEK[1]", "BODY.PEEK[TEXT]")
FLAGS = ("\\Seen", "\\Flagged", "\\Answered", "\\Deleted", "$Label1", "$Label2", "Work")
# imaptest's default weights (client-state.c): STATUS 50, LIST 50, FETCH 100, FETCH2 100,
# STORE 50, EXPUNGE 100, APPEND 100 (of which only some get through its own checks).
MIX = (("STATUS", 50), ("LIST", 50), ("FETCH", 100), ("FETCH2", 100), ("STORE", 50),
       ("EXPUNGE", 50), ("APPEND", 50))


def message(n: int) -> bytes:
    return (f"From: Sender {n % 7} <s{n % 7}@example.org>\r\nTo: bench@example.org\r\n"
            f"Cc: c{n % 3}@example.org\r\nSubject: message {n} about topic {n % 5}\r\n"
            f"Date: {1 + n % 28:02d} Mar 2026 10:00:00 +0000\r\nMessage-ID: <m{n}@example.org>\r\n"
            f"References: <m{n - 1}@example.org>\r\n\r\n" + "a line of text\r\n" * (3 + n % 9)
            ).encode()


def command_line(rng: random.Random, kind: str, exists: int, n: int) -> str | None:
    """One command of `kind` as imaptest would send it (None: nothing to send)."""
    if kind == "STATUS":
        return 'STATUS "INBOX" (MESSAGES UNSEEN RECENT)'
    if kind == "LIST":
        return 'LIST "" "INBOX"'
    if kind == "APPEND":
        data = message(n)
        return f"APPEND INBOX {{{len(data)}+}}\r\n" + data.decode()
    if kind == "EXPUNGE":
        return "EXPUNGE"
    if exists == 0:
        return None
    if kind == "FETCH2":
        return f"FETCH {rng.randint(1, exists)} (UID {rng.choice(BODIES)})"
    numbers = sorted(rng.sample(range(1, exists + 1), min(exists, rng.randint(1, 100)
                                                           if kind == "FETCH" else 3)))
    sequence = ",".join(map(str, numbers))
    if kind == "STORE":
        flags = " ".join(rng.sample(FLAGS, rng.randint(1, 2)))
        return f"STORE {sequence} {rng.choice('+-')}FLAGS ({flags})"
    items = []
    for _ in range(rng.randint(1, 4)):
        if rng.randrange(4):
            items.append(rng.choice(ITEMS))
        else:
            fields = " ".join(rng.choice(FIELDS) for _ in range(rng.randint(1, 4)))
            items.append(f"BODY.PEEK[HEADER.FIELDS ({fields})]")
    return f"FETCH {sequence} ({' '.join(items)})"


class StatementCounts:
    """SQL statements per command kind, from a trace callback on every SQLite connection opened
    from now on in this process."""

    def __init__(self) -> None:
        self.kind = "setup"
        self.counts: dict[str, Counter[str]] = defaultdict(Counter)
        connect = sqlite3.connect

        def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = connect(*args, **kwargs)
            name = Path(str(args[0] if args else kwargs["database"])).name
            conn.set_trace_callback(lambda sql: self.heard(name, sql))
            return conn

        sqlite3.connect = traced  # type: ignore[assignment]

    def heard(self, database: str, sql: str) -> None:
        shape = re.sub(r"x'[0-9a-fA-F]*'|'(?:[^']|'')*'|\b\d+(?:\.\d+)?(?:e[-+]?\d+)?\b", "?",
                       " ".join(sql.split()))
        self.counts[self.kind][f"{database}: {shape[:100]}"] += 1

    def show(self, commands: dict[str, int], top: int = 12) -> None:
        total = sum(commands.values())
        for kind, _ in (*MIX, ("all", 0)):
            heard = (sum(self.counts.values(), Counter()) - self.counts["setup"]
                     - self.counts["between"]) if kind == "all" else self.counts[kind]
            n = total if kind == "all" else commands[kind]
            each = sum(heard.values()) / max(n, 1)
            print(f"{kind:8} {n:6} commands  {each:6.2f} statements each")
            for shape, count in heard.most_common(top if kind != "all" else 0):
                print(f"    {count / n:6.2f}  {shape}")


MARK = "/SEALMAIL-BENCH-MARK/"
_TOUCHING = ("fsync", "fdatasync", "flock", "fcntl", "pread64", "pwrite64", "openat", "unlink",
             "link")


def _mark(what: str) -> None:
    """A system call strace logs with `what` in it (the path does not exist)."""
    with suppress(OSError):
        os.stat(MARK + what)


def _file_kind(path: str) -> str:
    """A file's name as the tables show it: message files and directories by their shape."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    if re.fullmatch(r"\d+\.", name):
        return "message file (UID.)"
    if re.fullmatch(r"[0-9a-f]{16,}", name):
        return "mailbox directory"
    if "/stage." in path:
        return "stage file"
    return name


def syscalls(args: argparse.Namespace) -> None:
    """Run the mix once under strace with marks, and print what each kind of command called."""
    with tempfile.NamedTemporaryFile(suffix=".strace") as log:
        subprocess.run(
            ["strace", "-f", "-qq", "-y", "-o", log.name, sys.executable, __file__, "--marks",
             "-n", str(args.rounds), "--sessions", str(args.sessions), "--seed", str(args.seed),
             "--messages", str(args.messages), *(["--dir", args.dir] if args.dir else [])],
            check=True)
        calls: dict[str, Counter[str]] = defaultdict(Counter)
        files: dict[str, Counter[str]] = defaultdict(Counter)
        commands: Counter[str] = Counter()
        kind: str | None = None
        for line in Path(log.name).read_text(errors="replace").splitlines():
            found = re.match(r"\d+\s+(\w+)\((.*)", line)
            if found is None:
                continue
            name, rest = found.groups()
            if MARK in rest:
                kind = rest.split(MARK, 1)[1].split('"', 1)[0]
                commands[kind] += kind != "end"
                kind = None if kind == "end" else kind
                continue
            if kind is None:
                continue
            calls[kind][name] += 1
            if name in _TOUCHING:
                path = (re.search(r'"([^"]*)"', rest) if name in ("openat", "unlink", "link")
                        else None) or re.match(r"-?\d+<([^>]*)>", rest)
                files[kind][f"{name} {_file_kind(path.group(1)) if path else '?'}"] += 1
    for kind, _ in MIX:
        n = commands[kind]
        if not n:
            continue
        print(f"{kind:8} {n:6} commands  {sum(calls[kind].values()) / n:6.1f} system calls each:"
              f" {', '.join(f'{c} {v / n:.2f}' for c, v in calls[kind].most_common(8))}")
        for what, count in files[kind].most_common(14):
            print(f"    {count / n:6.2f}  {what}")


def run(rounds: int, sessions: int, seed: int, messages: int, directory: str | None,
        statements: StatementCounts | None = None, marks: bool = False
        ) -> dict[str, list[float]]:
    spent: dict[str, list[float]] = defaultdict(list)
    rng = random.Random(seed)
    kinds, weights = zip(*MIX, strict=True)
    limits = ParserLimits()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        root = Path(tmp)
        config = parse_imapd_conf(
            f"configdirectory: {root / 'c'}\npartition-default: {root / 'p'}\n", "x")
        with DiskStore.from_config(config) as store:
            store.create_mailbox(INBOX)
            for n in range(messages):
                store.deliver(message(n), [DeliveryTarget(INBOX)])
            clients = [ImapSession(store, config, "bench", INBOX) for _ in range(sessions)]
            for i, client in enumerate(clients):
                client.execute(parse_command(b"s%d SELECT INBOX\r\n" % i, limits))
            for n in range(rounds):
                client = rng.choice(clients)
                kind = rng.choices(kinds, weights)[0]
                view = client.selected
                line = command_line(rng, kind, view.exists if view else 0, messages + n)
                if line is None:
                    continue
                command = parse_command(f"t{n} {line}\r\n".encode(), limits)
                if statements is not None:
                    statements.kind = kind
                start = time.thread_time()
                if marks:
                    _mark(kind)
                client.execute(command)
                if marks:
                    _mark("end")
                spent[kind].append(time.thread_time() - start)
                if statements is not None:
                    statements.kind = "between"
    return spent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=3000)
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="lowest of this many runs")
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--dir", help="where the store goes (/dev/shm: no fsync, whose CPU in"
                        " the kernel is most of the spread between runs on a loaded machine)")
    parser.add_argument("--statements", action="store_true",
                        help="count SQL statements per command kind instead (one run)")
    parser.add_argument("--syscalls", action="store_true",
                        help="count system calls per command kind under strace instead (one run)")
    parser.add_argument("--marks", action="store_true", help=argparse.SUPPRESS)  # --syscalls'
    args = parser.parse_args()
    if args.syscalls:
        syscalls(args)
        return
    if args.marks:
        run(args.rounds, args.sessions, args.seed, args.messages, args.dir, marks=True)
        return
    if args.statements:
        counts = StatementCounts()
        spent = run(args.rounds, args.sessions, args.seed, args.messages, args.dir, counts)
        counts.show({kind: len(times) for kind, times in spent.items()})
        return
    runs = [run(args.rounds, args.sessions, args.seed, args.messages, args.dir)
            for _ in range(args.repeat)]
    for kind, _ in (*MIX, ("all", 0)):
        per_run = []
        for spent in runs:
            times = [t for k, ts in spent.items() for t in ts] if kind == "all" else spent[kind]
            per_run.append(1e6 * sum(times) / max(len(times), 1))
        count = sum(len(ts) for ts in runs[0].values()) if kind == "all" else len(runs[0][kind])
        print(f"{kind:8} {count:6} commands  {min(per_run):8.1f} us CPU each"
              f" (runs: {', '.join(f'{t:.0f}' for t in per_run)})")


if __name__ == "__main__":
    main()
