"""The message as milters see and edit it (sealmail.mta.milter.message), without sockets."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.mta.milter import MilterMessage
from sealmail.mta.queue import RecipientRecord
from sealmail.proto import milter as m

CONTENT = (b"Received: from a (b [192.0.2.1])\r\n\tby mx id Q1\r\nSubject: one\r\n"
           b"X-Tag: a\r\nX-Tag:  b\r\n folded\r\n\r\nbody\r\n")


def message() -> MilterMessage:
    return MilterMessage.parse(CONTENT, "a@example.org",
                               [RecipientRecord("b@example.com", "b@example.com")])


def test_our_received_header_is_hidden_and_values_lose_one_space() -> None:
    assert message().header_pairs(leading_space=False) == [
        (b"Subject", b"one"), (b"X-Tag", b"a"), (b"X-Tag", b" b\n folded")]
    assert message().header_pairs(leading_space=True)[0] == (b"Subject", b" one")


def test_unchanged_message_renders_as_it_came() -> None:
    msg = message()
    assert msg.render() == CONTENT and not msg.changed


def test_change_header_counts_without_our_header_and_insert_with_it() -> None:
    msg = message()
    msg.apply([m.ChangeHeader(2, b"X-Tag", b"second\n\tline"),
               m.ChangeHeader(1, b"X-Tag", b""),
               m.ChangeHeader(1, b"X-New", b"added"),
               m.InsertHeader(1, b"X-Inserted", b"1"),
               m.InsertHeader(99, b"X-Last", b"z")], leading_space=False)
    assert msg.render().split(b"\r\n\r\n")[0].split(b"\r\n") == [
        b"Received: from a (b [192.0.2.1])", b"\tby mx id Q1", b"X-Inserted: 1",
        b"Subject: one", b"X-Tag: second", b"\tline", b"X-New: added", b"X-Last: z"]


def test_envelope_edits() -> None:
    msg = message()
    msg.apply([m.AddRecipient(b"<c@example.com>"), m.AddRecipient(b"d@example.com", b""),
               m.DeleteRecipient(b"<B@example.com>"), m.ChangeFrom(b"<>", b"SIZE=1")],
              leading_space=False)
    assert [r.address for r in msg.recipients] == ["c@example.com", "d@example.com"]
    assert msg.sender == ""


def test_body_replacement_in_chunks_with_line_ends_made_crlf() -> None:
    msg = message()
    msg.apply([m.ReplaceBody(b"a\nb"), m.ReplaceBody(b"\r\nc\r\n")], leading_space=False)
    assert msg.render().endswith(b"\r\n\r\na\r\nb\r\nc\r\n")
    assert list(MilterMessage.parse(b"A: b\r\n\r\n" + b"x" * 70000, "", []).body_chunks()) == [
        b"x" * 65535, b"x" * 4465]


NAMES = st.text("ABCXYZabc-", min_size=1, max_size=8).map(str.encode)
TEXT = st.text("abc xyz:;<>@.", max_size=20).map(str.encode)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(NAMES, TEXT), max_size=6),
       st.lists(TEXT, max_size=4).map(lambda lines: b"".join(x + b"\r\n" for x in lines)))
def test_an_unedited_message_comes_back_as_it_was(fields: list[tuple[bytes, bytes]],
                                                  body: bytes) -> None:
    content = (b"Received: by mx\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in fields)
               + b"\r\n" + body)
    msg = MilterMessage.parse(content, "", [])
    assert msg.render() == content
    assert [n for n, _ in msg.header_pairs(leading_space=False)] == [n for n, _ in fields]
    msg.apply([], leading_space=False)
    assert msg.render() == content
