"""proto/ is sans-I/O: its modules import no asyncio, socket, os, time or file machinery."""

from __future__ import annotations

import ast
from pathlib import Path

import sealmail.proto.smtp as smtp

FORBIDDEN = {"asyncio", "socket", "os", "time", "select", "selectors", "ssl", "io", "pathlib"}
MINE = [Path(smtp.__file__).parent.parent / "buffer.py", *Path(smtp.__file__).parent.glob("*.py")]


def test_no_io_imports() -> None:
    for path in MINE:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path.name} imports {name}"


def test_public_api() -> None:
    expected = {
        "ServerConnection",
        "Mode",
        "Limits",
        "Reply",
        "NEED_DATA",
        "Hello",
        "MailFrom",
        "RcptTo",
        "MessageData",
        "Reset",
        "Quit",
        "AuthStart",
        "AuthResponse",
        "StartTLS",
        "ProtocolError",
        "ConnectionClosed",
        "Address",
        "parse_address",
        "UsageError",
    }
    assert expected <= set(smtp.__all__)
    for name in smtp.__all__:
        assert getattr(smtp, name) is not None
