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
    """The store of `config`: today always the disk store (sealmail.store.disk)."""
    from sealmail.store.disk import DiskStore

    return DiskStore.from_config(config)
