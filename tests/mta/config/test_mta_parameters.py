"""The main.cf parameter registry."""

from __future__ import annotations

from sealmail.config.schema import Kind
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


def test_client_families_are_typed_handles_of_declared_parameters() -> None:
    """Each field of ClientParameters is a declared parameter whose kind gives the field's type
    (mypy trusts the annotation; this checks the table agrees with it)."""
    python_type = {
        "Parameter[str]": {Kind.STRING},
        "Parameter[int]": {Kind.INTEGER, Kind.TIME, Kind.SIZE},
        "Parameter[bool]": {Kind.BOOLEAN},
        "Parameter[tuple[str, ...]]": {Kind.WORDS, Kind.MAPS},
    }
    annotations = parameters.ClientParameters.__annotations__
    for family, hello in ((parameters.SMTP_CLIENT, "helo"), (parameters.LMTP_CLIENT, "lhlo")):
        for field, annotation in annotations.items():
            if field == "prefix":
                continue
            handle = getattr(family, field)
            assert handle is parameters.PARAMETERS[handle.name], field
            assert handle.name == f"{family.prefix}_{field.replace('hello', hello)}"
            assert handle.kind in python_type[annotation], (handle.name, annotation)


def test_per_transport_handles_read_their_own_name() -> None:
    limit = parameters.transport_recipient_limit("cyrus-inet")
    assert limit.name == "cyrus-inet_destination_recipient_limit"
    assert limit.kind is Kind.INTEGER
    time_limit = parameters.transport_time_limit("filter")
    assert (time_limit.name, time_limit.kind) == ("filter_time_limit", Kind.TIME)
