"""The IMAP core's command parser alone: CPU us per command on imaptest-shaped commands.

    PYTHONPATH=src python bench/imap_parse.py [-n 20000] [-r 7] [--rawlog DIR]

The commands are imaptest's stress profile with `logout=0` as it sends them (captured with its
`rawlog` option against `sealmail master`, 10 clients, 25 s: FETCH 40%, EXPUNGE 16%, STORE 15%,
APPEND 12%, STATUS 8%, LIST 8%), regenerated from a fixed seed: FETCH of a random set of a ~34
message mailbox with 1-4 random items (BODY.PEEK[HEADER.FIELDS (...)] among them), FETCH of one
message with one of five body sections, STORE of \\Deleted or of random flags, APPEND with or
without flags and a date. `--rawlog DIR` parses the client's side of imaptest rawlog files
instead (`imaptest ... rawlog` writes them in its working directory). `--core` feeds each
command to a `ServerConnection` in the selected state and takes it back with `next_event`:
framing and parsing, what the worker's event loop does for a command before running it.

The CPU (the thread's clock) of a pass through all commands in order, and of a pass through
each kind's commands alone (FETCH and STORE of one message apart from those of a set), the
parser's memos emptied before each pass as in a fresh imapd worker; printed: the lowest and the
median of the passes. A/B of two trees: run it with each tree's `src` first on PYTHONPATH,
alternately.
"""

from __future__ import annotations

import argparse
import random
import re
import statistics
import time
from collections import Counter, defaultdict
from pathlib import Path

from sealmail.proto.imap import fetch, parser, sequence
from sealmail.proto.imap.connection import ServerConnection
from sealmail.proto.imap.events import CommandReceived
from sealmail.proto.imap.parser import ParserLimits, parse_command
from sealmail.proto.imap.response import StatusResponse
from sealmail.proto.imap.state import ConnectionState

_HEADERS = ["From", "To", "Cc", "Subject", "Message-ID", "In-Reply-To", "References"]
_ITEMS = ["UID", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE"]
_SECTIONS = ["(UID BODY.PEEK[1])", "(UID BODY.PEEK[HEADER])", "(UID BODY.PEEK[])",
             "(UID RFC822.HEADER)", "(UID BODY.PEEK[TEXT])"]
_FLAGS = ["\\Answered", "\\Flagged", "\\Seen", "\\Draft", "$Label1", "$Label2", "$Label3",
          "$Label4", "$Label5"]
_MESSAGE = ("From: user{n}@domain.org\r\nDate: Sat, 24 Mar 2007 23:00:00 +0200\r\n"
            "Subject: s{s}\r\n\r\nbody{s}\r\n\r\n")


def _set(rng: random.Random, exists: int = 34) -> str:
    numbers = [n for n in range(1, exists + 1) if rng.random() < 0.5] or [1]
    ranges: list[str] = []
    start = prev = numbers[0]
    for n in [*numbers[1:], 0]:
        if n != prev + 1:
            ranges.append(str(start) if start == prev else f"{start}:{prev}")
            start = n
        prev = n
    return ",".join(ranges)


def _items(rng: random.Random) -> str:
    items = []
    for _ in range(rng.choice([1, 1, 2, 2, 3, 4])):
        if rng.random() < 0.15:
            fields = " ".join(rng.choice(_HEADERS) for _ in range(rng.randint(1, 4)))
            items.append(f"BODY.PEEK[HEADER.FIELDS ({fields})]")
        else:
            items.append(rng.choice(_ITEMS))
    return "(" + " ".join(items) + ")"


def _flags(rng: random.Random) -> str:
    return "(" + " ".join(f for f in _FLAGS if rng.random() < 0.35) + ")"


def _append(rng: random.Random) -> str:
    line = 'APPEND "INBOX"'
    if rng.random() < 0.25:
        line += " " + _flags(rng)
    if rng.random() < 0.5:
        line += ' "22-Feb-2008 17:06:23 +0000"'
    n = rng.randint(1, 6)
    message = _MESSAGE.format(n=n, s=str(n) * n)
    return f"{line} {{{len(message)}+}}\r\n{message}"


def generated(count: int, seed: int = 17) -> list[bytes]:
    """imaptest's `logout=0` mix, as the rawlogs show it (module docstring)."""
    rng = random.Random(seed)
    kinds = [
        (16, lambda: f"FETCH {_set(rng)} {_items(rng)}"),
        (23, lambda: f"FETCH {rng.randint(1, 34)} {rng.choice(_SECTIONS)}"),
        (16, lambda: "EXPUNGE"),
        (9, lambda: f"STORE {rng.randint(1, 34)} +FLAGS{rng.choice(['', '.SILENT'])} \\Deleted"),
        (6, lambda: f"STORE {_set(rng)} {rng.choice(['', '+', '-'])}FLAGS"
                    f"{rng.choice(['', '.SILENT'])} {_flags(rng)}"),
        (12, lambda: _append(rng)),
        (9, lambda: 'STATUS "INBOX" (MESSAGES UNSEEN RECENT)'),
        (8, lambda: 'LIST "" *'),
    ]
    weights = [weight for weight, _ in kinds]
    makers = [make for _, make in kinds]
    client = rng.randint(1, 10)
    return [f"{client}.{i} {rng.choices(makers, weights)[0]()}\r\n".encode()
            for i in range(1, count + 1)]


_LITERAL = re.compile(rb"~?\{([0-9]+)\+?\}$")


def from_rawlogs(directory: Path) -> list[bytes]:
    """The commands of imaptest rawlog files: the "O:" (client) lines, literals in place."""
    commands = []
    for path in sorted(directory.glob("rawlog.*")):
        stream = bytearray()
        for line in path.read_bytes().splitlines():
            parts = line.split(b" ", 2)
            if len(parts) >= 2 and parts[1] == b"O:":
                stream += (parts[2] if len(parts) > 2 else b"") + b"\r\n"
        data, pos = bytes(stream), 0
        while pos < len(data):
            start = pos
            while (end := data.find(b"\r\n", pos)) >= 0:
                literal = _LITERAL.search(data, pos, end)
                pos = end + 2 + (int(literal.group(1)) if literal else 0)
                if not literal:
                    break
            else:
                pos = len(data)
            commands.append(data[start:pos])
    return commands


def _kind(command: bytes) -> str:
    """The command's name; FETCH and STORE of one message apart from those of a set."""
    words = command.split(b" ", 3)
    name = words[1].strip().upper().decode()
    if name == "UID":
        name, words = f"UID {words[2].strip().upper().decode()}", words[1:]
    if name.endswith(("FETCH", "STORE")) and len(words) > 2:
        name += " 1" if words[2].isdigit() else " set"
    return name


def _clear_memos() -> None:
    """Empty the parser's memos (those the tree has: main's may have fewer)."""
    for module, name in ((parser, "_REMEMBERED"), (fetch, "_ITEMS"),
                         (sequence, "_RANGES")):
        memo = getattr(module, name, None)
        if memo is not None:
            memo.clear()


def _parse_each(commands: list[bytes]) -> int:
    """ns of CPU to parse `commands`."""
    limits = ParserLimits()
    start = time.thread_time_ns()
    for command in commands:
        parse_command(command, limits)
    return time.thread_time_ns() - start


def _through_the_core(commands: list[bytes]) -> int:
    """ns of CPU to feed `commands` to a session and take each as an event (the tagged
    replies that let the next one in are made before the clock starts and sent outside it)."""
    connection = ServerConnection(state=ConnectionState.SELECTED)
    replies = [StatusResponse("OK", "done", command.split(b" ", 1)[0].decode())
               for command in commands]
    spent = 0
    clock = time.thread_time_ns
    for command, reply in zip(commands, replies, strict=True):
        start = clock()
        connection.receive_data(command)
        event = connection.next_event()
        spent += clock() - start
        if not isinstance(event, CommandReceived):
            raise SystemExit(f"not a command: {command[:60]!r} -> {event}")
        connection.send(reply)
        connection.data_to_send()
    return spent


def main() -> None:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("-n", "--commands", type=int, default=20000)
    arguments.add_argument("-r", "--repeat", type=int, default=7)
    arguments.add_argument("--rawlog", type=Path, help="a directory of imaptest rawlog files")
    arguments.add_argument("--core", action="store_true",
                           help="through the whole core: each command fed to a selected "
                                "ServerConnection and taken with next_event (framing + parse)")
    args = arguments.parse_args()
    commands = from_rawlogs(args.rawlog) if args.rawlog else generated(args.commands)
    kinds = [_kind(command) for command in commands]
    by_kind: dict[str, list[bytes]] = defaultdict(list)
    for command, kind in zip(commands, kinds, strict=True):
        by_kind[kind].append(command)
    by_kind["all"] = commands
    run = _through_the_core if args.core else _parse_each
    passes: dict[str, list[int]] = defaultdict(list)
    for _ in range(args.repeat):
        for kind, group in by_kind.items():
            _clear_memos()
            passes[kind].append(run(group))
    counts = Counter(kinds)
    counts["all"] = len(commands)
    what = "receive + next_event" if args.core else "parse_command"
    print(f"{parser.__file__}: {what}, {len(commands)} commands, {args.repeat} passes, "
          "us of CPU per command")
    print(f"{'command':12s} {'count':>6s} {'lowest':>8s} {'median':>8s}")
    for kind, count in counts.most_common():
        lowest = min(passes[kind]) / count / 1000
        median = statistics.median(passes[kind]) / count / 1000
        print(f"{kind:12s} {count:6d} {lowest:8.2f} {median:8.2f}")


if __name__ == "__main__":
    main()
