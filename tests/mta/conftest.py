"""Fixtures shared by the MTA tests."""

from __future__ import annotations

import pytest
from tests.support.loops import LOOPS, LoopRunner, runner


@pytest.fixture(params=LOOPS)
def run_on_loop(request: pytest.FixtureRequest) -> LoopRunner:
    """Runs a coroutine on the stdlib loop, then (second run of the test) on uvloop."""
    return runner(request.param)
