"""The ServerConnection API: events, the host's answers, misuse, limits, TLS and AUTH states."""

from __future__ import annotations

import pytest

from sealmail.proto.smtp import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Hello,
    Limits,
    MailFrom,
    MessageData,
    Mode,
    NonSmtpCommand,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    StartTLS,
    UsageError,
)

OK_MAIL = Reply(250, "2.1.0", "Ok")
OK_RCPT = Reply(250, "2.1.5", "Ok")


def lmtp(**kwargs: object) -> ServerConnection:
    conn = ServerConnection(mode=Mode.LMTP, hostname="mx.example", session_id="s", **kwargs)  # type: ignore[arg-type]
    assert conn.data_to_send() == b"220 mx.example LMTP sealmail ready\r\n"
    return conn


def start_transaction(conn: ServerConnection, *rcpts: str) -> None:
    conn.receive_data(b"LHLO c\r\nMAIL FROM:<s@x>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.answer(OK_MAIL)
    for rcpt in rcpts:
        conn.receive_data(f"RCPT TO:<{rcpt}>\r\n".encode())
        event = conn.next_event()
        assert isinstance(event, RcptTo) and event.forward_path == rcpt
        conn.answer(OK_RCPT)
    conn.data_to_send()


def test_events_carry_parsed_values() -> None:
    conn = lmtp()
    conn.receive_data(b"LHLO client.example\r\nMAIL FROM:<> BODY=8bitmime\r\n")
    assert conn.next_event() == Hello("LHLO", "client.example")
    event = conn.next_event()
    assert isinstance(event, MailFrom)
    assert event.reverse_path == "" and event.address is None
    assert event.params == {"BODY": "8BITMIME"}
    conn.answer(OK_MAIL)
    conn.receive_data(b'RCPT TO:<"a b"@example.com> IGNOREQUOTA\r\n')
    event = conn.next_event()
    assert isinstance(event, RcptTo)
    assert event.forward_path == '"a b"@example.com'
    assert event.params == {"IGNOREQUOTA": None}
    assert event.address is not None and event.address.local_part == "a b"


def test_lmtp_needs_one_answer_per_recipient_in_order() -> None:
    conn = lmtp()
    start_transaction(conn, "a@x", "b@x", "a@x")
    conn.receive_data(b"DATA\r\nhi\r\n.\r\nNOOP\r\n")
    event = conn.next_event()
    assert isinstance(event, MessageData)
    assert event.recipients == ("a@x", "b@x", "a@x")
    assert event.content == b"hi\r\n"
    assert conn.replies_owed == 3
    conn.answer(Reply(250, "2.1.5", "one"))
    with pytest.raises(UsageError, match="waiting"):
        conn.next_event()
    conn.answer(Reply(452, "4.2.2", "two"))
    conn.answer(Reply(550, "5.1.1", "three"))
    with pytest.raises(UsageError, match="no event"):
        conn.answer(Reply(250, "2.1.5", "four"))
    assert conn.data_to_send() == (
        b"354 End data with <CR><LF>.<CR><LF>\r\n"
        b"250 2.1.5 one\r\n452 4.2.2 two\r\n550 5.1.1 three\r\n"
    )
    assert conn.recipients == ()
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send() == b"250 2.0.0 Ok\r\n"


def test_smtp_needs_one_answer() -> None:
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx")
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<a@x>\r\nRCPT TO:<b@x>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.answer(OK_MAIL)
    for _ in range(2):
        assert isinstance(conn.next_event(), RcptTo)
        conn.answer(OK_RCPT)
    conn.receive_data(b"DATA\r\nx\r\n.\r\n")
    assert isinstance(conn.next_event(), MessageData)
    conn.answer(Reply(250, "2.0.0", "queued"))
    assert conn.next_event() is NEED_DATA


def test_answers_are_checked() -> None:
    conn = lmtp()
    with pytest.raises(UsageError):
        conn.answer(OK_MAIL)
    conn.receive_data(b"LHLO c\r\nMAIL FROM:<s@x>\r\n")
    conn.next_event()
    conn.next_event()
    with pytest.raises(UsageError):
        conn.answer(Reply(354, None, "no"))
    with pytest.raises(UsageError):
        conn.auth_challenge(b"x")
    with pytest.raises(UsageError):
        conn.auth_succeeded("x")
    with pytest.raises(UsageError):
        conn.tls_started()


def test_refused_mail_and_rcpt_do_not_count() -> None:
    conn = lmtp()
    conn.receive_data(b"LHLO c\r\nMAIL FROM:<s@x>\r\nMAIL FROM:<t@x>\r\nRCPT TO:<a@x>\r\n")
    conn.next_event()
    conn.next_event()
    conn.answer(Reply(550, "5.7.1", "no"))
    conn.next_event()
    conn.answer(OK_MAIL)
    conn.next_event()
    conn.answer(Reply(550, "5.1.1", "unknown"))
    assert conn.recipients == ()
    conn.receive_data(b"DATA\r\n")
    event = conn.next_event()
    assert isinstance(event, ProtocolError) and event.reply.code == 503


def test_pipelined_data_after_refused_recipients_is_not_a_bad_command() -> None:
    """RFC 2920 3.1: clients send DATA without waiting for RCPT replies; Postfix then sends RSET."""
    conn = lmtp(limits=Limits(max_bad_commands=3))
    conn.receive_data(b"LHLO c\r\n")
    conn.next_event()
    for _ in range(10):
        conn.receive_data(b"MAIL FROM:<s@x>\r\nRCPT TO:<nobody@x>\r\nDATA\r\nRSET\r\n")
        conn.next_event()
        conn.answer(OK_MAIL)
        conn.next_event()
        conn.answer(Reply(550, "5.1.1", "unknown"))
        event = conn.next_event()
        assert isinstance(event, ProtocolError) and event.reply.code == 503
        conn.next_event()  # Reset
    assert not conn.closed and conn.bad_commands == 0


def test_a_554_greeting_is_the_first_error() -> None:
    """Postfix's smtpd counts its 554 greeting (a milter's CONNECT reject) toward
    smtpd_hard_error_limit and as a policy error (smtpd.c: error_count++, MAIL_ERROR_POLICY)."""
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx.example", greeting_code=554,
                            greeting_text="ESMTP not accepting connections",
                            limits=Limits(max_bad_commands=2))
    assert conn.data_to_send() == b"554 mx.example ESMTP not accepting connections\r\n"
    assert conn.bad_commands == 1 and conn.error_classes == {"policy"}
    conn.receive_data(b"FROB 1\r\nFROB 2\r\n")
    assert isinstance(conn.next_event(), ProtocolError)
    # The second error reaches the limit: 421 at once, FROB 2 is never read (smtpd.c).
    assert conn.data_to_send() == (b"500 5.5.2 Error: command not recognized\r\n"
                                   b"421 4.7.0 mx.example Error: too many errors\r\n")
    assert isinstance(conn.next_event(), ConnectionClosed) and conn.closed


def smtp(**kwargs: object) -> ServerConnection:
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx.example", session_id="s", **kwargs)  # type: ignore[arg-type]
    conn.data_to_send()
    return conn


def test_smtp_counts_every_refused_command_toward_the_hard_error_limit() -> None:
    """Postfix's smtpd.c: a command whose handler failed (a recipient the host refused, too)
    is an error; once they reach smtpd_hard_error_limit, 421 follows the last refusal at once.
    A dictionary attack of unknown recipients ends there."""
    conn = smtp(limits=Limits(max_bad_commands=3))
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<s@x>\r\n")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), MailFrom)
    conn.answer(OK_MAIL)
    conn.data_to_send()
    for n in range(1, 4):
        conn.receive_data(f"RCPT TO:<u{n}@x>\r\n".encode())
        assert isinstance(conn.next_event(), RcptTo)
        conn.answer(Reply(550, "5.1.1", f"<u{n}@x>: Recipient address rejected"))
        assert conn.bad_commands == n
    assert conn.data_to_send().endswith(b"550 5.1.1 <u3@x>: Recipient address rejected\r\n"
                                        b"421 4.7.0 mx.example Error: too many errors\r\n")
    assert conn.closed


def test_lmtp_never_counts_the_hosts_refusals() -> None:
    """An MTA delivering to many unknown users over LMTP keeps its session: only LMTP's own
    protocol errors count toward lmtp_max_bad_commands."""
    conn = lmtp(limits=Limits(max_bad_commands=2))
    start_transaction(conn)
    for n in range(5):
        conn.receive_data(f"RCPT TO:<u{n}@x>\r\n".encode())
        assert isinstance(conn.next_event(), RcptTo)
        conn.answer(Reply(550, "5.1.1", "User unknown"))
    assert conn.bad_commands == 0 and not conn.closed


def test_junk_commands_past_the_limit_are_errors_until_a_message_is_delivered() -> None:
    """smtpd_junk_command_limit: NOOP, RSET, VRFY, HELO and EHLO are free up to the limit
    (smtpd.c: `junk_cmds++ > limit`); each after that is an error. A delivered message starts
    the count again."""
    conn = smtp(limits=Limits(max_bad_commands=20, max_junk_commands=2))
    conn.receive_data(b"EHLO c\r\nNOOP\r\nRSET\r\n")
    for _ in range(3):
        conn.next_event()
    assert conn.bad_commands == 0
    conn.receive_data(b"VRFY someone\r\n")
    assert conn.next_event() is NEED_DATA and conn.bad_commands == 1
    conn.receive_data(b"MAIL FROM:<s@x>\r\n")
    assert isinstance(conn.next_event(), MailFrom)
    conn.answer(OK_MAIL)
    conn.receive_data(b"RCPT TO:<r@x>\r\n")
    assert isinstance(conn.next_event(), RcptTo)
    conn.answer(OK_RCPT)
    conn.receive_data(b"DATA\r\nhi\r\n.\r\n")
    assert isinstance(conn.next_event(), MessageData)
    conn.answer(Reply(250, "2.0.0", "Ok: queued"))
    conn.receive_data(b"NOOP\r\nNOOP\r\nNOOP\r\n")
    while conn.next_event() is not NEED_DATA:
        pass
    assert conn.bad_commands == 1  # three free again after the message


@pytest.mark.parametrize("line", [b"GET / HTTP/1.1", b"CONNECT 10.0.0.1:25 HTTP/1.0",
                                  b"post /x HTTP/1.1", b"Subject: hello", b"Received: from x"])
def test_forbidden_commands_end_the_session(line: bytes) -> None:
    """smtpd_forbidden_commands (CONNECT GET POST) and mail headers as commands: an abused
    proxy or a client lost in its DATA gets Postfix's 221 and the session ends."""
    conn = smtp()
    conn.receive_data(line + b"\r\nEHLO c\r\n")
    event = conn.next_event()
    assert isinstance(event, NonSmtpCommand) and event.line == line
    assert conn.data_to_send() == b"221 2.7.0 Error: I can break rules, too. Goodbye.\r\n"
    assert conn.closed


def test_lmtp_has_no_forbidden_commands() -> None:
    conn = lmtp()
    conn.receive_data(b"GET / HTTP/1.1\r\n")
    assert isinstance(conn.next_event(), ProtocolError)
    assert not conn.closed


def test_rset_hello_and_quit_events() -> None:
    conn = lmtp()
    start_transaction(conn, "a@x")
    conn.receive_data(b"RSET\r\nLHLO again\r\nQUIT\r\nNOOP\r\n")
    assert conn.next_event() == Reset()
    assert conn.next_event() == Hello("LHLO", "again")
    assert conn.next_event() == Quit()
    assert conn.closed
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.data_to_send().endswith(b"221 2.0.0 Bye\r\n")
    conn.receive_data(b"NOOP\r\n")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.data_to_send() == b""


def test_eof_mid_data_closes() -> None:
    conn = lmtp()
    start_transaction(conn, "a@x")
    conn.receive_data(b"DATA\r\npartial")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.closed


def test_eof_after_buffered_commands_gives_them_first() -> None:
    conn = lmtp()
    conn.receive_data(b"LHLO c\r\nRSET\r\n")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), Hello)
    assert isinstance(conn.next_event(), Reset)
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_auth_exchange_and_identity() -> None:
    conn = lmtp(auth_mechanisms=("plain", "SCRAM-SHA-256"), auth_required=True)
    conn.receive_data(b"LHLO c\r\n")
    conn.next_event()
    assert "AUTH PLAIN SCRAM-SHA-256" in conn.capabilities
    conn.receive_data(b"AUTH scram-sha-256 =\r\n")
    assert conn.next_event() == AuthStart("SCRAM-SHA-256", b"")
    with pytest.raises(UsageError, match="auth_challenge"):
        conn.answer(Reply(235, "2.7.0", "no"))
    conn.auth_challenge(b"server-first")
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"Y2xpZW50\r\n")
    assert conn.next_event() == AuthResponse(b"client")
    conn.auth_succeeded("alice")
    assert conn.authenticated_as == "alice"
    assert not any(c.startswith("AUTH") for c in conn.capabilities)
    assert conn.data_to_send().endswith(
        b"334 c2VydmVyLWZpcnN0\r\n235 2.7.0 Authentication successful\r\n"
    )


def test_auth_response_line_may_be_longer_than_a_command() -> None:
    conn = lmtp(auth_mechanisms=("PLAIN",), limits=Limits(max_line_length=512))
    conn.receive_data(b"LHLO c\r\nAUTH PLAIN\r\n")
    conn.next_event()
    conn.next_event()
    conn.auth_challenge(b"")
    long = b"QUFB" * 2000
    conn.receive_data(long + b"\r\n")
    assert conn.next_event() == AuthResponse(b"AAA" * 2000)


def test_starttls_discards_pipelined_plaintext() -> None:
    # CVE-2011-0411 class: commands sent in clear after STARTTLS must not run under TLS.
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx", starttls_available=True)
    conn.receive_data(b"EHLO c\r\nSTARTTLS\r\nMAIL FROM:<injected@x>\r\n")
    conn.next_event()
    assert conn.next_event() == StartTLS()
    conn.answer(Reply(220, "2.0.0", "Ready to start TLS"))
    assert conn.next_event() is NEED_DATA
    conn.receive_data(b"\x16\x03\x01 handshake bytes")
    conn.tls_started()
    assert conn.tls_active and conn.hello_name is None
    assert "STARTTLS" not in conn.capabilities
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<real@x>\r\n")
    assert isinstance(conn.next_event(), Hello)
    event = conn.next_event()
    assert isinstance(event, MailFrom) and event.reverse_path == "real@x"


def test_starttls_refused_by_host_goes_on() -> None:
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx", starttls_available=True)
    conn.receive_data(b"EHLO c\r\nSTARTTLS\r\nNOOP\r\n")
    conn.next_event()
    conn.next_event()
    conn.answer(Reply(454, "4.7.0", "TLS not available"))
    assert conn.next_event() is NEED_DATA
    assert conn.data_to_send().endswith(b"454 4.7.0 TLS not available\r\n250 2.0.0 Ok\r\n")


def test_tls_started_can_change_mechanisms() -> None:
    conn = lmtp(auth_mechanisms=("SCRAM-SHA-256",), starttls_available=True)
    conn.receive_data(b"LHLO c\r\nSTARTTLS\r\n")
    conn.next_event()
    conn.next_event()
    conn.answer(Reply(220, "2.0.0", "go"))
    conn.tls_started(auth_mechanisms=("PLAIN", "SCRAM-SHA-256"))
    assert "AUTH PLAIN SCRAM-SHA-256" in conn.capabilities


def test_bad_commands_limit_zero_means_none() -> None:
    conn = lmtp(limits=Limits(max_bad_commands=0))
    conn.receive_data(b"FROB\r\n" * 100)
    events = [conn.next_event() for _ in range(100)]
    assert all(isinstance(e, ProtocolError) for e in events)
    assert not conn.closed and conn.bad_commands == 100


def test_malformed_bdat_closes() -> None:
    conn = lmtp()
    start_transaction(conn, "a@x")
    conn.receive_data(b"BDAT 1x\r\nMAIL FROM:<x@y>\r\n")
    event = conn.next_event()
    assert isinstance(event, ProtocolError) and event.reply.code == 501
    assert conn.closed


def test_oversized_message_gets_552_per_recipient_and_an_event() -> None:
    conn = lmtp(limits=Limits(max_message_size=5))
    start_transaction(conn, "a@x", "b@x")
    conn.receive_data(b"DATA\r\n123456\r\n.\r\n")
    event = conn.next_event()
    assert isinstance(event, ProtocolError) and event.reply.code == 552
    assert conn.data_to_send().count(b"552 5.2.3") == 2
    assert conn.recipients == ()


@pytest.mark.parametrize("bad", [{"max_line_length": 100}, {"max_recipients": -1}])
def test_limits_are_checked(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        Limits(**bad)


def test_dsn_parameters_when_enabled() -> None:
    """RFC 3461: with dsn=True, DSN is advertised and RET/ENVID/NOTIFY/ORCPT are checked."""
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx", dsn=True)
    conn.data_to_send()
    conn.receive_data(
        b"EHLO c\r\nMAIL FROM:<s@x> RET=hdrs ENVID=QQ+2B1\r\n"
        b"RCPT TO:<a@x> NOTIFY=success,failure ORCPT=rfc822;a@x\r\n"
        b"RCPT TO:<b@x> NOTIFY=NEVER,SUCCESS\r\nRCPT TO:<c@x> ORCPT=rfc822\r\n"
    )
    assert isinstance(conn.next_event(), Hello)
    assert b"250 DSN\r\n" in conn.data_to_send()
    mail = conn.next_event()
    assert isinstance(mail, MailFrom) and mail.params == {"RET": "HDRS", "ENVID": "QQ+2B1"}
    conn.answer(OK_MAIL)
    rcpt = conn.next_event()
    assert isinstance(rcpt, RcptTo)
    assert rcpt.params == {"NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;a@x"}
    conn.answer(OK_RCPT)
    for _ in range(2):  # NEVER with others, and ORCPT without an address, are refused
        event = conn.next_event()
        assert isinstance(event, ProtocolError) and event.reply.code == 501


def test_dsn_parameters_are_refused_without_dsn() -> None:
    conn = ServerConnection(mode=Mode.SMTP, hostname="mx")
    conn.receive_data(b"EHLO c\r\nMAIL FROM:<s@x> RET=FULL\r\n")
    conn.next_event()
    assert b"DSN" not in conn.data_to_send().split(b"220 ", 1)[1]
    event = conn.next_event()
    assert isinstance(event, ProtocolError) and event.reply.code == 555


SECRET = b"s3cretPW"


@pytest.mark.parametrize("lines", [
    b"EHLO x\r\nAUTH PLAIN " + SECRET + b"!!\r\n",
    b"EHLO x\r\nAUTH PLAIN " + SECRET + b" extra\r\n",
    b"EHLO x\r\nAUTH LOGIN " + SECRET + b"!!\r\n",
    b"AUTH PLAIN " + SECRET + b"\r\n",  # before EHLO
    b"EHLO x\r\nAUTH LOGIN\r\n" + SECRET + b"!!\r\n",  # a response that is not base64
])
@pytest.mark.parametrize("mode", [Mode.SMTP, Mode.LMTP])
def test_errors_never_echo_credentials(lines: bytes, mode: Mode) -> None:
    """Neither the reply nor the ProtocolError a daemon may log carries what followed AUTH."""
    conn = ServerConnection(mode=mode, hostname="mx", auth_mechanisms=("PLAIN", "LOGIN"))
    conn.receive_data(lines.replace(b"EHLO", b"LHLO") if mode is Mode.LMTP else lines)
    seen = []
    for _ in range(10):
        event = conn.next_event()
        seen.append(repr(event))
        if isinstance(event, AuthStart):
            conn.auth_challenge(b"Username:")
        elif event is NEED_DATA or isinstance(event, ProtocolError):
            break
    assert any("ProtocolError" in text for text in seen)
    assert SECRET not in conn.data_to_send() and SECRET.decode() not in " ".join(seen)
