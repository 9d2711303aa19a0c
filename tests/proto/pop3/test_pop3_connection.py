"""The sans-I/O POP3 core: RFC 1939's example sessions as transcripts, every command, the
state rules, bad input, and feeding byte by byte. No sockets, no store: a small fake host."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.proto.pop3 import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Event,
    Limits,
    Login,
    Maildrop,
    MaildropMessage,
    MessageRequest,
    ProtocolError,
    Quit,
    Reply,
    ResponseCode,
    ServerConnection,
    SessionState,
    StartTLS,
    Update,
    UsageError,
    top_of,
)


def message(size: int, first: bytes = b"Subject: test") -> bytes:
    """A CRLF message of exactly `size` octets."""
    head = first + b"\r\n\r\n"
    body_size = size - len(head) - 2
    assert body_size >= 0
    return head + b"x" * body_size + b"\r\n"


@dataclass
class FakeHost:
    """Answers the core's events the way pop3d does, from dicts."""

    messages: dict[int, bytes] = field(default_factory=lambda: {7: message(120), 9: message(200)})
    passwords: dict[str, str] = field(default_factory=lambda: {"mrose": "tanstaaf"})
    uidvalidity: int = 1234
    busy: bool = False
    events: list[Event] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)

    def maildrop(self) -> Maildrop:
        return Maildrop(
            self.uidvalidity,
            tuple(MaildropMessage(uid, len(data)) for uid, data in sorted(self.messages.items())),
        )

    def drive(self, conn: ServerConnection, data: bytes) -> bytes:
        conn.receive_data(data)
        while True:
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            self.events.append(event)
            self.answer(conn, event)
        return conn.data_to_send()

    def open(self, conn: ServerConnection, user: str) -> None:
        if self.busy:
            conn.refuse(Reply(False, "Unable to lock maildrop", ResponseCode.IN_USE))
        else:
            conn.open_maildrop(user, self.maildrop())

    def answer(self, conn: ServerConnection, event: Event) -> None:
        if isinstance(event, Login):
            if self.passwords.get(event.user) == event.password:
                self.open(conn, event.user)
            else:
                conn.refuse(Reply(False, "Invalid login", ResponseCode.AUTH))
        elif isinstance(event, AuthStart):
            if event.mechanism != "PLAIN":
                conn.refuse(Reply(False, "no mechanism available", ResponseCode.AUTH))
            elif event.initial_response is None:
                conn.auth_challenge(b"")
            else:
                self.plain(conn, event.initial_response)
        elif isinstance(event, AuthResponse):
            self.plain(conn, event.data)
        elif isinstance(event, StartTLS):
            conn.start_tls()
        elif isinstance(event, MessageRequest):
            conn.send_message(self.messages[event.uid])
        elif isinstance(event, Update):
            self.removed += event.deleted
            for uid in event.deleted:
                del self.messages[uid]
            conn.update_done()

    def plain(self, conn: ServerConnection, data: bytes) -> None:
        _, user, password = data.decode().split("\0")
        if self.passwords.get(user) == password:
            self.open(conn, user)
        else:
            conn.refuse(Reply(False, "authentication failure", ResponseCode.AUTH))


def new(**options: object) -> ServerConnection:
    options.setdefault("plaintext_allowed", True)
    options.setdefault("auth_mechanisms", ("PLAIN",))
    return ServerConnection("dewey", "SID1", **options)  # type: ignore[arg-type]


def greeted(**options: object) -> ServerConnection:
    """A connection whose greeting was already sent."""
    conn = new(**options)
    assert conn.data_to_send() == b"+OK dewey POP3 server ready\r\n"
    return conn


def run_transcript(
    text: str, conn: ServerConnection | None = None, host: FakeHost | None = None
) -> FakeHost:
    """Play `C:`/`S:` lines: each client line is sent, then the server lines must follow.

    `<SP>` stands for a space the line must end with (RFC 5034's empty challenge is "+ ").
    """
    conn = conn or new()
    host = host or FakeHost()
    expected: list[bytes] = []
    got = bytearray(conn.data_to_send())
    for raw in text.strip().splitlines():
        if not raw.strip():
            continue
        tag, _, line = raw.strip().partition(":")
        line = (line[1:] if line.startswith(" ") else line).replace("<SP>", " ")
        if tag == "S":
            expected.append(line.encode() + b"\r\n")
        elif tag == "C":
            got += host.drive(conn, line.encode() + b"\r\n")
        else:
            raise AssertionError(f"bad transcript line {raw!r}")
    assert got.decode().splitlines() == b"".join(expected).decode().splitlines()
    return host


LOGIN = """
S: +OK dewey POP3 server ready
C: USER mrose
S: +OK Name accepted, send PASS
C: PASS tanstaaf
S: +OK Mailbox locked and ready SESSIONID=<SID1>
"""

BODY_120 = "\n".join(f"S: {line}" for line in message(120).decode().split("\r\n")[:-1])
BODY_200 = "\n".join(f"S: {line}" for line in message(200).decode().split("\r\n")[:-1])


def test_rfc1939_example_session() -> None:
    """RFC 1939 10, with USER/PASS in place of APOP (sealmail keeps no clear passwords)."""
    host = run_transcript(
        LOGIN
        + f"""
        C: STAT
        S: +OK 2 320
        C: LIST
        S: +OK 2 messages (320 octets)
        S: 1 120
        S: 2 200
        S: .
        C: RETR 1
        S: +OK 120 octets
        {BODY_120}
        S: .
        C: DELE 1
        S: +OK message 1 deleted
        C: RETR 2
        S: +OK 200 octets
        {BODY_200}
        S: .
        C: DELE 2
        S: +OK message 2 deleted
        C: QUIT
        S: +OK dewey POP3 server signing off (maildrop empty)
        """
    )
    assert host.removed == [7, 9]
    assert host.events[-1] == Update((7, 9), ())


def test_rfc1939_command_examples() -> None:
    """The examples under each command of RFC 1939 5-7."""
    host = run_transcript(
        LOGIN
        + """
        C: LIST 2
        S: +OK 2 200
        C: LIST 3
        S: -ERR no such message, only 2 messages in maildrop
        C: DELE 1
        S: +OK message 1 deleted
        C: DELE 1
        S: -ERR message 1 already deleted
        C: STAT
        S: +OK 1 200
        C: LIST 1
        S: -ERR message 1 already deleted
        C: NOOP
        S: +OK
        C: RSET
        S: +OK maildrop has 2 messages (320 octets)
        C: UIDL
        S: +OK unique-id listing follows
        S: 1 1234.7
        S: 2 1234.9
        S: .
        C: UIDL 2
        S: +OK 2 1234.9
        C: UIDL 3
        S: -ERR no such message, only 2 messages in maildrop
        C: TOP 1 0
        S: +OK Top of message follows
        S: Subject: test
        S:
        S: .
        C: QUIT
        S: +OK dewey POP3 server signing off (2 messages left)
        """
    )
    assert host.removed == []


def test_dele_takes_effect_only_at_quit() -> None:
    conn, host = new(), FakeHost()
    host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nRETR 2\r\n")
    assert host.removed == []
    assert conn.deleted == (7,)
    out = host.drive(conn, b"QUIT\r\n")
    assert host.removed == [7]
    assert host.events[-1] == Update((7,), (9,))  # RETR 2 whole: reported as retrieved
    assert out.endswith(b"(1 message left)\r\n") and conn.closed


def test_dropped_connection_deletes_nothing() -> None:
    conn, host = new(), FakeHost()
    host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\nDELE 1\r\nDELE 2\r\n")
    host.drive(conn, b"")  # the peer closed without QUIT
    assert conn.closed
    assert host.removed == []
    assert not any(isinstance(e, Update) for e in host.events)


def test_dot_stuffing_and_byte_exact_content() -> None:
    content = b"Subject: dots\r\n\r\n.leading\r\n..two\r\n.\r\nend \xe2\x82\xac\r\n"
    host = FakeHost(messages={1: content})
    conn = new()
    out = host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\n")
    wire = out.split(b"+OK %d octets\r\n" % len(content), 1)[1]
    assert wire == b"Subject: dots\r\n\r\n..leading\r\n...two\r\n..\r\nend \xe2\x82\xac\r\n.\r\n"


def test_message_without_final_crlf_gets_one_before_the_dot() -> None:
    host = FakeHost(messages={1: b"Subject: x\r\n\r\nno end"})
    out = host.drive(new(), b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\n")
    assert out.endswith(b"+OK 20 octets\r\nSubject: x\r\n\r\nno end\r\n.\r\n")


@pytest.mark.parametrize(
    ("content", "lines", "expected"),
    [
        (b"A: 1\r\nB: 2\r\n\r\nl1\r\nl2\r\nl3\r\n", 0, b"A: 1\r\nB: 2\r\n\r\n"),
        (b"A: 1\r\n\r\nl1\r\nl2\r\nl3\r\n", 2, b"A: 1\r\n\r\nl1\r\nl2\r\n"),
        (b"A: 1\r\n\r\nl1\r\n", 10, b"A: 1\r\n\r\nl1\r\n"),
        (b"A: 1\r\nB: 2\r\n", 1, b"A: 1\r\nB: 2\r\n"),  # no body at all
        (b"\r\nbody\r\nmore\r\n", 1, b"\r\nbody\r\n"),  # empty header
        (b"A: 1\r\n\r\nl1\r\nunfinished", 5, b"A: 1\r\n\r\nl1\r\nunfinished"),
    ],
)
def test_top_of(content: bytes, lines: int, expected: bytes) -> None:
    assert top_of(content, lines) == expected


def test_wrong_state_unknown_and_bad_arguments_keep_the_session() -> None:
    run_transcript(
        """
        S: +OK dewey POP3 server ready
        C: STAT
        S: -ERR STAT is valid only after login
        C: RETR 1
        S: -ERR RETR is valid only after login
        C: XYZZY
        S: -ERR Unrecognized command
        C: APOP mrose c4c9334bac560ecc979e58001b3e22fb
        S: -ERR Unrecognized command
        C: PASS early
        S: -ERR [AUTH] Must give USER command
        C: USER
        S: -ERR Missing argument
        C: USER mrose
        S: +OK Name accepted, send PASS
        C: USER other
        S: -ERR [AUTH] Must give PASS command
        C: PASS wrong
        S: -ERR [AUTH] Invalid login
        C: USER mrose
        S: +OK Name accepted, send PASS
        C: PASS tanstaaf
        S: +OK Mailbox locked and ready SESSIONID=<SID1>
        C: USER mrose
        S: -ERR USER is not valid after login
        C: STLS
        S: -ERR Unrecognized command
        C: STAT now
        S: -ERR Unexpected extra argument
        C: RETR
        S: -ERR Missing argument
        C: RETR one
        S: -ERR Not a number
        C: RETR 1 2
        S: -ERR Unexpected extra argument
        C: RETR 0
        S: -ERR no such message, only 2 messages in maildrop
        C: RETR 99999999999
        S: -ERR Not a number
        C: TOP 1
        S: -ERR Syntax: TOP msg n
        C: TOP 1 -1
        S: -ERR Invalid number of lines
        C: noop
        S: +OK
        C: QUIT
        S: +OK dewey POP3 server signing off (2 messages left)
        """
    )


def test_over_long_line_is_refused_and_the_session_goes_on() -> None:
    conn, host = greeted(limits=Limits(max_line_length=300)), FakeHost()
    out = host.drive(conn, b"USER " + b"a" * 5000 + b"\r\nUSER mrose\r\n")
    assert out == b"-ERR Line too long\r\n+OK Name accepted, send PASS\r\n"
    assert isinstance(host.events[0], ProtocolError)


def test_non_utf8_and_control_characters() -> None:
    conn, host = greeted(), FakeHost()
    out = host.drive(conn, b"USER \xff\xfe\r\nUSER a\x01b\r\nUSER mrose\r\n")
    assert out.splitlines() == [
        b"-ERR Command is not valid UTF-8",
        b"-ERR Control characters in command",
        b"+OK Name accepted, send PASS",
    ]


def test_pass_keeps_spaces_in_the_password() -> None:
    host = FakeHost(passwords={"mrose": " two words "})
    out = host.drive(new(), b"USER mrose\r\nPASS  two words \r\n")
    assert out.endswith(b"+OK Mailbox locked and ready SESSIONID=<SID1>\r\n")
    login = host.events[0]
    assert isinstance(login, Login) and "two words" not in repr(login)  # never in a log line


def test_capa_in_each_state() -> None:
    conn, host = greeted(starttls_available=True, login_delay=900, expire_days=31), FakeHost()
    out = host.drive(conn, b"CAPA\r\n")
    assert out.decode().split("\r\n") == [
        "+OK List of capabilities follows",
        "SASL PLAIN",
        "STLS",
        "EXPIRE 31",
        "LOGIN-DELAY 900",
        "TOP",
        "UIDL",
        "PIPELINING",
        "RESP-CODES",
        "AUTH-RESP-CODE",
        "USER",
        ".",
        "",
    ]
    out = host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\nCAPA\r\n")
    caps = out.decode().split("\r\n")
    assert "SASL PLAIN" not in caps and "USER" not in caps and "STLS" not in caps
    assert "IMPLEMENTATION sealmail" in caps and "EXPIRE 31" in caps


def test_capa_without_plaintext_hides_user_and_user_is_refused() -> None:
    conn, host = new(plaintext_allowed=False, auth_mechanisms=()), FakeHost()
    out = host.drive(conn, b"CAPA\r\nUSER mrose\r\n")
    assert b"\r\nUSER\r\n" not in out and b"SASL" not in out
    assert b"EXPIRE NEVER\r\n" in out
    assert out.endswith(b"-ERR [AUTH] USER command only available under a layer\r\n")


def test_auth_plain_with_initial_response() -> None:
    token = base64.b64encode(b"\0mrose\0tanstaaf").decode()
    run_transcript(
        f"""
        S: +OK dewey POP3 server ready
        C: AUTH PLAIN {token}
        S: +OK Mailbox locked and ready SESSIONID=<SID1>
        C: STAT
        S: +OK 2 320
        """
    )


def test_auth_exchange_empty_initial_response_and_cancel() -> None:
    token = base64.b64encode(b"\0mrose\0tanstaaf").decode()
    host = run_transcript(
        f"""
        S: +OK dewey POP3 server ready
        C: AUTH
        S: +OK List of supported mechanisms follows
        S: PLAIN
        S: .
        C: AUTH PLAIN
        S: +<SP>
        C: *
        S: -ERR [AUTH] Client canceled authentication
        C: AUTH PLAIN
        S: +<SP>
        C: not base64!
        S: -ERR [AUTH] Invalid base64 in response
        C: AUTH CRAM-MD5
        S: -ERR [AUTH] no mechanism available
        C: AUTH bad/name
        S: -ERR [AUTH] Invalid AUTH arguments
        C: AUTH plain
        S: +<SP>
        C: {token}
        S: +OK Mailbox locked and ready SESSIONID=<SID1>
        """
    )
    aborted = [e for e in host.events if isinstance(e, AuthAborted)]
    assert [a.reason for a in aborted] == [
        "cancelled by the client",
        "invalid base64 in the response",
    ]
    starts = [e for e in host.events if isinstance(e, AuthStart)]
    assert starts[0] == AuthStart("PLAIN", None)


def test_auth_empty_initial_response_is_equals_sign() -> None:
    conn = new()
    conn.receive_data(b"AUTH PLAIN =\r\n")
    event = conn.next_event()
    assert event == AuthStart("PLAIN", b"")


def test_in_use_refusal_leaves_authorization_state() -> None:
    host = FakeHost(busy=True)
    conn = new()
    out = host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\n")
    assert b"-ERR [IN-USE] Unable to lock maildrop\r\n" in out
    assert out.endswith(b"-ERR STAT is valid only after login\r\n")
    assert conn.state is SessionState.AUTHORIZATION


def test_stls_drops_pipelined_cleartext_and_resets() -> None:
    conn, host = new(starttls_available=True, plaintext_allowed=False), FakeHost()
    out = host.drive(conn, b"USER mrose\r\nSTLS\r\nUSER injected\r\n")
    assert out.endswith(b"+OK Begin TLS negotiation now\r\n")
    assert conn.state is SessionState.TLS_WAIT
    conn.receive_data(b"PASS injected\r\n")  # in clear, before the handshake: ignored
    assert conn.next_event() is NEED_DATA
    conn.tls_started(("PLAIN", "LOGIN"), plaintext_allowed=True)
    out = host.drive(conn, b"CAPA\r\nSTLS\r\n")
    assert b"SASL PLAIN LOGIN\r\n" in out and b"\r\nUSER\r\n" in out and b"\r\nSTLS\r\n" not in out
    assert out.endswith(b"-ERR Already successfully executed STLS\r\n")


def test_quit_in_authorization() -> None:
    conn, host = greeted(), FakeHost()
    out = host.drive(conn, b"QUIT\r\nSTAT\r\n")
    assert out == b"+OK dewey POP3 server signing off\r\n"
    assert isinstance(host.events[-1], Quit) and conn.closed
    assert conn.next_event() == ConnectionClosed()


def test_update_failure_still_closes() -> None:
    conn = new()
    conn.receive_data(b"USER mrose\r\nPASS tanstaaf\r\n")
    assert isinstance(conn.next_event(), Login)
    conn.open_maildrop("mrose", FakeHost().maildrop())
    conn.receive_data(b"DELE 1\r\nQUIT\r\n")
    update = conn.next_event()
    assert update == Update((7,), ())
    conn.refuse(Reply(False, "some deleted messages not removed", ResponseCode.SYS_TEMP))
    assert conn.closed
    assert conn.data_to_send().endswith(b"-ERR [SYS/TEMP] some deleted messages not removed\r\n")


def test_host_misuse_is_a_usage_error() -> None:
    conn = new()
    with pytest.raises(UsageError):
        conn.send_message(b"x")
    conn.receive_data(b"USER mrose\r\nPASS x\r\n")
    assert isinstance(conn.next_event(), Login)
    with pytest.raises(UsageError):
        conn.next_event()
    with pytest.raises(UsageError):
        conn.refuse(Reply(True, "fine"))
    with pytest.raises(UsageError):
        conn.tls_started()


def test_reply_rendering_rules() -> None:
    assert Reply(False, "x", ResponseCode.SYS_TEMP).render() == b"-ERR [SYS/TEMP] x\r\n"
    with pytest.raises(ValueError):
        Reply(True, "x", ResponseCode.AUTH)
    with pytest.raises(ValueError):
        Reply(False, "a\r\n+OK forged")


def test_pipelined_batch_is_answered_in_order() -> None:
    whole = b"USER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLIST 1\r\nUIDL 1\r\nNOOP\r\n"
    out = FakeHost().drive(new(), whole)
    assert out.decode().split("\r\n")[3:7] == ["+OK 2 320", "+OK 1 120", "+OK 1 1234.7", "+OK"]


SESSION = (
    b"CAPA\r\nUSER mrose\r\nPASS tanstaaf\r\nSTAT\r\nLIST\r\nUIDL\r\nTOP 2 1\r\n"
    b"RETR 1\r\nDELE 1\r\nRSET\r\nDELE 2\r\nQUIT\r\n"
)


def test_byte_by_byte_equals_whole() -> None:
    whole = FakeHost().drive(new(), SESSION)
    conn, host = new(), FakeHost()
    pieces = bytearray()
    for i in range(len(SESSION)):
        pieces += host.drive(conn, SESSION[i : i + 1])
    assert bytes(pieces) == whole
    assert host.removed == [9]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=12))
def test_never_crashes_on_garbage(chunks: list[bytes]) -> None:
    """Any bytes, in any state: replies are well formed and the core never raises."""
    conn, host = new(starttls_available=True), FakeHost()
    out = host.drive(conn, b"USER mrose\r\nPASS tanstaaf\r\n") if chunks[:1] == [b""] else b""
    for chunk in chunks:
        out += host.drive(conn, chunk)
        if conn.state is SessionState.TLS_WAIT:
            conn.tls_started()
    for line in out.split(b"\r\n"):
        assert b"\n" not in line and b"\r" not in line
    assert host.removed == [] or any(isinstance(e, Update) for e in host.events)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_retr_round_trips_any_crlf_message(body: bytes) -> None:
    """dot-unstuffing what RETR sends gives back the stored bytes (with a final CRLF)."""
    from sealmail.proto.buffer import dot_unstuff

    content = b"Subject: x\r\n\r\n" + body.replace(b"\r", b"").replace(b"\n", b"\r\n")
    out = FakeHost(messages={1: content}).drive(new(), b"USER mrose\r\nPASS tanstaaf\r\nRETR 1\r\n")
    wire = out.split(b" octets\r\n", 1)[1]
    unstuffed, rest = dot_unstuff(wire)
    expected = content if content.endswith(b"\r\n") else content + b"\r\n"
    assert (unstuffed, rest) == (expected, b"")


SECRET = b"s3cretPW"


@pytest.mark.parametrize("lines", [
    b"USER alice\r\nPASS " + SECRET + b" " + b"x" * 400 + b"\r\n",  # an overlong PASS line
    b"AUTH PLAIN " + SECRET + b"!!\r\n",
    b"AUTH PLAIN " + SECRET + b" extra\r\n",
    b"PASS " + SECRET + b"\r\n",  # without USER
    b"APOP alice " + SECRET + b"\r\n",
    b"AUTH PLAIN\r\n" + SECRET + b"!!\r\n",  # a response that is not base64
])
def test_errors_never_echo_credentials(lines: bytes) -> None:
    conn = ServerConnection("h", "s", auth_mechanisms=("PLAIN",), plaintext_allowed=True)
    conn.receive_data(lines)
    seen = []
    for _ in range(10):
        event = conn.next_event()
        seen.append(repr(event))
        if isinstance(event, AuthStart):
            conn.auth_challenge(b"")
        elif event is NEED_DATA or isinstance(event, (Login, ConnectionClosed)):
            break
    assert SECRET not in conn.data_to_send()
    assert not any(SECRET.decode() in text for text in seen if "Login(" not in text)
