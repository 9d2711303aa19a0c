"""What the console reads from the logs the daemons write: failed logins (the store's Cyrus
`badlogin:` lines, smtpd's Postfix `SASL ... authentication failed` lines, and the console's
own) and, from the MTA's maillog, deliveries, deferrals and the queue's size over time.

The maillog is read with `sealmail trace`'s parser (sealmail.cli.trace), so the console and the
command agree on what a line means. Only the end of each file is read (`TAIL_BYTES`): a page
never costs more than that, however long the log has grown.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from sealmail.cli.trace import LogLine, is_delivery

TAIL_BYTES = 8 * 1024 * 1024

_ISO = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)")
_SYSLOG = re.compile(r"^([A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) ")
_PROGRAM = re.compile(r"\s([\w./-]+)\[\d+\]:\s")
# Cyrus: badlogin: localhost [127.0.0.1] plaintext alice [SASL(-13): authentication failure: ...]
_BADLOGIN = re.compile(
    r"badlogin: (?P<client>(?:\S+ )?\[[^\]]*\]) (?P<mech>\S+)(?: (?P<user>[^\s\[]+))?"
    r" \[(?P<reason>[^\]]*)\]"
)
# Postfix: warning: unknown[192.0.2.1]: SASL LOGIN authentication failed: UGFzc3dvcmQ6
_SMTPD = re.compile(
    r"(?P<client>\S*\[[^\]]*\]): SASL (?P<mech>\S+) authentication failed: ?(?P<reason>.*)$"
)


def read_tail(path: Path, limit: int = TAIL_BYTES) -> list[str]:
    """The file's last `limit` bytes as lines (a cut first line dropped); [] if unreadable."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, 2)
            size = handle.tell()
            handle.seek(max(0, size - limit))
            data = handle.read()
    except OSError:
        return []
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if size > limit and lines else lines


def stamp(line: str, now: datetime) -> datetime | None:
    """A line's time: ISO 8601 (the daemons' own log) or syslog's (no year: the latest one
    not in the future, so a log read on 2 January still places 31 December last year)."""
    found = _SYSLOG.match(line)
    if found:
        try:
            when = datetime.strptime(f"{now.year} {found.group(1)}", "%Y %b %d %H:%M:%S")
        except ValueError:
            return None
        return when.replace(year=now.year - 1) if when > now + timedelta(days=1) else when
    iso = _ISO.search(line[:64])
    return datetime.strptime(iso.group(1), "%Y-%m-%dT%H:%M:%S") if iso else None


@dataclass(frozen=True, slots=True)
class AuthFailure:
    when: datetime
    program: str
    client: str
    user: str  # "" when the mechanism did not say (SMTP AUTH never logs it)
    mechanism: str
    reason: str


def auth_failures(lines: Iterable[str], now: datetime) -> list[AuthFailure]:
    """Every failed login in `lines`, oldest first."""
    found: list[AuthFailure] = []
    for line in lines:
        if "badlogin: " in line:
            match = _BADLOGIN.search(line)
        elif "authentication failed" in line and "SASL " in line:
            match = _SMTPD.search(line)
        else:
            continue
        when = stamp(line, now)
        if match is None or when is None:
            continue
        program = _PROGRAM.search(line)
        groups = match.groupdict()
        found.append(AuthFailure(when, program.group(1) if program else "", groups["client"],
                                 groups.get("user") or "", groups["mech"], groups["reason"]))
    found.sort(key=lambda failure: failure.when)
    return found


def failures_by_client(failures: Iterable[AuthFailure]) -> list[tuple[str, int]]:
    """Who fails most: (client, failures), most first."""
    counts: dict[str, int] = {}
    for failure in failures:
        counts[failure.client] = counts.get(failure.client, 0) + 1
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


@dataclass(frozen=True, slots=True)
class Activity:
    """Counts per time bucket from `start`, each `step` long."""

    start: datetime
    step: timedelta
    delivered: list[int]
    deferred: list[int]
    bounced: list[int]
    queue: list[int]  # messages in the queue at the end of each bucket

    def label(self, index: int) -> str:
        return f"{self.start + self.step * index:%H:%M}"


def activity(mta: Iterable[LogLine], now: datetime, hours: int = 6,
             buckets: int = 36) -> Activity:
    """Deliveries (status=sent), deferrals and bounces per bucket over the last `hours` (the
    buckets end at the first round time, a multiple of the bucket's length, not before now), and the
    queue's size: a message counts from its first line (smtpd's client=, pickup's, cleanup's)
    until qmgr's `removed`."""
    step = timedelta(hours=hours) / buckets
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    end = midnight + step * math.ceil((now - midnight) / step)  # buckets on round times
    start = end - step * buckets
    counts = {status: [0] * buckets for status in ("sent", "deferred", "bounced")}
    changes: list[tuple[datetime, int]] = []
    seen: set[str] = set()
    for line in mta:
        if line.key not in seen:
            seen.add(line.key)
            changes.append((line.when, 1))
        if line.text == "removed":
            changes.append((line.when, -1))
        if is_delivery(line) and start <= line.when < end:
            status = line.field("status") or ""
            if status in counts:
                counts[status][int((line.when - start) / step)] += 1
    changes.sort()
    queue: list[int] = []
    size, index = 0, 0
    for bucket in range(buckets):
        end = start + step * (bucket + 1)
        while index < len(changes) and changes[index][0] < end:
            size += changes[index][1]
            index += 1
        queue.append(max(0, size))
    return Activity(start, step, counts["sent"], counts["deferred"], counts["bounced"], queue)
