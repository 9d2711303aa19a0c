"""Postfix's policy delegation protocol codec (sealmail.proto.policy): requests rendered as
SMTPD_POLICY_README shows them, responses parsed whole, byte by byte and with trailing bytes,
and bad responses refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.policy import (
    MAX_LINE,
    PolicyProtocolError,
    PolicyResponse,
    ResponseParser,
    encode_request,
)


def test_request_is_attribute_lines_and_an_empty_line() -> None:
    assert encode_request({"request": "smtpd_access_policy", "protocol_state": "RCPT",
                           "sender": ""}) == (
        b"request=smtpd_access_policy\nprotocol_state=RCPT\nsender=\n\n")


def test_a_line_end_in_a_value_cannot_forge_an_attribute() -> None:
    request = encode_request({"helo_name": "x\nrecipient=forged\r\n"})
    assert request == b"helo_name=x recipient=forged  \n\n"


@pytest.mark.parametrize("name", ["", "a=b", "a\nb"])
def test_bad_attribute_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        encode_request({name: "x"})


TRANSCRIPT = b"action=DEFER_IF_PERMIT Greylisted, see http://x/\n\naction=dunno\nextra=1\n\n"


def _parse(chunks: list[bytes]) -> list[PolicyResponse]:
    parser = ResponseParser()
    out = []
    for chunk in chunks:
        parser.feed(chunk)
        while (response := parser.next_response()) is not None:
            out.append(response)
    return out


def test_responses_whole_and_byte_by_byte() -> None:
    whole = _parse([TRANSCRIPT])
    assert [r.action for r in whole] == ["DEFER_IF_PERMIT Greylisted, see http://x/", "dunno"]
    assert whole[1].attributes == (("action", "dunno"), ("extra", "1"))
    assert _parse([bytes([b]) for b in TRANSCRIPT]) == whole


def test_a_partial_response_waits_and_is_pending() -> None:
    parser = ResponseParser()
    parser.feed(b"action=OK\n")
    assert parser.next_response() is None
    assert parser.pending
    parser.feed(b"\r\n")  # CRLF is taken as LF
    assert parser.next_response() == PolicyResponse((("action", "OK"),))
    assert not parser.pending


@pytest.mark.parametrize(("data", "error"), [
    (b"garbage\n\n", "malformed"),
    (b"=x\n\n", "malformed"),
    (b"other=1\n\n", "without action"),
    (b"action=\xff\n\n", "not UTF-8"),
    (b"action=" + b"x" * (MAX_LINE + 1), "too long"),
    (b"action=" + b"x" * (MAX_LINE + 1) + b"\n\n", "too long"),
    (b"a=1\n" * 1100 + b"\n", "too many"),
])
def test_bad_responses_are_errors(data: bytes, error: str) -> None:
    parser = ResponseParser()
    parser.feed(data)
    with pytest.raises(PolicyProtocolError, match=error):
        parser.next_response()


_TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)


@given(st.dictionaries(st.from_regex(r"[a-z_]{1,20}", fullmatch=True), _TEXT, max_size=8))
def test_a_request_parses_back(attributes: dict[str, str]) -> None:
    """The request's shape is the response's: parse(encode(x)) gives x back (stripped)."""
    parser = ResponseParser()
    parser.feed(encode_request({**attributes, "action": "OK"}))
    response = parser.next_response()
    assert response is not None
    assert dict(response.attributes) == {**{k: v.strip() for k, v in attributes.items()},
                                         "action": "OK"}
