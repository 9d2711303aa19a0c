"""Which accounts the console runs as when root starts it, and the switch.

No daemon parses network input as root. Root binds the console's listener and loads its TLS key
and certificate; then the console serves HTTP as main.cf's `mail_owner`, the account that owns
the MTA's queue: it lists the queue and retries, holds, releases and deletes messages with one
rename or unlink each, as `postsuper` does, and tells the master over its control socket (which
any local account may use). The store is the business of imapd.conf's `cyrus_user`: the
console's store helper (store_helper.py) runs as that account and is the only part that reads
the store or checks a password. No process of the console keeps root once it serves.

Either account unknown, or root (uid or gid 0) without the configuration's opt-in
(`allow_root_services` in main.cf for mail_owner, in imapd.conf for cyrus_user), refuses the
start with a message naming the file, line and option. A console not started by root runs as
itself, and so does its helper.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealmail.privileges import Account, announce, store_account, switch_to

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.mta.config import MainConfig

log = logging.getLogger("sealmail.console")


@dataclass(frozen=True, slots=True)
class ConsoleAccounts:
    """The accounts of the console's two processes; None for both when not started by root."""

    http: Account | None  # serves HTTP and changes the queue: mail_owner
    store: Account | None  # the store helper: cyrus_user


def console_accounts(main: MainConfig, config: ImapdConfig) -> ConsoleAccounts:
    """Both accounts, or ConfigError naming the option that names a missing or root one."""
    from sealmail.mta.privsep import mail_owner_account

    if os.geteuid() != 0:
        return ConsoleAccounts(None, None)
    return ConsoleAccounts(mail_owner_account(main), store_account(config))


def become_http_account(accounts: ConsoleAccounts, helper_pid: int) -> None:
    """Switch to mail_owner for good (after binding and loading TLS), and say so once."""
    if accounts.http is not None:
        switch_to(accounts.http)
    store = accounts.store.describe() if accounts.store is not None else "the same account"
    announce("console", accounts.http,
             f"; its store helper (pid {helper_pid}) as {store}")


def warn_unreadable(paths: Iterable[Path]) -> None:
    """Name each log the serving account cannot read (checked after the switch, by opening
    it): its pages would otherwise look empty without saying why."""
    for path in dict.fromkeys(paths):
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError:
            continue  # not written yet
        except OSError as exc:
            log.warning("console: cannot read %s as %s: %s: the trace, failed-login and "
                        "activity pages miss its lines (make it readable by this account or "
                        "its group)", path, _who(), exc.strerror or exc)


def _who() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
