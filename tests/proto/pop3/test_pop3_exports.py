"""proto/pop3 is sans-I/O and exports its API from the package."""

from __future__ import annotations

import ast
from pathlib import Path

import sealmail.proto.pop3 as pop3

FORBIDDEN = {"asyncio", "socket", "os", "time", "select", "selectors", "ssl", "io", "pathlib"}


def test_no_io_imports() -> None:
    for path in Path(pop3.__file__).parent.glob("*.py"):
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
        "Limits",
        "Maildrop",
        "MaildropMessage",
        "Reply",
        "ResponseCode",
        "NEED_DATA",
        "Login",
        "AuthStart",
        "AuthResponse",
        "AuthAborted",
        "StartTLS",
        "MessageRequest",
        "Update",
        "Quit",
        "ProtocolError",
        "ConnectionClosed",
        "UsageError",
        "maildrop_error",
        "message_error",
        "update_error",
        "sasl_failure",
        "SessionState",
    }
    assert expected <= set(pop3.__all__)
    for name in pop3.__all__:
        assert getattr(pop3, name) is not None


def test_every_command_has_a_legal_state() -> None:
    assert set(pop3.LEGAL) == set(pop3.Command)
