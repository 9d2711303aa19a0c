"""tcp_wrappers access control: hosts.allow and hosts.deny (hosts_access(5), hosts_options(5)).

Theory of operation
-------------------
Each file holds rules ``daemon_list : client_list [: option : option ...]``. A connection to
``daemon`` from ``client_ip`` (arriving on ``server_ip``) is decided by the first rule that matches,
searching hosts.allow first and then hosts.deny:

* a rule in hosts.allow grants, a rule in hosts.deny refuses, unless the rule carries an ``ALLOW``
  or ``DENY`` option (hosts_options(5)), which decides whatever file it is in;
* no matching rule grants.

The files are parsed once into matchers (networks are ``ipaddress`` objects, names are lowered), so
`HostsAccess.check` is a walk over a short list. `HostsAccess.load` remembers each file's stamp and
`check` re-reads when one changes, so the servers call it per connection and edits take effect
without a restart.

Three choices where tcp_wrappers itself leaves room:

* **No DNS and no ident.** We never look a client up. A loopback client (127.0.0.0/8, ::1) has the
  name ``localhost``; every other client has no name. So name patterns (``host.example.com``,
  ``.example.com``) only ever match ``localhost``; ``LOCAL`` and ``KNOWN`` match loopback clients;
  ``UNKNOWN`` matches every other client; ``PARANOID`` never matches. A client's user name is always
  unknown, so ``ALL@host`` and ``UNKNOWN@host`` match like ``host``, any other ``user@host`` never.
* **Fail closed.** A line we cannot read exactly (bad pattern, unknown option, unbalanced bracket,
  unreadable pattern file, NIS netgroup) is reported in `HostsAccess.errors` and refuses every
  connection to the daemons that line names -- or to all daemons if its daemon list is unreadable --
  whatever the other rules say. A typo in hosts.deny must never open the door.
* **No commands.** ``spawn`` and ``twist`` are never run. ``twist`` replaces the service under
  tcpd, so the client never reaches the real daemon: a matching ``twist`` rule refuses. The other
  options (banners, severity, nice, ...) are accepted and ignored with one warning per line.
"""

from __future__ import annotations

import contextlib
import fnmatch
import functools
import ipaddress
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD

log = logging.getLogger("sealmail.config.hosts_access")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: The name a loopback client gets without DNS; see the module docstring.
LOOPBACK_NAME = "localhost"

_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?", re.ASCII)
_DAEMON = re.compile(r"[a-z0-9_][a-z0-9_.+-]*", re.ASCII)
_WILDCARD = re.compile(r"[a-z0-9_.*?-]+", re.ASCII)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}", re.ASCII)
_IPV4_PREFIX = re.compile(r"(?:\d{1,3}\.){1,3}", re.ASCII)
_IPV6_PATTERN = re.compile(r"\[([0-9a-f:.]+)\](?:/(\d{1,3}))?", re.ASCII | re.IGNORECASE)
_LIST_SEPARATOR = re.compile(r"[\s,]+")


class HostsAccessError(ConfigError):
    """A rule that cannot be read; connections to the daemons it names are refused.

    `daemons` is the rule's daemon list when that part could be read, None when it could not (then
    every daemon is refused).
    """

    def __init__(self, path: str, line: int, message: str, daemons: PatternList | None) -> None:
        super().__init__(path, line, None, message)
        self.message = message
        self.daemons = daemons

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one connection; `rule` is the ``file:line`` that decided (None: no match)."""

    allowed: bool
    rule: str | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One side of a connection as patterns see it (no DNS: see the module docstring)."""

    address: IPAddress | None
    text: str
    name: str | None


@dataclass(frozen=True, slots=True)
class Connection:
    """What the rules are matched against."""

    daemon: str
    client: Endpoint
    server: Endpoint


_UNKNOWN_ENDPOINT = Endpoint(None, "unknown", None)


@functools.lru_cache(maxsize=4096)
def endpoint(text: str | None) -> Endpoint:
    """The endpoint for an address text; anything that is not an IP address is an unknown host.

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, what a dual-stack socket reports) are seen as
    the IPv4 address, so ``192.0.2.`` patterns keep working on ``::`` listeners.
    """
    if not text:
        return _UNKNOWN_ENDPOINT
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    text = text.partition("%")[0]
    try:
        address: IPAddress = ipaddress.ip_address(text)
    except ValueError:
        return _UNKNOWN_ENDPOINT
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return Endpoint(address, str(address), LOOPBACK_NAME if address.is_loopback else None)


class Pattern(Protocol):
    """One list element; it looks at whichever side of the connection it is about."""

    def matches(self, connection: Connection) -> bool: ...


class HostPattern(Protocol):
    def matches_host(self, host: Endpoint) -> bool: ...


# -- host patterns (client list, and the host part of daemon@host) ----------------------------


@dataclass(frozen=True, slots=True)
class _AnyHost:
    def matches_host(self, host: Endpoint) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class _LocalHost:
    """LOCAL: a host whose name has no dot; without DNS only loopback has a name."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.name is not None and "." not in host.name


@dataclass(frozen=True, slots=True)
class _KnownHost:
    """KNOWN: both name and address known; without DNS, loopback clients only."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is not None and host.name is not None


@dataclass(frozen=True, slots=True)
class _UnknownHost:
    """UNKNOWN: name or address unknown; without DNS, every client but loopback."""

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is None or host.name is None


@dataclass(frozen=True, slots=True)
class _ParanoidHost:
    """PARANOID: name and address disagree; it takes a DNS lookup to tell, and we make none."""

    def matches_host(self, host: Endpoint) -> bool:
        return False


@dataclass(frozen=True, slots=True)
class _Network:
    """An address, ``net/mask``, ``net/prefixlen``, ``[v6]`` or ``[v6net]/prefixlen``."""

    network: IPNetwork

    def matches_host(self, host: Endpoint) -> bool:
        return host.address is not None and host.address in self.network


@dataclass(frozen=True, slots=True)
class _AddressPrefix:
    """``192.168.``: the address's first numeric fields."""

    prefix: str

    def matches_host(self, host: Endpoint) -> bool:
        return isinstance(host.address, ipaddress.IPv4Address) and host.text.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class _DomainSuffix:
    """``.example.com``: the name's last components."""

    suffix: str

    def matches_host(self, host: Endpoint) -> bool:
        return host.name is not None and host.name.endswith(self.suffix)


@dataclass(frozen=True, slots=True)
class _HostName:
    name: str

    def matches_host(self, host: Endpoint) -> bool:
        return host.name == self.name


@dataclass(frozen=True, slots=True)
class _Wildcard:
    """``*`` and ``?`` against the name or the address text."""

    pattern: str

    def matches_host(self, host: Endpoint) -> bool:
        if host.address is not None and fnmatch.fnmatchcase(host.text, self.pattern):
            return True
        return host.name is not None and fnmatch.fnmatchcase(host.name, self.pattern)


@dataclass(frozen=True, slots=True)
class _PatternFile:
    """``/path``: any of the host patterns listed in that file."""

    path: str
    patterns: tuple[HostPattern, ...]

    def matches_host(self, host: Endpoint) -> bool:
        return any(p.matches_host(host) for p in self.patterns)


# -- list elements ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ClientHost:
    host: HostPattern

    def matches(self, connection: Connection) -> bool:
        return self.host.matches_host(connection.client)


@dataclass(frozen=True, slots=True)
class _ClientUserAt:
    """``user@host``: we make no ident (RFC 1413) query, so the user is always unknown."""

    user_matches_unknown: bool
    host: HostPattern

    def matches(self, connection: Connection) -> bool:
        return self.user_matches_unknown and self.host.matches_host(connection.client)


@dataclass(frozen=True, slots=True)
class _Daemon:
    """A daemon name (None: ALL), optionally ``@host``: the local endpoint it was reached on."""

    name: str | None
    server: HostPattern | None = None

    def matches(self, connection: Connection) -> bool:
        if self.name is not None and self.name != connection.daemon:
            return False
        return self.server is None or self.server.matches_host(connection.server)


@dataclass(frozen=True, slots=True)
class PatternList:
    """``a b EXCEPT c EXCEPT d``: any of the first group, unless the (nested) exception matches."""

    patterns: tuple[Pattern, ...]
    exceptions: PatternList | None = None

    def matches(self, connection: Connection) -> bool:
        if not any(p.matches(connection) for p in self.patterns):
            return False
        return self.exceptions is None or not self.exceptions.matches(connection)


@dataclass(frozen=True, slots=True)
class Rule:
    """One readable line. `decision` is None when the file decides (allow file grants)."""

    path: str
    line: int
    daemons: PatternList
    clients: PatternList
    decision: bool | None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"

    def matches(self, connection: Connection) -> bool:
        return self.daemons.matches(connection) and self.clients.matches(connection)


# -- parsing ------------------------------------------------------------------------------------


class _PatternError(ValueError):
    """A field cannot be read; becomes a HostsAccessError with the file and line."""


PatternFileReader = Callable[[str], str]


def _parse_host(token: str, read_file: PatternFileReader | None) -> HostPattern:
    """One host pattern, as hosts_access(5) lists them (case does not matter)."""
    lowered = token.lower()
    keyword = _HOST_KEYWORDS.get(lowered)
    if keyword is not None:
        return keyword
    if token.startswith("/"):
        if read_file is None:
            raise _PatternError(f"{token!r}: a pattern file cannot name another pattern file")
        return _parse_pattern_file(token, read_file)
    if token.startswith("@"):
        raise _PatternError(f"{token!r}: NIS netgroups are not supported")
    if token.startswith("["):
        return _parse_ipv6(token)
    if "/" in token:
        return _parse_ipv4_network(token)
    if "*" in token or "?" in token:
        if lowered.startswith(".") or lowered.endswith(".") or not _WILDCARD.fullmatch(lowered):
            raise _PatternError(
                f"{token!r}: wildcards go in plain names or addresses, not in .domain or net. forms"
            )
        return _Wildcard(lowered)
    if token.endswith("."):
        if not _IPV4_PREFIX.fullmatch(token) or any(int(f) > 255 for f in token[:-1].split(".")):
            raise _PatternError(f"{token!r}: expected leading address fields such as 192.168.")
        return _AddressPrefix(token)
    if token.startswith("."):
        if not _HOSTNAME.fullmatch(lowered[1:]):
            raise _PatternError(f"{token!r}: not a domain name")
        return _DomainSuffix(lowered)
    if _IPV4.fullmatch(token):
        try:
            return _Network(ipaddress.ip_network(token))
        except ValueError:
            raise _PatternError(f"{token!r}: not an IPv4 address") from None
    if _HOSTNAME.fullmatch(lowered):
        return _HostName(lowered)
    raise _PatternError(f"{token!r}: not a host pattern")


_HOST_KEYWORDS: dict[str, HostPattern] = {
    "all": _AnyHost(),
    "local": _LocalHost(),
    "known": _KnownHost(),
    "unknown": _UnknownHost(),
    "paranoid": _ParanoidHost(),
}


def _parse_ipv6(token: str) -> _Network:
    """``[2001:db8::1]`` or ``[2001:db8::]/32``: brackets keep the colons out of the field split."""
    match = _IPV6_PATTERN.fullmatch(token)
    if match is None:
        raise _PatternError(f"{token!r}: expected [IPv6 address] or [IPv6 network]/prefixlen")
    address, length = match.group(1), match.group(2)
    try:
        if not isinstance(ipaddress.ip_address(address), ipaddress.IPv6Address):
            raise _PatternError(f"{token!r}: brackets are for IPv6; write IPv4 addresses bare")
        network = ipaddress.ip_network(f"{address}/{length}" if length else address)
    except ValueError as exc:
        raise _PatternError(f"{token!r}: {exc}") from None
    return _Network(network)


def _parse_ipv4_network(token: str) -> _Network:
    """``net/mask`` or ``net/prefixlen``; host bits in `net` are a mistake, not a wider match."""
    net, _, mask = token.partition("/")
    if not _IPV4.fullmatch(net) or not (mask.isdigit() or _IPV4.fullmatch(mask)):
        raise _PatternError(f"{token!r}: expected net/mask or net/prefixlen (10.0.0.0/8)")
    if "." in mask:
        try:
            value = int(ipaddress.IPv4Address(mask))
        except ValueError:
            raise _PatternError(f"{token!r}: {mask!r} is not a netmask") from None
        inverted = ~value & 0xFFFFFFFF
        if inverted & (inverted + 1):
            raise _PatternError(f"{token!r}: {mask!r} is not a netmask (its bits must be leading)")
    try:
        return _Network(ipaddress.IPv4Network(token))
    except ValueError as exc:
        hint = ""
        with contextlib.suppress(ValueError):
            hint = f"; did you mean {ipaddress.IPv4Network(token, strict=False)}?"
        raise _PatternError(f"{token!r}: {exc}{hint}") from None


def _parse_pattern_file(path: str, read_file: PatternFileReader) -> _PatternFile:
    """A file of host patterns separated by white space; ``#`` starts a comment line."""
    try:
        text = read_file(path)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise _PatternError(f"pattern file {path}: cannot read: {reason}") from None
    patterns: list[HostPattern] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if line.lstrip().startswith("#"):
            continue
        for token in _LIST_SEPARATOR.split(line.strip()):
            if not token:
                continue
            if "@" in token.lstrip("@") or token.lower() == "except":
                raise _PatternError(f"pattern file {path}:{number}: {token!r}: only host patterns")
            try:
                patterns.append(_parse_host(token, None))
            except _PatternError as exc:
                raise _PatternError(f"pattern file {path}:{number}: {exc}") from None
    return _PatternFile(path, tuple(patterns))


def _parse_client(token: str, read_file: PatternFileReader) -> Pattern:
    user, at, host = token[1:].partition("@")
    if at:
        user = token[0] + user
        upper = user.upper()
        if not host:
            raise _PatternError(f"{token!r}: expected user@host")
        # ALL and UNKNOWN match the unknown user; KNOWN and names need an ident answer.
        return _ClientUserAt(upper in ("ALL", "UNKNOWN"), _parse_host(host, read_file))
    return _ClientHost(_parse_host(token, read_file))


def _parse_daemon(token: str, read_file: PatternFileReader) -> Pattern:
    name, at, host = token.partition("@")
    lowered = name.lower()
    if lowered != "all" and not _DAEMON.fullmatch(lowered):
        raise _PatternError(f"{token!r}: not a daemon name")
    if at and not host:
        raise _PatternError(f"{token!r}: expected daemon@host")
    server = _parse_host(host, read_file) if at else None
    return _Daemon(None if lowered == "all" else lowered, server)


def _parse_list(
    text: str, element: Callable[[str, PatternFileReader], Pattern], read_file: PatternFileReader
) -> PatternList:
    """Blank- or comma-separated patterns; ``EXCEPT`` nests to the right, as in tcpd."""
    groups: list[list[Pattern]] = [[]]
    for token in _LIST_SEPARATOR.split(text.strip()):
        if not token:
            continue
        if token.upper() == "EXCEPT":
            if not groups[-1]:
                raise _PatternError("EXCEPT needs patterns on both sides")
            groups.append([])
        else:
            groups[-1].append(element(token, read_file))
    if not groups[-1]:
        raise _PatternError(
            "EXCEPT needs patterns on both sides" if len(groups) > 1 else "empty list"
        )
    result: PatternList | None = None
    for group in reversed(groups):
        result = PatternList(tuple(group), result)
    assert result is not None
    return result


def _split_fields(line: str) -> tuple[str, str | None, str | None, str | None]:
    """``daemons : clients : options``; colons inside ``[...]`` (IPv6) do not split.

    The last item is a bracket problem, if any; the fields before it are still good, so a bad
    client list refuses only the daemons its line names.
    """
    depth = 0
    cuts: list[int] = []
    problem: str | None = None
    for index, char in enumerate(line):
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                problem = "unbalanced ']'"
                break
        elif char == ":" and depth == 0:
            cuts.append(index)
            if len(cuts) == 2:
                break
    else:
        if depth != 0:
            problem = "unbalanced '['"
    if not cuts:
        return line, None, None, problem
    if len(cuts) == 1:
        return line[: cuts[0]], line[cuts[0] + 1 :], None, problem
    return line[: cuts[0]], line[cuts[0] + 1 : cuts[1]], line[cuts[1] + 1 :], problem


# hosts_options(5): the option name, and whether it takes a value (True), must not (False), or may.
_OPTION_VALUES: dict[str, bool | None] = {
    "allow": False,
    "deny": False,
    "twist": True,
    "spawn": True,
    "keepalive": False,
    "linger": True,
    "rfc931": None,
    "banners": True,
    "nice": None,
    "setenv": True,
    "umask": True,
    "user": True,
    "group": True,
    "severity": True,
}
# hosts_options(5): "These options must appear at the end of a rule."
_LAST_OPTIONS = frozenset({"allow", "deny", "twist"})


def _split_options(text: str) -> list[str]:
    r"""Options are separated by ``:``; ``\:`` keeps a colon inside a value."""
    options: list[str] = []
    current: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == ":":
            current.append(":")
            index += 2
            continue
        if char == ":":
            options.append("".join(current))
            current = []
        else:
            current.append(char)
        index += 1
    options.append("".join(current))
    return options


def _parse_options(text: str) -> tuple[bool | None, list[str]]:
    """The rule's decision (True ALLOW, False DENY or twist, None none) and the ignored options."""
    decision: bool | None = None
    ignored: list[str] = []
    options = _split_options(text)
    for position, raw in enumerate(options):
        option = raw.strip()
        match = re.match(r"([^\s=]*)\s*(?:=\s*)?(.*)", option, re.DOTALL)
        assert match is not None
        name, value = match.group(1).lower(), match.group(2).strip()
        if not name:
            raise _PatternError("missing option name")
        if name not in _OPTION_VALUES:
            raise _PatternError(f"unknown option {match.group(1)!r}")
        takes = _OPTION_VALUES[name]
        if takes is False and value:
            raise _PatternError(f"option {name!r} takes no value")
        if takes is True and not value:
            raise _PatternError(f"option {name!r} needs a value")
        if name in _LAST_OPTIONS and position != len(options) - 1:
            raise _PatternError(f"option {name!r} must be the last field of the rule")
        if name == "allow":
            decision = True
        elif name in ("deny", "twist"):
            decision = False
            if name == "twist":
                ignored.append("twist (not run; the client is refused)")
        elif name == "spawn":
            ignored.append("spawn (not run)")
        else:
            ignored.append(name)
    return decision, ignored


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """One file's readable rules, unreadable lines, warnings and the pattern files it read."""

    rules: tuple[Rule, ...]
    errors: tuple[HostsAccessError, ...]
    warnings: tuple[str, ...]
    pattern_files: tuple[str, ...]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Lines with backslash-newline joined (tcpd drops both characters), numbered by first line."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.rstrip("\r")
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        lines.append((start, "".join(pending)))
        pending = []
    if pending:
        lines.append((start, "".join(pending)))
    return lines


def parse_hosts_file(
    text: str, path: str, read_pattern_file: PatternFileReader | None = None
) -> ParsedFile:
    """Parse one hosts.allow or hosts.deny text; never raises on its content.

    `read_pattern_file` gives the text of a ``/path`` pattern file (raising OSError when it cannot);
    without one, a pattern file is an error on its line.
    """

    def no_files(name: str) -> str:
        raise FileNotFoundError(0, "pattern files are not available here", name)

    seen: list[str] = []

    def reader(name: str) -> str:
        seen.append(name)
        return (read_pattern_file or no_files)(name)

    rules: list[Rule] = []
    errors: list[HostsAccessError] = []
    warnings: list[str] = []
    for number, line in _logical_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        daemons: PatternList | None = None
        try:
            daemon_text, client_text, option_text, problem = _split_fields(stripped)
            if problem and client_text is None:
                raise _PatternError(problem)
            daemons = _parse_list(daemon_text, _parse_daemon, reader)
            if problem:
                raise _PatternError(problem)
            if client_text is None:
                raise _PatternError("expected 'daemon_list : client_list', missing ':'")
            clients = _parse_list(client_text, _parse_client, reader)
            decision, ignored = (None, []) if option_text is None else _parse_options(option_text)
        except _PatternError as exc:
            error = HostsAccessError(path, number, str(exc), daemons)
            log.error("%s (refusing %s)", error, "those daemons" if daemons else "all daemons")
            errors.append(error)
            continue
        rules.append(Rule(path, number, daemons, clients, decision))
        if ignored:
            warning = f"{path}:{number}: options ignored: {', '.join(ignored)}"
            log.warning("%s", warning)
            warnings.append(warning)
    return ParsedFile(tuple(rules), tuple(errors), tuple(warnings), tuple(dict.fromkeys(seen)))


# -- the access table ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Table:
    allow: tuple[Rule, ...]
    deny: tuple[Rule, ...]
    errors: tuple[HostsAccessError, ...]
    warnings: tuple[str, ...]


_Stamp = tuple[int, int, int] | None


def _stamp(path: str) -> _Stamp:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8", errors="replace") as handle:
        return handle.read()


class HostsAccess:
    """hosts.allow then hosts.deny, first match wins; see the module docstring."""

    def __init__(self, allow: ParsedFile, deny: ParsedFile) -> None:
        self._table = _table(allow, deny)
        self._paths: tuple[str, str] | None = None
        self._stamps: dict[str, _Stamp] = {}

    @classmethod
    def parse(
        cls,
        allow_text: str,
        deny_text: str,
        *,
        allow_path: str = "hosts.allow",
        deny_path: str = "hosts.deny",
        pattern_files: Mapping[str, str] | None = None,
    ) -> HostsAccess:
        """From texts (no I/O); `pattern_files` holds the ``/path`` files the rules may name."""
        files = dict(pattern_files or {})

        def read(name: str) -> str:
            if name not in files:
                raise FileNotFoundError(2, "No such file or directory", name)
            return files[name]

        return cls(
            parse_hosts_file(allow_text, allow_path, read),
            parse_hosts_file(deny_text, deny_path, read),
        )

    @classmethod
    def load(
        cls, allow_path: str | os.PathLike[str], deny_path: str | os.PathLike[str]
    ) -> HostsAccess:
        """From the two files (a missing file is empty); re-read by `check` when they change."""
        access = cls(ParsedFile((), (), (), ()), ParsedFile((), (), (), ()))
        access._paths = (os.fspath(allow_path), os.fspath(deny_path))
        access._reload()
        return access

    @classmethod
    def from_config(cls, config: ImapdConfig) -> HostsAccess:
        """From the ``hosts_allow`` and ``hosts_deny`` options of imapd.conf."""
        return cls.load(
            config.get(IMAPD.hosts_allow) or "/etc/hosts.allow",
            config.get(IMAPD.hosts_deny) or "/etc/hosts.deny",
        )

    @property
    def errors(self) -> tuple[HostsAccessError, ...]:
        self._refresh()
        return self._table.errors

    @property
    def warnings(self) -> tuple[str, ...]:
        self._refresh()
        return self._table.warnings

    def check(self, daemon: str, client_ip: str, server_ip: str | None = None) -> Verdict:
        """May `client_ip` use `daemon` (reached on `server_ip`)?

        An address text that is not an IP address (a UNIX socket's peer, say) is an unknown host:
        only ALL and UNKNOWN match it.
        """
        self._refresh()
        table = self._table
        connection = Connection(daemon.lower(), endpoint(client_ip), endpoint(server_ip))
        for error in table.errors:
            if error.daemons is None or error.daemons.matches(connection):
                return Verdict(False, error.where)
        for rule in table.allow:
            if rule.matches(connection):
                return Verdict(rule.decision is not False, rule.where)
        for rule in table.deny:
            if rule.matches(connection):
                return Verdict(rule.decision is True, rule.where)
        return Verdict(True, None)

    def _refresh(self) -> None:
        """Re-read when a file (or a pattern file) changed: one stat per watched file."""
        if self._paths is None:
            return
        for path, stamp in self._stamps.items():
            if _stamp(path) != stamp:
                self._reload()
                return

    def _reload(self) -> None:
        assert self._paths is not None
        stamps: dict[str, _Stamp] = {}
        parsed: list[ParsedFile] = []
        for path in self._paths:
            stamps[path] = _stamp(path)
            try:
                text = _read_text(path)
            except FileNotFoundError:
                parsed.append(ParsedFile((), (), (), ()))
                continue
            except OSError as exc:
                error = HostsAccessError(path, 0, f"cannot read: {exc.strerror}", None)
                log.error("%s (refusing all daemons)", error)
                parsed.append(ParsedFile((), (error,), (), ()))
                continue
            result = parse_hosts_file(text, path, _read_text)
            for name in result.pattern_files:
                stamps[name] = _stamp(name)
            parsed.append(result)
        self._table = _table(parsed[0], parsed[1])
        self._stamps = stamps


def _table(allow: ParsedFile, deny: ParsedFile) -> _Table:
    return _Table(
        allow.rules, deny.rules, allow.errors + deny.errors, allow.warnings + deny.warnings
    )
