"""The ManageSieve core without I/O: every command as a short transcript, fed whole and byte by
byte; literals, limits, states, and property tests for the parser."""

from __future__ import annotations

import base64
import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import sealmail.proto.managesieve as managesieve
from sealmail.proto.managesieve import (
    NEED_DATA,
    NO,
    OK,
    Atom,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Capabilities,
    CheckScript,
    ConnectionClosed,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    Limits,
    ListScripts,
    Logout,
    ProtocolError,
    PutScript,
    RenameScript,
    ServerConnection,
    SessionState,
    SetActive,
    StartTLS,
    String,
    SyntaxProblem,
    Unauthenticated,
    UsageError,
    render_string,
    sasl_failure,
    tokenize,
)
from sealmail.proto.sasl import FailureReason

CAPS = Capabilities(sieve_extensions=("fileinto", "vacation"), notify_methods=("mailto",))


def connection(**kwargs: object) -> ServerConnection:
    conn = ServerConnection(CAPS, "S1", auth_mechanisms=("PLAIN",), **kwargs)  # type: ignore[arg-type]
    conn.data_to_send()
    return conn


def logged_in(**kwargs: object) -> ServerConnection:
    conn = connection(**kwargs)
    conn.receive_data(b'AUTHENTICATE "PLAIN" "AGFsaWNlAHB3"\r\n')
    event = conn.next_event()
    assert isinstance(event, AuthStart) and event.initial_response == b"\0alice\0pw"
    conn.authenticated("alice")
    assert conn.data_to_send() == b'OK "Authentication successful"\r\n'
    return conn


def feed(conn: ServerConnection, data: bytes, *, bytewise: bool = False) -> list[Event]:
    """Feed `data` and collect events until NEED_DATA; reply-needing events are returned
    unanswered (the caller answers them one at a time)."""
    events: list[Event] = []
    chunks = [data[i : i + 1] for i in range(len(data))] if bytewise else [data]
    for index, chunk in enumerate(chunks):
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA:
                break
            events.append(event)
            if event.needs_reply or isinstance(event, ConnectionClosed):
                for rest in chunks[index + 1 :]:
                    conn.receive_data(rest)  # buffered for the caller's next feed
                return events
    return events


def test_greeting_is_capabilities_then_ok() -> None:
    conn = ServerConnection(
        Capabilities("sealmail 1", ("fileinto",), ("mailto",), 4),
        auth_mechanisms=("scram-sha-256", "PLAIN"),
        starttls_available=True,
    )
    assert conn.data_to_send() == (
        b'"IMPLEMENTATION" "sealmail 1"\r\n"SASL" "SCRAM-SHA-256 PLAIN"\r\n'
        b'"SIEVE" "fileinto"\r\n"STARTTLS"\r\n"NOTIFY" "mailto"\r\n"MAXREDIRECTS" "4"\r\n'
        b'"UNAUTHENTICATE"\r\n"VERSION" "1.0"\r\nOK "sealmail ManageSieve ready"\r\n'
    )


@pytest.mark.parametrize("bytewise", [False, True])
def test_putscript_with_literals_and_pipelined_commands(bytewise: bool) -> None:
    conn = logged_in()
    wire = b'PUTSCRIPT "x" {7+}\r\nkeep;\r\n\r\nNOOP\r\nputscript {1+}\r\ny {2}\r\n\r\n\r\n'
    [event] = feed(conn, wire, bytewise=bytewise)
    assert event == PutScript("x", b"keep;\r\n")
    conn.answer(OK("Putscript completed"))
    # The command name's case does not matter, and a synchronizing {n} is read as {n+} is.
    [event] = feed(conn, b"")
    assert event == PutScript("y", b"\r\n")
    conn.answer(NO("bad"))
    assert conn.data_to_send() == b'OK "Putscript completed"\r\nOK "NOOP completed"\r\nNO "bad"\r\n'


def test_script_commands_become_events() -> None:
    conn = logged_in()
    wire = {
        b"LISTSCRIPTS\r\n": ListScripts(),
        b'SETACTIVE "a"\r\n': SetActive("a"),
        b'SETACTIVE ""\r\n': SetActive(None),
        b'GETSCRIPT "a"\r\n': GetScript("a"),
        b'DELETESCRIPT "a"\r\n': DeleteScript("a"),
        b'RENAMESCRIPT "a" "b"\r\n': RenameScript("a", "b"),
        b'HAVESPACE "a" 4294967295\r\n': HaveSpace("a", 2**32 - 1),
        b'CHECKSCRIPT "keep;"\r\n': CheckScript(b"keep;"),
        b'PUTSCRIPT "\\"q\\\\" "keep;"\r\n': PutScript('"q\\', b"keep;"),
    }
    for line, expected in wire.items():
        [event] = feed(conn, line)
        assert event == expected
        conn.answer(OK())
    assert conn.data_to_send() == b"OK\r\n" * len(wire)


def test_listing_and_getscript_replies() -> None:
    conn = logged_in()
    feed(conn, b"LISTSCRIPTS\r\n")
    conn.send_listing([("a", False), ('say "hi"', True)])
    assert conn.data_to_send() == (
        b'"a"\r\n"say \\"hi\\"" ACTIVE\r\nOK "Listscripts completed"\r\n'
    )
    feed(conn, b'GETSCRIPT "a"\r\n')
    conn.send_script(b"keep;\r\n")
    assert conn.data_to_send() == b'{7}\r\nkeep;\r\n\r\nOK "Getscript completed"\r\n'


def test_commands_declare_their_states() -> None:
    conn = connection()
    for line in (b"LISTSCRIPTS\r\n", b'PUTSCRIPT "a" "b"\r\n', b"UNAUTHENTICATE\r\n"):
        [event] = feed(conn, line)
        assert isinstance(event, ProtocolError)
        assert conn.data_to_send() == b'NO "Authenticate first"\r\n'
    conn = logged_in()
    [event] = feed(conn, b'AUTHENTICATE "PLAIN"\r\n')
    assert isinstance(event, ProtocolError)
    assert conn.data_to_send() == b'NO "Already authenticated"\r\n'


def test_argument_errors() -> None:
    conn = logged_in()
    cases = {
        b"GETSCRIPT\r\n": b'NO "Missing argument"\r\n',
        b'GETSCRIPT "a" "b"\r\n': b'NO "Too many arguments"\r\n',
        b"GETSCRIPT a\r\n": b'NO "Expected a string (quoted or literal)"\r\n',
        b'HAVESPACE "a" -1\r\n': b'NO "Expected a number"\r\n',
        b'HAVESPACE "a" 4294967296\r\n': b'NO "Number is over 4294967295"\r\n',
        b'HAVESPACE "a" 01\r\n': b'NO "Expected a number"\r\n',
        b"FROB\r\n": b'NO "Unknown command"\r\n',
        b'"GETSCRIPT"\r\n': b'NO "Expected a command name"\r\n',
        b'GETSCRIPT "a\r\n': b'NO "Unterminated quoted string"\r\n',
        b'GETSCRIPT "a\\b"\r\n': NO(
            'Bad escape in quoted string (only \\" and \\\\ are allowed)'
        ).render(),
        b'GETSCRIPT "\xff"\r\n': b'NO "Script name is not valid UTF-8"\r\n',
        b'GETSCRIPT ""\r\n': b'NO "Script name is empty"\r\n',
        b'GETSCRIPT "a\x01"\r\n': b'NO "Script name holds control characters"\r\n',
        b'GETSCRIPT "a\xe2\x80\xa8"\r\n': b'NO "Script name holds control characters"\r\n',
        b'GETSCRIPT "e\xcc\x81"\r\n': NO(
            "Script name is not in Unicode normalization form C"
        ).render(),
        b"GETSCRIPT {3+} x\r\n": b'NO "Bad literal: expected {number+} at the end of the line"\r\n',
    }
    for line, reply in cases.items():
        [event] = feed(conn, line)
        assert isinstance(event, ProtocolError), line
        assert conn.data_to_send() == reply, line
    assert conn.state is SessionState.AUTHENTICATED


def test_too_many_bad_commands_end_with_bye() -> None:
    conn = connection(limits=Limits(max_bad_commands=3))
    events = feed(conn, b"A\r\nB\r\nC\r\nD\r\n")
    assert [type(e) for e in events] == [
        ProtocolError,
        ProtocolError,
        ProtocolError,
        ConnectionClosed,
    ]
    assert (
        conn.data_to_send()
        == b'NO "Unknown command"\r\n' * 2 + b'BYE "Too many protocol errors"\r\n'
    )


def test_oversized_literal_is_skipped_and_refused() -> None:
    conn = logged_in(limits=Limits(max_literal_size=10))
    events = feed(
        conn,
        b'PUTSCRIPT "a" {11+}\r\n'
        + b"x" * 11
        + b"\r\nGETSCRIPT {11+}\r\n"
        + b"y" * 11
        + b"\r\nNOOP\r\n",
    )
    assert [type(e) for e in events] == [ProtocolError, ProtocolError]
    assert conn.data_to_send() == (
        b'NO (QUOTA/MAXSIZE) "Script is over the limit of 10 octets"\r\n'
        b'NO "String too long"\r\nOK "NOOP completed"\r\n'
    )


@pytest.mark.parametrize("huge", [b'AUTHENTICATE "PLAIN" {4294967295+}\r\nxxxx',
                                  b"{4294967295+}\r\nxxxx"])
def test_a_huge_literal_before_login_ends_the_session(huge: bytes) -> None:
    """Reading 4 GiB to stay in step would hold the server for anyone who connects: as a
    command's argument, or as a SASL response in the middle of an exchange."""
    conn = connection()
    if not huge.startswith(b"AUTH"):
        feed(conn, b'AUTHENTICATE "PLAIN"\r\n')
        conn.auth_challenge(b"")
        conn.data_to_send()
    events = feed(conn, huge)
    assert isinstance(events[-1], ConnectionClosed)
    assert conn.data_to_send() == b'BYE "Literal too large before login"\r\n'
    small = connection(limits=Limits(max_literal_before_login=100))
    assert feed(small, b'AUTHENTICATE "PLAIN" {12+}\r\nAGFsaWNlAHB3\r\n') != []


def test_too_long_line_is_refused_and_session_goes_on() -> None:
    conn = logged_in()
    [event] = feed(conn, b"NOOP " + b"x" * 9000 + b"\r\n")
    assert isinstance(event, ProtocolError)
    assert feed(conn, b"NOOP\r\n") == []
    assert conn.data_to_send() == b'NO "Line too long"\r\nOK "NOOP completed"\r\n'


def test_sasl_exchange_challenge_response_and_success_data() -> None:
    conn = connection()
    [event] = feed(conn, b'Authenticate "scram-sha-1"\r\n')
    assert event == AuthStart("SCRAM-SHA-1", None)
    conn.auth_challenge(b"r=abc")
    assert conn.data_to_send() == b'"' + base64.b64encode(b"r=abc") + b'"\r\n'
    assert conn.state is SessionState.AUTH
    # A literal is a string too.
    blob = base64.b64encode(b"c=biws")
    [event] = feed(conn, b"{%d+}\r\n%s\r\n" % (len(blob), blob))
    assert event == AuthResponse(b"c=biws")
    conn.authenticated("carol", b"v=sig")
    assert conn.data_to_send() == (
        b'OK (SASL "' + base64.b64encode(b"v=sig") + b'") "Authentication successful"\r\n'
    )
    assert conn.authenticated_as == "carol"


def test_sasl_cancel_garbage_and_failure() -> None:
    conn = connection()
    feed(conn, b'AUTHENTICATE "PLAIN"\r\n')
    conn.auth_challenge(b"")
    assert conn.data_to_send() == b'""\r\n'
    [event] = feed(conn, b'"*"\r\n')
    assert isinstance(event, AuthAborted)
    assert conn.data_to_send() == b'NO "Authentication aborted by client"\r\n'
    feed(conn, b'AUTHENTICATE "PLAIN"\r\n')
    conn.auth_challenge(b"")
    conn.data_to_send()
    [event] = feed(conn, b'"!!"\r\n')
    assert isinstance(event, AuthAborted)
    assert conn.data_to_send() == b'NO "Authentication aborted: invalid base64"\r\n'
    [event] = feed(conn, b'AUTHENTICATE "PLAIN" ""\r\n')
    assert event == AuthStart("PLAIN", b"")
    with pytest.raises(UsageError):
        conn.answer(OK())
    conn.answer(sasl_failure(FailureReason.BAD_CREDENTIALS))
    assert conn.data_to_send() == b'NO "Authentication error"\r\n'
    assert conn.state is SessionState.NOT_AUTHENTICATED
    [event] = feed(conn, b'AUTHENTICATE "PL AIN"\r\n')
    assert isinstance(event, ProtocolError)


def test_starttls_drops_pipelined_clear_text_and_reissues_capabilities() -> None:
    conn = connection(starttls_available=True)
    [event] = feed(conn, b"STARTTLS\r\nLISTSCRIPTS\r\n")
    assert event == StartTLS()
    conn.start_tls()
    assert conn.data_to_send() == b'OK "Begin TLS negotiation now"\r\n'
    conn.receive_data(b'AUTHENTICATE "PLAIN" "AGFsaWNlAHB3"\r\n')  # in clear: ignored
    assert conn.next_event() is NEED_DATA
    conn.tls_started(("PLAIN", "SCRAM-SHA-256"))
    out = conn.data_to_send()
    assert b'"SASL" "PLAIN SCRAM-SHA-256"\r\n' in out and b"STARTTLS" not in out
    assert out.endswith(b'OK "TLS negotiation successful"\r\n')
    assert conn.next_event() is NEED_DATA
    [event] = feed(conn, b"STARTTLS\r\n")
    assert isinstance(event, ProtocolError)
    assert conn.data_to_send() == b'NO "TLS is already active"\r\n'


def test_starttls_not_offered_is_refused() -> None:
    conn = connection()
    [event] = feed(conn, b"STARTTLS\r\n")
    assert isinstance(event, ProtocolError)
    assert conn.data_to_send() == b'NO "STARTTLS is not available"\r\n'


def test_capability_after_login_has_owner_and_no_mechanisms() -> None:
    conn = logged_in(starttls_available=True)
    feed(conn, b"CAPABILITY\r\n")
    out = conn.data_to_send()
    assert b'"OWNER" "alice"\r\n' in out and b'"SASL" ""\r\n' in out
    assert b"STARTTLS" not in out and out.endswith(b'OK "Capability completed"\r\n')


def test_noop_tag_unauthenticate_logout() -> None:
    conn = logged_in()
    assert feed(conn, b'NOOP "STARTTLS-SYNC-42"\r\n') == []
    assert conn.data_to_send() == b'OK (TAG "STARTTLS-SYNC-42") "Done"\r\n'
    [event] = feed(conn, b"UNAUTHENTICATE\r\n")
    assert event == Unauthenticated("alice")
    assert conn.state is SessionState.NOT_AUTHENTICATED and conn.authenticated_as is None
    events = feed(conn, b"LOGOUT\r\nNOOP\r\n")
    assert events == [Logout(), ConnectionClosed()]
    assert conn.data_to_send() == b'OK "Unauthenticate completed"\r\nOK "Logout completed"\r\n'


def test_end_of_stream_closes() -> None:
    conn = logged_in()
    assert feed(conn, b'PUTSCRIPT "a" {5+}\r\nke') == []
    conn.receive_data(b"")
    assert conn.next_event() == ConnectionClosed()


def test_answering_nothing_is_a_usage_error() -> None:
    conn = logged_in()
    with pytest.raises(UsageError):
        conn.answer(OK())
    feed(conn, b"LISTSCRIPTS\r\n")
    with pytest.raises(UsageError):
        conn.next_event()
    with pytest.raises(UsageError):
        conn.send_script(b"")


def test_bye_ends_the_session() -> None:
    conn = logged_in()
    conn.bye("Shutting down")
    assert conn.data_to_send() == b'BYE "Shutting down"\r\n'
    assert conn.next_event() == ConnectionClosed()


def test_sasl_failures_map_to_responses() -> None:
    for reason in FailureReason:
        assert not sasl_failure(reason).ok
    assert sasl_failure(FailureReason.TOO_WEAK).render().startswith(b"NO (AUTH-TOO-WEAK)")


# -- the parser ----------------------------------------------------------------------------------


def test_tokenize_examples() -> None:
    assert tokenize(b'PUTSCRIPT "a b" {12+}') == (
        [Atom("PUTSCRIPT"), String(b"a b")],
        managesieve.LiteralStart(12, synchronizing=False),
    )
    assert tokenize(b'HAVESPACE  "x"\t10') == ([Atom("HAVESPACE"), String(b"x"), Atom("10")], None)
    for bad in (b'"abc', b'"a\\n"', b"{x+}", b"{1+} a", b"caf\xc3\xa9", b"a\x01"):
        with pytest.raises(SyntaxProblem):
            tokenize(bad)
    with pytest.raises(SyntaxProblem, match="1024"):
        tokenize(b'"' + b"a" * 1025 + b'"')


def test_render_string_uses_a_literal_when_it_must() -> None:
    assert render_string("caf\u00e9") == '"café"'.encode()
    assert render_string(b"a\r\nb") == b"{4}\r\na\r\nb"
    assert render_string(b"a" * 1025) == b"{1025}\r\n" + b"a" * 1025
    assert render_string(b"\xff") == b"{1}\r\n\xff"


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_quoted_round_trip(value: bytes) -> None:
    """parse(render(x)) == x for every string, quoted or literal."""
    wire = render_string(value)
    if wire.startswith(b"{"):
        size, _, rest = wire.partition(b"}\r\n")
        assert int(size[1:]) == len(rest) and rest == value
    else:
        assert tokenize(wire) == ([String(value)], None)


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_tokenize_never_crashes(line: bytes) -> None:
    with contextlib.suppress(SyntaxProblem):
        tokenize(line)


@settings(max_examples=200)
@given(st.lists(st.binary(max_size=40), max_size=12), st.booleans())
def test_core_never_crashes_and_always_answers(chunks: list[bytes], login: bool) -> None:
    conn = logged_in() if login else connection(starttls_available=True)
    for chunk in chunks:
        conn.receive_data(chunk)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, StartTLS):
                conn.answer(NO("no TLS in this test"))
            elif isinstance(event, GetScript):
                conn.send_script(b"keep;")
            elif isinstance(event, ListScripts):
                conn.send_listing([])
            elif isinstance(event, (AuthStart, AuthResponse)):
                conn.answer(NO("no"))
            elif event.needs_reply:
                conn.answer(OK())
        if conn.closed:
            break
    conn.data_to_send()


@settings(max_examples=100)
@given(st.text(st.characters(codec="utf-8"), min_size=1, max_size=40))
def test_any_script_name_round_trips_or_is_refused(name: str) -> None:
    conn = logged_in()
    [event] = feed(conn, b"GETSCRIPT " + render_string(name) + b"\r\n")
    checked = managesieve.check_script_name(name.encode("utf-8"))
    if isinstance(checked, str):
        assert event == GetScript(name)
    else:
        assert isinstance(event, ProtocolError) and event.response == checked


def test_public_api() -> None:
    for name in managesieve.__all__:
        assert getattr(managesieve, name) is not None
    assert {"ServerConnection", "NEED_DATA", "PutScript", "sasl_failure"} <= set(
        managesieve.__all__
    )


SECRET = b"s3cretPW"


@pytest.mark.parametrize("line", [
    b'AUTHENTICATE "PLAIN" "' + SECRET + b"\r\n",
    b'AUTHENTICATE "PLAIN" ' + SECRET + b"\r\n",
    b'AUTHENTICATE "PLAIN" "' + SECRET + b'" extra\r\n',
    b'AUTHENTICATE "PLAIN" {8}\r\n' + SECRET + b" x\r\n",
    b'AUTHENTICATE "PLAIN" "' + SECRET + b'!!"\r\n',
    b'AUTHENTICATE "' + SECRET + b"\r\n",
])
def test_errors_never_echo_credentials(line: bytes) -> None:
    conn = connection()
    events = feed(conn, line)
    assert SECRET not in conn.data_to_send()
    assert not any(SECRET.decode() in repr(event) for event in events)
