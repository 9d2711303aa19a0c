"""CPU per FETCH / APPEND command of one in-process IMAP session (no sockets, no other server).

    PYTHONPATH=src python bench/imap_fetch_cpu.py [-n MESSAGES] [-r ROUNDS] [--profile NAME]

imaptest's stress profile sends FETCH of up to 100 messages with a random mix of UID, FLAGS,
ENVELOPE, INTERNALDATE, BODY, BODYSTRUCTURE, RFC822.SIZE and BODY.PEEK[HEADER.FIELDS (...)], and
APPENDs of small messages; this measures what sealmail.imap spends on each (process CPU time,
lowest of the rounds), so branches can be compared on a shared machine: run it with each tree's
src first on PYTHONPATH, interleaved. `--profile NAME` prints cProfile's top functions of that
row instead.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.imap import ImapSession
from sealmail.proto.imap import ParserLimits, parse_command, render
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

HEADERS = "BODY.PEEK[HEADER.FIELDS (From To Cc Subject References In-Reply-To Message-ID)]"
ROWS = {
    "envelope": "FETCH 1:100 (ENVELOPE)",
    "bodystructure": "FETCH 1:100 (BODYSTRUCTURE)",
    "body": "FETCH 1:100 (BODY)",
    "imaptest-mix": "FETCH 1:100 (UID FLAGS ENVELOPE INTERNALDATE BODYSTRUCTURE RFC822.SIZE)",
    "env+headers": f"FETCH 1:100 (UID ENVELOPE {HEADERS})",
    "bs+headers": f"FETCH 1:100 (BODY {HEADERS} BODYSTRUCTURE)",
    "env+unlisted": "FETCH 1:100 (UID ENVELOPE BODY.PEEK[HEADER.FIELDS (X-Mailer)])",
    "fast": "FETCH 1:100 (UID FLAGS RFC822.SIZE INTERNALDATE)",
    "one-body": "FETCH 7 (UID BODY.PEEK[])",
    "utf8-envelope": "FETCH 1:100 (ENVELOPE BODYSTRUCTURE)",
}


def message(n: int) -> bytes:
    parts = "".join(
        f"--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\npart {i} of {n}\r\n"
        for i in range(n % 3 + 1))
    return (f"From: Sender {n} <sender{n % 5}@example.org>\r\nTo: fred@example.org, "
            f"\"Ann\" <ann@example.net>\r\nCc: team@example.com\r\nSubject: =?utf-8?q?caf"
            f"=C3=A9_{n}?= about things\r\nDate: {1 + n % 28:02d} Mar 2026 10:00:00 +0000\r\n"
            f"Message-ID: <m{n}@example.org>\r\nIn-Reply-To: <m{n - 1}@example.org>\r\n"
            f"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n"
            + parts + "--b--\r\n").encode()


def command(session: ImapSession, line: str) -> bytes:
    responses = session.execute(parse_command(line.encode() + b"\r\n", ParserLimits(),
                                              utf8=session.utf8))
    return b"".join(render(r, session.utf8) for r in responses)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="messages in the mailbox")
    parser.add_argument("-r", type=int, default=5, help="rounds (the lowest is kept)")
    parser.add_argument("-k", type=int, default=50, help="commands per round")
    parser.add_argument("--profile", choices=[*ROWS, "append"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        config = parse_imapd_conf(f"configdirectory: {root}/c\npartition-default: {root}/p\n",
                                  "x")
        store = DiskStore.from_config(config)
        store.create_mailbox("user.fred")
        for n in range(args.n):
            store.deliver(message(n), [DeliveryTarget("user.fred")])
        session_config = parse_imapd_conf("", "imapd.conf")
        plain = ImapSession(store, session_config, "fred", "user.fred")
        command(plain, "a SELECT INBOX")
        utf8 = ImapSession(store, session_config, "fred", "user.fred")
        command(utf8, "a ENABLE UTF8=ACCEPT")
        command(utf8, "a SELECT INBOX")
        for line in ROWS.values():  # the first FETCH keeps the parses: not what is measured
            command(plain, "w " + line)
        rows = {name: (utf8 if name.startswith("utf8") else plain, "t " + line)
                for name, line in ROWS.items()}
        appended = message(3)
        append = f"t APPEND INBOX (\\Seen) {{{len(appended)}+}}\r\n".encode() + appended
        if args.profile:
            profiler = cProfile.Profile(time.process_time)  # CPU, not waiting
            profiler.enable()
            for _ in range(args.k):
                if args.profile == "append":
                    plain.execute(parse_command(append + b"\r\n", ParserLimits()))
                else:
                    command(*rows[args.profile])
            profiler.disable()
            stats = pstats.Stats(profiler, stream=sys.stdout)
            stats.sort_stats(os.environ.get("SORT", "tottime"))
            stats.print_stats(int(os.environ.get("TOP", "25")))
            return 0
        print(f"{'row':16} {'ms CPU/command':>15}")
        for name, (session, line) in rows.items():
            best = min(_round(lambda s=session, text=line: command(s, text), args.k)
                       for _ in range(args.r))
            print(f"{name:16} {best * 1000:15.3f}")
        best = min(_round(lambda: plain.execute(parse_command(append + b"\r\n",
                                                              ParserLimits())), args.k)
                   for _ in range(args.r))
        print(f"{'append':16} {best * 1000:15.3f}")
        store.close()
    return 0


def _round(run: object, count: int) -> float:
    start = time.process_time()
    for _ in range(count):
        run()  # type: ignore[operator]
    return (time.process_time() - start) / count


if __name__ == "__main__":
    sys.exit(main())
