"""ENVELOPE / BODYSTRUCTURE from message bytes, sections, BINARY decoding, the stored form."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.proto.imap import (
    Address,
    ParsedMessage,
    body_structure_value,
    decode_part,
    envelope_value,
    find_part,
    parse_message,
    render_envelope,
    render_value,
    section_bytes,
)
from sealmail.proto.imap.mime import _split_header, decode_quoted_printable, parse_address_list
from sealmail.rfc5322 import header_fields, message_header

SIMPLE = (
    b"Date: Wed, 17 Jul 1996 02:23:25 -0700 (PDT)\r\n"
    b"From: Terry Gray <gray@cac.washington.edu>\r\n"
    b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
    b"To: imap@cac.washington.edu\r\n"
    b"cc: minutes@CNRI.Reston.VA.US,\r\n"
    b"    John Klensin <KLENSIN@MIT.EDU>\r\n"
    b"Message-Id: <B27397-0100000@cac.washington.edu>\r\n"
    b"MIME-Version: 1.0\r\n"
    b"Content-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n"
    b"\r\n"
    b"Hello\r\nWorld\r\n"
)


def test_rfc3501_envelope_example() -> None:
    parsed = parse_message(SIMPLE)
    wire = render_value(envelope_value(parsed.envelope))
    # RFC 3501 7.4.2's example, with our From/Sender/Reply-To defaults.
    assert wire == (
        b'("Wed, 17 Jul 1996 02:23:25 -0700 (PDT)" "IMAP4rev1 WG mtg summary and minutes" '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'(("Terry Gray" NIL "gray" "cac.washington.edu")) '
        b'((NIL NIL "imap" "cac.washington.edu")) '
        b'((NIL NIL "minutes" "CNRI.Reston.VA.US")("John Klensin" NIL "KLENSIN" "MIT.EDU")) '
        b'NIL NIL "<B27397-0100000@cac.washington.edu>")'
    )


def test_simple_body_structure() -> None:
    parsed = parse_message(SIMPLE)
    assert render_value(body_structure_value(parsed.body, extensible=False)) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 14 2)'
    )
    assert render_value(body_structure_value(parsed.body)) == (
        b'("TEXT" "PLAIN" ("CHARSET" "US-ASCII") NIL NIL "7BIT" 14 2 NIL NIL NIL NIL)'
    )


MULTI = (
    b"From: a@example.com\r\n"
    b'Content-Type: multipart/mixed; boundary="b1"\r\n'
    b"\r\n"
    b"preamble\r\n"
    b"--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9\r\n"
    b"--b1\r\n"
    b"Content-Type: message/rfc822\r\n"
    b"\r\n"
    b"Subject: inner\r\n"
    b"From: Inner <in@example.net>\r\n"
    b"Content-Type: multipart/alternative; boundary=b2\r\n"
    b"\r\n"
    b"--b2\r\n"
    b"\r\n"
    b"plain\r\n"
    b"--b2\r\n"
    b"Content-Type: text/html\r\n"
    b"\r\n"
    b"<p>html</p>\r\n"
    b"--b2--\r\n"
    b"--b1\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b"Content-Transfer-Encoding: base64\r\n"
    b'Content-Disposition: attachment; filename="x.bin"\r\n'
    b"Content-Language: en, fr\r\n"
    b"\r\n"
    b"AAEC\r\n"
    b"--b1--\r\n"
    b"epilogue\r\n"
)


def test_multipart_structure_and_sections() -> None:
    parsed = parse_message(MULTI)
    body = parsed.body
    assert (body.type, body.subtype) == ("MULTIPART", "MIXED")
    assert [(c.type, c.subtype) for c in body.children] == [
        ("TEXT", "PLAIN"), ("MESSAGE", "RFC822"), ("APPLICATION", "OCTET-STREAM")]
    text, message, attachment = body.children
    assert section_bytes(MULTI, body, (1,), None) == b"caf=C3=A9"
    assert decode_part(MULTI, text) == "café".encode()
    assert section_bytes(MULTI, body, (1,), "MIME") == (
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n\r\n")
    assert message.message is not None
    assert message.message.envelope.subject == "inner"
    assert section_bytes(MULTI, body, (2,), "HEADER", ()).startswith(b"Subject: inner\r\n")
    assert section_bytes(MULTI, body, (2, 1), None) == b"plain"
    assert section_bytes(MULTI, body, (2, 2), None) == b"<p>html</p>"
    assert find_part(body, (2, 3)) is None
    assert section_bytes(MULTI, body, (4,), None) is None
    assert section_bytes(MULTI, body, (1,), "TEXT") is None  # TEXT of a non-message part
    assert decode_part(MULTI, attachment) == b"\x00\x01\x02"
    assert attachment.disposition == "ATTACHMENT"
    assert attachment.disposition_params == (("FILENAME", "x.bin"),)
    assert attachment.language == ("en", "fr")
    wire = render_value(body_structure_value(body))
    assert wire.startswith(b'(("TEXT" "PLAIN" ("CHARSET" "utf-8") NIL NIL "QUOTED-PRINTABLE" 9 1')
    assert b'"MESSAGE" "RFC822" NIL NIL NIL "7BIT"' in wire
    assert b'"ALTERNATIVE"' in wire and wire.count(b"(") == wire.count(b")")
    assert b'("ATTACHMENT" ("FILENAME" "x.bin")) ("en" "fr")' in wire


def test_header_sections() -> None:
    parsed = parse_message(SIMPLE)
    assert section_bytes(SIMPLE, parsed.body, (), "TEXT") == b"Hello\r\nWorld\r\n"
    assert section_bytes(SIMPLE, parsed.body, (1,), None) == b"Hello\r\nWorld\r\n"
    fields = section_bytes(SIMPLE, parsed.body, (), "HEADER.FIELDS", ("cc", "SUBJECT"))
    assert fields == (b"Subject: IMAP4rev1 WG mtg summary and minutes\r\n"
                      b"cc: minutes@CNRI.Reston.VA.US,\r\n    John Klensin <KLENSIN@MIT.EDU>\r\n"
                      b"\r\n")
    rest = header_fields(SIMPLE[: SIMPLE.index(b"\r\n\r\n") + 4], ("date", "from", "subject",
                         "to", "cc", "message-id"), exclude=True)
    assert rest == b"MIME-Version: 1.0\r\nContent-Type: TEXT/PLAIN; CHARSET=US-ASCII\r\n\r\n"


def test_addresses() -> None:
    assert parse_address_list('"Doe, John" <john@example.com>, jane@example.org (Jane)') == (
        Address("Doe, John", None, "john", "example.com"),
        Address("Jane", None, "jane", "example.org"),
    )
    assert parse_address_list("team: a@x.org, b@y.org;, c@z.org") == (
        Address(None, None, "team", None),
        Address(None, None, "a", "x.org"),
        Address(None, None, "b", "y.org"),
        Address(None, None, None, None),
        Address(None, None, "c", "z.org"),
    )
    assert parse_address_list("undisclosed-recipients:;") == (
        Address(None, None, "undisclosed-recipients", None), Address(None, None, None, None))
    assert parse_address_list("<@route.example:user@host.example>") == (
        Address(None, "@route.example", "user", "host.example"),)
    assert parse_address_list("localonly") == (Address(None, None, "localonly", ""),)
    # RFC 5322 3.4.1: CFWS may surround the parts of an addr-spec (imaptest's
    # search-addresses); quoted local parts keep their spaces.
    assert parse_address_list("<user-from (comment)@ (comment) domain.org>") == (
        Address(None, None, "user-from", "domain.org"),)
    assert parse_address_list('Joe <"joe (not a comment)"@x.org>') == (
        Address("Joe", None, "joe (not a comment)", "x.org"),)


def test_malformed_mime_is_best_effort() -> None:
    no_boundary = b"Content-Type: multipart/mixed\r\n\r\nbody\r\n"
    parsed = parse_message(no_boundary)
    assert parsed.body.type == "MULTIPART" and len(parsed.body.children) == 1
    assert render_value(body_structure_value(parsed.body)).startswith(b'(("TEXT" "PLAIN"')
    unterminated = b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nabc"
    assert section_bytes(unterminated, parse_message(unterminated).body, (1,), None) == b"abc"
    bad_type = parse_message(b"Content-Type: garbage\r\n\r\nx")
    assert (bad_type.body.type, bad_type.body.subtype) == ("TEXT", "PLAIN")
    no_body = parse_message(b"Subject: only a header")
    assert no_body.body.size == 0 and no_body.envelope.subject == "only a header"
    assert parse_message(b"").body.size == 0


def test_digest_parts_default_to_message() -> None:
    digest = (b"Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\n"
              b"Subject: one\r\n\r\nbody\r\n--d--\r\n")
    child = parse_message(digest).body.children[0]
    assert (child.type, child.subtype) == ("MESSAGE", "RFC822")
    assert child.message is not None and child.message.envelope.subject == "one"


def test_deep_nesting_is_bounded() -> None:
    depth = 200
    message = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    ) + b"\r\nleaf\r\n"
    parsed = parse_message(message)
    levels = 0
    node = parsed.body
    while node.children:
        node = node.children[0]
        levels += 1
    assert levels <= 64


def test_eight_bit_headers_survive() -> None:
    raw = b"Subject: caf\xe9 \xc3\xa9\r\n\r\n"
    parsed = parse_message(raw)
    wire = render_value(envelope_value(parsed.envelope))
    assert b"{" in wire  # 8-bit text goes as a literal unless UTF-8 is enabled
    assert b"caf\xe9 \xc3\xa9" in wire
    again = ParsedMessage.from_bytes(parsed.to_bytes())
    assert again == parsed


def test_stored_form_round_trip() -> None:
    for raw in (SIMPLE, MULTI):
        parsed = parse_message(raw)
        stored = parsed.to_bytes()
        assert ParsedMessage.from_bytes(stored) == parsed
        assert len(stored) < len(raw) * 4


def test_stored_form_rejects_garbage() -> None:
    import pytest

    with pytest.raises(ValueError):
        ParsedMessage.from_bytes(b"[1,2")
    with pytest.raises(ValueError):
        ParsedMessage.from_bytes(b"[]")


mime_pieces = st.sampled_from([
    b"Content-Type: multipart/mixed; boundary=q\r\n", b"--q\r\n", b"--q--\r\n", b"\r\n",
    b"Content-Type: message/rfc822\r\n", b"Content-Transfer-Encoding: base64\r\n",
    b"From: \"x\" <a@b>\r\n", b"To: g: ;\r\n", b"body line\r\n", b" folded\r\n", b"\n", b"(",
    b"Content-Type: text/plain; charset=\"unterminated\r\n", b"\xff\xfe", b"--q", b"Subject:",
])


@settings(max_examples=300)
@given(st.one_of(st.binary(max_size=300), st.lists(mime_pieces, max_size=40).map(b"".join)))
def test_never_raises_and_offsets_are_sane(raw: bytes) -> None:
    parsed = parse_message(raw)
    assert ParsedMessage.from_bytes(parsed.to_bytes()) == parsed
    render_value(body_structure_value(parsed.body))
    render_value(envelope_value(parsed.envelope))
    stack = [parsed.body]
    while stack:
        part = stack.pop()
        assert 0 <= part.header_offset <= part.body_offset <= part.end_offset <= len(raw)
        assert part.size == part.end_offset - part.body_offset
        stack.extend(part.children)
        if part.message is not None:
            stack.append(part.message.body)


header_pieces = st.sampled_from([
    b"From: a@b\r\n", b"from :x\n", b"To: c\r\n", b" folded\r\n", b"\tfolded\n", b"no colon\r\n",
    b"Subject: s", b"\r\n", b"\n", b"\r", b"\r\r\n", b" ", b"X-Other: \xff\r\n", b":empty name\r\n",
    b"Bad Name: v\r\n", b"Received: from x\r\n", b"body\r\n",
])
FIELD_NAMES = st.lists(st.sampled_from(["FROM", "to", "Subject", "received", "x-other", "Bad",
                                        "Bad Name", "x.*", "", "é"]),
                       max_size=4).map(tuple)


@settings(max_examples=400)
@given(st.one_of(st.binary(max_size=200), st.lists(header_pieces, max_size=30).map(b"".join)),
       FIELD_NAMES, st.booleans())
def test_fields_and_header_as_the_parser_reads_them(raw: bytes, names: tuple[str, ...],
                                                    exclude: bool) -> None:
    """The one-regex readers answer what the parser's own reading (`_split_header`) gives."""
    body = parse_message(raw).body
    header = section_bytes(raw, body, (), "HEADER")
    assert header is not None and message_header(raw) == header
    fields, _ = _split_header(header, 0, len(header))
    wanted = {n.lower() for n in names}
    kept = [header[s:e] for key, _, s, e in fields if (key in wanted) != exclude]
    assert header_fields(header, names, exclude) == b"".join(
        part if part.endswith(b"\n") else part + b"\r\n" for part in kept) + b"\r\n"


address_pieces = st.sampled_from([
    b"From: \"Last, First\" <a@b>, c@d\r\n", b"To: group: x@y, \"q\\\"t\" <z@w>;\r\n",
    b"Cc: =?utf-8?q?caf=C3=A9?= <e@f>\r\n", b"Sender: \xc3\xa9t\xc3\xa9 <s@t>\r\n",
    b"Reply-To: <@route:u@v>\r\n", b"Subject: line\r\n folded \"quoted\"\r\n",
    b"Subject: \xff\xfe raw\r\n", b"Date: x\r\n", b"Message-ID: <m@x>\r\n", b"Bcc: \r\n",
    b"In-Reply-To: <a\x00b@c>\r\n", b"\r\n",
])


@settings(max_examples=300)
@given(st.one_of(st.lists(address_pieces, max_size=12).map(b"".join),
                 st.lists(mime_pieces, max_size=30).map(b"".join)), st.booleans())
def test_render_envelope_is_the_generic_rendering(raw: bytes, utf8: bool) -> None:
    envelope = parse_message(raw).envelope
    assert render_envelope(envelope, utf8) == render_value(envelope_value(envelope), utf8)
    assert render_value(envelope, utf8) == render_envelope(envelope, utf8)


def test_quoted_printable_drops_transport_padding() -> None:
    """RFC 2045 6.7 rule 3: trailing whitespace on a line is deleted, so "= " ending a line is a
    soft line break too (imaptest's fetch-binary-mime-qp: 65 octets, BINARY.SIZE)."""
    encoded = (b"hello  \r\nbar=\r\n\r\nfoo\t=\r\nbar\r\nfoo\t \t= \r\n=62\r\nfoo = \t\r\n"
               b"bar\r\nfoo =\r\n=62\r\nfoo  \r\nbar=\r\n\r\nfoo_bar\r\n")
    decoded = decode_quoted_printable(encoded)
    assert decoded == (b"hello\r\nbar\r\nfoo\tbar\r\nfoo\t \tb\r\nfoo bar\r\nfoo b\r\nfoo\r\n"
                       b"bar\r\nfoo_bar\r\n")
    assert len(decoded) == 65
    assert decode_quoted_printable(b"caf=C3=A9 \t") == "café".encode()  # no line end at all
    assert decode_quoted_printable(b"a=\nb \n") == b"ab\n"  # bare LF line ends kept as sent


def test_header_fields_one_pattern_per_set_of_names() -> None:
    """The order and repetition of names change neither the answer nor the compiled pattern."""
    from sealmail import rfc5322

    header = b"To: b@x\r\nFrom: a@x\r\nSubject: s\r\n folded\r\n\r\n"
    rfc5322._fields_pattern.cache_clear()
    first = header_fields(header, ("subject", "From", "to"), False)
    assert first == b"To: b@x\r\nFrom: a@x\r\nSubject: s\r\n folded\r\n\r\n"
    assert header_fields(header, ("to", "subject", "From", "to"), False) == first
    assert header_fields(header, ("From",), True) == b"To: b@x\r\nSubject: s\r\n folded\r\n\r\n"
    assert rfc5322._fields_pattern.cache_info().misses == 2  # the two lists were one set
