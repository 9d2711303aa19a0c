"""Reading patterns: host patterns, pattern files, client and daemon lists with EXCEPT."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from collections.abc import Callable

from sealmail.config.hosts_access.patterns import (
    HostPattern,
    Pattern,
    PatternList,
    _AddressPrefix,
    _AnyHost,
    _ClientHost,
    _ClientUserAt,
    _Daemon,
    _DomainSuffix,
    _HostName,
    _KnownHost,
    _LocalHost,
    _Network,
    _ParanoidHost,
    _PatternFile,
    _UnknownHost,
    _Wildcard,
)

_HOSTNAME = re.compile(r"[a-z0-9_](?:[a-z0-9_.-]*[a-z0-9_])?", re.ASCII)
_DAEMON = re.compile(r"[a-z0-9_][a-z0-9_.+-]*", re.ASCII)
_WILDCARD = re.compile(r"[a-z0-9_.*?-]+", re.ASCII)
_IPV4 = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}", re.ASCII)
_IPV4_PREFIX = re.compile(r"(?:\d{1,3}\.){1,3}", re.ASCII)
_IPV6_PATTERN = re.compile(r"\[([0-9a-f:.]+)\](?:/(\d{1,3}))?", re.ASCII | re.IGNORECASE)
_LIST_SEPARATOR = re.compile(r"[\s,]+")


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
    if "\0" in path:  # open() would raise ValueError, not OSError (found by fuzz/hosts_allow.py)
        raise _PatternError(f"pattern file {path!r}: not a file name")
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
