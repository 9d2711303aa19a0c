"""Response rendering: string forms, status lines with codes, untagged data of each extension,
and the property that rendered values read back to what was rendered."""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.imap import (
    Adjacent,
    AString,
    Atom,
    ContinuationRequest,
    DataResponse,
    Literal,
    ResponseCode,
    SequenceSet,
    StatusResponse,
    ThreadNode,
    Value,
    render,
    render_value,
)
from sealmail.proto.imap import response as r


def test_string_forms() -> None:
    assert render_value("plain") == b'"plain"'
    assert render_value('a"b\\c') == b'"a\\"b\\\\c"'
    assert render_value("two\r\nlines") == b"{10}\r\ntwo\r\nlines"
    assert render_value("café") == b"{5}\r\ncaf\xc3\xa9"
    assert render_value("café", utf8=True) == b'"caf\xc3\xa9"'
    assert render_value(b"a\x00b") == b"~{3}\r\na\x00b"
    assert render_value("x" * 2000).startswith(b"{2000}\r\n")
    assert render_value(AString("INBOX")) == b"INBOX"
    assert render_value(AString("with space")) == b'"with space"'
    assert render_value(AString("nil")) == b'"nil"'
    assert render_value(AString("")) == b'""'
    assert render_value(Literal(b"body")) == b"{4}\r\nbody"
    assert render_value(None) == b"NIL"
    assert render_value([1, [Atom("\\Seen")], None]) == b"(1 (\\Seen) NIL)"
    assert render_value([Adjacent(([1], [2]))]) == b"((1)(2))"
    with pytest.raises(ValueError):
        render_value(-1)
    with pytest.raises(TypeError):
        render_value(True)


def test_status_responses() -> None:
    assert render(StatusResponse("OK", "SELECT completed", "A142",
                                 ResponseCode("READ-WRITE"))) == (
        b"A142 OK [READ-WRITE] SELECT completed\r\n")
    assert render(StatusResponse("OK", "Limited", code=ResponseCode(
        "PERMANENTFLAGS", ([Atom("\\Deleted"), Atom("\\Seen"), Atom("\\*")],)))) == (
        b"* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n")
    assert render(StatusResponse("OK", "Done", "A003", ResponseCode(
        "APPENDUID", (38505, 3955)))) == b"A003 OK [APPENDUID 38505 3955] Done\r\n"
    assert render(StatusResponse("OK", "Done", "a", ResponseCode("COPYUID", (
        38505, Atom(str(SequenceSet.parse("304,319:320"))), Atom("3956:3958"))))) == (
        b"a OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n")
    assert render(StatusResponse("BAD", "bad\r\ninjected", "t")) == b"t BAD bad  injected\r\n"
    assert render(StatusResponse("BYE", "")) == b"* BYE Bye\r\n"
    assert render(ContinuationRequest()) == b"+ Ready\r\n"
    assert render(ContinuationRequest(challenge=b"<1896.697170952@postoffice>")) == (
        b"+ PDE4OTYuNjk3MTcwOTUyQHBvc3RvZmZpY2U+\r\n")
    with pytest.raises(ValueError):
        StatusResponse("BYE", "x", "tag")
    with pytest.raises(ValueError):
        StatusResponse("MAYBE", "x")


def test_response_text_is_utf8_only_once_enabled_rfc9051_appendix_e_24() -> None:
    closed = StatusResponse("NO", "Kein Postfach »Café«", "a", ResponseCode("NONEXISTENT"))
    assert render(closed) == b"a NO [NONEXISTENT] Kein Postfach ?Caf??\r\n"
    assert render(closed, utf8=True) == "a NO [NONEXISTENT] Kein Postfach »Café«\r\n".encode()
    assert render(ContinuationRequest("prêt")) == b"+ pr?t\r\n"
    assert render(ContinuationRequest("prêt"), utf8=True) == "+ prêt\r\n".encode()


def test_list_with_oldname_rfc9051_6_3_9_7() -> None:
    renamed = r.list_response([], "/", "NewMailbox", extended=[("OLDNAME", [AString("Old")])])
    assert render(renamed) == b'* LIST () "/" NewMailbox (OLDNAME (Old))\r\n'
    normalized = r.list_response([], ".", "Café", extended=[("OLDNAME", [AString("Cafe\u0301")])])
    assert render(normalized, utf8=True) == (
        '* LIST () "." "Café" (OLDNAME ("Cafe\u0301"))\r\n'.encode())


def test_untagged_data() -> None:
    assert render(r.exists(23)) == b"* 23 EXISTS\r\n"
    assert render(r.expunge(3)) == b"* 3 EXPUNGE\r\n"
    assert render(r.flags(["\\Answered", "\\Seen"])) == b"* FLAGS (\\Answered \\Seen)\r\n"
    assert render(r.capability(["IMAP4rev1", "IDLE"])) == b"* CAPABILITY IMAP4rev1 IDLE\r\n"
    assert render(r.list_response(["\\Noselect"], "/", "foo")) == (
        b'* LIST (\\Noselect) "/" foo\r\n')
    assert render(r.list_response([], None, "with space", [("CHILDINFO", ["SUBSCRIBED"])])) == (
        b'* LIST () NIL "with space" (CHILDINFO ("SUBSCRIBED"))\r\n')
    assert render(r.status("blurdybloop", {"MESSAGES": 231, "UIDNEXT": 44292})) == (
        b"* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n")
    assert render(r.search([2, 84, 882])) == b"* SEARCH 2 84 882\r\n"
    assert render(r.search([2, 10], modseq=917162500)) == b"* SEARCH 2 10 (MODSEQ 917162500)\r\n"
    assert render(r.esearch("A282", True, minimum=2, count=3)) == (
        b'* ESEARCH (TAG "A282") UID MIN 2 COUNT 3\r\n')
    assert render(r.esearch("a", False, all_numbers=SequenceSet.of([1, 2, 3, 7]))) == (
        b'* ESEARCH (TAG "a") ALL 1:3,7\r\n')
    assert render(r.vanished(SequenceSet.parse("41,43:116"), earlier=True)) == (
        b"* VANISHED (EARLIER) 41,43:116\r\n")
    assert render(r.enabled(["CONDSTORE"])) == b"* ENABLED CONDSTORE\r\n"
    assert render(r.namespace([("", "/")], [("~", "/")], [])) == (
        b'* NAMESPACE (("" "/")) (("~" "/")) NIL\r\n')
    assert render(r.id_response([("name", "sealmail"), ("version", None)])) == (
        b'* ID ("name" "sealmail" "version" NIL)\r\n')
    assert render(r.id_response(None)) == b"* ID NIL\r\n"
    assert render(r.acl("INBOX", [("fred", "lrswipkxtecda")])) == (
        b"* ACL INBOX fred lrswipkxtecda\r\n")
    assert render(r.listrights("~/Mail/saved", "smith", "la", ["r", "swicdkxte"])) == (
        b"* LISTRIGHTS ~/Mail/saved smith la r swicdkxte\r\n")
    assert render(r.myrights("INBOX", "rwiptsldaex")) == b"* MYRIGHTS INBOX rwiptsldaex\r\n"
    assert render(r.quota("", [("STORAGE", 10, 512)])) == b'* QUOTA "" (STORAGE 10 512)\r\n'
    assert render(r.quotaroot("INBOX", [""])) == b'* QUOTAROOT INBOX ""\r\n'
    assert render(r.sort([5, 3, 4])) == b"* SORT 5 3 4\r\n"
    assert render(r.fetch(12, [("FLAGS", [Atom("\\Seen")]), ("UID", 4827313),
                               ("BODY[]<0>", Literal(b"Hi"))])) == (
        b"* 12 FETCH (FLAGS (\\Seen) UID 4827313 BODY[]<0> {2}\r\nHi)\r\n")


def test_thread_rendering_rfc5256_example() -> None:
    # RFC 5256 4: (2)(3 6 (4 23)(44 7 96))
    tree = [
        ThreadNode(2),
        ThreadNode(3, (ThreadNode(6, (
            ThreadNode(4, (ThreadNode(23),)),
            ThreadNode(44, (ThreadNode(7, (ThreadNode(96),)),)),
        )),)),
    ]
    assert render(r.thread(tree)) == b"* THREAD (2)(3 6 (4 23)(44 7 96))\r\n"
    assert render(r.thread([ThreadNode(None, (ThreadNode(3), ThreadNode(5)))])) == (
        b"* THREAD ((3)(5))\r\n")
    assert render(r.thread([])) == b"* THREAD\r\n"


# -- property: rendered values read back -----------------------------------------------------------

_TOKEN = re.compile(rb'[^ ()\r\n"{]+')


def read_value(data: bytes, pos: int) -> tuple[object, int]:
    """A small independent reader of the response value grammar, for the property below."""
    if data[pos : pos + 1] == b"(":
        items: list[object] = []
        pos += 1
        while data[pos : pos + 1] != b")":
            if items and data[pos : pos + 1] == b" ":
                pos += 1
            item, pos = read_value(data, pos)
            items.append(item)
        return items, pos + 1
    if data[pos : pos + 1] == b'"':
        end = pos + 1
        out = bytearray()
        while data[end : end + 1] != b'"':
            if data[end : end + 1] == b"\\":
                end += 1
            out += data[end : end + 1]
            end += 1
        return bytes(out), end + 1
    match = re.compile(rb"~?\{(\d+)\}\r\n").match(data, pos)
    if match:
        size = int(match.group(1))
        return data[match.end() : match.end() + size], match.end() + size
    token = _TOKEN.match(data, pos)
    assert token, data[pos:]
    text = token.group(0)
    if text == b"NIL":
        return None, token.end()
    if text.isdigit():
        return int(text), token.end()
    return text, token.end()


def expected(value: Value) -> object:
    if isinstance(value, str):
        return value.encode("utf-8", "surrogateescape")
    if isinstance(value, AString):
        raw = value.value
        return raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else raw
    if isinstance(value, Literal):
        return value.value
    if isinstance(value, list | tuple):
        return [expected(v) for v in value]
    return value


values: st.SearchStrategy[Value] = st.recursive(
    st.one_of(
        st.none(),
        st.integers(0, 2**63),
        st.text(max_size=20),
        st.binary(max_size=20),
        st.text(max_size=10).filter(lambda s: not s.isdigit()).map(AString),  # "12" reads as 12
        st.binary(max_size=10).map(Literal),
    ),
    lambda inner: st.lists(inner, max_size=4),
    max_leaves=12,
)


@given(values, st.booleans())
def test_rendered_values_read_back(value: Value, utf8: bool) -> None:
    wire = render_value(value, utf8)
    got, end = read_value(wire, 0)
    assert end == len(wire)
    assert got == expected(value)


@given(st.lists(values, min_size=1, max_size=4))
def test_data_responses_are_one_response(items: list[Value]) -> None:
    wire = render(DataResponse(tuple(items)))
    assert wire.startswith(b"* ") and wire.endswith(b"\r\n")
    body = wire[2:-2]
    pos = 0
    while pos < len(body):
        _, pos = read_value(body, pos)
        if pos < len(body):
            assert body[pos : pos + 1] == b" "
            pos += 1


def test_rendered_responses_pass_through_unchanged() -> None:
    data = b"* 1 FETCH (FLAGS (\\Seen) UID 4)\r\n* 2 FETCH (FLAGS () UID 9)\r\n"
    assert r.render(r.RenderedResponses(data)) == data
    assert r.render(r.RenderedResponses(data), utf8=True) == data
    with pytest.raises(ValueError):
        r.RenderedResponses(b"* 1 FETCH (UID 4)")
