"""The store backends tests open, by name: the disk store and the in-memory one.

Session and delivery tests run on the memory store (a `backend` fixture that says "memory");
a test about what only the disk does asks for it with `@pytest.mark.parametrize("backend",
["disk"])`. The store contract tests (tests/store) run on both.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.disk import DiskStore
from sealmail.store.memory import MemoryStore

BACKENDS: dict[str, Callable[..., Any]] = {
    "disk": DiskStore.from_config,
    "memory": MemoryStore.from_config,
}

# What an IMAP session reads of imapd.conf (the hierarchy separator, altnamespace): defaults.
SESSION_CONFIG = parse_imapd_conf("", "imapd.conf")


def store_config(root: Path) -> ImapdConfig:
    return parse_imapd_conf(f"configdirectory: {root / 'c'}\npartition-default: {root / 'p'}\n",
                            "x")


def open_store(backend: str, config: ImapdConfig, **options: Any) -> Any:
    """A store of `backend` ("disk" or "memory") on `config`."""
    return BACKENDS[backend](config, **options)
