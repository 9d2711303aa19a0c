"""Checks of the sockets between the halves and who may reach them (seed 2.1, 2.1.1, 2.3)."""

from __future__ import annotations

import grp
import pwd
import stat
from collections.abc import Iterator
from pathlib import Path

from sealmail.cli.check.model import (
    Finding,
    Halves,
    Listener,
    NextHop,
    hop_port,
    lmtp_listeners,
    lmtp_transports,
    next_hops,
    socket_path,
)
from sealmail.config.cyrus_conf import (
    InetAddress,
    UnixAddress,
)
from sealmail.mta.config.instance import MtaConfig
from sealmail.mta.config.parameters import MAIN


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
