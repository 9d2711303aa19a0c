"""The sans-I/O SMTP/LMTP client core, against scripted replies and against our own server core."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.buffer import dot_unstuff
from sealmail.proto.sasl import Challenge, MechanismContext, ScramMechanism, Success
from sealmail.proto.smtp import (
    NEED_DATA,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
)
from sealmail.proto.smtp import (
    ConnectionClosed as ServerClosed,
)
from sealmail.proto.smtp.client import (
    AuthReply,
    ClientCommand,
    ClientConnection,
    ClientEvent,
    ClientLimits,
    ClientState,
    ClientUsageError,
    CommandReply,
    ConnectionClosed,
    DataStuffer,
    Greeting,
    HelloReply,
    MessageReply,
    ServerReply,
    ServerReplyError,
    parse_capabilities,
)
from sealmail.proto.smtp.client_sasl import (
    CramMD5Client,
    LoginClient,
    PlainClient,
    SaslClientError,
    ScramClient,
    choose_mechanism,
)

C = ClientCommand


def events(conn: ClientConnection, data: bytes = b"") -> list[ClientEvent]:
    if data:
        conn.receive_data(data)
    out: list[ClientEvent] = []
    while (event := conn.next_event()) is not NEED_DATA:
        assert isinstance(event, ClientEvent)
        out.append(event)
    return out


def greeted(mode: Mode = Mode.LMTP, extensions: str = "PIPELINING") -> ClientConnection:
    conn = ClientConnection(mode)
    [greeting] = events(conn, b"220 lmtp.example ready\r\n")
    assert isinstance(greeting, Greeting) and greeting.reply.code == 220
    conn.hello("mx.example")
    assert conn.data_to_send() == (b"LHLO" if mode is Mode.LMTP else b"EHLO") + b" mx.example\r\n"
    ext = "".join(f"250-{e}\r\n" for e in extensions.split()[:-1])
    last = extensions.split()[-1] if extensions.split() else "OK"
    [hello] = events(conn, f"250-lmtp.example\r\n{ext}250 {last}\r\n".encode())
    assert isinstance(hello, HelloReply) and hello.capabilities is not None
    assert conn.state is ClientState.READY
    return conn


# -- replies ------------------------------------------------------------------------------------


def test_multiline_reply_fed_byte_by_byte() -> None:
    conn = ClientConnection(Mode.SMTP)
    wire = b"220-mx.example ESMTP\r\n220-second line\r\n220 last\r\n"
    got: list[ClientEvent] = []
    for i in range(len(wire)):
        got += events(conn, wire[i : i + 1])
    [greeting] = got
    assert isinstance(greeting, Greeting)
    assert greeting.reply.lines == ("mx.example ESMTP", "second line", "last")
    assert str(greeting.reply) == "220 mx.example ESMTP second line last"


def test_enhanced_code_and_dsn_class_follow_the_reply_code() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    [reply] = events(conn, b"450 5.1.1 odd server\r\n")
    assert isinstance(reply, CommandReply)
    assert reply.reply.enhanced == "5.1.1"
    assert reply.reply.dsn() == "4.1.1"
    conn.rset()
    events(conn, b"250 2.0.0 Ok\r\n")
    conn.mail("")
    assert conn.data_to_send().endswith(b"MAIL FROM:<>\r\n")
    [reply] = events(conn, b"250 Ok\r\n")
    assert isinstance(reply, CommandReply) and reply.reply.dsn() == "2.0.0"


@pytest.mark.parametrize(
    "wire",
    [
        b"hello\r\n",
        b"2500 x\r\n",
        b"199 x\r\n",
        b"220-a\r\n221 b\r\n",  # RFC 5321 4.2.1: one code per reply
        b"220" + b"x" * 5000 + b"\r\n",
        b"220\tx\r\n",
    ],
)
def test_malformed_replies_close_the_core(wire: bytes) -> None:
    conn = ClientConnection(Mode.SMTP)
    with pytest.raises(ServerReplyError):
        events(conn, wire)
    assert conn.state is ClientState.CLOSED


def test_reply_line_count_is_limited() -> None:
    conn = ClientConnection(Mode.SMTP, ClientLimits(max_reply_lines=3))
    with pytest.raises(ServerReplyError, match="more than 3 lines"):
        events(conn, b"220-a\r\n220-b\r\n220-c\r\n220-d\r\n220 e\r\n")


def test_unsolicited_reply_is_an_error() -> None:
    conn = greeted()
    with pytest.raises(ServerReplyError, match="unsolicited"):
        events(conn, b"250 surprise\r\n")


def test_eof_names_the_command_left_unanswered() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    conn.receive_data(b"")
    assert events(conn) == [ConnectionClosed(C.MAIL)]
    assert conn.state is ClientState.CLOSED
    half = ClientConnection(Mode.SMTP)
    half.receive_data(b"220 half")
    half.receive_data(b"")
    with pytest.raises(ServerReplyError, match="inside a reply line"):
        events(half)


@given(
    st.integers(200, 559).filter(lambda c: c % 100 < 60),
    st.lists(st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126)), min_size=1,
             max_size=5),
    st.integers(1, 7),
)
def test_reply_round_trip_in_any_chunks(code: int, texts: list[str], step: int) -> None:
    """What our server core renders, the client core reads back, however the bytes arrive."""
    texts = [t.strip() for t in texts]
    wire = Reply(code, None, tuple(texts)).render()
    conn = ClientConnection(Mode.SMTP)
    got: list[ClientEvent] = []
    for i in range(0, len(wire), step):
        got += events(conn, wire[i : i + step])
    [greeting] = got
    assert isinstance(greeting, Greeting)
    assert greeting.reply.code == code
    assert [line.strip() for line in greeting.reply.lines] == [t for t in texts]


@given(st.binary(max_size=300))
def test_reply_parser_never_crashes(data: bytes) -> None:
    conn = ClientConnection(Mode.SMTP)
    try:
        events(conn, data)
        conn.receive_data(b"")
        events(conn)
    except ServerReplyError:
        assert conn.state is ClientState.CLOSED


# -- capabilities ---------------------------------------------------------------------------


def test_capabilities() -> None:
    conn = greeted(Mode.SMTP, "PIPELINING SIZE=1000 AUTH=LOGIN AUTH_PLAIN CHUNKING")
    caps = parse_capabilities(
        _reply(b"250-mx.example hi\r\n250-SIZE 1000\r\n250-AUTH PLAIN scram-sha-256\r\n"
               b"250-AUTH=LOGIN\r\n250-8BITMIME\r\n250 STARTTLS\r\n")
    )
    assert caps.server_name == "mx.example"
    assert caps.size_limit == 1000
    assert caps.auth_mechanisms == ("PLAIN", "SCRAM-SHA-256", "LOGIN")
    assert caps.offers("8bitmime") and caps.offers("STARTTLS") and not caps.pipelining
    assert conn.capabilities is not None and conn.capabilities.pipelining
    assert parse_capabilities(_reply(b"250-x\r\n250 SIZE\r\n")).size_limit is None


def _reply(wire: bytes) -> ServerReply:
    conn = ClientConnection(Mode.SMTP)
    [greeting] = events(conn, wire)
    assert isinstance(greeting, Greeting)
    return greeting.reply


# -- command order and pipelining -------------------------------------------------------------


def test_nothing_before_the_greeting_but_quit() -> None:
    conn = ClientConnection(Mode.LMTP)
    with pytest.raises(ClientUsageError):
        conn.hello("x")
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"


def test_order_is_checked() -> None:
    conn = greeted()
    with pytest.raises(ClientUsageError):
        conn.rcpt("a@example.org")
    with pytest.raises(ClientUsageError):
        conn.data()
    conn.mail("a@example.org")
    with pytest.raises(ClientUsageError, match="AUTH"):
        conn.auth(PlainClient("u", "p"))
    with pytest.raises(ClientUsageError):
        conn.mail("b@example.org")
    with pytest.raises(ClientUsageError, match="break the command line"):
        conn.rcpt("x>\r\nRSET")


def test_without_pipelining_one_command_at_a_time() -> None:
    conn = greeted(extensions="8BITMIME")
    conn.mail("a@example.org")
    with pytest.raises(ClientUsageError, match="PIPELINING"):
        conn.rcpt("b@example.org")


def test_group_enders_wait_for_their_reply() -> None:
    conn = greeted()
    conn.mail("a@example.org")
    conn.rcpt("b@example.org")
    conn.data()
    with pytest.raises(ClientUsageError, match="may not follow DATA"):
        conn.rset()
    conn.quit()  # QUIT may always go


# -- LMTP transactions against the server core --------------------------------------------------


class Pair:
    """A client core wired to a server core; the test plays the server's application."""

    def __init__(self, mode: Mode, **server: object) -> None:
        self.server = ServerConnection(mode, hostname="lmtp.example", **server)  # type: ignore[arg-type]
        self.client = ClientConnection(mode)
        self.verdicts: dict[str, Reply] = {}
        self.final: dict[str, Reply] = {}
        self.messages: list[bytes] = []

    def pump(self) -> list[ClientEvent]:
        out: list[ClientEvent] = []
        for _ in range(50):
            received = self.server.data_to_send()
            if received:  # b"" would mean EOF
                self.client.receive_data(received)
            while (event := self.client.next_event()) is not NEED_DATA:
                assert isinstance(event, ClientEvent)
                out.append(event)
            sent = self.client.data_to_send()
            if sent:
                self.server.receive_data(sent)
            while (sev := self.server.next_event()) is not NEED_DATA:
                if isinstance(sev, ServerClosed):
                    break
                if isinstance(sev, MailFrom):
                    self.server.answer(Reply(250, "2.1.0", "Ok"))
                elif isinstance(sev, RcptTo):
                    self.server.answer(self.verdicts.get(sev.forward_path,
                                                         Reply(250, "2.1.5", "Ok")))
                elif isinstance(sev, MessageData):
                    self.messages.append(sev.content)
                    answers = sev.recipients if self.server.mode is Mode.LMTP else ("",)
                    for rcpt in answers:
                        self.server.answer(self.final.get(rcpt, Reply(250, "2.0.0", "Saved")))
                elif sev.needs_reply:
                    raise AssertionError(f"unexpected {sev}")
            if not sent and not received:
                break
        return out


def test_lmtp_pipelined_transaction_with_per_recipient_replies() -> None:
    pair = Pair(Mode.LMTP)
    pair.verdicts["nobody@example.com"] = Reply(550, "5.1.1", "User unknown")
    pair.final["carol@example.com"] = Reply(452, "4.2.2", "Over quota")
    [greeting] = pair.pump()
    assert isinstance(greeting, Greeting)
    pair.client.hello("mx.example")
    [hello] = pair.pump()
    assert isinstance(hello, HelloReply) and hello.capabilities and hello.capabilities.pipelining
    client = pair.client
    client.mail("sender@example.org", ["SIZE=40"])
    for rcpt in ("alice@example.com", "nobody@example.com", "carol@example.com"):
        client.rcpt(rcpt)
    client.data()
    got = pair.pump()
    assert [type(e) for e in got] == [CommandReply] * 5
    assert [e.reply.code for e in got if isinstance(e, CommandReply)] == [250, 250, 550, 250, 354]
    assert client.accepted_recipients == ("alice@example.com", "carol@example.com")
    client.send_message(b".leading dot\nbare LF\r\n", end=False)
    client.send_message(b"last line without end")
    got = pair.pump()
    assert got == [
        MessageReply("alice@example.com", got[0].reply),  # type: ignore[attr-defined]
        MessageReply("carol@example.com", got[1].reply),  # type: ignore[attr-defined]
    ]
    assert [e.reply.code for e in got if isinstance(e, MessageReply)] == [250, 452]
    assert pair.messages == [b".leading dot\r\nbare LF\r\nlast line without end\r\n"]
    # Reuse: RSET then a second transaction on the same session.
    client.rset()
    client.mail("")
    client.rcpt("alice@example.com")
    client.data()
    got = pair.pump()
    assert [e.reply.code for e in got if isinstance(e, CommandReply)] == [250, 250, 250, 354]
    client.send_message(b"second\r\n")
    [final] = pair.pump()
    assert isinstance(final, MessageReply) and final.recipient == "alice@example.com"
    client.quit()
    got = pair.pump()
    assert isinstance(got[0], CommandReply) and got[0].reply.code == 221
    assert client.state is ClientState.CLOSED


def test_lmtp_no_recipient_accepted_gives_one_data_reply() -> None:
    pair = Pair(Mode.LMTP)
    pair.verdicts["x@example.com"] = Reply(550, "5.1.1", "no")
    pair.pump()
    pair.client.hello("mx")
    pair.pump()
    pair.client.mail("a@example.org")
    pair.client.rcpt("x@example.com")
    pair.client.data()
    got = pair.pump()
    assert [e.reply.code for e in got if isinstance(e, CommandReply)] == [250, 550, 503]
    assert pair.client.state is ClientState.READY


def test_lmtp_bdat_last_gets_per_recipient_replies() -> None:
    pair = Pair(Mode.LMTP)
    pair.final["b@example.com"] = Reply(550, "5.2.0", "refused")
    pair.pump()
    pair.client.hello("mx")
    pair.pump()
    assert pair.client.capabilities and pair.client.capabilities.offers("CHUNKING")
    pair.client.mail("a@example.org", ["BODY=BINARYMIME"])
    pair.client.rcpt("a@example.com")
    pair.client.rcpt("b@example.com")
    pair.client.bdat(b"Subject: x\r\n\r\n", last=False)
    pair.client.bdat(b".body\r\n", last=True)
    got = pair.pump()
    finals = [e for e in got if isinstance(e, MessageReply)]
    assert [(e.recipient, e.reply.code) for e in finals] == [
        ("a@example.com", 250), ("b@example.com", 550)]
    assert pair.messages == [b"Subject: x\r\n\r\n.body\r\n"]


def test_smtp_one_reply_after_data() -> None:
    pair = Pair(Mode.SMTP)
    pair.pump()
    pair.client.hello("mx")
    pair.pump()
    pair.client.mail("a@example.org")
    pair.client.rcpt("a@example.com")
    pair.client.rcpt("b@example.com")
    pair.client.data()
    pair.pump()
    pair.client.send_message(b"hi\r\n")
    got = pair.pump()
    assert len(got) == 1 and isinstance(got[0], MessageReply) and got[0].recipient is None


# -- STARTTLS and AUTH --------------------------------------------------------------------------


def test_starttls_drops_injected_bytes_and_forgets_capabilities() -> None:
    conn = greeted(extensions="PIPELINING STARTTLS")
    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    # A man in the middle appends a reply after the 220, hoping it is read after TLS.
    [reply] = events(conn, b"220 2.0.0 Ready\r\n250 injected\r\n")
    assert isinstance(reply, CommandReply) and reply.reply.code == 220
    assert conn.state is ClientState.TLS_WAIT
    conn.receive_data(b"250 more injected\r\n")
    assert events(conn) == []
    conn.tls_started()
    state: ClientState = conn.state
    assert conn.tls_active and conn.capabilities is None and state is ClientState.HELLO
    conn.hello("mx")
    [hello] = events(conn, b"250-lmtp.example\r\n250 AUTH PLAIN\r\n")
    assert isinstance(hello, HelloReply) and hello.capabilities
    assert hello.capabilities.auth_mechanisms == ("PLAIN",)


def test_auth_plain_initial_response() -> None:
    conn = greeted()
    conn.auth(PlainClient("lmtpuser", "pw"))
    wire = conn.data_to_send()
    assert wire == b"AUTH PLAIN " + base64.b64encode(b"\0lmtpuser\0pw") + b"\r\n"
    [done] = events(conn, b"235 2.7.0 Authentication successful\r\n")
    assert isinstance(done, AuthReply) and done.succeeded and conn.authenticated


def test_auth_login_and_failure() -> None:
    conn = greeted()
    conn.auth(LoginClient("u", "p"))
    assert conn.data_to_send() == b"AUTH LOGIN\r\n"
    assert events(conn, b"334 VXNlcm5hbWU6\r\n") == []
    assert conn.data_to_send() == base64.b64encode(b"u") + b"\r\n"
    assert events(conn, b"334 UGFzc3dvcmQ6\r\n") == []
    assert conn.data_to_send() == base64.b64encode(b"p") + b"\r\n"
    [done] = events(conn, b"535 5.7.8 Authentication failed\r\n")
    assert isinstance(done, AuthReply) and not done.succeeded and not conn.authenticated


def test_auth_cram_md5() -> None:
    conn = greeted()
    conn.auth(CramMD5Client("u", "secret"))
    conn.data_to_send()
    challenge = b"<1896.697170952@postoffice.example.net>"
    events(conn, b"334 " + base64.b64encode(challenge) + b"\r\n")
    answer = base64.b64decode(conn.data_to_send().strip())
    digest = hmac.new(b"secret", challenge, hashlib.md5).hexdigest()
    assert answer == f"u {digest}".encode()


def test_bad_challenge_cancels_with_star() -> None:
    conn = greeted()
    conn.auth(CramMD5Client("u", "secret"))
    conn.data_to_send()
    assert events(conn, b"334 !!!not base64\r\n") == []
    assert conn.data_to_send() == b"*\r\n"
    [done] = events(conn, b"501 5.0.0 AUTH aborted\r\n")
    assert isinstance(done, AuthReply) and done.error and not done.succeeded


@pytest.mark.parametrize(("password", "ok"), [("pw", True), ("wrong", False)])
def test_scram_against_our_server_mechanism(password: str, ok: bool) -> None:
    from sealmail.proto.sasl import scram_secret_from_salted_password

    salt = b"0123456789abcdef"
    salted = hashlib.pbkdf2_hmac("sha256", b"pw", salt, 4096)
    secret = scram_secret_from_salted_password("sha256", salted, salt, 4096)

    class Creds:
        def scram_secret(self, mechanism: str, identity: object) -> object:
            return secret

    server = ScramMechanism(
        MechanismContext(
            credentials=Creds(),  # type: ignore[arg-type]
            default_realm="example",
            authorize=lambda authcid, authzid: True,
            entropy=lambda n: b"x" * n,
        ),
        "SCRAM-SHA-256",
    )
    client = ScramClient("SCRAM-SHA-256", "lmtpuser", password)
    result = server.step(client.initial_response())
    while isinstance(result, Challenge):
        try:
            answer = client.respond(result.data)
        except SaslClientError:
            break
        result = server.step(answer)
    assert isinstance(result, Success) is ok
    assert client.complete is ok


def test_scram_235_without_server_proof_is_distrusted() -> None:
    conn = greeted()
    conn.auth(ScramClient("SCRAM-SHA-256", "u", "p"))
    conn.data_to_send()
    [done] = events(conn, b"235 2.7.0 Authentication successful\r\n")
    assert isinstance(done, AuthReply) and not done.succeeded
    assert done.error and "prove" in done.error


@pytest.mark.parametrize(
    ("offered", "options", "filter_", "chosen"),
    [
        (["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-256"], ["noplaintext"], [], "SCRAM-SHA-256"),
        (["PLAIN", "LOGIN"], ["noplaintext", "noanonymous"], [], None),
        (["PLAIN", "LOGIN"], ["noanonymous"], [], "PLAIN"),
        (["plain", "cram-md5"], [], ["plain"], "PLAIN"),
        (["SCRAM-SHA-1", "CRAM-MD5"], [], ["!scram-sha-1"], "CRAM-MD5"),
        (["DIGEST-MD5", "GSSAPI"], [], [], None),
    ],
)
def test_choose_mechanism(
    offered: list[str], options: list[str], filter_: list[str], chosen: str | None
) -> None:
    assert choose_mechanism(offered, options, filter_) == chosen


def test_unknown_security_option_is_an_error() -> None:
    with pytest.raises(ValueError, match="noplain"):
        choose_mechanism(["PLAIN"], ["noplain"])


# -- message content -----------------------------------------------------------------------------


@given(st.binary(max_size=200), st.lists(st.integers(0, 200), max_size=5))
def test_data_stuffing_round_trips_through_the_servers_reader(content: bytes,
                                                              cuts: list[int]) -> None:
    stuffer = DataStuffer()
    wire = b""
    last = 0
    for cut in sorted(c for c in cuts if c <= len(content)):
        wire += stuffer.feed(content[last:cut])
        last = cut
    wire += stuffer.feed(content[last:]) + stuffer.finish()
    body, rest = dot_unstuff(wire)
    assert rest == b""
    normal = content.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if normal and not normal.endswith(b"\r\n"):
        normal += b"\r\n"
    assert body == normal
    # No bare CR or LF ever reaches the wire (RFC 5321 2.3.8).
    assert wire.replace(b"\r\n", b"").count(b"\r") == 0
    assert wire.replace(b"\r\n", b"").count(b"\n") == 0
