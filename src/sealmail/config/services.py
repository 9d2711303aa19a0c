"""Service names to TCP ports, for both halves: cyrus.conf `listen=` and the MTA's master.cf
services and `inet:host:service` next hops.

The services file decides first, as getservbyname(3) does for Cyrus and Postfix, so an operator
who wrote `lmtp 2003/tcp` (as CYRUS_README shows) gets 2003. When the file has no line for a mail
service name, IANA's well-known port is used instead and the fact is logged once per name and
file: Debian's /etc/services (netbase) has no `lmtp` line, so the seed's `listen="lmtp"` and
`inet:localhost:lmtp` would otherwise stop a fresh install. Any other name must be in the file;
`UnknownService` names it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DEFAULT_SERVICES_FILE",
    "WELL_KNOWN_MAIL_PORTS",
    "UnknownService",
    "load_services_file",
    "parse_services_file",
    "service_port",
]

log = logging.getLogger("sealmail.config.services")

DEFAULT_SERVICES_FILE = "/etc/services"

# IANA's service name registry, TCP, for the names a mail set-up writes.
WELL_KNOWN_MAIL_PORTS: Mapping[str, int] = {
    "smtp": 25,
    "pop3": 110,
    "imap": 143,
    "imap2": 143,
    "lmtp": 24,
    "submissions": 465,
    "smtps": 465,  # the older name of 465 still in many services files
    "submission": 587,
    "imaps": 993,
    "pop3s": 995,
    "sieve": 4190,
}

# Names already reported, per services file: the fallback is logged once per process.
_reported: set[tuple[str, str]] = set()


class UnknownService(LookupError):
    """A service name that neither the services file nor the well-known mail ports know."""

    def __init__(self, name: str, services_file: str, reason: str) -> None:
        super().__init__(f"unknown service {name!r}: {reason}")
        self.name = name
        self.services_file = services_file


def parse_services_file(text: str) -> dict[tuple[str, str], int]:
    """/etc/services as a map of (name or alias, protocol) -> port; the first line wins.

    Malformed lines are skipped, as the C library's getservbyname does.
    """
    ports: dict[tuple[str, str], int] = {}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) < 2:
            continue
        port_text, _slash, proto = fields[1].partition("/")
        if not (port_text.isascii() and port_text.isdigit()) or not proto:
            continue
        port = int(port_text)
        if port > 65535:
            continue
        for name in (fields[0], *fields[2:]):
            ports.setdefault((name, proto.lower()), port)
    return ports


def load_services_file(path: str | os.PathLike[str]) -> dict[tuple[str, str], int]:
    """Read and parse a services file; OSError if it cannot be read."""
    return parse_services_file(Path(path).read_text(encoding="utf-8", errors="replace"))


def service_port(name: str, services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE) -> int:
    """The TCP port of service `name`: the services file's, else IANA's for a mail service.

    Raises UnknownService when neither knows the name (a file that cannot be read counts as one
    without the name, and the reason says so).
    """
    where = os.fspath(services_file)
    try:
        found = load_services_file(services_file).get((name, "tcp"))
        missing = f"not in {where} for tcp"
    except OSError as exc:
        found = None
        missing = f"cannot read {where} to look up {name!r}: {exc.strerror}"
    if found is not None:
        return found
    port = WELL_KNOWN_MAIL_PORTS.get(name)
    if port is None:
        raise UnknownService(name, where, missing)
    if (name, where) not in _reported:
        _reported.add((name, where))
        log.warning("service %r: %s; using IANA's well-known port %d", name, missing, port)
    return port
