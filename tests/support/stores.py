"""The store backends tests open, by name: the disk store, the in-memory one and PostgreSQL.

Session and delivery tests run on the memory store (a `backend` fixture that says "memory");
a test about what only the disk does asks for it with `@pytest.mark.parametrize("backend",
["disk"])`. The store contract tests (tests/store) run on all three; "postgresql" runs on a
private cluster this test process starts (tests/support/postgres.py), one schema per imapd.conf.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.support.peers import PeerUnavailable

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.disk import DiskStore
from sealmail.store.memory import MemoryStore
from sealmail.store.settings import store_settings


def open_postgres(config: ImapdConfig, **options: Any) -> Any:
    """A PostgresStore on `config`'s own schema of the shared private cluster."""
    from tests.support.postgres import shared_cluster

    from sealmail.store.postgres import PostgresStore

    try:
        dsn = shared_cluster().schema_dsn(str(config.configdirectory))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    settings = dataclasses.replace(store_settings(config), backend="postgresql", dsn=dsn)
    return PostgresStore(settings, **options)


BACKENDS: dict[str, Callable[..., Any]] = {
    "disk": DiskStore.from_config,
    "memory": MemoryStore.from_config,
    "postgresql": open_postgres,
}

# What an IMAP session reads of imapd.conf (the hierarchy separator, altnamespace): defaults.
SESSION_CONFIG = parse_imapd_conf("", "imapd.conf")


def store_config(root: Path) -> ImapdConfig:
    return parse_imapd_conf(f"configdirectory: {root / 'c'}\npartition-default: {root / 'p'}\n",
                            "x")


def open_store(backend: str, config: ImapdConfig, **options: Any) -> Any:
    """A store of `backend` ("disk", "memory" or "postgresql") on `config`."""
    return BACKENDS[backend](config, **options)


def index_of_version_11(conn: sqlite3.Connection) -> None:
    """Make a current index what version 11 had (the kept parses in `messages.structure`), for
    tests that make an older index out of a new one before setting its user_version."""
    conn.execute("DROP TRIGGER IF EXISTS structures_gone")
    conn.execute("DROP TABLE IF EXISTS structures")
    conn.execute("ALTER TABLE messages ADD COLUMN structure BLOB")
