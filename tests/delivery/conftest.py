"""Delivery tests run on the memory store; a test about the disk's own failures asks for
`backend` "disk" (tests/support/stores.py)."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def backend() -> str:
    # SEALMAIL_TEST_STORE=postgresql (or disk) runs these tests on another backend.
    return os.environ.get("SEALMAIL_TEST_STORE", "memory")
