"""The connection object: framing, literals and their limits, states, continuations, budget."""

from __future__ import annotations

import pytest

from sealmail.proto.imap import (
    NEED_DATA,
    Append,
    AuthenticateAborted,
    AuthenticateData,
    CommandReceived,
    ConnectionClosed,
    ConnectionState,
    ContinuationRequest,
    Event,
    IdleDone,
    Limits,
    Login,
    Noop,
    ProtocolError,
    Select,
    ServerConnection,
    StatusResponse,
    UsageError,
)


def events(conn: ServerConnection, data: bytes = b"") -> list[Event]:
    if data:
        conn.receive_data(data)
    out: list[Event] = []
    while (event := conn.next_event()) is not NEED_DATA:
        out.append(event)
        if isinstance(event, ConnectionClosed | CommandReceived | AuthenticateData | IdleDone):
            break
    return out


def logged_in(limits: Limits | None = None) -> ServerConnection:
    conn = ServerConnection(limits, ConnectionState.AUTHENTICATED)
    return conn


def test_commands_come_one_at_a_time_in_order() -> None:
    conn = ServerConnection()
    conn.receive_data(b"a1 NOOP\r\na2 LOGIN u p\r\n")
    assert conn.next_event() == CommandReceived(Noop("a1"))
    assert conn.next_event() is NEED_DATA  # a1 is not answered yet
    conn.send(StatusResponse("OK", "done", "a1"))
    assert conn.next_event() == CommandReceived(Login("a2", "u", "p"))
    conn.send(StatusResponse("OK", "welcome", "a2"))
    assert conn.state is ConnectionState.AUTHENTICATED
    assert conn.data_to_send() == b"a1 OK done\r\na2 OK welcome\r\n"


def test_sync_literal_gets_continuation_and_bytewise_feed_works() -> None:
    conn = ServerConnection()
    wire = b"a LOGIN {4}\r\nfred {3}\r\nabc\r\n"
    got: list[Event] = []
    for i in range(len(wire)):
        got += events(conn, wire[i : i + 1])
    assert got == [CommandReceived(Login("a", "fred", "abc"))]
    assert conn.data_to_send() == b"+ Ready for literal data\r\n" * 2


def test_sync_literal_over_limit_is_refused_before_it_is_sent() -> None:
    conn = logged_in(Limits(max_literal_size=10))
    assert isinstance(events(conn, b"a1 LOGIN {11}\r\n")[0], ProtocolError)
    out = conn.data_to_send()
    assert out.startswith(b"a1 BAD [TOOBIG] ")
    assert b"+ " not in out
    # The client never sends the literal; the next command is read normally.
    assert events(conn, b"a2 NOOP\r\n") == [CommandReceived(Noop("a2"))]


def test_append_uses_its_own_limit_and_gets_no() -> None:
    conn = logged_in(Limits(max_literal_size=10, max_append_size=100))
    got = events(conn, b"a APPEND x {50}\r\n" + b"m" * 50 + b"\r\n")
    assert got == [CommandReceived(Append("a", "x", message=b"m" * 50))]
    conn.send(StatusResponse("OK", "appended", "a"))
    conn.data_to_send()
    events(conn, b"b APPEND x {101}\r\n")
    assert conn.data_to_send().startswith(b"b NO [TOOBIG] ")


def test_nonsync_literal_over_limit_is_read_and_dropped() -> None:
    conn = logged_in(Limits(max_literal_size=10))
    data = b"a1 SELECT {20+}\r\n" + b"x" * 20 + b" {3+}\r\nabc\r\na2 NOOP\r\n"
    got = events(conn, data)
    assert isinstance(got[0], ProtocolError)
    assert got[1] == CommandReceived(Noop("a2"))
    assert conn.data_to_send().startswith(b"a1 BAD [TOOBIG] ")


def test_literal_minus_caps_nonsync_literals_at_4096() -> None:
    conn = logged_in(Limits(literal_minus=True))
    got = events(conn, b"a APPEND x {4097+}\r\n" + b"y" * 4097 + b"\r\nb NOOP\r\n")
    assert isinstance(got[0], ProtocolError)
    assert got[1] == CommandReceived(Noop("b"))
    conn.send(StatusResponse("OK", "", "b"))
    conn.data_to_send()
    got = events(conn, b"c APPEND x {4096+}\r\n" + b"y" * 4096 + b"\r\n")
    assert isinstance(got[0], CommandReceived)


def test_command_size_limit_counts_all_literals() -> None:
    conn = ServerConnection(Limits(max_literal_size=1000, max_command_size=1500))
    got = events(conn, b"a LOGIN {900+}\r\n" + b"u" * 900 + b" {900}\r\n")
    assert isinstance(got[0], ProtocolError)
    assert conn.data_to_send().startswith(b"a BAD [TOOBIG]")


def test_line_too_long_ends_the_session() -> None:
    conn = ServerConnection(Limits(max_line_length=1000))
    got = events(conn, b"a NOOP " + b"x" * 2000 + b"\r\n")
    assert isinstance(got[0], ProtocolError)
    assert conn.data_to_send().startswith(b"* BYE ")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_default_line_limit_takes_the_largest_rfc2971_id() -> None:
    """RFC 2971 3: up to 30 field-value pairs, fields up to 30 octets, values up to 1024."""
    pairs = b" ".join(b'"%s" "%s"' % (b"f%029d" % n, b"v" * 1024) for n in range(30))
    line = b"a ID (" + pairs + b")"
    assert len(line) > 31000
    got = events(ServerConnection(), line + b"\r\n")
    assert len(got) == 1 and isinstance(got[0], CommandReceived)


def test_bad_command_budget() -> None:
    conn = ServerConnection(Limits(max_bad_commands=3))
    events(conn, b"a BOGUS\r\nb BOGUS\r\n")
    events(conn)
    assert conn.bad_commands == 2
    got = events(conn, b"c BOGUS\r\nd NOOP\r\n")
    got += events(conn)
    assert isinstance(got[-1], ConnectionClosed)
    assert conn.data_to_send().endswith(b"* BYE Too many bad commands\r\n")


def test_host_bad_counts_toward_budget() -> None:
    conn = ServerConnection(Limits(max_bad_commands=1))
    events(conn, b"a NOOP\r\n")
    conn.send(StatusResponse("BAD", "no", "a"))
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_state_transitions_follow_tagged_results() -> None:
    conn = logged_in()
    assert events(conn, b"s1 SELECT INBOX\r\n") == [CommandReceived(Select("s1", "INBOX"))]
    conn.send(StatusResponse("OK", "", "s1"))
    assert conn.state is ConnectionState.SELECTED
    events(conn, b"s2 SELECT nosuch\r\n")
    conn.send(StatusResponse("NO", "no such mailbox", "s2"))
    # RFC 9051 6.3.2: a failed SELECT leaves no mailbox selected.
    assert conn.state is ConnectionState.AUTHENTICATED
    events(conn, b"s3 CLOSE\r\n")
    assert conn.data_to_send().endswith(
        b"s3 BAD CLOSE is not allowed in the authenticated state\r\n")


def test_preauth_greeting() -> None:
    conn = ServerConnection()
    conn.send(StatusResponse("PREAUTH", "welcome back"))
    assert conn.state is ConnectionState.AUTHENTICATED


def test_authenticate_exchange_and_cancel() -> None:
    conn = ServerConnection()
    (event,) = events(conn, b"a AUTHENTICATE PLAIN\r\n")
    assert isinstance(event, CommandReceived)
    conn.send(ContinuationRequest(challenge=b""))
    assert events(conn, b"AGZyZWQAc2VjcmV0\r\n") == [AuthenticateData(b"\x00fred\x00secret")]
    conn.send(StatusResponse("OK", "authenticated", "a"))
    assert conn.state is ConnectionState.AUTHENTICATED
    conn2 = ServerConnection()
    events(conn2, b"b AUTHENTICATE CRAM-MD5\r\n")
    conn2.send(ContinuationRequest(challenge=b"<1@x>"))
    got = events(conn2, b"*\r\n")
    assert got == [AuthenticateAborted("Authentication cancelled")]
    assert conn2.data_to_send().endswith(b"b BAD Authentication cancelled\r\n")
    assert conn2.pending is None
    conn3 = ServerConnection()
    events(conn3, b"c AUTHENTICATE PLAIN\r\n")
    conn3.send(ContinuationRequest(challenge=b""))
    assert isinstance(events(conn3, b"!!notbase64\r\n")[0], AuthenticateAborted)


def test_idle_ends_with_done_and_else_bad() -> None:
    conn = logged_in()
    events(conn, b"i IDLE\r\n")
    assert events(conn, b"DONE\r\n") == []  # no "+" sent yet: the line waits
    conn.send(ContinuationRequest("idling"))
    assert events(conn) == [IdleDone()]
    conn.send(StatusResponse("OK", "IDLE terminated", "i"))
    events(conn, b"j IDLE\r\n")
    conn.send(ContinuationRequest("idling"))
    got = events(conn, b"k NOOP\r\n")
    assert isinstance(got[0], ProtocolError)
    assert conn.data_to_send().endswith(b"j BAD Expected DONE\r\n")


def test_starttls_drops_injected_plaintext() -> None:
    conn = ServerConnection()
    events(conn, b"a STARTTLS\r\nb LOGIN evil evil\r\n")
    conn.send(StatusResponse("OK", "Begin TLS negotiation now", "a"))
    conn.receive_data(b"c LOGIN more evil\r\n")
    assert conn.next_event() is NEED_DATA
    conn.tls_started()
    assert conn.tls_active
    assert events(conn, b"d NOOP\r\n") == [CommandReceived(Noop("d"))]


def test_compress_hands_over_buffered_octets() -> None:
    conn = logged_in()
    events(conn, b"z COMPRESS DEFLATE\r\n\x78\x9c")
    conn.send(StatusResponse("OK", "DEFLATE active", "z"))
    assert conn.next_event() is NEED_DATA
    assert conn.compression_started() == b"\x78\x9c"
    with pytest.raises(UsageError):
        conn.compression_started()


def test_usage_errors() -> None:
    conn = ServerConnection()
    with pytest.raises(UsageError):
        conn.send(StatusResponse("OK", "", "nothing-pending"))
    with pytest.raises(UsageError):
        conn.send(ContinuationRequest("x"))
    with pytest.raises(UsageError):
        conn.tls_started()
    with pytest.raises(ValueError):
        Limits(max_line_length=10)


def test_eof_closes() -> None:
    conn = ServerConnection()
    conn.receive_data(b"a NO")
    conn.receive_data(b"")
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_logout_closes_after_tagged_ok() -> None:
    conn = ServerConnection()
    events(conn, b"a LOGOUT\r\n")
    conn.send(StatusResponse("BYE", "bye"))
    conn.send(StatusResponse("OK", "LOGOUT completed", "a"))
    assert isinstance(conn.next_event(), ConnectionClosed)
    assert conn.data_to_send() == b"* BYE bye\r\na OK LOGOUT completed\r\n"


def test_host_close_sends_bye() -> None:
    conn = ServerConnection()
    conn.close("Autologout; idle for too long")
    assert conn.data_to_send() == b"* BYE Autologout; idle for too long\r\n"
    assert isinstance(conn.next_event(), ConnectionClosed)


def test_enable_only_when_authenticated_not_selected() -> None:
    conn = ServerConnection(state=ConnectionState.SELECTED)
    events(conn, b"e ENABLE CONDSTORE\r\n")
    assert conn.data_to_send() == b"e BAD ENABLE is not allowed in the selected state\r\n"


def test_utf8_append_literal8_is_framed_like_any_literal_rfc6855_4() -> None:
    conn = logged_in()
    assert events(conn, b"a APPEND x UTF8 (~{5}\r\n") == []
    assert conn.data_to_send() == b"+ Ready for literal data\r\n"
    got = events(conn, b"hello)\r\n")
    assert got == [CommandReceived(Append("a", "x", message=b"hello", binary=True, utf8=True))]


def test_utf8_flag_lets_unquoted_utf8_names_through() -> None:
    conn = logged_in()
    wire = "a SELECT Tōkyō\r\n".encode()
    [refused] = events(conn, wire)
    assert isinstance(refused, ProtocolError)
    assert conn.data_to_send().startswith(b"a BAD ")
    conn.utf8 = True  # the host, after ENABLE UTF8=ACCEPT or IMAP4rev2
    assert events(conn, wire) == [CommandReceived(Select("a", "Tōkyō"))]
