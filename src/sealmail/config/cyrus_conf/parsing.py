"""From raw entries to checked ones: every key known, every value of its type, names unique.

Any wrong line raises ConfigError naming the file, the line and the key.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import time
from pathlib import Path

from sealmail.config.cyrus_conf.commands import _command_for, _split_command
from sealmail.config.cyrus_conf.entries import CyrusConf, Entry, Event, Service
from sealmail.config.cyrus_conf.listen import _PROTOS
from sealmail.config.cyrus_conf.syntax import Section, _raw_entries, _RawEntry, _Where
from sealmail.config.imapd_conf import ConfigError
from sealmail.config.schema import parse_switch

DEFAULT_CYRUS_CONF_PATH = "/etc/sealmail/cyrus.conf"

_SECTION_KEYS: Mapping[Section, frozenset[str]] = {
    Section.START: frozenset({"cmd"}),
    Section.SERVICES: frozenset(
        {"cmd", "listen", "proto", "prefork", "maxchild", "maxfds", "maxforkrate", "babysit"}
    ),
    Section.EVENTS: frozenset({"cmd", "period", "at"}),
    Section.DAEMON: frozenset({"cmd", "wait"}),
}


def _integer(where: _Where, key: str, raw: str, minimum: int) -> int:
    text = raw[1:] if raw.startswith("-") else raw
    if not (text.isascii() and text.isdigit()):
        raise where.error(key, f"{raw!r} is not a whole number")
    value = int(raw)
    if value < minimum:
        raise where.error(key, f"{value} is below the least allowed value, {minimum}")
    return value


def _switch(where: _Where, key: str, raw: str) -> bool:
    value = parse_switch(raw)
    if value is None:
        raise where.error(key, f"{raw!r} is not a switch (0/1, yes/no, on/off, true/false)")
    return value


def _daily_time(where: _Where, raw: str) -> time:
    """at=HHMM as Cyrus reads it: a 24-hour clock time, leading zero optional (at=400)."""
    if not (raw.isascii() and raw.isdigit() and 3 <= len(raw) <= 4):
        raise where.error("at", f"{raw!r} is not a time of day in HHMM form")
    hour, minute = divmod(int(raw), 100)
    if hour > 23 or minute > 59:
        raise where.error("at", f"{raw!r} is not a time of day (hours 00-23, minutes 00-59)")
    return time(hour, minute)


def _build(raw: _RawEntry) -> Entry | Service | Event:
    where, args, section = raw.where, raw.args, raw.section
    unknown = sorted(set(args) - _SECTION_KEYS[section])
    if unknown:
        if section is Section.EVENTS and "cron" in unknown:
            raise where.error("cron", "cron= is not supported; use period=MINUTES or at=HHMM")
        allowed = ", ".join(sorted(_SECTION_KEYS[section]))
        raise where.error(
            unknown[0],
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)} "
            f"in {section.value}; known: {allowed}",
        )
    if "cmd" not in args:
        raise where.error("cmd", "every entry needs cmd=")
    argv = _split_command(args["cmd"], where)
    command = _command_for(section, argv, where)

    if section is Section.SERVICES:
        listen = args.get("listen")
        if listen is None:
            raise where.error("listen", "a service needs listen=")
        if not listen:
            raise where.error("listen", "listen= is empty")
        proto = args.get("proto", "tcp").lower()
        if proto not in _PROTOS:
            if proto.startswith("udp"):
                raise where.error("proto", f"{proto!r}: sealmail has no UDP services")
            raise where.error("proto", f"{proto!r} is not one of {', '.join(_PROTOS)}")
        maxchild = _integer(where, "maxchild", args.get("maxchild", "-1"), -1)
        if maxchild == 0:
            raise where.error("maxchild", "0 would never run the service; use -1 for no limit")
        return Service(
            name=raw.name,
            cmd=argv,
            command=command,
            listen=listen,
            proto=proto,
            prefork=_integer(where, "prefork", args.get("prefork", "0"), 0),
            maxchild=maxchild,
            maxfds=_integer(where, "maxfds", args.get("maxfds", "256"), 1),
            maxforkrate=_integer(where, "maxforkrate", args.get("maxforkrate", "0"), 0),
            babysit=_switch(where, "babysit", args.get("babysit", "0")),
            path=where.path,
            line=where.line,
        )
    if section is Section.EVENTS:
        if "period" in args and "at" in args:
            raise where.error("at", "give period= or at=, not both")
        if "period" not in args and "at" not in args:
            raise where.error(None, "an event needs period=MINUTES or at=HHMM")
        period = _integer(where, "period", args["period"], 1) if "period" in args else None
        at = _daily_time(where, args["at"]) if "at" in args else None
        return Event(
            name=raw.name,
            cmd=argv,
            command=command,
            period=period,
            at=at,
            path=where.path,
            line=where.line,
        )
    wait = _switch(where, "wait", args["wait"]) if "wait" in args else False
    return Entry(
        name=raw.name, cmd=argv, command=command, wait=wait, path=where.path, line=where.line
    )


def parse_cyrus_conf(text: str, path: str = "<string>") -> CyrusConf:
    """Parse cyrus.conf text; any wrong line raises ConfigError naming file, line and key."""
    start: list[Entry] = []
    services: list[Service] = []
    events: list[Event] = []
    daemons: list[Entry] = []
    seen: dict[tuple[Section, str], int] = {}
    for raw in _raw_entries(text, path):
        first = seen.get((raw.section, raw.name))
        if first is not None:
            raise raw.where.error(None, f"name already used in {raw.section.value} on line {first}")
        seen[(raw.section, raw.name)] = raw.where.line
        built = _build(raw)
        if isinstance(built, Service):
            services.append(built)
        elif isinstance(built, Event):
            events.append(built)
        elif raw.section is Section.START:
            start.append(built)
        else:
            daemons.append(built)
    return CyrusConf(path=path, start=start, services=services, events=events, daemons=daemons)


def load_cyrus_conf(path: str | os.PathLike[str] = DEFAULT_CYRUS_CONF_PATH) -> CyrusConf:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), 0, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), 0, None, f"not UTF-8 text: {exc.reason}") from None
    return parse_cyrus_conf(text, str(path))
