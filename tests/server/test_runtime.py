"""The daemons' event loop: uvloop where installed, either one on request."""

from __future__ import annotations

import asyncio

import pytest

from sealmail.server import runtime


async def loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def run_and_tell(monkeypatch: pytest.MonkeyPatch, wanted: str | None) -> str:
    if wanted is None:
        monkeypatch.delenv(runtime.LOOP_VARIABLE, raising=False)
    else:
        monkeypatch.setenv(runtime.LOOP_VARIABLE, wanted)
    seen: list[str] = []

    async def main() -> None:
        seen.append(await loop_module())

    runtime.run(main())
    return seen[0]


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    assert run_and_tell(monkeypatch, "asyncio").startswith("asyncio")


def test_uvloop_by_default_where_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("uvloop")
    assert run_and_tell(monkeypatch, None).startswith("uvloop")
    assert run_and_tell(monkeypatch, "uvloop").startswith("uvloop")


def test_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(SystemExit, match="expected asyncio or uvloop"):
        run_and_tell(monkeypatch, "trio")
