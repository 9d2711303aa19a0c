"""The event loops the daemons may run on: the stdlib's and uvloop (the `[fast]` extra).

sealmail.server.runtime picks uvloop whenever it is installed, so code that the daemons run must
work on both; tests of such code take the `run_on_loop` fixture (tests/mta/conftest.py), which
runs each test once per loop. uvloop missing is a skip that says so, never a silent pass.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

LOOPS = ("asyncio", "uvloop")
LoopRunner = Callable[[Coroutine[Any, Any, Any]], Any]


def runner(name: str) -> LoopRunner:
    """asyncio.run, or uvloop.run (skipping the test when uvloop is not installed)."""
    if name == "asyncio":
        return asyncio.run
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the [fast] extra) is not installed")
    return uvloop.run  # type: ignore[no-any-return]


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the stdlib or of uvloop (skipping the test when it is not installed),
    for tests that serve from a loop in a thread of their own."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the [fast] extra) is not installed")
    return uvloop.new_event_loop()  # type: ignore[no-any-return]
