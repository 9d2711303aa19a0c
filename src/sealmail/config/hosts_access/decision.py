"""The access decision: hosts.allow then hosts.deny, first match wins, re-read on change."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass

from sealmail.config.hosts_access.patterns import Connection, Rule, endpoint
from sealmail.config.hosts_access.rules import HostsAccessError, ParsedFile, parse_hosts_file
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD

log = logging.getLogger("sealmail.config.hosts_access")


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer for one connection; `rule` is the ``file:line`` that decided (None: no match)."""

    allowed: bool
    rule: str | None


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
    """hosts.allow then hosts.deny, first match wins; see the package docstring."""

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
