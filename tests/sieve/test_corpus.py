"""The hand-written corpus: each script, message and envelope gives exactly the expected actions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from sealmail.cli.sieve_test import action_json
from sealmail.sieve import (
    Envelope,
    SieveCompileError,
    SieveContext,
    compile_script,
    run,
)

CORPUS = Path(__file__).parent / "corpus"
CASES = sorted(path.stem for path in CORPUS.glob("*.sieve"))


def corpus_result(name: str) -> tuple[list[dict[str, object]], dict[str, object]]:
    spec = json.loads((CORPUS / f"{name}.json").read_text())
    text = (CORPUS / f"{name}.sieve").read_text(encoding="utf-8")
    message = (CORPUS / f"{name}.eml").read_bytes()
    try:
        script = compile_script(text)
    except SieveCompileError as exc:
        return [{"error": "compile", "line": exc.line}], spec
    mailboxes = spec.get("mailboxes")
    context = SieveContext(
        now=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        mailbox_exists=None if mailboxes is None else (lambda name: name in mailboxes),
    )
    envelope = Envelope(spec.get("from", "sender@example.com"),
                        spec.get("to", "recipient@example.com"))
    result = run(script, message, envelope, context)
    if result.error is not None:
        return [{"error": "runtime"}], spec
    return [action_json(action) for action in result.actions], spec


def test_corpus_is_not_empty() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize("name", CASES)
def test_corpus_case(name: str) -> None:
    actual, spec = corpus_result(name)
    assert actual == spec["expected"]
