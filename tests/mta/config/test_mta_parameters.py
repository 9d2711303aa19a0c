"""The main.cf parameter registry."""

from __future__ import annotations

from sealmail.mta.config import parameters


def test_names_are_valid_and_documented() -> None:
    for name, declared in parameters.PARAMETERS.items():
        assert parameters.is_valid_name(name)
        assert declared.doc and declared.doc.endswith(".")


def test_renames_point_away_from_themselves() -> None:
    for old, rename in parameters.RENAMES.items():
        assert old == rename.old != rename.new
        assert old not in parameters.PARAMETERS  # an old name is never also declared
    assert parameters.RENAMES["lmtp_cache_connection"].new in parameters.PARAMETERS


def test_per_transport_patterns() -> None:
    found = parameters.lookup("cyrus-inet_destination_recipient_limit")
    assert found is not None and found.default == "$default_destination_recipient_limit"
    assert parameters.lookup("cyrus_destination_recipient_limit", transports=["lmtp"]) is None
    assert parameters.lookup("_destination_recipient_limit") is None
    for suffix, (_kind, default, _doc) in parameters.PER_TRANSPORT.items():
        assert default.lstrip("$") in parameters.PARAMETERS, suffix
