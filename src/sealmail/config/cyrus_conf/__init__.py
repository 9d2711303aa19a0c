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

The parts, one module each: `syntax` (tokens, sections, raw entries), `commands` (cmd= to a
sealmail subcommand), `entries` (the model), `parsing` (checks and builds entries; parse and
load), `render` (back to text) and `listen` (listen= to socket addresses). This package re-exports
what callers use.
"""

from __future__ import annotations

from sealmail.config.cyrus_conf.commands import ServiceCommand
from sealmail.config.cyrus_conf.entries import CyrusConf, Entry, Event, Service
from sealmail.config.cyrus_conf.listen import (
    DEFAULT_UNIX_SOCKET_MODE,
    InetAddress,
    ListenAddress,
    UnixAddress,
    resolve_listen,
    service_addresses,
)
from sealmail.config.cyrus_conf.parsing import (
    DEFAULT_CYRUS_CONF_PATH,
    load_cyrus_conf,
    parse_cyrus_conf,
)
from sealmail.config.cyrus_conf.render import render_cyrus_conf
from sealmail.config.cyrus_conf.syntax import Section
from sealmail.config.services import (
    DEFAULT_SERVICES_FILE,
    load_services_file,
    parse_services_file,
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
