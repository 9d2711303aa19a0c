"""The resumable MD5 against hashlib and hmac, which cannot resume but are the reference."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.sasl._md5 import (
    MD5_INITIAL_STATE,
    ResumableMD5,
    hmac_md5_from_states,
    hmac_md5_key_states,
    md5_compress,
    md5_digest,
)


@pytest.mark.parametrize("size", [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 128, 1000])
def test_padding_boundaries_match_hashlib(size: int) -> None:
    data = bytes(i % 251 for i in range(size))
    assert md5_digest(data) == hashlib.md5(data).digest()


def test_rfc1321_test_suite() -> None:
    # RFC 1321 A.5.
    assert md5_digest(b"").hex() == "d41d8cd98f00b204e9800998ecf8427e"
    assert md5_digest(b"abc").hex() == "900150983cd24fb0d6963f7d28e17f72"
    assert md5_digest(b"message digest").hex() == "f96b697d7cb7938d525a2f31aaf161d0"


@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=5))
def test_any_split_of_updates_matches_hashlib(data: bytes, cuts: list[int]) -> None:
    md5 = ResumableMD5()
    start = 0
    for cut in sorted(cuts):
        md5.update(data[start:cut])
        start = max(start, cut)
    md5.update(data[start:])
    assert md5.digest() == hashlib.md5(data).digest()


@given(st.binary(min_size=64, max_size=64), st.binary(max_size=200))
def test_resuming_from_a_saved_state_continues_the_same_hash(block: bytes, rest: bytes) -> None:
    saved = md5_compress(MD5_INITIAL_STATE, block)
    resumed = ResumableMD5(saved, 64)
    resumed.update(rest)
    assert resumed.digest() == hashlib.md5(block + rest).digest()


@given(st.binary(max_size=150), st.binary(max_size=200))
def test_hmac_from_key_states_matches_hmac_module(key: bytes, message: bytes) -> None:
    inner, outer = hmac_md5_key_states(key)
    assert hmac_md5_from_states(inner, outer, message) == hmac.new(key, message, "md5").digest()


def test_rfc2195_example() -> None:
    # RFC 2195 2: the worked example (key "tanstaaftanstaaf").
    inner, outer = hmac_md5_key_states(b"tanstaaftanstaaf")
    challenge = b"<1896.697170952@postoffice.reston.mci.net>"
    assert hmac_md5_from_states(inner, outer, challenge).hex() == "b913a602c7eda7a495b4e6e7334d3890"


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError):
        md5_compress(MD5_INITIAL_STATE, b"short")
    with pytest.raises(ValueError):
        ResumableMD5(MD5_INITIAL_STATE, 10)
