from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.store.errors import InvalidMailboxName
from sealmail.store.names import (
    Namespace,
    Owner,
    decode_mutf7,
    encode_mutf7,
    owner_of,
    parent_of,
    user_inbox,
    validate_internal,
)


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("INBOX", "INBOX"),
        ("Entwürfe", "Entw&APw-rfe"),  # RFC 3501 5.1.3 style
        ("~peter/mail/台北/日本語", "~peter/mail/&U,BTFw-/&ZeVnLIqe-"),  # RFC 3501's example
        ("A & B", "A &- B"),
        ("my folder", "my folder"),
    ],
)
def test_modified_utf7_known_values(text: str, encoded: str) -> None:
    assert encode_mutf7(text) == encoded
    assert decode_mutf7(encoded) == text


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))
def test_modified_utf7_round_trip(text: str) -> None:
    encoded = encode_mutf7(text)
    assert all(0x20 <= ord(c) <= 0x7E for c in encoded)
    assert decode_mutf7(encoded) == text


@pytest.mark.parametrize("bad", ["&", "&AOk", "caf\u00e9", "&!!-"])
def test_malformed_modified_utf7_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidMailboxName):
        decode_mutf7(bad)


def test_namespaces() -> None:
    netnews, unix = Namespace("."), Namespace("/")
    assert netnews.to_internal("user.alice.Lists") == "user.alice.Lists"
    assert unix.to_internal("user/john.doe/Lists") == "user.john^doe.Lists"
    assert unix.to_external("user.john^doe.Lists") == "user/john.doe/Lists"
    assert unix.to_internal("Projekte/Café") == "Projekte.Caf&AOk-"
    assert netnews.to_internal("user.alice", domain="example.com") == "example.com!user.alice"
    assert unix.to_external("example.com!user.alice.Sent") == "example.com!user/alice/Sent"


@pytest.mark.parametrize("bad", ["", "user..alice", ".x", "x.", "a%b", "a*b", "a!b!c", "x" * 491])
def test_invalid_internal_names(bad: str) -> None:
    with pytest.raises(InvalidMailboxName):
        validate_internal(bad)


def test_owners_and_parents() -> None:
    assert user_inbox("alice") == "user.alice"
    assert user_inbox("john.doe", "example.com") == "example.com!user.john^doe"
    assert owner_of("user.john^doe.Lists") == Owner("john.doe")
    assert owner_of("example.com!user.alice") == Owner("alice", "example.com")
    assert owner_of("Projects") is None
    assert owner_of("user") is None
    assert parent_of("user.alice.Lists") == "user.alice"
    assert parent_of("example.com!user.alice") == "example.com!user"
    assert parent_of("Projects") is None
