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

The parts, one module each: `patterns` (endpoints, host patterns, lists and rules, and how they
match), `pattern_syntax` (reading patterns and lists), `hosts_options` (a rule's options),
`rules` (reading one file) and `decision` (`HostsAccess`). This package re-exports what callers
use.
"""

from __future__ import annotations

from sealmail.config.hosts_access.decision import HostsAccess, Verdict
from sealmail.config.hosts_access.pattern_syntax import PatternFileReader
from sealmail.config.hosts_access.patterns import (
    LOOPBACK_NAME,
    Connection,
    Endpoint,
    HostPattern,
    IPAddress,
    IPNetwork,
    Pattern,
    PatternList,
    Rule,
    endpoint,
)
from sealmail.config.hosts_access.rules import HostsAccessError, ParsedFile, parse_hosts_file

__all__ = [
    "LOOPBACK_NAME",
    "Connection",
    "Endpoint",
    "HostPattern",
    "HostsAccess",
    "HostsAccessError",
    "IPAddress",
    "IPNetwork",
    "ParsedFile",
    "Pattern",
    "PatternFileReader",
    "PatternList",
    "Rule",
    "Verdict",
    "endpoint",
    "parse_hosts_file",
]
