"""cyrus.conf text from a CyrusConf, the inverse of parsing (`parse(render(x)) == x`)."""

from __future__ import annotations

from sealmail.config.cyrus_conf.entries import CyrusConf
from sealmail.config.cyrus_conf.syntax import Section, _is_name


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
