"""The seed tests share one store (tests/support/seed_store.py)."""

from tests.support.seed_store import seed_root, seed_store

__all__ = ["seed_root", "seed_store"]
