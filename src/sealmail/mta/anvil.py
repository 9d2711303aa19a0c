"""anvil: connection counts and event rates per client, shared by every smtpd process.

Postfix runs one anvil(8) server that all its smtpd processes ask; sealmail's master does the
same: it serves `AnvilTable` on a UNIX socket (queue_directory/public/anvil, mode 0600, so only
mail_owner's smtpd processes reach it), and each smtpd process keeps one connection to it
(`AnvilClient`). An smtpd that runs inside the master asks the same table directly
(`LocalAnvil`). Either way, the counts of every listener process add up.

The table is Postfix's: per identity (`service:client-address`) a number of simultaneous
connections and, per event (connect, mail, rcpt, newtls, auth), a count over a fixed window of
anvil_rate_time_unit that starts at the first event after the previous window ended. The
connections an smtpd process holds are forgotten when its stream to anvil closes (the process
died or restarted), as anvil(8) does, so a crash never leaves a client locked out.

Wire protocol (ours, one line each way): `VERB IDENT` -> `ok N [M]`; VERB is connect (answers
count and rate), disconnect, mail, rcpt, newtls, newtls_stat (the rate without counting), auth.
When anvil cannot be reached, smtpd applies no limit (Postfix's ANVIL_STAT_FAIL) and says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("sealmail.mta.anvil")

EVENTS = ("connect", "mail", "rcpt", "newtls", "auth")
# anvil(8)'s names in its statistics lines
_STATISTICS = {"connect": "connection rate", "mail": "message rate", "rcpt": "recipient rate",
               "newtls": "newtls rate", "auth": "auth rate"}
PURGE_AT = 1000  # entries kept before idle ones whose window ended are dropped
MAX_LINE = 1024


@dataclass
class _Entry:
    start: float
    count: int = 0
    rates: Counter[str] = field(default_factory=Counter)


class AnvilTable:
    """The counts, pure: an injectable clock; `owner` names the stream a connection came on."""

    def __init__(self, time_unit: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.time_unit = time_unit
        self.clock = clock
        self.entries: dict[str, _Entry] = {}
        self.held: dict[object, Counter[str]] = {}  # owner -> ident -> connections
        # anvil(8)'s statistics since they were last logged: kind -> (value, ident, when)
        self.maxima: dict[str, tuple[int, str, float]] = {}
        self.max_entries = (0, 0.0)

    def _peak(self, kind: str, value: int, ident: str) -> None:
        if value > self.maxima.get(kind, (0, "", 0.0))[0]:
            self.maxima[kind] = (value, ident, time.time())
        if len(self.entries) > self.max_entries[0]:
            self.max_entries = (len(self.entries), time.time())

    def statistics(self) -> list[str]:
        """anvil(8)'s `statistics:` lines since the last call (none when nothing happened)."""
        lines = []
        for kind, name in (("count", "connection count"), *_STATISTICS.items()):
            found = self.maxima.get(kind)
            if found is None:
                continue
            value, ident, when = found
            per = "" if kind == "count" else f"/{self.time_unit:g}s"
            lines.append(f"statistics: max {name} {value}{per} for ({ident}) at "
                         f"{_stamp(when)}")
        if self.max_entries[0]:
            lines.append(f"statistics: max cache size {self.max_entries[0]} at "
                         f"{_stamp(self.max_entries[1])}")
        self.maxima.clear()
        self.max_entries = (0, 0.0)
        return lines

    def _entry(self, ident: str) -> _Entry:
        now = self.clock()
        entry = self.entries.get(ident)
        if entry is None:
            if len(self.entries) >= PURGE_AT:
                self._purge(now)
            entry = self.entries[ident] = _Entry(now)
        elif now - entry.start >= self.time_unit:
            entry.start = now
            entry.rates.clear()
        return entry

    def _purge(self, now: float) -> None:
        for ident, entry in list(self.entries.items()):
            if entry.count == 0 and now - entry.start >= self.time_unit:
                del self.entries[ident]

    def connect(self, ident: str, owner: object = None) -> tuple[int, int]:
        """A new connection: (simultaneous connections, connection rate), this one included."""
        entry = self._entry(ident)
        entry.count += 1
        entry.rates["connect"] += 1
        self.held.setdefault(owner, Counter())[ident] += 1
        self._peak("count", entry.count, ident)
        self._peak("connect", entry.rates["connect"], ident)
        return entry.count, entry.rates["connect"]

    def disconnect(self, ident: str, owner: object = None) -> None:
        held = self.held.get(owner)
        if held is None or held[ident] <= 0:
            return  # not this owner's (its stream was closed and forgotten meanwhile)
        held[ident] -= 1
        if not held[ident]:
            del held[ident]
        entry = self.entries.get(ident)
        if entry is not None and entry.count > 0:
            entry.count -= 1

    def event(self, ident: str, kind: str) -> int:
        """One more `kind` event (mail, rcpt, newtls, auth): its rate in the window."""
        entry = self._entry(ident)
        entry.rates[kind] += 1
        self._peak(kind, entry.rates[kind], ident)
        return entry.rates[kind]

    def rate(self, ident: str, kind: str) -> int:
        """The rate of `kind` without counting one (newtls_stat)."""
        return self._entry(ident).rates[kind]

    def forget(self, owner: object) -> None:
        """The owner's stream closed: the connections it held end."""
        for ident, count in (self.held.pop(owner, None) or Counter()).items():
            entry = self.entries.get(ident)
            if entry is not None:
                entry.count = max(0, entry.count - count)

    def answer(self, line: str, owner: object) -> str:
        """One request line of the wire protocol -> its answer line."""
        verb, _, ident = line.strip().partition(" ")
        if not ident or " " in ident:
            return "error bad request"
        if verb == "connect":
            count, rate = self.connect(ident, owner)
            return f"ok {count} {rate}"
        if verb == "disconnect":
            self.disconnect(ident, owner)
            return "ok 0"
        if verb == "newtls_stat":
            return f"ok {self.rate(ident, 'newtls')}"
        if verb in EVENTS:
            return f"ok {self.event(ident, verb)}"
        return "error unknown request"


def _stamp(when: float) -> str:
    """`Dec  6 22:45:36`, as anvil(8) writes the time of a maximum."""
    local = time.localtime(when)
    return f"{time.strftime('%b', local)} {local.tm_mday:2d} {time.strftime('%H:%M:%S', local)}"


def log_statistics(table: AnvilTable) -> None:
    for line in table.statistics():
        log.info("%s", line)


async def report_statistics(table: AnvilTable, interval: float, stop: asyncio.Event) -> None:
    """Every anvil_status_update_time, and once at the end, the statistics lines."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        log_statistics(table)


# --------------------------------------------------------------------------------------------
# Serving the table (the master) and asking it (smtpd)


def anvil_socket(queue_directory: Path) -> Path:
    """Where the master serves anvil: public/anvil in the queue directory (mode 0600)."""
    return queue_directory / "public" / "anvil"


async def serve_anvil(table: AnvilTable, path: Path) -> asyncio.Server:
    """The master's anvil service on a UNIX socket only mail_owner can reach."""
    path.unlink(missing_ok=True)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        owner = object()
        try:
            while True:
                line = await reader.readline()
                if not line or len(line) > MAX_LINE:
                    break
                writer.write(table.answer(line.decode("ascii", "replace"), owner)
                             .encode() + b"\n")
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            table.forget(owner)
            writer.close()

    server = await asyncio.start_unix_server(handle, path=str(path))
    os.chmod(path, 0o600)
    return server


class LocalAnvil:
    """The table of this process (an smtpd inside the master, or a test's)."""

    def __init__(self, table: AnvilTable) -> None:
        self.table = table

    async def request(self, verb: str, ident: str) -> list[int] | None:
        answer = self.table.answer(f"{verb} {ident}", self)
        return [int(word) for word in answer.split()[1:]] if answer.startswith("ok") else None

    async def close(self) -> None:
        self.table.forget(self)


class AnvilClient:
    """One smtpd process's stream to the master's anvil; requests take turns on it."""

    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = path
        self.timeout = timeout
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._warned = False

    async def request(self, verb: str, ident: str) -> list[int] | None:
        """The numbers of the answer, or None when anvil cannot be asked (no limit then)."""
        async with self._lock:
            for attempt in (1, 2):
                try:
                    if self._streams is None:
                        self._streams = await asyncio.wait_for(
                            asyncio.open_unix_connection(str(self.path)), self.timeout)
                    reader, writer = self._streams
                    writer.write(f"{verb} {ident}\n".encode())
                    line = await asyncio.wait_for(reader.readline(), self.timeout)
                    if not line:
                        raise ConnectionResetError("anvil closed the connection")
                except (OSError, TimeoutError) as exc:
                    await self._drop()
                    if attempt == 2:
                        if not self._warned:
                            log.warning("cannot connect to anvil service %s: %s; client limits "
                                        "are not applied meanwhile", self.path, exc)
                            self._warned = True
                        return None
                    continue
                self._warned = False
                words = line.decode("ascii", "replace").split()
                if not words or words[0] != "ok":
                    return None
                return [int(word) for word in words[1:] if word.isdigit()]
        return None

    async def _drop(self) -> None:
        if self._streams is not None:
            _, writer = self._streams
            self._streams = None
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def close(self) -> None:
        await self._drop()
