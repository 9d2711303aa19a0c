"""The one place that picks a store backend for an imapd.conf.

A service that does not need the disk store's own operations (reconstruct, a mailbox's path)
opens its store here and types it by the role it uses (sealmail.store.api), so it names no
backend module.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig
    from sealmail.store.api import MessageStore


def open_store(config: ImapdConfig) -> MessageStore:
    """The store of `config` by its store_backend: the disk store (sealmail.store.disk, the
    default) or PostgreSQL (sealmail.store.postgres, shared by many nodes)."""
    from sealmail.store.settings import store_settings

    settings = store_settings(config)
    if settings.backend == "postgresql":
        from sealmail.store.postgres import PostgresStore

        return PostgresStore(settings)
    from sealmail.store.disk import DiskStore

    return DiskStore(settings)
