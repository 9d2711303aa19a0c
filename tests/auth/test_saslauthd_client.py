"""SaslauthdClient against a real saslauthd (rimap driver, private socket) and its wire format."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from sealmail.auth.saslauthd import SaslauthdClient, SaslauthdError, encode_request
from sealmail.proto.sasl import Identity, Verdict

if TYPE_CHECKING:
    from conftest import RunningSaslauthd


def test_request_is_four_counted_strings() -> None:
    request = encode_request(b"bob", b"pw", b"lmtp", b"")
    assert request == struct.pack("!H", 3) + b"bob" + struct.pack("!H", 2) + b"pw" + (
        struct.pack("!H", 4) + b"lmtp" + struct.pack("!H", 0)
    )
    with pytest.raises(ValueError):
        encode_request(b"bo\x00b", b"pw", b"lmtp", b"")


@pytest.mark.peer
def test_real_saslauthd_says_ok_and_no(saslauthd: RunningSaslauthd) -> None:
    client = SaslauthdClient(saslauthd.socket_path, "lmtp")
    assert client.check("carol", "carolpw", "example.org") is Verdict.OK
    assert client.check("carol", "wrong") is Verdict.NO
    assert client.check_password(Identity("nobody", "example.org"), "carolpw") is Verdict.NO
    log = saslauthd.log()
    # saslauthd logs what it was told: our service and realm went through as separate fields.
    assert "[user=carol] [service=lmtp] [realm=example.org]" in log
    assert "wrong" not in log


def test_missing_socket_is_unavailable_not_a_no(tmp_path: Path) -> None:
    client = SaslauthdClient(tmp_path / "nothing" / "mux", "imap")
    with pytest.raises(SaslauthdError) as raised:
        client.check("carol", "carolpw")
    assert "carolpw" not in str(raised.value)
