"""proto.smtp's public API (that proto/ is sans-I/O is checked in tests/test_layering.py)."""

from __future__ import annotations

import sealmail.proto.smtp as smtp


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
