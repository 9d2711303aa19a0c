"""What the users page shows, read by the console's store helper (store_helper.py), which runs
as imapd.conf's cyrus_user: the console itself never opens the store.
"""

from __future__ import annotations

import contextlib
from typing import Any

from sealmail.config.imapd_conf import ImapdConfig


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
