"""The store the IMAP session tests run on: fred's INBOX and Archive, in memory (a test about
the disk store's own paths asks for `backend` "disk": tests/support/stores.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.stores import open_store, store_config


@pytest.fixture
def backend() -> str:
    return "memory"


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[Any]:
    store = open_store(backend, store_config(tmp_path))
    store.create_mailbox("user.fred")
    store.create_mailbox("user.fred.Archive")
    yield store
    store.close()
