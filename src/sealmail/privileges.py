"""Which account a program serves as, and the one way to switch to it.

A daemon started by root keeps root only as long as it needs it: to bind its listeners (and, for
the store's master, to bind again on SIGHUP and to watch its workers). Whatever parses input from
the network, or writes the store, runs as an unprivileged account: for the store, imapd.conf's
`cyrus_user`/`cyrus_group` (Cyrus's become_cyrus()). A program not started by root runs as itself
and says so once. An account that is root (uid or gid 0) is refused unless the configuration sets
`allow_root_services`, which tests and single-user set-ups may use and which is logged loudly.

Two ways to run as the account, never mixed up:
- a child process: `Account.credentials()` gives subprocess's user=/group=/extra_groups= (the
  child switches between fork and exec; nothing of the parent runs as root after exec);
- the process itself: `switch_to(account)` (setgroups, then setgid, then setuid: after setuid
  the others are no longer allowed), checked afterwards; only a program's entry point calls it.
"""

from __future__ import annotations

import grp
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig

log = logging.getLogger("sealmail.privileges")


class AccountError(Exception):
    """An unknown account or group; `is_group` says which."""

    def __init__(self, message: str, *, is_group: bool = False) -> None:
        super().__init__(message)
        self.is_group = is_group


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...]  # supplementary groups, as initgroups(3) sets them

    @property
    def is_root(self) -> bool:
        return self.uid == 0 or self.gid == 0

    def describe(self) -> str:
        try:
            group = grp.getgrgid(self.gid).gr_name
        except KeyError:
            group = str(self.gid)
        return f"{self.name} (uid {self.uid}, group {group})"

    def credentials(self) -> dict[str, Any]:
        """subprocess arguments that start a child as this account (none when not root)."""
        if os.geteuid() != 0:
            return {}
        return {"user": self.uid, "group": self.gid, "extra_groups": list(self.groups)}

    def chown(self, path: Path) -> None:
        """Give `path` to this account (a no-op unless we are root)."""
        if os.geteuid() == 0:
            os.chown(path, self.uid, self.gid)


def lookup_account(user: str, group: str | None = None) -> Account:
    """The account named `user` (a name or a uid), in `group` or its primary group."""
    try:
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
    except KeyError:
        raise AccountError(f"unknown account {user!r}") from None
    gid = entry.pw_gid
    if group:
        try:
            gid = grp.getgrgid(int(group)).gr_gid if group.isdigit() else grp.getgrnam(group).gr_gid
        except KeyError:
            raise AccountError(f"unknown group {group!r}", is_group=True) from None
    groups = tuple(sorted(set(os.getgrouplist(entry.pw_name, gid))))
    return Account(entry.pw_name, entry.pw_uid, gid, groups)


def current_account() -> Account:
    uid = os.geteuid()
    try:
        name = pwd.getpwuid(uid).pw_name
    except KeyError:
        name = str(uid)
    return Account(name, uid, os.getegid(), tuple(os.getgroups()))


def store_account(config: ImapdConfig, *, warn_level: int = logging.WARNING) -> Account | None:
    """The account the store serves as when we are root (None when we are not: we run as
    ourselves); ConfigError naming the option when it is unknown, or root without the opt-in.
    Root with the opt-in is logged at `warn_level` (lowered only where standard error is a
    reply channel, as deliver's in pipe mode)."""
    from sealmail.config.options import IMAPD

    if os.geteuid() != 0:
        return None
    user = config.get(IMAPD.cyrus_user) or "cyrus"
    group = config.get(IMAPD.cyrus_group)
    try:
        account = lookup_account(user, group)
    except AccountError as exc:
        raise config.error(IMAPD.cyrus_group if exc.is_group else IMAPD.cyrus_user,
                           str(exc)) from None
    if account.is_root:
        option = IMAPD.cyrus_user if account.uid == 0 else IMAPD.cyrus_group
        if not config.get(IMAPD.allow_root_services):
            raise config.error(
                option,
                f"{account.describe()} is root: the store's services never run as root; name "
                "an unprivileged account (or set allow_root_services: 1, for tests and "
                "single-user set-ups only)",
            )
        log.log(
            warn_level,
            "allow_root_services is set: the store's services run as %s, and parse network "
            "input with root's privileges",
            account.describe(),
        )
    return account


def announce(
    program: str, account: Account | None, more: str = "", level: int = logging.INFO
) -> None:
    """The one log line saying which account a program runs as."""
    if account is None:
        log.log(
            level,
            "%s runs as %s: not started by root, so it does not switch accounts",
            program,
            current_account().describe(),
        )
    else:
        log.log(level, "%s runs as %s%s", program, account.describe(), more)


def switch_to(account: Account) -> None:
    """Become `account` for good, or raise PermissionError (checked, not assumed)."""
    if os.geteuid() != 0:
        if os.geteuid() == account.uid:
            return
        raise PermissionError(f"cannot become {account.describe()}: not running as root")
    os.setgroups(list(account.groups))
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    if os.getresuid() != (account.uid,) * 3 or os.getresgid() != (account.gid,) * 3:
        raise PermissionError(f"switching to {account.describe()} did not take")
    if account.uid != 0:
        try:
            os.setuid(0)
        except PermissionError:
            pass
        else:
            raise PermissionError(f"root regained after switching to {account.describe()}")
    os.environ["HOME"] = _home_of(account)
    os.environ["USER"] = os.environ["LOGNAME"] = account.name


def _home_of(account: Account) -> str:
    try:
        return pwd.getpwuid(account.uid).pw_dir or "/"
    except KeyError:
        return "/"


def ensure_directory(
    path: Path, account: Account | None, mode: int = 0o750, *, check_owner: bool = True
) -> None:
    """Create `path` (and missing parents), what we create owned by `account`; with
    `check_owner`, an existing directory the account does not own is reported, since the
    services will fail to write there."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    path.mkdir(mode=mode, parents=True, exist_ok=True)
    if account is None:
        return
    for created in missing:
        account.chown(created)
    if check_owner and not missing and os.geteuid() == 0:
        owner = path.stat().st_uid
        if owner != account.uid:
            log.warning(
                "%s belongs to uid %d, not %s: the services may fail to write there "
                "(chown -R %s %s)",
                path,
                owner,
                account.describe(),
                account.name,
                path,
            )


def make_store_directories(config: ImapdConfig, account: Account | None) -> None:
    """The store's top directories (configdirectory, partitions, sievedir), made by root for
    the account the services run as; what lies below, the services make themselves."""
    from sealmail.config.options import IMAPD

    ensure_directory(config.configdirectory, account, 0o755)  # sockets may live below
    for partition in config.partitions.values():
        ensure_directory(partition, account)
    sievedir = config.get(IMAPD.sievedir)
    if sievedir:
        ensure_directory(Path(sievedir), account)
