"""Envelope address and ESMTP parameter parsing (RFC 5321 4.1.2)."""

from __future__ import annotations

import contextlib
import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from sealmail.proto.smtp import (
    Address,
    AddressError,
    ParamError,
    address,
    parse_address,
    parse_path,
)
from sealmail.proto.smtp.address import parse_params, split_path_argument


@pytest.mark.parametrize(
    ("text", "local", "domain"),
    [
        ("<user@example.com>", "user", "example.com"),
        ("user@example.com", "user", "example.com"),
        ("<@a.example,@b.example:user@example.com>", "user", "example.com"),
        ('<"alice+my folder"@example.com>', "alice+my folder", "example.com"),
        ('"a\\"b\\\\c"@x', 'a"b\\c', "x"),
        ("<postmaster>", "postmaster", None),
        ("<u@[192.0.2.1]>", "u", "[192.0.2.1]"),
        ("<u@[IPv6:2001:db8::1]>", "u", "[IPv6:2001:db8::1]"),
        ("<u@[x-tag:abc]>", "u", "[x-tag:abc]"),
        ("<a..b@x>", "a..b", "x"),
        ("<jörg@bücher.example>", "jörg", "bücher.example"),
        ("<first.last+tag@sub.example.com>", "first.last+tag", "sub.example.com"),
    ],
)
def test_parse_address(text: str, local: str, domain: str | None) -> None:
    assert parse_address(text) == Address(local, domain)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("<>", "null path"),
        ("", "empty"),
        ("<a@b", "closing"),
        ("a@b>", "opening"),
        ("<a@>", "empty domain"),
        ("<a@-x.com>", "bad domain"),
        ("<a@x..com>", "bad domain"),
        ("<@a:>", "local part"),
        ("<@a,b:u@x>", "source route"),
        ("<@a u@x>", "source route"),
        ('<"abc@x>', "unterminated"),
        ('<"a\x01"@x>', "not allowed"),
        ("<a b@x>", "after the local part"),
        ("<u@[1.2.3]>", "IPv4"),
        ("<u@[IPv6:zz]>", "IPv6"),
        ("<u@[1.2.3.4>", "unterminated address literal"),
        ("<u@" + "a" * 250 + ".example>", "255"),
    ],
)
def test_parse_address_errors(text: str, message: str) -> None:
    with pytest.raises(AddressError, match=message):
        parse_address(text)


def test_null_path() -> None:
    assert parse_path("<>").address is None
    assert parse_path("<@r.example:u@x>").route == ("r.example",)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("user", "example.com"), "user@example.com"),
        (Address("alice+my folder", "x"), '"alice+my folder"@x'),
        (Address('a"b', "x"), '"a\\"b"@x'),
        (Address("a..b", "x"), '"a..b"@x'),
        (Address("", "x"), '""@x'),
        (Address("postmaster"), "postmaster"),
    ],
)
def test_render(address: Address, text: str) -> None:
    assert str(address) == text


local_parts = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E) | st.sampled_from("éß中"),
    max_size=20,
)
labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True)
domains = st.lists(labels, min_size=1, max_size=4).map(".".join)


@given(local_parts, domains)
def test_render_parse_round_trip(local: str, domain: str) -> None:
    address = Address(local, domain)
    assert parse_address(str(address)) == address
    assert parse_address(f"<{address}>") == address


@given(st.text(max_size=60))
def test_parse_never_crashes(text: str) -> None:
    with contextlib.suppress(AddressError):
        parse_path(text)


def test_split_path_argument() -> None:
    assert split_path_argument("<a@b> SIZE=1") == ("<a@b>", "SIZE=1")
    assert split_path_argument('<"x> y"@b>  BODY=8BITMIME') == ('<"x> y"@b>', "BODY=8BITMIME")
    assert split_path_argument('"a b"@c SIZE=2') == ('"a b"@c', "SIZE=2")
    assert split_path_argument("a@b") == ("a@b", "")


def test_params() -> None:
    assert parse_params("size=10 Body=8BITMIME  IGNOREQUOTA") == {
        "SIZE": "10",
        "BODY": "8BITMIME",
        "IGNOREQUOTA": None,
    }
    for bad in ("=x", "-a=1", "A=", "A=b=c", "A=\x7f", "A A"):
        with pytest.raises(ParamError):
            parse_params(bad)


# The address classes are written as the ASCII characters they exclude (cheap to compile at
# import); they must take exactly what the RFC's classes, spelled out, take.
SPELLED_OUT = {
    address.ATEXT: r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff]",
    address.ATEXT_OR_DOT: r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-.\u0080-\U0010ffff]",
    address.QTEXT_OR_SP: r"[\x20-\x21\x23-\x5b\x5d-\x7e\u0080-\U0010ffff]",
    address.LET_DIG: r"[A-Za-z0-9\u0080-\U0010ffff]",
    address.LDH: r"[A-Za-z0-9\-\u0080-\U0010ffff]",
}
CODE_POINTS = [*range(0x3000), *range(0x3000, 0x110000, 0x3FF), 0xD800, 0xDFFF, 0xFFFF, 0x10FFFF]


@pytest.mark.parametrize("cheap", SPELLED_OUT)
def test_address_classes_are_the_rfc_classes(cheap: str) -> None:
    mine, theirs = re.compile(cheap), re.compile(SPELLED_OUT[cheap])
    differ = [c for c in CODE_POINTS if bool(mine.fullmatch(chr(c))) != bool(
        theirs.fullmatch(chr(c)))]
    assert not differ


@given(st.text(alphabet="<> ab@.\\=\t", max_size=30))
def test_split_path_argument_without_quotes_as_the_character_scan(text: str) -> None:
    """Without a quote the path ends at the first '>' (bracketed) or space, as the scan that
    knows quoted strings would read it one character at a time (the fast path's definition)."""
    bracketed = text.startswith("<")
    expected = (text, "")
    for i, ch in enumerate(text):
        if ch == (">" if bracketed else " "):
            cut = i + 1 if bracketed else i
            expected = (text[:cut], text[cut:].lstrip(" "))
            break
    assert split_path_argument(text) == expected


_NEVER = re.compile(r"(?!)")


def _outcome(text: str) -> object:
    try:
        return parse_path(text)
    except AddressError as exc:
        return ("error", str(exc))


@given(st.one_of(
    st.text(alphabet="<>@.-_+aZ09\"[]:, é\x00", max_size=40),
    st.builds(lambda local, labels, brackets: f"<{local}@{'.'.join(labels)}>"[
        0 if brackets else 1 : None if brackets else -1],
        st.text(alphabet="ab.+-_'~!Z9é\"", min_size=0, max_size=12),
        st.lists(st.text(alphabet="ab-9Zé_", min_size=0, max_size=66), min_size=1, max_size=5),
        st.booleans()),
    st.builds(lambda local: f"<{local}>",
              st.text(alphabet="ab.+-_'~!Z9é\"@ ", min_size=0, max_size=12)),
))
@example("<postmaster>")
@example("<.a>")
@example("<a.>")
@example("<a@>")
@example("<" + "a" * 10 + "@" + ".".join(["b" * 63] * 4) + ">")  # a 255-octet domain
@example("<a@" + ".".join(["b" * 63] * 4) + "x>")  # and one past it
@example("<a..b@example.com>")
@example("<-a@-b.com>")
def test_parse_path_simple_way_is_the_general_way(text: str) -> None:
    """`_SIMPLE_PATH`, the one-step way for <dot-string@host.name> and <dot-string>: what the
    general way gives, error or path, on near misses too."""
    fast = _outcome(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(address, "_SIMPLE_PATH", _NEVER)
        general = _outcome(text)
    assert fast == general
