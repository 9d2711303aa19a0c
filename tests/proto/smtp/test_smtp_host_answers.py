"""The core's opt-in host answers for access restrictions: HELO/EHLO (`answer_hello`, for
smtpd_delay_reject = no) and DATA (`answer_data`, for smtpd_data_restrictions), and
`buffered_input`, which tells the host a client sent ahead (RFC 2920)."""

from __future__ import annotations

import pytest

from sealmail.proto.smtp import (
    DataCommand,
    Hello,
    HelloCommand,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
    UsageError,
)


def smtp(**kwargs: bool) -> ServerConnection:
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx.example", **kwargs)
    conn.data_to_send()
    return conn


def test_a_refused_helo_leaves_no_name_and_an_accepted_one_gets_the_core_s_250() -> None:
    conn = smtp(answer_hello=True)
    conn.receive_data(b"EHLO c\r\n")
    event = conn.next_event()
    assert event == HelloCommand("EHLO", "c") and isinstance(event, Hello)
    conn.answer(Reply(504, "5.5.2", "<c>: Helo command rejected: need fully-qualified hostname"))
    assert conn.data_to_send() == (
        b"504 5.5.2 <c>: Helo command rejected: need fully-qualified hostname\r\n")
    assert conn.hello_name is None
    conn.receive_data(b"EHLO c.test\r\n")
    assert isinstance(conn.next_event(), HelloCommand)
    conn.answer(Reply(250, None, "ignored"))
    out = conn.data_to_send()
    assert out.startswith(b"250-mx.example\r\n") and b"PIPELINING" in out
    assert conn.hello_name == "c.test"


def test_data_waits_for_the_host() -> None:
    conn = smtp(answer_data=True)
    conn.receive_data(b"HELO c.test\r\nMAIL FROM:<a@b.test>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.answer(Reply(250, "2.1.0", "Ok"))
    conn.receive_data(b"RCPT TO:<r@b.test>\r\n")
    assert isinstance(conn.next_event(), RcptTo)
    conn.answer(Reply(250, "2.1.5", "Ok"))
    conn.data_to_send()
    conn.receive_data(b"DATA\r\n")
    assert isinstance(conn.next_event(), DataCommand)
    with pytest.raises(UsageError):
        conn.answer(Reply(250, "2.0.0", "no"))
    conn.answer(Reply(554, "5.7.1", "<DATA>: Data command rejected: Access denied"))
    assert conn.data_to_send() == b"554 5.7.1 <DATA>: Data command rejected: Access denied\r\n"
    conn.receive_data(b"DATA\r\n")
    assert isinstance(conn.next_event(), DataCommand)
    conn.answer(Reply(354, None, "go ahead"))
    assert conn.data_to_send().startswith(b"354 ")
    conn.receive_data(b"Subject: x\r\n\r\nhi\r\n.\r\n")
    event = conn.next_event()
    assert isinstance(event, MessageData) and event.content == b"Subject: x\r\n\r\nhi\r\n"


def test_buffered_input_shows_a_client_that_sent_ahead() -> None:
    conn = smtp()
    conn.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert conn.buffered_input == len(b"MAIL FROM:<a@b.test>\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    assert conn.buffered_input == 0


def test_without_the_options_the_core_answers_as_before() -> None:
    conn = smtp()
    conn.receive_data(b"EHLO c.test\r\n")
    assert type(conn.next_event()) is Hello
    assert conn.data_to_send().startswith(b"250-mx.example")
