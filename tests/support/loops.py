"""The event loops the daemons may run on: the stdlib's and uvloop (the `[fast]` extra).

sealmail.server.runtime picks uvloop whenever it is installed, so code that the daemons run must
work on both; tests of such code take the `run_on_loop` fixture (tests/mta/conftest.py), which
runs each test once per loop. uvloop missing is a skip that says so, never a silent pass.
Tests that run a daemon in a thread of their own take `new_event_loop()`: the loop the daemon
would pick, so SEALMAIL_EVENT_LOOP=asyncio runs them again on the stdlib's.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from sealmail.server.runtime import LOOP_VARIABLE

LOOPS = ("asyncio", "uvloop")
LoopRunner = Callable[[Coroutine[Any, Any, Any]], Any]


def runner(name: str) -> LoopRunner:
    """asyncio.run, or uvloop.run (skipping the test when uvloop is not installed)."""
    if name == "asyncio":
        return asyncio.run
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the [fast] extra) is not installed")
    return uvloop.run  # type: ignore[no-any-return]



def new_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind sealmail.server.runtime.run picks: uvloop where installed, unless
    SEALMAIL_EVENT_LOOP=asyncio (uvloop asked for and missing is a skip)."""
    wanted = os.environ.get(LOOP_VARIABLE, "")
    if wanted == "asyncio":
        return asyncio.new_event_loop()
    if wanted == "uvloop":
        runner("uvloop")
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()  # type: ignore[no-any-return]


def new_loop(name: str) -> asyncio.AbstractEventLoop:
    """A new event loop of the stdlib or of uvloop (skipping the test when it is not installed),
    for tests that serve from a loop in a thread of their own."""
    if name == "asyncio":
        return asyncio.new_event_loop()
    uvloop = pytest.importorskip("uvloop", reason="uvloop (the [fast] extra) is not installed")
    return uvloop.new_event_loop()  # type: ignore[no-any-return]
