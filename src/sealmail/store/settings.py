"""What a store reads of imapd.conf, typed and read once (`store_settings`).

A backend gets a StoreSettings, never the whole ImapdConfig: the options it depends on are the
fields below, and nothing else of the configuration can reach it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sealmail.config.imapd_conf import ImapdConfig


@dataclass(frozen=True, slots=True)
class StoreSettings:
    configdirectory: Path  # the index, the duplicate database and the lock files
    partitions: Mapping[str, Path]  # partition name -> spool directory (partition-NAME)
    default_partition: str  # defaultpartition: where a new mailbox goes
    single_instance: bool = True  # singleinstancestore: one file, many hard links
    user_concurrency_limit: int = 0  # lmtp_user_concurrency_limit (0: unlimited)
    duplicate_suppression: bool = True  # duplicatesuppression
    backend: str = "disk"  # store_backend: "disk" or "postgresql"
    dsn: str | None = None  # store_dsn: the PostgreSQL database (store_backend: postgresql)
    pool_size: int = 8  # store_pool_size: most connections to it per process
    poll_interval: float = 5.0  # store_poll_interval: the change feed's backstop, seconds
    blob_grace: float = 86400.0  # store_blob_grace: an unnamed blob's age before a sweep


def store_settings(config: ImapdConfig) -> StoreSettings:
    """The store's options of `config`; ConfigError when defaultpartition names no partition,
    or store_backend is postgresql without a store_dsn."""
    from sealmail.config.options import IMAPD

    partitions = dict(config.partitions)
    default_partition = config.get(IMAPD.defaultpartition) or "default"
    if default_partition not in partitions:
        raise config.error(
            IMAPD.defaultpartition, f"no partition-{default_partition} is configured"
        )
    backend = config.get(IMAPD.store_backend)
    dsn = config.get(IMAPD.store_dsn)
    if backend == "postgresql" and not dsn:
        raise config.error(IMAPD.store_dsn, "store_backend: postgresql needs a store_dsn")
    return StoreSettings(
        configdirectory=config.configdirectory,
        partitions=partitions,
        default_partition=default_partition,
        single_instance=config.get(IMAPD.singleinstancestore),
        user_concurrency_limit=config.get(IMAPD.lmtp_user_concurrency_limit),
        duplicate_suppression=config.get(IMAPD.duplicatesuppression),
        backend=backend,
        dsn=dsn,
        pool_size=config.get(IMAPD.store_pool_size),
        poll_interval=max(1, config.get(IMAPD.store_poll_interval)),
        blob_grace=max(0, config.get(IMAPD.store_blob_grace)),
    )
