"""`sealmail trace [-c MTA_DIR] [-C IMAPD_CONF] [-L STORE_LOG]... QUEUEID|MESSAGE-ID`: one
message across both halves' logs, in time order.

The MTA's half is its maillog (main.cf's maillog_file, else data_directory/maillog): smtpd's
`client=`, cleanup's `message-id=`, qmgr's `from=` and `removed`, each delivery agent's
`to=..., relay=..., status=...` and the bounce, all under the message's queue ID (a Message-ID
is turned into the queue IDs cleanup gave it).

The store's half is lmtpd's delivery lines (`SESSION: from=<S>, to=<R>, mailbox=M uid=N, ...
status=sent`), from the files named with -L (where `sealmail master` or `up`'s output was
saved), `configdirectory/deliver.log` (deliver -l without syslog) and the system's mail log.
The halves are joined exactly where they can be: lmtpd puts its session in each 250
(`SESSIONID=<...>`, as Cyrus does), which the MTA logs in `status=sent (...)`, and logs the
MTA's queue ID it read from the Received: field (`SESSION: queue_id=QID, message-id=<...>`).
Logs of a store that says neither (an older lmtpd, another store) are joined the way an operator
would: a store line for the same sender and recipient within a few seconds before the MTA's line
for that recipient (an alias expanded by local(8) is matched by sender alone). Each joined lmtpd
session is then shown whole (connect, authentication, every recipient, disconnect).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH

SYSTEM_MAIL_LOGS = ("/var/log/mail.log", "/var/log/maillog")
JOIN_WINDOW = timedelta(seconds=5)  # a store line this long before the MTA's line may be it

# Dec  6 20:03:42 host postfix/local[7749]: HG5D2MX29HGC: to=<...>, ...
_MTA_LINE = re.compile(
    r"^(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) \S+ (?P<program>[\w./-]+)\[\d+\]: "
    r"(?:warning: )?(?P<qid>[0-9A-Z]{6,20}): (?P<text>.*)$"
)
# 2026-12-06T20:03:42 sealmail.delivery/lmtpunix[7771]: 1E5B3F86964: from=<...>, to=<...>, ...
_STORE_LINE = re.compile(
    r"^(?:\S+ \S+ )?.*?(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\S* (?P<program>[\w./-]+)\[\d+\]: "
    r"(?P<session>[0-9A-Za-z]{6,24}): (?P<text>.*)$"
)
_FIELD = re.compile(
    r"\b(from|to|orig_to|relay|status|mailbox|message-id|queue_id)=<?([^>,\s]*)>?"
)
_SESSIONID = re.compile(r"SESSIONID=<([0-9A-Za-z]{6,24})>")


@dataclass(frozen=True, slots=True)
class LogLine:
    when: datetime
    half: str  # "mta" or "store"
    program: str
    key: str  # the queue ID or the lmtpd session
    text: str

    def field(self, name: str) -> str | None:
        for found in _FIELD.finditer(self.text):
            if found.group(1) == name:
                return found.group(2)
        return None

    def render(self) -> str:
        when = f"{self.when:%Y-%m-%d %H:%M:%S}"
        return f"{when} {self.half:5} {self.program}: {self.key}: {self.text}"


def parse_mta_log(lines: Iterable[str], year: int) -> Iterator[LogLine]:
    for line in lines:
        found = _MTA_LINE.match(line.rstrip("\n"))
        if found is None:
            continue
        try:
            when = datetime.strptime(f"{year} {found['stamp']}", "%Y %b %d %H:%M:%S")
        except ValueError:
            continue
        yield LogLine(when, "mta", found["program"], found["qid"], found["text"])


def parse_store_log(lines: Iterable[str]) -> Iterator[LogLine]:
    for line in lines:
        found = _STORE_LINE.match(line.rstrip("\n"))
        if found is None:
            continue
        when = datetime.strptime(found["stamp"], "%Y-%m-%dT%H:%M:%S")
        yield LogLine(when, "store", found["program"], found["session"], found["text"])


def queue_ids(mta: list[LogLine], wanted: str) -> list[str]:
    """The queue IDs of `wanted`: itself when it is one, else those whose message-id it is."""
    if any(line.key == wanted for line in mta):
        return [wanted]
    message_id = wanted.strip().strip("<>")
    found = []
    for line in mta:
        if line.field("message-id") == message_id and line.key not in found:
            found.append(line.key)
    return found


def is_delivery(line: LogLine) -> bool:
    return line.field("to") is not None and line.field("status") is not None


def joined(mta: list[LogLine], store: list[LogLine]) -> dict[LogLine, LogLine]:
    """Each MTA delivery line (status sent) with the store line that is its delivery: by the
    SESSIONID in the MTA's line where there is one, else by time (`near`)."""
    pairs: dict[LogLine, LogLine] = {}
    taken: set[LogLine] = set()
    queue_of = store_queue_ids(store)
    for line in mta:
        if not is_delivery(line) or line.field("status") != "sent":
            continue
        session = _SESSIONID.search(line.text)
        if session is not None:
            found = exact(line, session.group(1), store, queue_of, taken)
        else:
            found = near(line, mta, store, taken)
        if found is not None:
            pairs[line] = found
            taken.add(found)
    return pairs


def store_queue_ids(store: list[LogLine]) -> dict[LogLine, str]:
    """Each store delivery line with the MTA queue ID its session last logged."""
    current: dict[str, str] = {}
    found: dict[LogLine, str] = {}
    for line in store:
        queue_id = line.field("queue_id")
        if queue_id is not None:
            current[line.key] = queue_id
        elif line.field("mailbox") is not None and line.key in current:
            found[line] = current[line.key]
    return found


def exact(
    line: LogLine, session: str, store: list[LogLine], queue_of: dict[LogLine, str],
    taken: set[LogLine],
) -> LogLine | None:
    """The delivery in lmtpd session `session` of this recipient, of this queue ID when the
    store logged one (a cached LMTP session carries many messages); an alias that local(8)
    expanded has another address in the store, so then the session's latest delivery before."""
    rcpt = {(line.field(name) or "").lower() for name in ("to", "orig_to")} - {""}
    candidates = [
        s for s in store
        if s.key == session and s not in taken and s.field("mailbox") is not None
        and queue_of.get(s, line.key) == line.key and s.when <= line.when + timedelta(seconds=1)
    ]
    same = [s for s in candidates if (s.field("to") or "").lower() in rcpt]
    if same:
        return same[0]
    return candidates[-1] if candidates else None


def near(
    line: LogLine, mta: list[LogLine], store: list[LogLine], taken: set[LogLine]
) -> LogLine | None:
    """Without a SESSIONID: same sender, the same recipient when there is one (else the sender
    alone: an alias), at most JOIN_WINDOW earlier; the latest such line not after the MTA's."""
    senders = {m.field("from") for m in mta if m.key == line.key and m.text.startswith("from=")}
    rcpt = (line.field("to") or "").lower()
    candidates = [
        s for s in store
        if s.field("mailbox") is not None
        and line.when - JOIN_WINDOW <= s.when <= line.when + timedelta(seconds=1)
        and s.field("from") in senders and s not in taken
    ]
    candidates = [s for s in candidates if (s.field("to") or "").lower() == rcpt] or candidates
    # The store answers before the MTA logs: an earlier (or same-second) line first.
    before = [s for s in candidates if s.when <= line.when]
    chosen = before or candidates
    return chosen[-1] if chosen else None


def trace(wanted: str, mta_lines: list[LogLine], store_lines: list[LogLine]) -> list[LogLine]:
    """The message's lines from both halves in time order: the MTA's under its queue IDs, and
    of the store's the joined deliveries with their sessions' other lines (connect, AUTH,
    disconnect), never another message's deliveries in the same session."""
    ids = queue_ids(mta_lines, wanted)
    mta = [line for line in mta_lines if line.key in ids]
    pairs = joined(mta, store_lines)
    sessions = {line.key for line in pairs.values()}
    chosen = set(pairs.values())
    store = [
        line for line in store_lines
        if line.key in sessions
        and (line in chosen or line.field("mailbox") is None)
        and line.field("queue_id") in (None, *ids)
    ]
    return sorted(mta + store, key=lambda line: (line.when, line.half == "mta"))


def summary(lines: list[LogLine]) -> list[str]:
    """One line per recipient: where it ended, with the store's mailbox and UID when joined."""
    mta = [line for line in lines if line.half == "mta"]
    pairs = joined(mta, [line for line in lines if line.half == "store"])
    out = []
    for line in mta:
        if not is_delivery(line) or line.field("status") == "deferred":
            continue
        text = f"{line.key}: {line.field('to')}: {line.field('status')} via {line.field('relay')}"
        stored = pairs.get(line)
        if stored is not None:
            uid = re.search(r"\buid=(\d+)", stored.text)
            text += f" -> {stored.field('mailbox')}" + (f" uid {uid.group(1)}" if uid else "")
            text += f" (lmtpd session {stored.key})"
        elif line.field("status") != "sent":
            text += f": {line.text.rpartition('(')[2].rstrip(')')}"
        out.append(text)
    return out


# --------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="mta_dir", metavar="MTA_DIR", default=None,
                        help="the MTA's configuration directory (its maillog_file is read)")
    parser.add_argument("-C", dest="config", metavar="IMAPD_CONF", default=None,
                        help=f"the store's imapd.conf (default {DEFAULT_CONFIG_PATH}): "
                             "configdirectory/deliver.log is read")
    parser.add_argument("-L", dest="store_logs", metavar="STORE_LOG", action="append",
                        default=[], help="a file with the store's log lines (repeatable)")
    parser.add_argument("--maillog", default=None, help="the MTA's log file, if not main.cf's")
    parser.add_argument("id", metavar="QUEUEID|MESSAGE-ID")


def mta_log_path(args: argparse.Namespace) -> Path:
    if args.maillog:
        return Path(args.maillog)
    from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, load_mta_config
    from sealmail.mta.config.parameters import MAIN

    directory = args.mta_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    main = load_mta_config(directory).main
    configured = main.get(MAIN.maillog_file).strip()
    if configured and configured != "/dev/stdout":
        return Path(configured)
    return Path(main.instance_path(MAIN.data_directory)) / "maillog"


def store_log_paths(args: argparse.Namespace) -> list[Path]:
    paths = [Path(p) for p in args.store_logs]
    config = Path(args.config or DEFAULT_CONFIG_PATH)
    if config.exists():
        from sealmail.config.imapd_conf import load_imapd_conf

        paths.append(load_imapd_conf(config).configdirectory / "deliver.log")
    paths += [Path(p) for p in SYSTEM_MAIL_LOGS]
    return [p for p in dict.fromkeys(paths) if p.is_file()]


def read_lines(path: Path) -> list[str]:
    with path.open(errors="replace") as handle:
        return handle.readlines()


def run(args: argparse.Namespace) -> int:
    from sealmail.cli.check import only_warnings

    with only_warnings():
        return trace_command(args)


def trace_command(args: argparse.Namespace) -> int:
    maillog = mta_log_path(args)
    if not maillog.is_file():
        print(f"sealmail trace: {maillog}: no such file (the MTA's maillog)", file=sys.stderr)
        return 66  # EX_NOINPUT
    store_lines = [line for path in store_log_paths(args)
                   for line in parse_store_log(read_lines(path))]
    year = store_lines[0].when.year if store_lines else datetime.now().year
    mta_lines = list(parse_mta_log(read_lines(maillog), year))
    found = trace(args.id, mta_lines, store_lines)
    if not found:
        print(f"sealmail trace: {args.id}: not in {maillog}", file=sys.stderr)
        return 1
    for entry in found:
        print(entry.render())
    print()
    for text in summary(found):
        print(text)
    return 0
