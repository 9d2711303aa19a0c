"""sieve/ is a pure library: no I/O modules, and its public API is what the docstring promises."""

from __future__ import annotations

import ast
from pathlib import Path

import sealmail.sieve as sieve

FORBIDDEN = {"asyncio", "socket", "os", "time", "select", "selectors", "ssl", "io", "pathlib",
             "subprocess", "sqlite3", "shutil"}
SOURCES = sorted(Path(sieve.__file__).parent.rglob("*.py"))


def test_no_io_imports() -> None:
    assert len(SOURCES) > 10
    for path in SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
                assert not name.startswith("sealmail.store"), f"{path.name} imports {name}"


def test_public_api() -> None:
    expected = {"compile_script", "run", "ScriptCache", "DEFAULT_CACHE", "CompiledScript",
                "SieveCompileError", "CompileProblem", "SieveRuntimeError", "SieveResult",
                "Envelope", "SieveContext", "SieveLimits", "Keep", "FileInto", "Redirect",
                "Discard", "Reject", "Ereject", "Vacation", "Notify", "DuplicateMark",
                "SUPPORTED_EXTENSIONS", "IncludeLoader", "DuplicateTracker", "VacationTracker"}
    assert expected <= set(sieve.__all__)
    for name in sieve.__all__:
        assert getattr(sieve, name) is not None


def test_every_supported_extension_is_usable() -> None:
    script = "require [" + ", ".join(f'"{name}"' for name in sorted(
        sieve.SUPPORTED_EXTENSIONS)) + "];\nkeep;"
    assert sieve.compile_script(script).requires == sieve.SUPPORTED_EXTENSIONS


def test_disabled_extensions_cannot_be_required() -> None:
    try:
        sieve.compile_script('require "vacation";', extensions={"fileinto"})
    except sieve.SieveCompileError as exc:
        assert str(exc) == "line 1, column 9: unsupported extension 'vacation'"
    else:
        raise AssertionError("a disabled extension compiled")
