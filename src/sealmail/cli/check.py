"""`sealmail check [-c MTA_DIR] [-C IMAPD_CONF] [-M CYRUS_CONF] [--json]`: read both halves and
say, file and line, what Postfix's CYRUS_README (the seed) warns about.

The seed's warnings are about the seam between the MTA and the store, which neither half can see
alone: each check below reads main.cf/master.cf (and the tables they name), imapd.conf and
cyrus.conf together.

- `socket`: a `unix:` next hop of an lmtp transport (mailbox_transport, local_transport,
  fallback_transport, transport_maps) that no cyrus.conf lmtpd service listens on; a relative
  path is under queue_directory (seed 2.1 NOTE, 2.1.1). An `inet:` port no service listens on.
- `socket-access`: mail_owner cannot connect to that socket (seed 2.1: "make sure that both the
  user id that Cyrus runs under and the Postfix user id can access the socket").
- `local`: mailbox_transport or fallback_transport set, but master.cf has no `local` service.
- `open-lmtp`: `lmtpd -a` on TCP with no hosts.allow/hosts.deny rule for its service (seed 2.3).
- `password-map`: a password map entry whose key is no next hop of its transport, whose user is
  not in lmtp_admins or not in the sasldb, or a map mail_owner cannot read (seed 2.2.1.2).
- `plaintext`: PLAIN/LOGIN over TCP without TLS, on either side (seed 2.2.1.2).
- `delimiter`: recipient_delimiter set on one side only, or differently (seed 8.1, 8.2).
- `downcase`: lmtp_downcase_rcpt off (seed 8.3).
- `pipe`: a pipe(8) `argv=` program that does not exist, or that `user=` cannot run (seed 3, 9.1).
- `post-right`: a postuser (shared) folder or a user's folder that does not give `anyone` the
  `p` right, so plus-addressed mail goes to the INBOX or is refused (seed 8.1, 8.2).

Exit status 0 when nothing is found, 1 otherwise; 78 when a file cannot be read as configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import grp
import json
import logging
import os
import pwd
import stat
import sys
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from sealmail.config.cyrus_conf import (
    DEFAULT_CYRUS_CONF_PATH,
    CyrusConf,
    InetAddress,
    Service,
    UnixAddress,
    load_cyrus_conf,
    service_addresses,
)
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, MtaConfig, load_mta_config
from sealmail.mta.config.main_cf import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.tables import parse_source, split_spec

TRANSPORT_PARAMETERS = ("mailbox_transport", "local_transport", "fallback_transport")
LMTP_PORT = 24  # an inet next hop without a port (Postfix's lmtp_tcp_port)
# Folders a user keeps for themselves: plus-addressing them is not expected.
PRIVATE_FOLDERS = frozenset({"sent", "drafts", "trash", "junk", "spam", "archive", "templates"})


@dataclass(frozen=True, slots=True)
class Finding:
    path: str
    line: int
    check: str
    message: str

    def render(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else self.path
        return f"{where}: {self.check}: {self.message}"


@dataclass(frozen=True, slots=True)
class NextHop:
    """One `transport:nexthop` value, and where it was written."""

    transport: str
    kind: str  # "unix", "inet" or "" (no next hop: a pipe, local)
    target: str  # the socket path as written, or the host
    port: str | None
    setting: str  # what to call it in a message: `mailbox_transport = ...`
    path: str
    line: int


@dataclass
class Halves:
    mta: MtaConfig | None
    imapd: ImapdConfig | None
    cyrus: CyrusConf | None
    services_file: str = DEFAULT_SERVICES_FILE


# --------------------------------------------------------------------------------------------
# The MTA's next hops


def parse_next_hop(value: str, setting: str, path: str, line: int) -> NextHop | None:
    """`cyrus:unix:/p`, `cyrus-inet:inet:host:port`, `lmtp:[addr]:port`, `cyrus-deliver`."""
    value = value.strip()
    if not value:
        return None
    transport, _, rest = value.partition(":")
    kind, target, port = "", "", None
    if rest.startswith("unix:"):
        kind, target = "unix", rest[len("unix:"):]
    elif rest:
        kind = "inet"
        rest = rest.removeprefix("inet:")
        if rest.startswith("["):
            host, _, tail = rest[1:].partition("]")
            target, port = host, tail.removeprefix(":") or None
        else:
            host, _, tail = rest.partition(":")
            target, port = host, tail or None
    return NextHop(transport, kind, target, port, setting, path, line)


def table_sources(
    mta: MtaConfig, parameter: str, view: MainConfig | None = None
) -> Iterator[Path]:
    """The source files (what postmap reads) of the hash/texthash tables a parameter names."""
    config = mta.main if view is None else view
    for spec in config.maps(parameter):
        kind, name = split_spec(spec)
        if kind in ("hash", "btree", "texthash", "cdb", "lmdb", "sqlite") and name:
            yield Path(name)


def next_hops(mta: MtaConfig) -> list[NextHop]:
    hops: list[NextHop] = []
    for name in TRANSPORT_PARAMETERS:
        entry = mta.main.entry(name)
        if entry is None or not entry.line:
            continue
        value = mta.main.expand_text(entry.value, where=entry.path)
        hop = parse_next_hop(value, f"{name} = {entry.value}", entry.path, entry.line)
        if hop is not None:
            hops.append(hop)
    for source in table_sources(mta, "transport_maps"):
        if not source.is_file():
            continue
        for row in parse_source(source.read_text(errors="replace"), str(source)):
            hop = parse_next_hop(row.value, f"{row.key} {row.value}", str(source), row.line)
            if hop is not None:
                hops.append(hop)
    return hops


def lmtp_transports(mta: MtaConfig) -> set[str]:
    return {s.service for s in mta.master_cf if s.type == "unix" and s.command == "lmtp"}


def socket_path(mta: MtaConfig, hop: NextHop) -> Path:
    """A relative socket name lies under queue_directory, chrooted or not (seed 2.1.1)."""
    path = Path(hop.target)
    if path.is_absolute():
        return path
    return Path(mta.main.get(MAIN.queue_directory)) / path


def hop_port(hop: NextHop, services_file: str) -> int | None:
    if hop.port is None:
        return LMTP_PORT
    if hop.port.isdigit():
        return int(hop.port)
    try:
        return service_port(hop.port, services_file)
    except UnknownService:
        return None


# --------------------------------------------------------------------------------------------
# The store's listeners


@dataclass(frozen=True, slots=True)
class Listener:
    service: Service
    address: UnixAddress | InetAddress

    @property
    def where(self) -> str:
        return f"{self.service.name} at {self.service.path}:{self.service.line}"


def lmtp_listeners(halves: Halves) -> list[Listener]:
    if halves.cyrus is None or halves.imapd is None:
        return []
    found = []
    for service in halves.cyrus.services:
        command = service.command
        if command.subcommand != "lmtpd" and not (
            command.subcommand == "deliver" and "-l" in command.args
        ):
            continue
        for address in service_addresses(service, halves.imapd, halves.services_file):
            if isinstance(address, UnixAddress | InetAddress):
                found.append(Listener(service, address))
    return found


# --------------------------------------------------------------------------------------------
# Accounts and permissions


def account_groups(account: pwd.struct_passwd) -> set[int]:
    return {account.pw_gid} | {g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem}


def permits(account: pwd.struct_passwd, uid: int, gid: int, mode: int, bits: int) -> bool:
    """Whether `account` has the permission `bits` (0o4 read, 0o2 write, 0o1 execute)."""
    if account.pw_uid == 0:
        return bool(bits != 0o1 or mode & 0o111)
    if account.pw_uid == uid:
        return bool(mode & (bits << 6))
    if gid in account_groups(account):
        return bool(mode & (bits << 3))
    return bool(mode & bits)


def blocked_directory(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first existing directory above `path` that `account` cannot enter."""
    for directory in reversed(path.parents):
        try:
            st = directory.stat()
        except OSError:
            return None
        if not permits(account, st.st_uid, st.st_gid, st.st_mode, 0o1):
            return directory
    return None


def mta_account(mta: MtaConfig) -> pwd.struct_passwd | None:
    """The account the MTA's agents run as (mail_owner), when it exists and is not root."""
    try:
        account = pwd.getpwnam(mta.main.get(MAIN.mail_owner))
    except KeyError:
        return None
    return None if account.pw_uid == 0 else account


def describe_mode(uid: int, gid: int, mode: int) -> str:
    try:
        owner = pwd.getpwuid(uid).pw_name
    except KeyError:
        owner = str(uid)
    try:
        group = grp.getgrgid(gid).gr_name
    except KeyError:
        group = str(gid)
    return f"{owner}:{group} {stat.S_IMODE(mode):04o}"


# --------------------------------------------------------------------------------------------
# The checks


def check_sockets(halves: Halves) -> Iterator[Finding]:
    mta = halves.mta
    if mta is None or halves.cyrus is None:
        return
    listeners = lmtp_listeners(halves)
    unix = {listener.address.path: listener for listener in listeners
            if isinstance(listener.address, UnixAddress)}
    ports = {listener.address.port for listener in listeners
             if isinstance(listener.address, InetAddress)}
    lmtp = lmtp_transports(mta)
    account = mta_account(mta)
    for hop in next_hops(mta):
        if hop.transport not in lmtp:
            continue
        if hop.kind == "unix":
            path = socket_path(mta, hop)
            listener = unix.get(path)
            if listener is None:
                yield Finding(hop.path, hop.line, "socket", socket_mismatch(hop, path, unix))
            elif account is not None and isinstance(listener.address, UnixAddress):
                reason = unreachable_socket(listener.address, account)
                if reason:
                    yield Finding(
                        listener.service.path, listener.service.line, "socket-access",
                        f"{account.pw_name} (mail_owner in {mta.directory}/main.cf) cannot "
                        f"connect to {path}, which {hop.setting} names: {reason}",
                    )
        elif hop.kind == "inet":
            port = hop_port(hop, halves.services_file)
            if port is not None and port not in ports:
                yield Finding(
                    hop.path, hop.line, "socket",
                    f"{hop.setting}: no cyrus.conf lmtpd service listens on port {port}"
                    f" ({halves.cyrus.path})",
                )


def socket_mismatch(hop: NextHop, path: Path, unix: dict[Path, Listener]) -> str:
    relative = "" if Path(hop.target).is_absolute() else " (relative: under queue_directory)"
    if unix:
        listening = "; ".join(f"{listener.where} listens on {p}" for p, listener in unix.items())
    else:
        listening = "no lmtpd service in cyrus.conf listens on a UNIX socket"
    return f"{hop.setting}: socket {path}{relative} is not the one in cyrus.conf ({listening})"


def unreachable_socket(address: UnixAddress, account: pwd.struct_passwd) -> str | None:
    blocked = blocked_directory(address.path, account)
    if blocked is not None:
        st = blocked.stat()
        return f"it cannot enter {blocked} ({describe_mode(st.st_uid, st.st_gid, st.st_mode)})"
    try:
        st = address.path.stat()
        uid, gid, mode = st.st_uid, st.st_gid, st.st_mode
    except OSError:
        return predicted_socket(address, account)
    if permits(account, uid, gid, mode, 0o2):
        return None
    return (f"the socket is {describe_mode(uid, gid, mode)}; set unix_socket_group to a group "
            f"of {account.pw_name} (and unix_socket_mode 0660) in imapd.conf")


def predicted_socket(address: UnixAddress, account: pwd.struct_passwd) -> str | None:
    """Not there yet (the store is stopped): judge by unix_socket_mode and unix_socket_group."""
    mode = address.mode
    if mode & 0o002:
        return None
    if address.group is not None:
        try:
            gid = grp.getgrnam(address.group).gr_gid
        except KeyError:
            return f"unix_socket_group {address.group!r} is no group"
        if gid in account_groups(account) and mode & 0o020:
            return None
    return (f"unix_socket_mode {mode:04o} with unix_socket_group {address.group or '(unset)'} "
            f"lets only the store's account in; use a group of {account.pw_name} and 0660")


def check_local_service(halves: Halves) -> Iterator[Finding]:
    mta = halves.mta
    if mta is None or mta.master_cf.get("local") is not None:
        return
    for name in ("mailbox_transport", "fallback_transport"):
        entry = mta.main.entry(name)
        if entry is not None and entry.line and entry.value.strip():
            yield Finding(entry.path, entry.line, "local",
                          f"{name} is used by local(8), but master.cf has no `local` service: "
                          "mail is deferred (add `local unix - n n - - local`)")


def check_open_lmtp(halves: Halves) -> Iterator[Finding]:
    if halves.imapd is None:
        return
    from sealmail.config.hosts_access import HostsAccess

    hosts = HostsAccess.from_config(halves.imapd)
    seen: set[str] = set()
    for listener in lmtp_listeners(halves):
        service = listener.service
        if not isinstance(listener.address, InetAddress) or service.name in seen:
            continue
        seen.add(service.name)
        trusting = "-a" in service.command.args or service.command.subcommand == "deliver"
        if not trusting:
            continue
        verdict = hosts.check(service.name, "192.0.2.1")
        if verdict.allowed and verdict.rule is None:
            yield Finding(service.path, service.line, "open-lmtp",
                          f"{service.name}: {' '.join(service.cmd)} on TCP takes mail without "
                          f"SASL, and hosts.allow/hosts.deny have no rule for {service.name}: "
                          "anyone who can connect can deliver (seed 2.3, 7)")


def check_password_maps(halves: Halves) -> Iterator[Finding]:
    mta = halves.mta
    if mta is None:
        return
    hops = next_hops(mta)
    account = mta_account(mta)
    users = sasldb_users(halves.imapd)
    for service in mta.master_cf:
        if service.command != "lmtp":
            continue
        view = mta.service(service.service, service.type)
        if not view.get(MAIN.lmtp_sasl_auth_enable):
            continue
        keys = set()
        for hop in hops:
            if hop.transport == service.service and hop.kind == "inet":
                keys.add(map_key(hop.target))
                if hop.port:
                    keys.add(map_key(f"{hop.target}:{hop.port}"))
        for source in table_sources(mta, "lmtp_sasl_password_maps", view):
            yield from check_password_map(halves, service.service, source, keys, account, users)


def map_key(text: str) -> str:
    """A next hop as a password map key is compared: case-folded, brackets dropped."""
    return text.lower().replace("[", "").replace("]", "")


def check_password_map(
    halves: Halves,
    transport: str,
    source: Path,
    hops: set[str],
    account: pwd.struct_passwd | None,
    users: set[str] | None,
) -> Iterator[Finding]:
    if not source.is_file():
        yield Finding(str(source), 0, "password-map", f"{transport}: no such file")
        return
    if account is not None:
        yield from unreadable_map(source, account)
    for row in parse_source(source.read_text(errors="replace"), str(source)):
        if map_key(row.key) not in hops:
            shown = ", ".join(sorted(hops)) or "none"
            yield Finding(str(source), row.line, "password-map",
                          f"key {row.key!r} matches no next hop of {transport} ({shown}): the "
                          "client does not authenticate and the store answers 530")
        user = row.value.partition(":")[0]
        yield from password_map_user(halves.imapd, users, user, source, row.line)


def unreadable_map(source: Path, account: pwd.struct_passwd) -> Iterator[Finding]:
    for path in (source, source.with_name(source.name + ".sqlite")):
        try:
            st = path.stat()
        except OSError:
            continue
        if path != source and not permits(account, st.st_uid, st.st_gid, st.st_mode, 0o4):
            yield Finding(str(path), 0, "password-map",
                          f"{account.pw_name} (mail_owner) cannot read it "
                          f"({describe_mode(st.st_uid, st.st_gid, st.st_mode)}): every delivery "
                          f"through it is deferred; chgrp {account.pw_name} and chmod 0640")


def password_map_user(
    imapd: ImapdConfig | None, users: set[str] | None, user: str, source: Path, line: int
) -> Iterator[Finding]:
    if imapd is None or not user:
        return
    admins = imapd.lmtp_admins
    if user not in admins:
        yield Finding(str(source), line, "password-map",
                      f"user {user!r} is not in lmtp_admins ({' '.join(admins) or 'none'}) of "
                      f"{imapd.path}")
    if users is not None and user not in users:
        yield Finding(str(source), line, "password-map",
                      f"user {user!r} is not in the sasldb ({imapd.get(IMAPD.sasl_sasldb_path)})")


def sasldb_users(imapd: ImapdConfig | None) -> set[str] | None:
    """Canonical names in the sasldb, or None when it cannot be read (then nothing is said)."""
    if imapd is None or "auxprop" not in (imapd.get(IMAPD.sasl_pwcheck_method) or ("auxprop",)):
        return None
    from sealmail.auth.sasldb import SaslDB, SaslDBError

    path = Path(imapd.get(IMAPD.sasl_sasldb_path) or "")
    if not path.is_file():
        return set()
    try:
        entries = SaslDB.from_config(imapd).entries()
    except (SaslDBError, OSError):
        return None
    return {entry.identity.canonical(imapd.servername) for entry in entries}


def _lmtp_allowplaintext(imapd: ImapdConfig) -> bool:
    """lmtp_allowplaintext, which follows allowplaintext while unset."""
    lmtp = imapd.get(IMAPD.lmtp_allowplaintext)
    return imapd.get(IMAPD.allowplaintext) if lmtp is None else lmtp


def check_plaintext(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is not None and not imapd.get(IMAPD.tls_server_cert):
        allowed = _lmtp_allowplaintext(imapd)
        tcp = [listener for listener in lmtp_listeners(halves)
               if isinstance(listener.address, InetAddress)
               and "-a" not in listener.service.command.args]
        if allowed and tcp:
            name = "lmtp_allowplaintext" if "lmtp_allowplaintext" in imapd.lines else (
                "allowplaintext")
            yield Finding(imapd.path, imapd.lines.get(name, 0), "plaintext",
                          f"{name}: PLAIN and LOGIN are offered over TCP ({tcp[0].where}) "
                          "without TLS (no tls_server_cert): set lmtp_allowplaintext: no")
    mta = halves.mta
    if mta is None:
        return
    for service in mta.master_cf:
        if service.command != "lmtp":
            continue
        view = mta.service(service.service, service.type)
        if not view.get(MAIN.lmtp_sasl_auth_enable):
            continue
        options = list(view.get(MAIN.lmtp_sasl_security_options))
        level = view.get(MAIN.lmtp_tls_security_level).strip()
        if "noplaintext" not in options and level not in ("encrypt", "verify", "secure"):
            yield Finding(service.path, service.line, "plaintext",
                          f"{service.service}: lmtp_sasl_security_options "
                          f"{','.join(options) or '(empty)'} allows PLAIN without TLS: add "
                          "noplaintext or -o lmtp_tls_security_level=encrypt")


def check_delimiter(halves: Halves) -> Iterator[Finding]:
    mta, imapd = halves.mta, halves.imapd
    if mta is None or imapd is None:
        return
    ours = mta.main.get(MAIN.recipient_delimiter).strip()
    theirs = imapd.get(IMAPD.recipient_delimiter) or ""
    entry = mta.main.entry(MAIN.recipient_delimiter)
    if ours and ours != theirs and entry is not None:
        yield Finding(entry.path, entry.line, "delimiter",
                      f"recipient_delimiter = {ours} here, but the store's is "
                      f"{theirs or '(none)'} ({imapd.where(IMAPD.recipient_delimiter)})")
    elif not ours and "recipient_delimiter" in imapd.lines:
        yield Finding(imapd.path, imapd.lines["recipient_delimiter"], "delimiter",
                      f"recipient_delimiter: {theirs} in the store, but not in "
                      f"{mta.directory}/main.cf (seed 8.1)")
    elif not ours and imapd.get(IMAPD.postuser):
        yield Finding(imapd.path, imapd.lines.get("postuser", 0), "delimiter",
                      f"postuser: {imapd.get(IMAPD.postuser)} needs recipient_delimiter in "
                      f"{mta.directory}/main.cf (seed 8.2)")


def check_downcase(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is not None and not imapd.get(IMAPD.lmtp_downcase_rcpt):
        yield Finding(imapd.path, imapd.lines.get("lmtp_downcase_rcpt", 0), "downcase",
                      "lmtp_downcase_rcpt is off: mail for User@domain is refused while the MTA "
                      "accepts it (seed 8.3)")


def check_pipes(halves: Halves) -> Iterator[Finding]:
    if halves.mta is None:
        return
    for service in halves.mta.master_cf:
        if service.command != "pipe":
            continue
        attributes, argv = pipe_arguments(service.args)
        reason = pipe_problem(attributes.get("user", ""), argv)
        if reason:
            yield Finding(service.path, service.line, "pipe", f"{service.service}: {reason}")


def pipe_arguments(args: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    attributes: dict[str, str] = {}
    argv: list[str] = []
    for arg in args:
        if argv:
            argv.append(arg)
        elif arg.startswith("argv="):
            argv.append(arg[len("argv="):])
        else:
            name, _, value = arg.partition("=")
            attributes[name] = value
    return attributes, argv


def pipe_problem(user: str, argv: list[str]) -> str | None:
    if not argv or not argv[0]:
        return "no argv="
    name = user.partition(":")[0]
    if not name:
        return "no user= (pipe(8) needs one)"
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return f"user={name}: no such account"
    if account.pw_uid == 0:
        return f"user={name}: pipe(8) refuses to run commands as root"
    program = Path(argv[0])
    if not program.is_absolute() or not program.exists():
        return (f"argv={argv[0]}: no such file (the seed's /usr/cyrus/bin/deliver is "
                "`sealmail deliver -C IMAPD_CONF`)")
    for path in runnable_chain(program):
        why = cannot_run(path, account)
        if why:
            return f"user={name} cannot run {argv[0]}: {why}"
    return None


def runnable_chain(program: Path) -> list[Path]:
    """The program, and the interpreter its #! line names (a console script's Python)."""
    chain = [program]
    try:
        with program.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return chain
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words:
            chain.append(Path(words[0]))
    return chain


def cannot_run(path: Path, account: pwd.struct_passwd) -> str | None:
    blocked = blocked_directory(path, account)
    if blocked is not None:
        st = blocked.stat()
        return f"it cannot enter {blocked} ({describe_mode(st.st_uid, st.st_gid, st.st_mode)})"
    real = path.resolve()
    blocked = blocked_directory(real, account)
    if blocked is not None:
        return f"{path} is {real}, and it cannot enter {blocked}"
    try:
        st = real.stat()
    except OSError:
        return f"{path} does not exist"
    if not permits(account, st.st_uid, st.st_gid, st.st_mode, 0o1):
        return f"{real} is not executable by it ({describe_mode(st.st_uid, st.st_gid, st.st_mode)})"
    return None


def check_post_rights(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is None or not imapd.configdirectory.is_dir():
        return
    postuser = imapd.get(IMAPD.postuser) or ""
    separator = "."  # internal names, whatever unixhierarchysep shows clients
    for name, rights in folder_rights(imapd):
        parts = name.split(separator)
        if parts[0] == "user":
            if len(parts) < 3 or parts[-1].lower() in PRIVATE_FOLDERS or "p" in rights:
                continue
            plus = f"{parts[1]}+{separator.join(parts[2:])}"
            yield Finding(imapd.path, 0, "post-right",
                          f"mailbox {name}: no p right for anyone: mail to {plus} goes to the "
                          f"INBOX (sealmail mailbox setacl {name} anyone p)")
        elif postuser and "p" not in rights:
            yield Finding(imapd.path, imapd.lines.get("postuser", 0), "post-right",
                          f"mailbox {name}: no p right for anyone: mail to {postuser}+{name} "
                          f"is refused (sealmail mailbox setacl {name} anyone p)")


def folder_rights(imapd: ImapdConfig) -> list[tuple[str, str]]:
    """(mailbox, rights of anonymous) for every mailbox, read as the store's account: the store
    must not get files owned by root (a child switches when we are root)."""
    from sealmail.privileges import store_account

    account = store_account(imapd)
    if account is None or account.uid == os.geteuid():
        return list_rights(imapd)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            from sealmail.privileges import switch_to

            switch_to(account)
            os.write(write, json.dumps(list_rights(imapd)).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    try:
        return [(str(name), str(rights)) for name, rights in json.loads(data or b"[]")]
    except ValueError:
        return []


def list_rights(imapd: ImapdConfig) -> list[tuple[str, str]]:
    from sealmail.store.acl import rights_of
    from sealmail.store.backends import open_store

    try:
        store = open_store(imapd)
    except Exception:  # an unreadable store: nothing to say about its folders
        return []
    try:
        return [(info.name, rights_of(info.acl, "anonymous", is_admin=False))
                for info in store.list_mailboxes()]
    finally:
        store.close()


CHECKS = (
    check_sockets,
    check_local_service,
    check_open_lmtp,
    check_password_maps,
    check_plaintext,
    check_delimiter,
    check_downcase,
    check_pipes,
    check_post_rights,
)


def run_checks(halves: Halves) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(halves)]


# --------------------------------------------------------------------------------------------
# The command


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="mta_dir", metavar="MTA_DIR", default=None,
                        help=f"the MTA's configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-C", dest="config", metavar="IMAPD_CONF", default=None,
                        help=f"the store's imapd.conf (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("-M", dest="cyrus_conf", metavar="CYRUS_CONF", default=None,
                        help=f"the store's cyrus.conf (default {DEFAULT_CYRUS_CONF_PATH})")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def load_halves(args: argparse.Namespace) -> Halves:
    """Each half that is there: a file named on the command line must exist."""
    mta_dir = args.mta_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    imapd_path = args.config or DEFAULT_CONFIG_PATH
    cyrus_path = args.cyrus_conf or DEFAULT_CYRUS_CONF_PATH
    named = {"mta": args.mta_dir, "imapd": args.config, "cyrus": args.cyrus_conf}
    for key, path in (("mta", Path(mta_dir) / "main.cf"), ("imapd", Path(imapd_path)),
                      ("cyrus", Path(cyrus_path))):
        if named[key] and not path.exists():
            raise FileNotFoundError(str(path))
    mta = load_mta_config(mta_dir) if (Path(mta_dir) / "main.cf").exists() else None
    imapd = load_imapd_conf(imapd_path) if Path(imapd_path).exists() else None
    cyrus = load_cyrus_conf(cyrus_path) if Path(cyrus_path).exists() else None
    return Halves(mta, imapd, cyrus)


@contextlib.contextmanager
def only_warnings() -> Iterator[None]:
    """What the loaders log at a daemon's start (old names, and so on) is no finding: keep
    sealmail's loggers to warnings meanwhile, and give the level back (tests run commands
    in-process)."""
    logger = logging.getLogger("sealmail")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(args: argparse.Namespace) -> int:
    with only_warnings():
        return check(args)


def check(args: argparse.Namespace) -> int:
    try:
        halves = load_halves(args)
    except FileNotFoundError as exc:
        print(f"sealmail check: {exc}: no such file", file=sys.stderr)
        return 78
    findings = run_checks(halves)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.render())
    return 1 if findings else 0
