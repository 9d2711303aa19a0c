"""proto/imap's public API is the re-exported one (trio's habit: implementation modules, one
guarded export list). That it is sans-I/O is checked with the other layers in
tests/test_layering.py."""

from __future__ import annotations

import sealmail.proto.imap as imap


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
