"""The store the IMAP session tests run on: fred's INBOX and Archive, in memory (a test about
the disk store's own paths asks for `backend` "disk": tests/support/stores.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.stores import open_store, store_config


@pytest.fixture
def backend() -> str:
    # SEALMAIL_TEST_STORE=postgresql (or disk) runs these tests on another backend.
    return os.environ.get("SEALMAIL_TEST_STORE", "memory")


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[Any]:
    store = open_store(backend, store_config(tmp_path))
    store.create_mailbox("user.fred")
    store.create_mailbox("user.fred.Archive")
    yield store
    store.close()
