"""Reading one hosts.allow or hosts.deny: logical lines, their fields, rules and errors."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sealmail.config.hosts_access.hosts_options import _parse_options
from sealmail.config.hosts_access.pattern_syntax import (
    PatternFileReader,
    _parse_client,
    _parse_daemon,
    _parse_list,
    _PatternError,
)
from sealmail.config.hosts_access.patterns import PatternList, Rule
from sealmail.config.imapd_conf import ConfigError

log = logging.getLogger("sealmail.config.hosts_access")


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
