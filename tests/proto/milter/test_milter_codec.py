"""The milter codec: byte transcripts of the packets Postfix and libmilter exchange, round trips
for every packet (hypothesis), and bad input (truncated, oversized, malformed)."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.proto import milter as m

# -- transcripts ---------------------------------------------------------------------------------


def test_optneg_as_postfix_sends_it() -> None:
    packet = m.encode_command(m.OptNeg(6, 0x1FF, 0x1FFFFF))
    assert packet == b"\x00\x00\x00\x0dO\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff"


def test_connect_helo_mail_rcpt_transcript() -> None:
    assert m.encode_command(m.Connect(b"[127.0.0.1]", b"4", 25, b"127.0.0.1")) == (
        b"\x00\x00\x00\x1a" b"C[127.0.0.1]\x00" b"4" b"\x00\x19" b"127.0.0.1\x00")
    assert m.encode_command(m.Connect(b"localhost", b"U")) == b"\x00\x00\x00\x0cClocalhost\x00U"
    assert m.encode_command(m.Helo(b"client.example")) == b"\x00\x00\x00\x10Hclient.example\x00"
    assert m.encode_command(m.Mail((b"<a@b>", b"SIZE=10"))) == (
        b"\x00\x00\x00\x0fM<a@b>\x00SIZE=10\x00")
    assert m.encode_command(m.Rcpt((b"<c@d>",))) == b"\x00\x00\x00\x07R<c@d>\x00"
    assert m.encode_command(m.Macro(b"C", ((b"j", b"mx"), (b"{daemon_name}", b"smtpd")))) == (
        b"\x00\x00\x00\x1bDCj\x00mx\x00{daemon_name}\x00smtpd\x00")


def test_message_transcript() -> None:
    assert m.encode_command(m.Data()) == b"\x00\x00\x00\x01T"
    assert m.encode_command(m.Header(b"Subject", b"hi")) == b"\x00\x00\x00\x0cLSubject\x00hi\x00"
    assert m.encode_command(m.EndOfHeaders()) == b"\x00\x00\x00\x01N"
    assert m.encode_command(m.Body(b"text\r\n")) == b"\x00\x00\x00\x07Btext\r\n"
    assert m.encode_command(m.EndOfMessage()) == b"\x00\x00\x00\x01E"
    assert m.encode_command(m.Abort()) == b"\x00\x00\x00\x01A"
    assert m.encode_command(m.Quit()) == b"\x00\x00\x00\x01Q"


def test_replies_decode_from_wire() -> None:
    reader = m.PacketReader()
    wire = (b"\x00\x00\x00\x01c" b"\x00\x00\x00\x01a"
            b"\x00\x00\x00\x17y550 5.7.1 Go away now\x00"
            b"\x00\x00\x00\x12i\x00\x00\x00\x00X-Test\x00value\x00"
            b"\x00\x00\x00\x0em\x00\x00\x00\x01Subject\x00\x00"
            b"\x00\x00\x00\x09+<x@y.z>\x00" b"\x00\x00\x00\x09-<x@y.z>\x00"
            b"\x00\x00\x00\x05bbody" b"\x00\x00\x00\x09qsuspect\x00")
    replies = [m.decode_reply(code, data) for code, data in reader.feed(wire)]
    assert replies == [
        m.Continue(), m.Accept(), m.ReplyCode(b"550 5.7.1 Go away now"),
        m.InsertHeader(0, b"X-Test", b"value"), m.ChangeHeader(1, b"Subject", b""),
        m.AddRecipient(b"<x@y.z>"), m.DeleteRecipient(b"<x@y.z>"), m.ReplaceBody(b"body"),
        m.Quarantine(b"suspect"),
    ]
    assert reader.pending == 0


def test_optneg_reply_with_macro_lists() -> None:
    wire = m.encode_reply(m.OptNeg(6, 0x11, 0x40, ((0, b"j {daemon_name}"), (5, b"i"))))
    ((code, data),) = m.PacketReader().feed(wire)
    assert m.decode_reply(code, data) == m.OptNeg(6, 0x11, 0x40,
                                                    ((0, b"j {daemon_name}"), (5, b"i")))


def test_fed_byte_by_byte_and_with_trailing_bytes() -> None:
    wire = m.encode_reply(m.AddHeader(b"A", b"b")) + m.encode_reply(m.Continue())
    reader = m.PacketReader()
    got = []
    for octet in wire + b"\x00\x00":
        got += reader.feed(bytes([octet]))
    assert [m.decode_reply(c, d) for c, d in got] == [m.AddHeader(b"A", b"b"), m.Continue()]
    assert reader.pending == 2  # a truncated length word waits for more


# -- bad input -----------------------------------------------------------------------------------


def test_oversized_packet_refused_on_its_length_word() -> None:
    reader = m.PacketReader(max_packet=100)
    with pytest.raises(m.MilterProtocolError, match="unreasonable packet length: 101"):
        reader.feed(b"\x00\x00\x00\x65")


def test_zero_length_refused() -> None:
    with pytest.raises(m.MilterProtocolError, match="bad packet length"):
        m.PacketReader().feed(b"\x00\x00\x00\x00")


@pytest.mark.parametrize(("code", "data", "message"), [
    (b"y", b"550 no terminator", "null terminator"),
    (b"i", b"\x00\x00", "too short"),
    (b"c", b"x", "unexpected data"),
    (b"h", b"A\x00b\x00extra", "too many"),
    (b"Z", b"", "unknown reply"),
    (b"O", b"\x00\x00\x00\x06", "too short"),
])
def test_malformed_replies(code: bytes, data: bytes, message: str) -> None:
    with pytest.raises(m.MilterProtocolError, match=message):
        m.decode_reply(code, data)


@pytest.mark.parametrize(("code", "data", "message"), [
    (b"C", b"host\x00X\x00\x00a\x00", "address family"),
    (b"D", b"Cj\x00", "without a value"),
    (b"M", b"", "no address"),
    (b"?", b"", "unknown command"),
])
def test_malformed_commands(code: bytes, data: bytes, message: str) -> None:
    with pytest.raises(m.MilterProtocolError, match=message):
        m.decode_command(code, data)


def test_nul_in_a_string_cannot_be_encoded() -> None:
    with pytest.raises(ValueError, match="NUL"):
        m.encode_command(m.Helo(b"a\0b"))


# -- round trips ---------------------------------------------------------------------------------

text = st.binary(max_size=40).map(lambda b: b.replace(b"\0", b""))
uint32 = st.integers(min_value=0, max_value=2**32 - 1)

commands = st.one_of(
    st.builds(m.OptNeg, uint32, uint32, uint32),
    st.builds(m.Macro, st.sampled_from([b"C", b"H", b"M", b"R", b"T", b"N", b"E"]),
              st.lists(st.tuples(text, text), max_size=4).map(tuple)),
    st.builds(m.Connect, text, st.sampled_from([b"4", b"6", b"L"]),
              st.integers(0, 65535), text),
    st.builds(m.Connect, text, st.just(b"U")),
    st.builds(m.Helo, text), st.builds(m.Unknown, text),
    st.builds(m.Mail, st.lists(text, min_size=1, max_size=4).map(tuple)),
    st.builds(m.Rcpt, st.lists(text, min_size=1, max_size=4).map(tuple)),
    st.builds(m.Header, text, text), st.builds(m.Body, st.binary(max_size=200)),
    st.sampled_from([m.Data(), m.EndOfHeaders(), m.EndOfMessage(), m.Abort(), m.Quit(),
                     m.QuitNewConnection()]),
)
replies = st.one_of(
    st.builds(m.OptNeg, uint32, uint32, uint32,
              st.lists(st.tuples(uint32, text), max_size=3).map(tuple)),
    st.sampled_from([m.Continue(), m.Accept(), m.Reject(), m.Tempfail(), m.Discard(),
                     m.Shutdown(), m.ConnectionFailure(), m.Skip(), m.Progress()]),
    st.builds(m.ReplyCode, text), st.builds(m.AddHeader, text, text),
    st.builds(m.InsertHeader, uint32, text, text), st.builds(m.ChangeHeader, uint32, text, text),
    st.builds(m.AddRecipient, text, st.none() | text), st.builds(m.DeleteRecipient, text),
    st.builds(m.ChangeFrom, text, st.none() | text), st.builds(m.ReplaceBody, st.binary()),
    st.builds(m.Quarantine, text),
)


@settings(max_examples=150, deadline=None)
@given(st.lists(commands, max_size=5), st.integers(1, 7))
def test_commands_round_trip(packets: list[m.Macro], step: int) -> None:
    wire = b"".join(m.encode_command(p) for p in packets)
    reader = m.PacketReader()
    got = []
    for start in range(0, len(wire), step):
        got += reader.feed(wire[start : start + step])
    assert [m.decode_command(c, d) for c, d in got] == packets


@settings(max_examples=150, deadline=None)
@given(replies)
def test_replies_round_trip(packet: m.Continue) -> None:
    ((code, data),) = m.PacketReader().feed(m.encode_reply(packet))
    assert m.decode_reply(code, data) == packet


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_garbage_never_crashes(wire: bytes) -> None:
    reader = m.PacketReader(max_packet=64)
    try:
        for code, data in reader.feed(wire):
            for decode in (m.decode_reply, m.decode_command):
                with contextlib.suppress(m.MilterProtocolError):
                    decode(code, data)
    except m.MilterProtocolError:
        pass
