"""The client-message parsers: round trips, and no input makes them fail other than as designed."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.sasl import (
    PlainMessage,
    PlainSyntaxError,
    ScramSyntaxError,
    parse_client_final,
    parse_client_first,
    parse_plain,
    parse_scram_attributes,
)
from sealmail.proto.sasl._scram import _unescape_saslname

field_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
)


@given(field_text, field_text.filter(bool), field_text.filter(bool))
def test_plain_round_trip(authzid: str, authcid: str, password: str) -> None:
    message = b"\x00".join(part.encode() for part in (authzid, authcid, password))
    assert parse_plain(message) == PlainMessage(authzid, authcid, password)


@given(st.binary(max_size=200))
def test_plain_never_crashes(data: bytes) -> None:
    try:
        parse_plain(data)
    except PlainSyntaxError as exc:
        assert exc.args[0]


def test_plain_repr_hides_the_password() -> None:
    assert "hunter2" not in repr(parse_plain(b"\x00bob\x00hunter2"))


@given(st.text(max_size=200))
def test_scram_parsers_never_crash(text: str) -> None:
    for parse in (parse_scram_attributes, parse_client_first, parse_client_final):
        try:
            parse(text)  # type: ignore[operator]
        except ScramSyntaxError as exc:
            assert exc.server_error


@given(
    st.lists(
        st.tuples(
            st.sampled_from("abcnrpsvi"), st.text(max_size=10).map(lambda v: v.replace(",", ""))
        ),
        min_size=1,
        max_size=6,
    )
)
def test_scram_attributes_round_trip(pairs: list[tuple[str, str]]) -> None:
    text = ",".join(f"{name}={value}" for name, value in pairs)
    assert parse_scram_attributes(text) == pairs


@given(st.text(min_size=1, max_size=30))
def test_saslname_escaping_round_trips(name: str) -> None:
    escaped = name.replace("=", "=3D").replace(",", "=2C")
    assert _unescape_saslname(escaped) == name
    first = parse_client_first(f"n,a={escaped},n={escaped},r=nonce")
    assert (first.authzid, first.username, first.gs2_header) == (name, name, f"n,a={escaped},")


def test_client_first_and_final_fields() -> None:
    first = parse_client_first("y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL,x=1")
    assert (first.gs2_header, first.username, first.nonce) == ("y,,", "user", first.nonce)
    assert first.bare == "n=user,r=fyko+d2lbbFgONRv9qkxdawL,x=1"
    final = parse_client_final("c=biws,r=abc,p=dHpiYXJ1aXg=")
    assert (final.channel_binding, final.nonce, final.without_proof) == (
        b"n,,",
        "abc",
        "c=biws,r=abc",
    )
