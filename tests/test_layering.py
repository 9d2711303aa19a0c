"""The shape STYLE.md asks for, guarded: protocol cores and Sieve do no I/O, the store knows no
protocol, and only server/ (and the MTA's agents) run an event loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "sealmail"
IO = {"asyncio", "socket", "os", "time", "select", "selectors", "ssl", "subprocess", "pathlib"}


def imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
    return found


def modules(package: str) -> list[Path]:
    return sorted((SRC / package).rglob("*.py"))


@pytest.mark.parametrize("path", modules("proto") + modules("sieve"), ids=lambda p: p.name)
def test_protocol_cores_and_sieve_do_no_io(path: Path) -> None:
    bad = {name for name in imports(path) if name.split(".")[0] in IO}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("sieve"), ids=lambda p: p.name)
def test_sieve_never_touches_the_store(path: Path) -> None:
    bad = {n for n in imports(path) if n.startswith(("sealmail.store", "sealmail.server"))}
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", modules("store"), ids=lambda p: p.name)
def test_the_store_knows_no_protocol(path: Path) -> None:
    bad = {
        n for n in imports(path) if n.startswith(("sealmail.proto", "sealmail.server", "asyncio"))
    }
    assert not bad, f"{path.relative_to(SRC)} imports {sorted(bad)}"
