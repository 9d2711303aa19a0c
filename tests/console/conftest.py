"""The console of the HTTP tests: one per module, served from a thread of the test process."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.support.console import ConsoleServer, serving

pytest.importorskip("h11", reason="the console needs h11 (the [console] extra)")


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleServer]:
    with serving(tmp_path_factory.mktemp("console")) as server:
        yield server
