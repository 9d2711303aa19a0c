"""What a process keeps per store object (kept orders, listed fields, rendered FETCH forms):
one of each per store, made on first use and gone with the store, so a test's stores never
share what one of them kept."""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class PerStore(Generic[T]):
    """`kept(store)`: this process's T of `store`."""

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._kept: weakref.WeakKeyDictionary[object, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def __call__(self, store: object) -> T:
        with self._lock:
            kept = self._kept.get(store)
            if kept is None:
                kept = self._kept[store] = self._make()
            return kept
