"""The MTA's side of a milter conversation, without I/O: negotiation, skipped events, replies
that end a message or a connection, and modification requests."""

from __future__ import annotations

import pytest

from sealmail.proto import milter as m
from sealmail.proto.milter import Outcome, Stage


def negotiated(actions: int = int(m.ACTIONS), protocol: int = 0,
               macros: tuple[tuple[int, bytes], ...] = ()) -> m.MilterSession:
    session = m.MilterSession()
    assert session.start().startswith(b"\x00\x00\x00\x0dO\x00\x00\x00\x06")
    session.negotiate(m.OptNeg(6, actions, protocol, macros))
    return session


def test_negotiation_refuses_a_newer_version_and_unknown_actions() -> None:
    with pytest.raises(m.MilterProtocolError, match="version 7 conflict"):
        m.MilterSession().negotiate(m.OptNeg(7, 0, 0))
    with pytest.raises(m.MilterProtocolError, match="request mask"):
        m.MilterSession().negotiate(m.OptNeg(6, 0x400, 0))
    with pytest.raises(m.MilterProtocolError, match="handshake"):
        m.MilterSession().negotiate(m.Continue())


def test_macro_lists_from_the_milter() -> None:
    session = negotiated(macros=((0, b"j {daemon_name}"), (5, b"i {auth_type}"), (99, b"x")))
    assert session.macro_lists == {Stage.CONNECT: ("j", "{daemon_name}"),
                                   Stage.EOM: ("i", "{auth_type}")}


def test_event_with_macros_and_reply() -> None:
    session = negotiated()
    out, owed = session.event(Stage.CONNECT, m.Connect(b"h", b"4", 1, b"1.2.3.4"),
                              ((b"j", b"mx.example"),))
    assert out == (m.encode_command(m.Macro(b"C", ((b"j", b"mx.example"),)))
                   + m.encode_command(m.Connect(b"h", b"4", 1, b"1.2.3.4")))
    assert owed
    assert session.receive(m.Continue()) == m.session.CONTINUE


def test_unwanted_events_send_only_macros_and_no_reply_is_waited_for() -> None:
    session = negotiated(protocol=int(m.ProtocolFlag.NOHELO | m.ProtocolFlag.NR_RCPT))
    out, owed = session.event(Stage.HELO, m.Helo(b"x"), ((b"{tls_version}", b"TLSv1.3"),))
    assert out == m.encode_command(m.Macro(b"H", ((b"{tls_version}", b"TLSv1.3"),)))
    assert not owed
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    session.receive(m.Continue())
    out, owed = session.event(Stage.RCPT, m.Rcpt((b"<c@d>",)))
    assert out == m.encode_command(m.Rcpt((b"<c@d>",)))
    assert not owed


def test_an_older_milter_gets_no_events_its_version_lacks() -> None:
    session = m.MilterSession()
    session.negotiate(m.OptNeg(2, 0, 0))
    assert session.event(Stage.DATA, m.Data()) == (b"", False)
    assert session.event(Stage.UNKNOWN, m.Unknown(b"XYZZY")) == (b"", False)


@pytest.mark.parametrize(("reply", "expected"), [
    (m.Reject(), "550 5.7.1 Command rejected"),
    (m.Tempfail(), "451 4.7.1 Service unavailable - try again later"),
    (m.ReplyCode(b"554 5.7.0 100%% spam, 5% sure"), "554 5.7.0 100% spam, 5 sure"),
    (m.ReplyCode(b"451-4.7.1 first\r\n451 4.7.1 second"),
     "451-4.7.1 first\r\n451 4.7.1 second"),
])
def test_rejections_in_postfix_words(reply: m.Reject, expected: str) -> None:
    session = negotiated()
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    assert session.receive(reply) == m.Verdict(Outcome.REJECT, expected)
    assert session.abort() == m.encode_command(m.Abort())
    assert session.active and session.abort() == b""


def test_accept_ends_the_milters_part_in_the_message() -> None:
    session = negotiated()
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    assert session.receive(m.Accept()).outcome is Outcome.ACCEPT
    assert session.event(Stage.RCPT, m.Rcpt((b"<c@d>",))) == (b"", False)
    session.message_done()
    assert session.event(Stage.MAIL, m.Mail((b"<a@b>",)))[1]


@pytest.mark.parametrize("text", [b"250 ok", b"55 short", b"550-no final line\r\n",
                                  b"550 4.7.1 class mismatch"])
def test_malformed_reply_code(text: bytes) -> None:
    session = negotiated()
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    with pytest.raises(m.MilterProtocolError, match="malformed reply"):
        session.receive(m.ReplyCode(text))


def test_a_connect_rejection_sticks_to_the_connection() -> None:
    session = negotiated()
    session.event(Stage.CONNECT, m.Connect(b"h", b"U"))
    verdict = session.receive(m.Reject())
    assert verdict == m.Verdict(Outcome.REJECT, "550 5.7.1 Command rejected")
    assert session.sticky == verdict and not session.active
    assert session.event(Stage.MAIL, m.Mail((b"<a@b>",))) == (b"", False)


def test_discard_at_connect_is_ignored_as_postfix_does() -> None:
    session = negotiated()
    session.event(Stage.HELO, m.Helo(b"h"))
    assert session.receive(m.Discard()).outcome is Outcome.CONTINUE


def test_end_of_message_collects_edits_until_the_verdict() -> None:
    session = negotiated()
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    session.receive(m.Continue())
    session.event(Stage.EOM, m.EndOfMessage())
    for reply in (m.Progress(), m.InsertHeader(0, b"DKIM-Signature", b"v=1"),
                  m.Quarantine(b"looks odd"), m.AddRecipient(b"<x@y>"),
                  m.ReplaceBody(b"new\r\n")):
        assert session.receive(reply) is None
    assert session.receive(m.Accept()).outcome is Outcome.ACCEPT
    assert session.edits == [m.InsertHeader(0, b"DKIM-Signature", b"v=1"),
                             m.AddRecipient(b"<x@y>"), m.ReplaceBody(b"new\r\n")]
    assert session.quarantine == "looks odd"
    session.message_done()
    assert session.active


def test_edits_outside_end_of_message_or_not_negotiated_are_errors() -> None:
    session = negotiated(actions=int(m.Action.ADDHDRS))
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    with pytest.raises(m.MilterProtocolError, match="before end of message"):
        session.receive(m.AddHeader(b"A", b"b"))
    session.event(Stage.EOM, m.EndOfMessage())
    with pytest.raises(m.MilterProtocolError, match="not negotiated"):
        session.receive(m.DeleteRecipient(b"<a@b>"))


def test_skip_stops_body_chunks() -> None:
    session = negotiated()
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    session.receive(m.Continue())
    session.event(Stage.BODY, m.Body(b"1"))
    session.receive(m.Skip())
    assert session.event(Stage.BODY, m.Body(b"2")) == (b"", False)
    assert session.event(Stage.EOM, m.EndOfMessage())[1]


def test_a_reply_with_no_event_pending_is_an_error() -> None:
    with pytest.raises(m.MilterProtocolError, match="no event pending"):
        negotiated().receive(m.Continue())


def test_edits_are_bounded() -> None:
    session = m.MilterSession(max_edit_octets=100)
    session.negotiate(m.OptNeg(6, int(m.ACTIONS), 0))
    session.event(Stage.MAIL, m.Mail((b"<a@b>",)))
    session.receive(m.Continue())
    session.event(Stage.EOM, m.EndOfMessage())
    assert session.receive(m.ReplaceBody(b"x" * 60)) is None
    with pytest.raises(m.MilterProtocolError, match="more than 100 octets"):
        session.receive(m.ReplaceBody(b"x" * 60))
