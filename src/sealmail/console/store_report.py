"""`python -m sealmail.console.store_report IMAPD_CONF`: what the users page shows, read as the
store's account and printed as JSON.

The console may run as root (it changes the MTA's queue), but the store must only ever be
opened as imapd.conf's cyrus_user: opening it as root could leave files (a database's WAL and
shared-memory files, a new sasldb) that the store's daemons can no longer write. So the page asks
this small program, which becomes that account first, as `sealmail quota` does.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from typing import Any

from sealmail.config.imapd_conf import ConfigError, ImapdConfig, load_imapd_conf


def report(config: ImapdConfig) -> dict[str, Any]:
    """Each user's INBOX and quota, `sealmail quota`'s report, the sasldb's users."""
    from sealmail.cli.quota import report_lines
    from sealmail.store.api import QuotaAdmin
    from sealmail.store.backends import open_store
    from sealmail.store.names import Namespace

    names = Namespace(config.hierarchy_separator)
    users: list[list[object]] = []
    quota: list[str] = []
    with contextlib.closing(open_store(config)) as store:
        for info in store.list_mailboxes("user."):
            if info.name.count(".") != 1:
                continue  # a user's INBOX only, not its folders
            usage = store.quota_for(info.name)
            users.append([
                info.name.partition(".")[2], names.to_external(info.name), info.exists,
                None if usage is None else usage.storage_used // 1024,
                None if usage is None else usage.storage_limit,
                None if usage is None else usage.messages_limit,
            ])
        if isinstance(store, QuotaAdmin):
            quota = report_lines(store.quota_roots(), names)
    return {"users": users, "quota": quota, "sasl": sasl_users(config)}


def sasl_users(config: ImapdConfig) -> list[list[str]] | None:
    """(user@realm, its secrets' names) of the sasldb; None when there is no sasldb."""
    from sealmail.auth.sasldb import SaslDB, sasldb_path

    if not sasldb_path(config).exists():
        return None
    return [[f"{entry.identity.user}@{entry.identity.realm}", " ".join(entry.properties)]
            for entry in SaslDB.from_config(config).entries()]


def main(argv: list[str]) -> int:
    from sealmail.privileges import store_account, switch_to

    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        config = load_imapd_conf(argv[0])
        account = store_account(config, warn_level=logging.DEBUG)
        if account is not None:
            switch_to(account)
        found = report(config)
    except (ConfigError, OSError, Exception) as exc:  # the page shows why
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
        return 1
    print(json.dumps(found))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
