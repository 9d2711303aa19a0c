"""Delivery tests run on the memory store; a test about the disk's own failures asks for
`backend` "disk" (tests/support/stores.py)."""

from __future__ import annotations

import pytest


@pytest.fixture
def backend() -> str:
    return "memory"
