"""proto/pop3 exports its API from the package (sans-I/O: tests/test_layering.py)."""

from __future__ import annotations

import sealmail.proto.pop3 as pop3


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
        "sasl_failure",
        "SessionState",
    }
    assert expected <= set(pop3.__all__)
    for name in pop3.__all__:
        assert getattr(pop3, name) is not None


def test_every_command_has_a_legal_state() -> None:
    assert set(pop3.LEGAL) == set(pop3.Command)
