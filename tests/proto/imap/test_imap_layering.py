"""proto/imap is sans-I/O (no asyncio, sockets, os, clocks or files) and its public API is the
re-exported one (trio's habit: implementation modules, one guarded export list)."""

from __future__ import annotations

import ast
from pathlib import Path

import sealmail.proto.imap as imap

FORBIDDEN = {"asyncio", "socket", "os", "time", "select", "selectors", "ssl", "io", "pathlib",
             "datetime.datetime.now", "random", "threading", "subprocess"}
MODULES = sorted(Path(imap.__file__).parent.glob("*.py"))


def test_no_io_imports() -> None:
    assert len(MODULES) >= 12
    for path in MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("now", "today", "utcnow"), f"{path.name} reads a clock"


def test_public_api() -> None:
    expected = {
        "ServerConnection", "Limits", "ConnectionState", "parse_command", "SequenceSet",
        "SearchKey", "FetchAttribute", "Section", "StatusResponse", "DataResponse",
        "ContinuationRequest", "render", "parse_message", "ParsedMessage", "CommandReceived",
        "NEED_DATA", "BadCommand", "section_bytes", "decode_part",
    }
    assert expected <= set(imap.__all__)
    for name in imap.__all__:
        assert getattr(imap, name) is not None
    assert len(set(imap.__all__)) == len(imap.__all__)
