"""Fixtures of the store tests: an imapd.conf with two partitions under tmp_path, and the store
on every backend.

The `store` fixture runs a test on the disk store, the memory store and the PostgreSQL store (the
contract tests: all must answer alike; PostgreSQL on a private cluster, tests/support/postgres.py).
A test about what only the disk has (files, fsync, crash recovery, reconstruct, hard links, the
SQLite index) says so with `@pytest.mark.disk_only("why")` and runs on the disk store alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.stores import BACKENDS

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.api import MessageStore
from sealmail.store.disk import DiskStore


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "disk_only(reason): a store test about what only the disk store has"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" in metafunc.fixturenames:
        disk_only = metafunc.definition.get_closest_marker("disk_only") is not None
        metafunc.parametrize("backend", ["disk"] if disk_only else list(BACKENDS))


def make_config(root: Path, **extra: str) -> ImapdConfig:
    lines = [
        f"configdirectory: {root / 'config'}",
        f"partition-default: {root / 'spool'}",
        f"partition-second: {root / 'spool2'}",
    ]
    lines += [f"{key}: {value}" for key, value in extra.items()]
    return parse_imapd_conf("\n".join(lines) + "\n", str(root / "imapd.conf"))


def on_disk(store: object) -> bool:
    """Whether a contract test may also look at the disk store's files."""
    return isinstance(store, DiskStore)


@pytest.fixture
def config(tmp_path: Path) -> ImapdConfig:
    return make_config(tmp_path)


@pytest.fixture
def open_store(backend: str) -> Iterator[Callable[..., Any]]:
    """Opens a store of the backend under test on a config (options: clock=...)."""
    opened: list[MessageStore] = []

    def open_(config: ImapdConfig, **options: Any) -> Any:
        store = BACKENDS[backend](config, **options)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[..., Any], config: ImapdConfig) -> Any:
    return open_store(config)
