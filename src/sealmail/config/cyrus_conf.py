"""cyrus.conf, the file that tells `sealmail master` what to run, as Cyrus writes it.

Theory of operation
-------------------
The file is a list of sections, ``START``, ``SERVICES``, ``EVENTS`` and ``DAEMON``, each a brace
block of entries, one entry per line::

    SERVICES {
        lmtpunix  cmd="lmtpd" listen="/var/imap/socket/lmtp" prefork=1
    }

An entry is a name (letters and digits only, as in Cyrus) and ``key=value`` arguments; a value is
a bare word or a double-quoted string (no escapes inside, as in Cyrus). ``#`` outside quotes starts
a comment that runs to the end of the line. A backslash as the last character of a line joins the
next line to it, so a long entry may be split; the entry keeps the number of its first line.
Section names are matched without regard to case, and a section may appear more than once (its
entries are added to the earlier ones).

Parsing is strict where Cyrus's master is lax, because master must not start half-configured:
every wrong line raises :class:`~sealmail.config.imapd_conf.ConfigError` naming the file, the
line, the key and what is wrong -- an unknown key, a number that is not one, a name used twice in
one section, a command sealmail does not have, an unknown section, an unclosed brace.

``cmd=`` is split like a shell would (:func:`shlex.split`) and mapped to one of sealmail's
subcommands (:class:`ServiceCommand`); absolute paths to Cyrus's binaries are mapped by their
basename so an operator's existing lines keep working.

``listen=`` stays raw in :class:`Service` and is turned into socket addresses by
:func:`resolve_listen`, which needs the configdirectory (relative socket paths) and the services
file (service names); host names are kept as written and resolved by the caller at bind time.
"""

from __future__ import annotations

import ipaddress
import os
import posixpath
import shlex
import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import time
from enum import Enum
from pathlib import Path

from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.config.schema import parse_switch
from sealmail.config.services import (
    DEFAULT_SERVICES_FILE,
    UnknownService,
    load_services_file,
    parse_services_file,
    service_port,
)

__all__ = [
    "DEFAULT_CYRUS_CONF_PATH",
    "DEFAULT_SERVICES_FILE",
    "DEFAULT_UNIX_SOCKET_MODE",
    "CyrusConf",
    "Entry",
    "Event",
    "InetAddress",
    "ListenAddress",
    "Section",
    "Service",
    "ServiceCommand",
    "UnixAddress",
    "load_cyrus_conf",
    "load_services_file",
    "parse_cyrus_conf",
    "parse_services_file",
    "render_cyrus_conf",
    "resolve_listen",
    "service_addresses",
]

DEFAULT_CYRUS_CONF_PATH = "/etc/sealmail/cyrus.conf"
# Owner and group may connect; the group is the one the MTA runs in (see resolve_listen).
DEFAULT_UNIX_SOCKET_MODE = 0o660

# Linux's sockaddr_un.sun_path holds 108 bytes including the terminating NUL.
_UNIX_PATH_MAX = 107


class Section(Enum):
    START = "START"
    SERVICES = "SERVICES"
    EVENTS = "EVENTS"
    DAEMON = "DAEMON"


# --------------------------------------------------------------------------------------------
# Commands


# Program name as an operator writes it (basename) -> sealmail subcommand, per section. SERVICES
# get a connection; START and EVENTS run a tool to completion. DAEMON has no sealmail program yet.
_SECTION_PROGRAMS: Mapping[Section, Mapping[str, str]] = {
    Section.SERVICES: {
        "lmtpd": "lmtpd",
        "imapd": "imapd",
        "pop3d": "pop3d",
        "sieved": "sieved",
        "timsieved": "sieved",  # Cyrus's name for its ManageSieve daemon
        "deliver": "deliver",
        "cyrdeliver": "deliver",  # Debian renames Cyrus's deliver
    },
    Section.START: {"expire": "expire", "cyr_expire": "expire", "reconstruct": "reconstruct"},
    Section.EVENTS: {"expire": "expire", "cyr_expire": "expire", "reconstruct": "reconstruct"},
    Section.DAEMON: {},
}

# Cyrus programs an operator's file may name that sealmail deliberately does not have; they get
# their own message so the operator knows to drop the line rather than look for a typo.
_CYRUS_ONLY_PROGRAMS = frozenset(
    {
        "ctl_cyrusdb",
        "ctl_deliver",
        "ctl_mboxlist",
        "tls_prune",
        "idled",
        "notifyd",
        "httpd",
        "nntpd",
        "fud",
        "squatter",
        "mupdate",
        "ptloader",
        "smmapd",
        "backupd",
        "calalarmd",
        "cyr_dbtool",
        "sync_client",
        "sync_server",
        "lmtpproxyd",
        "proxyd",
        "pop3proxyd",
    }
)

# Debian ships Cyrus's tools behind one multiplexer: `/usr/sbin/cyrus ctl_cyrusdb -r`.
_MULTIPLEXERS = frozenset({"cyrus"})


@dataclass(frozen=True, slots=True)
class ServiceCommand:
    """What to run for an entry: `sealmail <subcommand> *args`.

    `written` is the program as the file names it (`/usr/cyrus/bin/deliver`), for messages.
    """

    subcommand: str
    args: tuple[str, ...]
    written: str

    @property
    def argv(self) -> tuple[str, ...]:
        """The arguments after `sealmail`."""
        return (self.subcommand, *self.args)


def _split_command(raw: str, where: _Where) -> tuple[str, ...]:
    try:
        argv = tuple(shlex.split(raw, comments=False, posix=True))
    except ValueError as exc:
        raise where.error("cmd", f"cannot split command {raw!r}: {exc}") from None
    if not argv:
        raise where.error("cmd", "the command is empty")
    return argv


def _command_for(section: Section, argv: tuple[str, ...], where: _Where) -> ServiceCommand:
    """Map a cmd= argv to a sealmail subcommand, or say why this line cannot run."""
    written, args = argv[0], argv[1:]
    program = posixpath.basename(written)
    if program in _MULTIPLEXERS and args:
        written = f"{written} {args[0]}"
        program, args = posixpath.basename(args[0]), args[1:]
    known = _SECTION_PROGRAMS[section]
    subcommand = known.get(program)
    if subcommand is None:
        if program in _CYRUS_ONLY_PROGRAMS:
            message = (
                f"{program!r} is a Cyrus program that sealmail does not have; "
                "remove or comment out this entry"
            )
        elif any(program in table for table in _SECTION_PROGRAMS.values()):
            message = f"{program!r} cannot run from the {section.value} section"
        else:
            choices = ", ".join(sorted(set(known.values()))) or "none yet"
            message = f"unknown command {program!r}; the {section.value} section can run: {choices}"
        raise where.error("cmd", message)
    if subcommand == "deliver" and section is Section.SERVICES and "-l" not in args:
        # Without -l deliver reads one message, not an LMTP session, so it cannot serve a socket.
        raise where.error("cmd", "deliver serves a socket only in LMTP mode; add -l")
    return ServiceCommand(subcommand=subcommand, args=tuple(args), written=written)


# --------------------------------------------------------------------------------------------
# Entries


@dataclass(frozen=True, slots=True)
class Entry:
    """A START or DAEMON entry: a command run once before services (START) or kept running."""

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    wait: bool = False  # DAEMON only: start it, and wait for it to be ready, before services
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Service:
    """A SERVICES entry: master listens on `listen` and runs `cmd` for connections.

    `babysit` asks master to keep at least one process forked (Cyrus also raises a zero
    maxforkrate to 10 then); the values are kept as written and master applies them.
    """

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    listen: str
    proto: str = "tcp"
    prefork: int = 0
    maxchild: int = -1  # -1: unlimited
    maxfds: int = 256
    maxforkrate: int = 0  # 0: no limit
    babysit: bool = False
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)

    def addresses(
        self,
        configdirectory: Path,
        services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
        *,
        unix_mode: int = DEFAULT_UNIX_SOCKET_MODE,
        unix_group: str | None = None,
    ) -> list[ListenAddress]:
        """This service's sockets; a bad listen= is reported at this entry's file and line."""
        return resolve_listen(
            self.listen,
            self.proto,
            configdirectory,
            services_file,
            unix_mode=unix_mode,
            unix_group=unix_group,
            path=self.path,
            line=self.line,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An EVENTS entry: a command run every `period` minutes, or daily at `at`."""

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    period: int | None = None
    at: time | None = None
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class CyrusConf:
    path: str
    start: list[Entry]
    services: list[Service]
    events: list[Event]
    daemons: list[Entry]

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)


# --------------------------------------------------------------------------------------------
# Tokens


@dataclass(frozen=True, slots=True)
class _Where:
    path: str
    line: int
    entry: str | None = None

    def error(self, key: str | None, message: str) -> ConfigError:
        if self.entry is not None:
            message = f"{message} (entry {self.entry!r})"
        return ConfigError(self.path, self.line, key, message)


class _Kind(Enum):
    WORD = "word"  # a bare word: section or entry name
    ARG = "arg"  # key=value
    OPEN = "{"
    CLOSE = "}"
    END = "end of line"


@dataclass(frozen=True, slots=True)
class _Token:
    kind: _Kind
    line: int
    text: str = ""
    value: str = ""


_DELIMITERS = frozenset(' \t\r\f\v\n{}#"')


def _tokens(text: str, path: str) -> Iterator[_Token]:
    """Words, key=value pairs, braces and line ends, with comments and continuations removed."""
    i, line, n = 0, 1, len(text)
    while i < n:
        char = text[i]
        if char == "\n":
            yield _Token(_Kind.END, line)
            line += 1
            i += 1
        elif char == "\\" and text.startswith(("\n", "\r\n"), i + 1):
            # A continuation: the next physical line belongs to this logical line.
            i += 2 if text[i + 1] == "\n" else 3
            line += 1
        elif char in " \t\r\f\v":
            i += 1
        elif char == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
        elif char in "{}":
            yield _Token(_Kind.OPEN if char == "{" else _Kind.CLOSE, line, char)
            i += 1
        elif char == '"':
            raise ConfigError(path, line, None, "a quoted value must follow 'key='")
        else:
            start = i
            while i < n and text[i] not in _DELIMITERS and text[i] != "=":
                if text[i] == "\\" and text.startswith(("\n", "\r\n"), i + 1):
                    break
                i += 1
            word = text[start:i]
            if i < n and text[i] == "=":
                i += 1
                if i < n and text[i] == '"':
                    close = text.find('"', i + 1)
                    newline = text.find("\n", i + 1)
                    if close < 0 or (0 <= newline < close):
                        raise ConfigError(path, line, word, 'missing closing " in quoted value')
                    value = text[i + 1 : close]
                    i = close + 1
                    continues = text.startswith(("\\\n", "\\\r\n"), i)
                    if i < n and text[i] not in _DELIMITERS and not continues:
                        raise ConfigError(
                            path, line, word, "a quoted value must be followed by a space"
                        )
                else:
                    vstart = i
                    while i < n and text[i] not in _DELIMITERS:
                        if text[i] == "\\" and text.startswith(("\n", "\r\n"), i + 1):
                            break
                        i += 1
                    value = text[vstart:i]
                    if i < n and text[i] == '"':
                        raise ConfigError(path, line, word, "a quote inside an unquoted value")
                yield _Token(_Kind.ARG, line, word, value)
            else:
                yield _Token(_Kind.WORD, line, word)
    yield _Token(_Kind.END, line)


# --------------------------------------------------------------------------------------------
# Parsing

_SECTION_KEYS: Mapping[Section, frozenset[str]] = {
    Section.START: frozenset({"cmd"}),
    Section.SERVICES: frozenset(
        {"cmd", "listen", "proto", "prefork", "maxchild", "maxfds", "maxforkrate", "babysit"}
    ),
    Section.EVENTS: frozenset({"cmd", "period", "at"}),
    Section.DAEMON: frozenset({"cmd", "wait"}),
}

_PROTOS = ("tcp", "tcp4", "tcp6")


def _is_name(word: str) -> bool:
    return word.isascii() and word.isalnum()


@dataclass
class _RawEntry:
    section: Section
    name: str
    where: _Where
    args: dict[str, str]


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


def _raw_entries(text: str, path: str) -> Iterator[_RawEntry]:
    """Walk the tokens: section headers, brace blocks and the entries inside them."""
    tokens = _tokens(text, path)
    section: Section | None = None
    opened_at = 0
    entry: _RawEntry | None = None
    pending_header: tuple[Section, int] | None = None
    for token in tokens:
        if section is None:
            # Between sections: a header word, then '{' (on the same or a later line).
            if pending_header is not None:
                if token.kind is _Kind.END:
                    continue
                if token.kind is _Kind.OPEN:
                    section, opened_at = pending_header
                    pending_header = None
                    continue
                name = pending_header[0].value
                raise ConfigError(path, token.line, None, f"expected '{{' after {name}")
            if token.kind is _Kind.END:
                continue
            if token.kind is _Kind.WORD:
                try:
                    pending_header = (Section(token.text.upper()), token.line)
                except ValueError:
                    known = ", ".join(s.value for s in Section)
                    raise ConfigError(
                        path,
                        token.line,
                        None,
                        f"unknown section {token.text!r}; expected one of {known}",
                    ) from None
                continue
            what = f"'{token.text}'" if token.kind is not _Kind.ARG else f"{token.text}="
            raise ConfigError(
                path, token.line, None, f"{what} outside a section; expected a section name"
            )

        # Inside a section.
        if token.kind is _Kind.END or token.kind is _Kind.CLOSE:
            if entry is not None:
                yield entry
                entry = None
            if token.kind is _Kind.CLOSE:
                section = None
            continue
        if token.kind is _Kind.OPEN:
            raise ConfigError(path, token.line, None, f"'{{' inside the {section.value} section")
        if entry is None:
            if token.kind is _Kind.ARG:
                raise ConfigError(path, token.line, token.text, "an entry must start with its name")
            if not _is_name(token.text):
                bad = next((c for c in token.text if not (c.isascii() and c.isalnum())), "?")
                raise ConfigError(
                    path,
                    token.line,
                    None,
                    f"bad character {bad!r} in entry name {token.text!r}; "
                    "names are letters and digits only",
                )
            entry = _RawEntry(section, token.text, _Where(path, token.line, token.text), {})
            continue
        if token.kind is _Kind.WORD:
            raise entry.where.error(None, f"expected key=value, got {token.text!r}")
        key = token.text
        if not _is_name(key):
            raise entry.where.error(key, f"bad key {key!r}; keys are letters and digits only")
        if key in entry.args:
            raise entry.where.error(key, "given twice")
        entry.args[key] = token.value
    if section is not None:
        raise ConfigError(
            path,
            opened_at,
            None,
            f"the {section.value} section opened here is not closed with '}}'",
        )
    if pending_header is not None:
        raise ConfigError(
            path, pending_header[1], None, f"expected '{{' after {pending_header[0].value}"
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


def _shell_join(argv: tuple[str, ...]) -> str:
    """Like shlex.join, but never with a double quote, which the cmd="..." value cannot hold."""
    words = []
    for arg in argv:
        if arg and all(c.isascii() and (c.isalnum() or c in "@%+=:,./-_") for c in arg):
            words.append(arg)
        else:
            words.append("'" + arg.replace("'", "'\\''") + "'")
    return " ".join(words)


def render_cyrus_conf(conf: CyrusConf) -> str:
    """cyrus.conf text for `conf` (used by `sealmail up` and the round-trip tests).

    Only values that differ from the defaults are written. A value that the format cannot hold
    (a double quote or a line break; Cyrus has no escapes) raises ValueError.
    """

    def quoted(key: str, value: str) -> str:
        if '"' in value or "\n" in value or "\r" in value:
            raise ValueError(f"{key}= cannot hold a double quote or a line break: {value!r}")
        return f'{key}="{value}"'

    def head(name: str, cmd: tuple[str, ...]) -> list[str]:
        if not _is_name(name):
            raise ValueError(f"entry name {name!r} is not letters and digits")
        return [name, quoted("cmd", _shell_join(cmd))]

    lines: list[str] = []

    def block(section: Section, rows: list[list[str]]) -> None:
        if not rows:
            return
        lines.append(f"{section.value} {{")
        lines.extend("    " + " ".join(row) for row in rows)
        lines.append("}")

    block(Section.START, [head(e.name, e.cmd) for e in conf.start])
    service_rows = []
    for s in conf.services:
        row = [*head(s.name, s.cmd), quoted("listen", s.listen)]
        if s.proto != "tcp":
            row.append(f"proto={s.proto}")
        for key, value, default in (
            ("prefork", s.prefork, 0),
            ("maxchild", s.maxchild, -1),
            ("maxfds", s.maxfds, 256),
            ("maxforkrate", s.maxforkrate, 0),
        ):
            if value != default:
                row.append(f"{key}={value}")
        if s.babysit:
            row.append("babysit=1")
        service_rows.append(row)
    block(Section.SERVICES, service_rows)
    event_rows = []
    for e in conf.events:
        row = head(e.name, e.cmd)
        if e.period is not None:
            row.append(f"period={e.period}")
        if e.at is not None:
            row.append(f"at={e.at.hour:02d}{e.at.minute:02d}")
        event_rows.append(row)
    block(Section.EVENTS, event_rows)
    block(
        Section.DAEMON,
        [[*head(d.name, d.cmd), *(["wait=1"] if d.wait else [])] for d in conf.daemons],
    )
    return "\n".join(lines) + "\n" if lines else ""


# --------------------------------------------------------------------------------------------
# listen=


@dataclass(frozen=True, slots=True)
class UnixAddress:
    """A UNIX-domain socket; master creates it with `mode` and, if set, `group`.

    The group is how the MTA's user reaches lmtpd (CYRUS_README: "make sure that both the user id
    that Cyrus runs under and the Postfix user id can access the socket").
    """

    path: Path
    mode: int = DEFAULT_UNIX_SOCKET_MODE
    group: str | None = None


@dataclass(frozen=True, slots=True)
class InetAddress:
    """A TCP address to listen on.

    `host` is None for every interface. A host *name* is kept as written (not resolved here) and
    `family` is then AF_UNSPEC under proto=tcp: master resolves it when it binds, so a name that
    does not resolve fails at start-up with the resolver's error, not while reading the file.
    """

    host: str | None
    port: int
    family: socket.AddressFamily

    def sockaddrs(self) -> list[tuple[socket.AddressFamily, tuple[object, ...]]]:
        """(family, sockaddr) pairs to bind, resolving a host name now (may raise OSError)."""
        infos = socket.getaddrinfo(
            self.host, self.port, self.family, socket.SOCK_STREAM, 0, socket.AI_PASSIVE
        )
        seen: list[tuple[socket.AddressFamily, tuple[object, ...]]] = []
        for family, _type, _proto, _name, sockaddr in infos:
            pair = (family, tuple(sockaddr))
            if pair not in seen:
                seen.append(pair)
        return seen


ListenAddress = UnixAddress | InetAddress

_FAMILIES: Mapping[str, tuple[socket.AddressFamily, ...]] = {
    "tcp": (socket.AF_INET, socket.AF_INET6),
    "tcp4": (socket.AF_INET,),
    "tcp6": (socket.AF_INET6,),
}


def _port(text: str, services_file: str | os.PathLike[str], where: _Where) -> int:
    if not text:
        raise where.error("listen", "no port or service name")
    if text.isascii() and text.isdigit():
        port = int(text)
        if port > 65535:
            raise where.error("listen", f"port {port} is out of range (0-65535)")
        return port
    if not (text.isascii() and text[0].isalpha() and all(c.isalnum() or c in "-_.+" for c in text)):
        raise where.error("listen", f"{text!r} is neither a port number nor a service name")
    try:
        return service_port(text, services_file)
    except UnknownService as exc:
        raise where.error("listen", str(exc)) from None


def _host_name_ok(host: str) -> bool:
    if not host.isascii() or len(host) > 253:
        return False
    labels = host.removesuffix(".").split(".")
    return all(
        0 < len(label) <= 63
        and all(c.isalnum() or c in "-_" for c in label)
        and not label.startswith("-")
        for label in labels
    )


def _split_host(listen: str, where: _Where) -> tuple[str | None, str]:
    """`[addr]:port`, `host:port`, `*:port` or a bare port/service -> (host or None, port)."""
    if listen.startswith("["):
        close = listen.find("]")
        if close < 0:
            raise where.error("listen", f"{listen!r}: missing ']' after the address")
        host, rest = listen[1:close], listen[close + 1 :]
        if not rest.startswith(":"):
            raise where.error("listen", f"{listen!r}: expected [address]:port")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise where.error("listen", f"{host!r} in brackets is not an IP address") from None
        return host, rest[1:]
    colons = listen.count(":")
    if colons == 0:
        return None, listen
    if colons > 1:
        raise where.error("listen", f"{listen!r}: write an IPv6 address in brackets, as [::1]:port")
    host, _colon, port = listen.partition(":")
    if not host:
        raise where.error("listen", f"{listen!r}: no host before ':'")
    return (None if host == "*" else host), port


def resolve_listen(
    listen: str,
    proto: str,
    configdirectory: Path,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
    *,
    unix_mode: int = DEFAULT_UNIX_SOCKET_MODE,
    unix_group: str | None = None,
    path: str = "<listen>",
    line: int = 0,
) -> list[ListenAddress]:
    """The sockets a listen= value names, in the forms cyrus.conf(5) and CYRUS_README use.

    - a value with '/' is a UNIX socket; a relative one lies under `configdirectory`;
    - `port`, `service`, `*:port`: every interface, both families unless proto narrows them;
    - `host:port`, `host:service`, `[addr]:port`: one interface.

    A service name is looked up in `services_file` for tcp, so `lmtp` is whatever that file says
    (2003 in the one CYRUS_README shows); a mail service name the file lacks (Debian's has no
    `lmtp`) gets IANA's port (sealmail.config.services). Port 0 asks the kernel for a free port.
    Errors are ConfigError at `path`:`line`, key `listen` (or `proto`).
    """
    where = _Where(path, line)
    families = _FAMILIES.get(proto)
    if families is None:
        raise where.error("proto", f"{proto!r} is not one of {', '.join(_PROTOS)}")
    if not listen:
        raise where.error("listen", "listen= is empty")
    if "\0" in listen:
        raise where.error("listen", "a NUL byte in listen=")
    if "/" in listen:
        # proto does not apply to UNIX sockets; Cyrus ignores it there, and so do we.
        socket_path = Path(listen)
        if not socket_path.is_absolute():
            socket_path = configdirectory / socket_path
        if len(os.fsencode(socket_path)) > _UNIX_PATH_MAX:
            raise where.error(
                "listen",
                f"UNIX socket path {str(socket_path)!r} is longer than {_UNIX_PATH_MAX} bytes",
            )
        return [UnixAddress(socket_path, unix_mode, unix_group)]
    host, port_text = _split_host(listen, where)
    port = _port(port_text, services_file, where)
    if host is None:
        return [InetAddress(None, port, family) for family in families]
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        if not _host_name_ok(host):
            raise where.error("listen", f"{host!r} is not a host name") from None
        family = families[0] if len(families) == 1 else socket.AF_UNSPEC
        return [InetAddress(host, port, family)]
    family = socket.AF_INET if literal.version == 4 else socket.AF_INET6
    if family not in families:
        raise where.error(
            "proto", f"proto={proto} excludes {host}, an IPv{literal.version} address"
        )
    return [InetAddress(host, port, family)]


def service_addresses(
    service: Service,
    config: ImapdConfig,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
) -> list[ListenAddress]:
    """A service's sockets as imapd.conf places them: relative paths under configdirectory,
    UNIX sockets with unix_socket_mode and unix_socket_group."""
    return service.addresses(
        config.configdirectory,
        services_file,
        unix_mode=config.get(IMAPD.unix_socket_mode),
        unix_group=config.get(IMAPD.unix_socket_group),
    )
