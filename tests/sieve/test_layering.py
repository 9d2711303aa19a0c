"""sieve/'s public API is what the docstring promises (no I/O: tests/test_layering.py)."""

from __future__ import annotations

import sealmail.sieve as sieve


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
