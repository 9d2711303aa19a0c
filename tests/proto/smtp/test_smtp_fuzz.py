"""Fuzzing the server core: any bytes, in any pieces, give only replies and events.

Run longer with e.g. `pytest tests/proto/smtp/test_smtp_fuzz.py --hypothesis-profile=...` or
raise `max_examples` locally; atheris is not needed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealmail.proto.smtp import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Limits,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
    StartTLS,
)

# Fragments that reach deep states, mixed with noise.
FRAGMENTS = [
    b"LHLO c\r\n",
    b"EHLO c\r\n",
    b"HELO c\r\n",
    b"MAIL FROM:<a@b>\r\n",
    b"MAIL FROM:<>\r\n",
    b"RCPT TO:<u@x>\r\n",
    b"RCPT TO:<u@x> IGNOREQUOTA\r\n",
    b"DATA\r\n",
    b".\r\n",
    b"..x\r\n",
    b"BDAT 3\r\n",
    b"BDAT 2 LAST\r\n",
    b"BDAT 0 LAST\r\n",
    b"RSET\r\n",
    b"NOOP\r\n",
    b"QUIT\r\n",
    b"AUTH PLAIN\r\n",
    b"AUTH PLAIN AGEAYg==\r\n",
    b"*\r\n",
    b"=\r\n",
    b"STARTTLS\r\n",
    b"VRFY x\r\n",
    b"HELP\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b".",
    b"x" * 600,
    b"\xff\xfe",
    b"MAIL FROM:<\xc3(@x>\r\n",
    b"RCPT TO:<a@[1.2.3.4]>\r\n",
]

stream = st.lists(st.sampled_from(FRAGMENTS) | st.binary(max_size=40), max_size=40).map(b"".join)


def drive(conn: ServerConnection, data: bytes, piece: int, answer_ok: bool) -> None:
    code = 250 if answer_ok else 550
    for i in range(0, len(data) + 1, piece):
        conn.receive_data(data[i : i + piece] or b"")
        for _ in range(10_000):
            event = conn.next_event()
            if event is NEED_DATA or isinstance(event, ConnectionClosed):
                break
            if isinstance(event, MessageData):
                for _rcpt in range(conn.replies_owed):
                    conn.answer(Reply(code, f"{code // 100}.0.0", "x"))
            elif isinstance(event, (AuthStart, AuthResponse)):
                if answer_ok and event == AuthResponse(b""):
                    conn.auth_succeeded("u")
                elif answer_ok:
                    conn.auth_challenge(b"c")
                else:
                    conn.answer(Reply(535, "5.7.8", "no"))
            elif isinstance(event, StartTLS):
                conn.answer(Reply(220, "2.0.0", "go") if answer_ok else Reply(454, "4.7.0", "no"))
                if answer_ok:
                    conn.tls_started()
            elif isinstance(event, (MailFrom, RcptTo)):
                conn.answer(Reply(code, f"{code // 100}.1.0", "x"))
            else:
                assert not event.needs_reply
        out = conn.data_to_send()
        assert out == b"" or out.endswith(b"\r\n")
        if conn.closed:
            return


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream,
    st.integers(min_value=1, max_value=64),
    st.booleans(),
    st.sampled_from([Mode.LMTP, Mode.SMTP]),
    st.booleans(),
)
def test_core_never_raises(data: bytes, piece: int, answer_ok: bool, mode: Mode, tls: bool) -> None:
    conn = ServerConnection(
        mode=mode,
        hostname="mx",
        limits=Limits(max_line_length=512, max_message_size=50, max_recipients=3),
        auth_mechanisms=("PLAIN",),
        starttls_available=tls,
    )
    drive(conn, data, piece, answer_ok)


@given(stream)
def test_piece_size_does_not_change_the_replies(data: bytes) -> None:
    outputs = set()
    for piece in (1, 7, len(data) + 1):
        conn = ServerConnection(
            mode=Mode.LMTP, hostname="mx", limits=Limits(max_line_length=512, max_message_size=50)
        )
        out = bytearray(conn.data_to_send())
        for i in range(0, len(data), piece):
            conn.receive_data(data[i : i + piece])
            drive_once(conn)
            out += conn.data_to_send()
        outputs.add(bytes(out))
    assert len(outputs) == 1


def drive_once(conn: ServerConnection) -> None:
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return
        if isinstance(event, MessageData):
            for _ in range(conn.replies_owed):
                conn.answer(Reply(250, "2.0.0", "x"))
        elif event.needs_reply:
            conn.answer(
                Reply(250, "2.0.0", "x")
                if isinstance(event, (MailFrom, RcptTo))
                else Reply(554, "5.0.0", "no")
            )
