"""smtpd's transcripts to the postmaster (notify_classes protocol, policy, resource, software,
bounce): the core's history and error classes, the notice's text, and a whole session over a
real socket whose notice arrives at Postfix's smtp-sink."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import SmtpSink, free_tcp_port, traversable_tmpdir

from sealmail.mta.notify import NotifySettings
from sealmail.mta.smtpd_notice import session_notice
from sealmail.proto.smtp import (
    NEED_DATA,
    AuthStart,
    ConnectionClosed,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
)


def settings(classes: str) -> NotifySettings:
    return NotifySettings(frozenset(classes.split()), "bounce-pm@x.test", "2bounce-pm@x.test",
                          "delay-pm@x.test", "error-pm@x.test", "double-bounce",
                          "mx.example.com")


def drive(conn: ServerConnection, data: bytes) -> None:
    conn.receive_data(data)
    while (event := conn.next_event()) is not NEED_DATA:
        if isinstance(event, ConnectionClosed):
            return
        if isinstance(event, MailFrom):
            conn.answer(Reply(250, "2.1.0", "Ok"))
        elif isinstance(event, RcptTo):
            conn.note_error("policy")
            conn.answer(Reply(554, "5.7.1", f"<{event.forward_path}>: Relay access denied"))
        elif isinstance(event, MessageData):
            conn.answer(Reply(250, "2.0.0", "Ok"))
        elif isinstance(event, AuthStart):
            conn.answer(Reply(535, "5.7.8", "Authentication credentials invalid"))


def test_the_core_keeps_a_transcript_without_credentials_or_content() -> None:
    conn = ServerConnection(Mode.SMTP, "mx.example.com", record_history=True,
                            auth_mechanisms=("PLAIN",))
    drive(conn, b"EHLO client\r\nFOO bar\r\nAUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")
    drive(conn, b"MAIL FROM:<a@x.test>\r\nRCPT TO:<b@y.test>\r\nQUIT\r\n")
    history = list(conn.history or ())
    assert history[0].startswith("Out: 220 mx.example.com")
    assert "In:  EHLO client" in history and "Out: 250-mx.example.com" in history
    assert "In:  FOO bar" in history and "Out: 500 5.5.2 Error: command not recognized" in history
    assert "In:  AUTH PLAIN" in history
    assert not any("AGFsaWNl" in line for line in history)  # the password stays out
    assert history[-1] == "Out: 221 2.0.0 Bye"
    assert conn.error_classes == {"protocol", "policy"}
    assert ServerConnection(Mode.SMTP).history is None  # off unless asked for


def test_the_notice_is_postfix_shaped_and_only_for_wanted_classes() -> None:
    history = ["Out: 220 mx.example.com ESMTP", "In:  RCPT TO:<" + "x" * 90 + "@y.test>",
               "In:  caf\u00e9"]
    assert session_notice(settings("resource software"), {"protocol"}, history, "c[1.2.3.4]",
                          "", 0.0) is None
    notice = session_notice(settings("protocol"), {"protocol", "policy"}, history,
                            "unknown[1.2.3.4]", "lost connection", 0.0)
    assert notice is not None
    assert notice.envelope.sender == "double-bounce@mx.example.com"
    assert notice.envelope.recipients[0].address == "error-pm@x.test"
    text = notice.content.decode("ascii")
    assert "Subject: sealmail SMTP server: errors from unknown[1.2.3.4]\r\n" in text
    assert "\r\n Out: 220 mx.example.com ESMTP\r\n" in text
    assert all(len(line) <= 79 for line in text.split("\r\n"))  # wrapped at 78, plus a space
    assert "\r\n     " + "x" * 5 in text  # the continuation is indented
    assert "\r\n In:  caf?\r\n" in text  # printable only
    assert "Session aborted, reason: lost connection" in text
    bounce = session_notice(settings("bounce"), {"bounce"}, history, "c", "", 0.0)
    assert bounce is not None and bounce.envelope.recipients[0].address == "bounce-pm@x.test"


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smnotice-") as path:
        yield path


@pytest.mark.peer
def test_a_session_with_errors_sends_its_transcript_to_the_postmaster(root: Path) -> None:
    port = free_tcp_port()
    with SmtpSink(root, "127.0.0.1", free_tcp_port()) as sink:
        config = root / "etc"
        config.mkdir()
        (config / "transport").write_text(f"sink.example smtp:[127.0.0.1]:{sink.port}\n")
        (config / "main.cf").write_text(
            f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
            "mydestination =\ninet_interfaces = loopback-only\nmynetworks = 10.0.0.0/8\n"
            f"transport_maps = texthash:{config / 'transport'}\n"
            "notify_classes = protocol, policy\nerror_notice_recipient = pm@sink.example\n")
        (config / "master.cf").write_text(
            f"127.0.0.1:{port} inet n - n - - smtpd\n"
            "smtp      unix  -       -       n       -       -       smtp\n")
        with RunningMta(config, smtpd_processes=1):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                client.ehlo("client.example.org")
                assert client.docmd("FOO")[0] == 500
                client.mail("a@example.org")
                # Postfix's default relay restrictions end in defer_unauth_destination.
                assert client.rcpt("victim@elsewhere.example")[0] == 454
            wait_for(lambda: bool(sink.messages()), what="the postmaster notice")
    [notice] = sink.messages()
    assert "X-Mail-Args: <double-bounce@mx.example.com>" in notice
    assert "X-Rcpt-Args: <pm@sink.example>" in notice
    assert "Subject: sealmail SMTP server: errors from unknown[127.0.0.1]" in notice
    assert " In:  FOO" in notice
    assert " In:  rcpt TO:<victim@elsewhere.example>" in notice  # as smtplib sent it
    assert " Out: 454 4.7.1 <victim@elsewhere.example>: Relay access denied" in notice
    assert "Session aborted" not in notice  # it ended with QUIT
