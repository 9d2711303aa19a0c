"""cmd=: which sealmail subcommand an entry runs, mapped from the program the file names."""

from __future__ import annotations

import posixpath
import shlex
from collections.abc import Mapping
from dataclasses import dataclass

from sealmail.config.cyrus_conf.syntax import Section, _Where

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
    # sweep: the PostgreSQL store's unnamed blobs (docs/scale-out.md); every node may list it.
    Section.EVENTS: {"expire": "expire", "cyr_expire": "expire", "reconstruct": "reconstruct",
                     "sweep": "sweep"},
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
