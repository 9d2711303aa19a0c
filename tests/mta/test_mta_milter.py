"""smtpd_milters with a fake milter (tests/support/milter.py): each verdict and each edit as
Postfix applies them, macros, several milters in order, and milter_default_action when the
milter is down, times out or breaks the protocol."""

from __future__ import annotations

import logging
import os
import smtplib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.mta.test_mta_smtpd import Server
from tests.support.loops import LOOPS
from tests.support.milter import FakeMilter, continue_all
from tests.support.peers import closed_tcp_port

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config.main_cf import MainConfig, parse_main_cf
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.milter import MilterSettings
from sealmail.mta.pickup import pickup_once, post
from sealmail.mta.queue import Queue, QueueName
from sealmail.proto import milter as m

MESSAGE = (b"From: alice@example.org\r\nSubject: hi\r\nX-Folded: one\r\n\ttwo\r\n\r\n"
           b"hello\r\n")


@pytest.fixture
def milters() -> Iterator[Callable[..., FakeMilter]]:
    started: list[FakeMilter] = []

    def start(script: Callable[[Any], list[Any]] = continue_all, **kwargs: Any) -> FakeMilter:
        milter = FakeMilter(script, **kwargs)
        started.append(milter)
        return milter

    yield start
    for milter in started:
        milter.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(main_text: str, **kwargs: Any) -> Server:
        server = Server(tmp_path / f"s{len(servers)}", main_text, **kwargs)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


def at(kind: type, *replies: Any) -> Callable[[Any], list[Any]]:
    """A script: `replies` for commands of `kind`, CONTINUE for the rest."""
    def script(command: Any) -> list[Any]:
        if isinstance(command, kind):
            return list(replies)
        return continue_all(command)
    return script


def send(server: Server, recipients: tuple[str, ...] = ("bob@example.com",),
         message: bytes = MESSAGE) -> dict[str, tuple[int, bytes]]:
    with server.client() as client:
        client.ehlo("client.test")
        return client.sendmail("alice@example.org", list(recipients), message)


def queued(server: Server, where: QueueName = QueueName.INCOMING) -> tuple[Any, bytes]:
    [queue_id] = server.queue.ids(where)
    entry = server.queue.load(queue_id, where)
    return entry, entry.content.read()


# -- verdicts ------------------------------------------------------------------------------------


def test_reject_at_rcpt_in_postfix_words(serve: Callable[..., Server],
                                         milters: Callable[..., FakeMilter],
                                         caplog: pytest.LogCaptureFixture) -> None:
    milter = milters(at(m.Rcpt, m.Reject()))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    caplog.set_level(logging.INFO, "sealmail")
    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
        send(server)
    assert refused.value.recipients["bob@example.com"] == (550, b"5.7.1 Command rejected")
    assert ("NOQUEUE: milter-reject: RCPT from unknown[127.0.0.1]: 550 5.7.1 Command rejected; "
            "from=<alice@example.org> to=<bob@example.com> proto=ESMTP helo=<client.test>"
            in caplog.messages)
    assert server.queue.ids(QueueName.INCOMING) == []


def test_tempfail_at_mail(serve: Callable[..., Server],
                          milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Mail, m.Tempfail())).spec}\n")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(server)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        451, b"4.7.1 Service unavailable - try again later")


def test_reply_code_at_end_of_message(serve: Callable[..., Server],
                                      milters: Callable[..., FakeMilter],
                                      caplog: pytest.LogCaptureFixture) -> None:
    milter = milters(at(m.EndOfMessage, m.ReplyCode(b"554 5.7.0 Message looks like spam")))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    caplog.set_level(logging.INFO, "sealmail")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        554, b"5.7.0 Message looks like spam")
    assert any(": milter-reject: END-OF-MESSAGE from unknown[127.0.0.1]: 5.7.0 Message looks "
               "like spam; from=<alice@example.org> to=<bob@example.com>" in line
               for line in caplog.messages)
    assert server.queue.ids(QueueName.INCOMING) == []


def test_discard_answers_250_and_queues_nothing(serve: Callable[..., Server],
                                                milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.EndOfMessage, m.Discard())).spec}\n")
    assert send(server) == {}
    assert server.queue.ids(QueueName.INCOMING) == []


def test_quarantine_puts_the_message_on_hold(serve: Callable[..., Server],
                                             milters: Callable[..., FakeMilter],
                                             caplog: pytest.LogCaptureFixture) -> None:
    milter = milters(at(m.EndOfMessage, m.Quarantine(b"suspicious"), m.Continue()))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    caplog.set_level(logging.INFO, "sealmail")
    assert send(server) == {}
    assert server.queue.ids(QueueName.INCOMING) == []
    queued(server, QueueName.HOLD)
    assert any("milter-hold: END-OF-MESSAGE from unknown[127.0.0.1]: suspicious;" in line
               for line in caplog.messages)


def test_connect_rejection_answers_mail_from(serve: Callable[..., Server],
                                             milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Connect, m.Reject())).spec}\n")
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        server.client()
    # As Postfix's smtpd (smtpd.c): a 5xx greeting, and the session goes on.
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        554, b"mx.example.com ESMTP not accepting connections")


def test_after_a_554_greeting_helo_is_answered_and_mail_from_refused(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Connect, m.Reject())).spec}\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline() == b"554 mx.example.com ESMTP not accepting connections\r\n"
        stream.write(b"HELO client.test\r\nMAIL FROM:<alice@example.org>\r\nQUIT\r\n")
        stream.flush()
        assert stream.readline().startswith(b"250 ")  # as Postfix: HELO is not refused
        assert stream.readline() == b"550 5.7.1 Command rejected\r\n"
        assert stream.readline().startswith(b"221 ")


def test_a_554_greeting_counts_toward_the_hard_error_limit(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Connect, m.Reject())).spec}\n"
                   "smtpd_hard_error_limit = 1\n")
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        stream = sock.makefile("rwb")
        assert stream.readline().startswith(b"554 ")
        stream.write(b"FROB\r\n")
        stream.flush()
        # As Postfix's smtpd: the greeting was the first error, so this one is over the limit.
        assert stream.readline() == b"421 4.7.0 mx.example.com Error: too many errors\r\n"


def test_tempfail_at_connect_keeps_the_220_and_answers_mail_from(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Connect, m.Tempfail())).spec}\n")
    with server.client() as client:
        assert client.ehlo("client.test")[0] == 250
        assert client.mail("alice@example.org") == (451, b"4.7.1 Service unavailable - try "
                                                         b"again later")


def test_shutdown_at_connect_ends_the_session(serve: Callable[..., Server],
                                              milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Connect, m.Shutdown())).spec}\n")
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        server.client()
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        421, b"mx.example.com Service unavailable - try again later")


# -- edits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("loop", LOOPS)
def test_every_edit_is_in_the_queue_file_before_the_250(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter], loop: str) -> None:
    milter = milters(at(
        m.EndOfMessage,
        m.InsertHeader(0, b"DKIM-Signature", b"v=1; a=rsa-sha256;\n\tb=abc"),
        m.AddHeader(b"X-Added", b"yes"),
        m.ChangeHeader(1, b"Subject", b"[spam] hi"),
        m.ChangeHeader(1, b"X-Folded", b""),
        m.AddRecipient(b"<carol@example.com>"),
        m.DeleteRecipient(b"<bob@example.com>"),
        m.ChangeFrom(b"<bounces@example.org>"),
        m.ReplaceBody(b"new body\r\n"), m.ReplaceBody(b"second line\n"),
        m.Accept()))
    server = serve(f"smtpd_milters = {milter.spec}\n", loop=loop)
    assert send(server) == {}
    entry, content = queued(server)
    headers, _, body = content.partition(b"\r\n\r\n")
    lines = headers.split(b"\r\n")
    assert lines[0] == b"DKIM-Signature: v=1; a=rsa-sha256;"  # above our Received:
    assert lines[1] == b"\tb=abc"
    assert lines[2].startswith(b"Received: from client.test")
    assert b"Subject: [spam] hi" in lines and lines[-1] == b"X-Added: yes"
    assert b"X-Folded" not in headers
    assert body == b"new body\r\nsecond line\r\n"
    assert entry.envelope.sender == "bounces@example.org"
    assert [r.record.address for r in entry.recipients] == ["carol@example.com"]
    assert entry.envelope.size == len(content)


def test_milters_see_the_message_as_postfix_shows_it(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter]) -> None:
    milter = milters()
    server = serve(f"smtpd_milters = {milter.spec}\n")
    assert send(server) == {}
    [queue_id] = server.queue.ids(QueueName.INCOMING)
    kinds = [type(c).__name__ for c in milter.commands if not isinstance(c, m.Macro)]
    assert kinds[:14] == ["OptNeg", "Connect", "Helo", "Mail", "Rcpt", "Data", "Header",
                          "Header", "Header", "Header", "Header", "EndOfHeaders", "Body",
                          "EndOfMessage"]
    headers = [(c.name, c.value) for c in milter.commands if isinstance(c, m.Header)]
    assert headers[0] == (b"From", b"alice@example.org")  # our Received: is not shown
    assert (b"X-Folded", b"one\n\ttwo") in headers
    assert [c for c in milter.commands if isinstance(c, m.Body)] == [m.Body(b"hello\r\n")]
    connect = next(c for c in milter.commands if isinstance(c, m.Connect))
    assert (connect.hostname, connect.family, connect.address) == (b"[127.0.0.1]", b"4",
                                                                    b"127.0.0.1")
    assert milter.macros(b"C")[b"j"] == b"mx.example.com"
    assert milter.macros(b"C")[b"{daemon_name}"] == b"mx.example.com"
    assert milter.macros(b"C")[b"_"] == b"unknown [127.0.0.1]"
    assert milter.macros(b"M")[b"{mail_addr}"] == b"alice@example.org"
    assert milter.macros(b"R")[b"{rcpt_addr}"] == b"bob@example.com"
    assert milter.macros(b"E")[b"i"] == queue_id.encode()


def test_two_milters_in_order_the_second_sees_the_first_ones_edits(
        serve: Callable[..., Server], milters: Callable[..., FakeMilter],
        tmp_path: Path) -> None:
    first = milters(at(m.EndOfMessage, m.AddHeader(b"X-First", b"1"), m.Continue()))
    second = milters(at(m.EndOfMessage, m.AddHeader(b"X-Second", b"2"), m.Continue()),
                     unix_path=tmp_path / "milter.sock")
    server = serve(f"smtpd_milters = {first.spec}, {second.spec}\n")
    assert send(server) == {}
    _, content = queued(server)
    assert content.index(b"X-First: 1") < content.index(b"X-Second: 2")
    assert m.Header(b"X-First", b"1") in second.commands


def test_a_milter_asking_for_no_events_gets_none(serve: Callable[..., Server],
                                                 milters: Callable[..., FakeMilter]) -> None:
    flags = m.ProtocolFlag
    milter = milters(protocol=int(flags.NOHELO | flags.NOHDRS | flags.NOBODY | flags.NR_RCPT))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    assert send(server) == {}
    kinds = {type(c) for c in milter.commands}
    assert m.Helo not in kinds and m.Header not in kinds and m.Body not in kinds
    assert m.Rcpt in kinds


# -- milter_default_action -----------------------------------------------------------------------


@pytest.fixture
def closed_milter() -> Iterator[str]:
    """A milter address that refuses connections for the whole test."""
    with closed_tcp_port() as port:
        yield f"inet:127.0.0.1:{port}"


@pytest.mark.parametrize(("action", "expected"), [
    ("tempfail", (451, b"4.7.1 Service unavailable - try again later")),
    ("reject", (550, b"5.5.0 Service unavailable")),
])
def test_milter_down_refuses_by_default_action(serve: Callable[..., Server], action: str,
                                               expected: tuple[int, bytes],
                                               caplog: pytest.LogCaptureFixture,
                                               closed_milter: str) -> None:
    server = serve(f"smtpd_milters = {closed_milter}\nmilter_default_action = {action}\n")
    caplog.set_level(logging.INFO, "sealmail")
    with smtplib.SMTP(timeout=10) as client:
        # Postfix's smtpd greets with 554 after a 5xx at CONNECT (here the default action's).
        assert client.connect("127.0.0.1", server.port)[0] == (554 if action == "reject" else 220)
        client.ehlo("client.test")
        assert client.mail("alice@example.org") == expected
    assert any("connect to Milter service inet:127.0.0.1:" in line for line in caplog.messages)


def test_milter_down_with_accept_or_quarantine(serve: Callable[..., Server],
                                               closed_milter: str) -> None:
    server = serve(f"smtpd_milters = {closed_milter}\nmilter_default_action = accept\n")
    assert send(server) == {}
    assert len(server.queue.ids(QueueName.INCOMING)) == 1
    held = serve(f"smtpd_milters = {closed_milter}\nmilter_default_action = quarantine\n")
    assert send(held) == {}
    assert len(held.queue.ids(QueueName.HOLD)) == 1


def test_a_milter_that_times_out(serve: Callable[..., Server],
                                 milters: Callable[..., FakeMilter]) -> None:
    milter = milters(at(m.EndOfMessage))  # never answers
    server = serve(f"smtpd_milters = {milter.spec}\nmilter_content_timeout = 1s\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert refused.value.smtp_code == 451
    assert server.queue.ids(QueueName.INCOMING) == []


@pytest.mark.parametrize("garbage", [
    b"\x00\x00\x00\x01Z",  # an unknown reply
    b"\x7f\xff\xff\xff",  # an unreasonable length
    m.encode_reply(m.ReplyCode(b"250 not a refusal")),
    m.encode_reply(m.AddHeader(b"X", b"y")),  # an edit before the end of the message
])
def test_a_milter_that_breaks_the_protocol(serve: Callable[..., Server],
                                           milters: Callable[..., FakeMilter],
                                           garbage: bytes) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Mail, garbage)).spec}\n"
                   "milter_default_action = reject\n")
    with pytest.raises(smtplib.SMTPSenderRefused) as refused:
        send(server)
    assert refused.value.smtp_code == 550


def test_an_edit_the_milter_did_not_negotiate(serve: Callable[..., Server],
                                              milters: Callable[..., FakeMilter]) -> None:
    milter = milters(at(m.EndOfMessage, m.DeleteRecipient(b"<bob@example.com>"), m.Continue()),
                     actions=int(m.Action.ADDHDRS))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert refused.value.smtp_code == 451


# -- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(("line", "message"), [
    ("smtpd_milters = tcp:127.0.0.1:1", "invalid transport name"),
    ("smtpd_milters = inet:127.0.0.1", "inet:host:port"),
    ("smtpd_milters = { inet:127.0.0.1:1, default_action=accept }", "not supported"),
    ("smtpd_milters = inet:127.0.0.1:1\nmilter_default_action = bounce", "bad value"),
    ("smtpd_milters = inet:127.0.0.1:1\nmilter_protocol = 5", "bad protocol information"),
])
def test_bad_milter_configuration_is_refused(tmp_path: Path, line: str, message: str) -> None:
    server = Server(tmp_path, line + "\n")
    with pytest.raises(ConfigError, match=message):
        server.loop.run_until_complete(server._start())
    server.loop.close()


# -- non_smtpd_milters: pickup -------------------------------------------------------------------


def _posted(tmp_path: Path, milter: FakeMilter, extra: str = "") -> tuple[Queue, list[str], Any]:
    config = MainConfig.from_document(
        parse_main_cf(f"myhostname = mx.example.com\nmydestination = example.com\n"
                      f"non_smtpd_milters = {milter.spec}\n{extra}"), hostname="mx.example.com")
    queue = Queue(tmp_path / "queue")
    queue.create_directories()
    post(queue.maildrop, "alice@example.org", ["bob@example.com"], MESSAGE, 1000.0)
    settings = MilterSettings.from_config(config, MAIN.non_smtpd_milters)
    return queue, pickup_once(queue, cleanup_from_config(config), milters=settings), config


def test_pickup_mail_goes_through_non_smtpd_milters(tmp_path: Path,
                                                    milters: Callable[..., FakeMilter]) -> None:
    milter = milters(at(m.EndOfMessage, m.InsertHeader(0, b"DKIM-Signature", b"v=1"),
                        m.Continue()))
    queue, [queue_id], _ = _posted(tmp_path, milter)
    content = queue.load(queue_id, QueueName.INCOMING).content.read()
    assert content.startswith(b"DKIM-Signature: v=1\r\nReceived: by mx.example.com")
    connect = next(c for c in milter.commands if isinstance(c, m.Connect))
    assert (connect.hostname, connect.address) == (b"localhost", b"127.0.0.1")
    assert m.Helo(b"localhost") in milter.commands
    assert os.listdir(queue.maildrop) == []


def test_requeued_mail_skips_non_smtpd_milters(tmp_path: Path,
                                              milters: Callable[..., FakeMilter]) -> None:
    """postsuper -r: as Postfix's pickup (pickup.c, postsuper(1)), no milter sees it again."""
    milter = milters(at(m.EndOfMessage, m.InsertHeader(0, b"DKIM-Signature", b"v=1"),
                        m.Continue()))
    queue, [queue_id], config = _posted(tmp_path, milter)
    def connects() -> int:
        return sum(isinstance(c, m.Connect) for c in milter.commands)

    assert connects() == 1
    queue.requeue(queue_id, QueueName.INCOMING)
    settings = MilterSettings.from_config(config, MAIN.non_smtpd_milters)
    [again] = pickup_once(queue, cleanup_from_config(config), milters=settings)
    assert connects() == 1
    content = queue.load(again, QueueName.INCOMING).content.read()
    assert content.count(b"DKIM-Signature: v=1\r\n") == 1


def test_pickup_refusals(tmp_path: Path, milters: Callable[..., FakeMilter]) -> None:
    tempfail = milters(at(m.EndOfMessage, m.Tempfail()))
    queue, queued_ids, _ = _posted(tmp_path / "t", tempfail)
    assert queued_ids == [] and len(os.listdir(queue.maildrop)) == 1  # tried again later
    reject = milters(at(m.Rcpt, m.Reject()))
    queue, queued_ids, _ = _posted(tmp_path / "r", reject)
    assert queued_ids == [] and os.listdir(queue.maildrop) == []
    held = milters(at(m.EndOfMessage, m.Quarantine(b"x"), m.Continue()))
    queue, [queue_id], _ = _posted(tmp_path / "h", held)
    assert queue.ids(QueueName.HOLD) == [queue_id]


def test_shutdown_at_rcpt_ends_the_session(serve: Callable[..., Server],
                                           milters: Callable[..., FakeMilter]) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Rcpt, m.Shutdown())).spec}\n")
    with server.client() as client:
        client.ehlo("client.test")
        client.mail("alice@example.org")
        assert client.rcpt("bob@example.com") == (421, b"4.7.0 Server closing connection")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.noop()


def test_two_messages_in_one_session(serve: Callable[..., Server],
                                     milters: Callable[..., FakeMilter]) -> None:
    milter = milters(at(m.EndOfMessage, m.AddHeader(b"X-Seen", b"yes"), m.Continue()))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    with server.client() as client:
        client.ehlo("client.test")
        for _ in range(2):
            assert client.sendmail("alice@example.org", ["bob@example.com"], MESSAGE) == {}
        client.rset()
    ids = server.queue.ids(QueueName.INCOMING)
    assert len(ids) == 2
    for queue_id in ids:
        content = server.queue.load(queue_id, QueueName.INCOMING).content.read()
        assert content.count(b"X-Seen: yes") == 1
    assert len(milter.sessions) == 1
    assert sum(isinstance(c, m.Mail) for c in milter.commands) == 2


def test_a_milter_that_never_negotiates(serve: Callable[..., Server]) -> None:
    import socket
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        spec = f"inet:127.0.0.1:{silent.getsockname()[1]}"
        server = serve(f"smtpd_milters = {spec}\nmilter_connect_timeout = 1s\n"
                       "milter_default_action = accept\n")
        assert send(server) == {}
    assert len(server.queue.ids(QueueName.INCOMING)) == 1


def test_a_milter_names_its_own_macros(serve: Callable[..., Server],
                                       milters: Callable[..., FakeMilter]) -> None:
    milter = milters(optneg_macros=((int(m.MacroStage.ENVFROM), b"{mail_addr} {mail_host}"),))
    server = serve(f"smtpd_milters = {milter.spec}\n")
    assert send(server) == {}
    assert milter.macros(b"M") == {b"{mail_addr}": b"alice@example.org",
                                   b"{mail_host}": b"example.org"}


# -- the MTA as operators run it -----------------------------------------------------------------


@pytest.mark.skipif(not os.environ.get("SEALMAIL_LONG"),
                    reason="starts the whole MTA (5-15 s): run with SEALMAIL_LONG=1")
def test_master_smtpd_override_and_pickup(tmp_path: Path,
                                          milters: Callable[..., FakeMilter]) -> None:
    """`-o smtpd_milters=...` on the smtpd line of master.cf (the smtpd worker processes load
    it) and non_smtpd_milters for sendmail; Postfix's line in the maillog."""
    import subprocess
    import sys
    import time

    from tests.mta.test_mta_master import maillog, postfix, wait_for, write_config
    from tests.support.peers import free_tcp_port

    def script(command: Any) -> list[Any]:
        if isinstance(command, m.Rcpt) and command.args[0] == b"<spam@example.com>":
            return [m.Reject()]
        return continue_all(command)

    milter = milters(script)
    port = free_tcp_port()
    config = write_config(tmp_path, port, f"local_transport = discard:\n"
                                          f"non_smtpd_milters = {milter.spec}\n")
    master_cf = config / "master.cf"
    lines = master_cf.read_text().splitlines(keepends=True)
    lines.insert(1, f"  -o smtpd_milters={milter.spec}\n")
    master_cf.write_text("".join(lines))
    started = postfix(config, "start")
    assert started.returncode == 0, started.stderr
    try:
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("alice@example.org")
            assert client.rcpt("spam@example.com") == (550, b"5.7.1 Command rejected")
        wait_for(lambda: "milter-reject: RCPT from unknown[127.0.0.1]: 550 5.7.1 Command "
                         "rejected; from=<alice@example.org> to=<spam@example.com>"
                         in maillog(tmp_path))
        posted = subprocess.run([sys.executable, "-m", "sealmail", "sendmail", "-C", str(config),
                                 "-f", "root", "bob@example.com"], input=b"Subject: x\n\nhi\n",
                                capture_output=True, timeout=30)
        assert posted.returncode == 0, posted.stderr
        deadline = time.monotonic() + 20
        while not any(isinstance(c, m.Connect) and c.hostname == b"localhost"
                      for c in milter.commands):
            assert time.monotonic() < deadline, "pickup did not call the milter"
            time.sleep(0.05)
        wait_for(lambda: ": removed" in maillog(tmp_path))
    finally:
        postfix(config, "stop")


def test_reject_at_data_is_logged_as_data(serve: Callable[..., Server],
                                          milters: Callable[..., FakeMilter],
                                          caplog: pytest.LogCaptureFixture) -> None:
    server = serve(f"smtpd_milters = {milters(at(m.Data, m.Reject())).spec}\n")
    caplog.set_level(logging.INFO, "sealmail")
    with pytest.raises(smtplib.SMTPDataError) as refused:
        send(server)
    assert refused.value.smtp_code == 550
    assert any("NOQUEUE: milter-reject: DATA from unknown[127.0.0.1]: 550 5.7.1 Command "
               "rejected; from=<alice@example.org> to=<bob@example.com>" in line
               for line in caplog.messages)


def test_postfix_check_names_a_bad_milter(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from sealmail.cli.main import main

    config = tmp_path / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        f"myhostname = mx.example.com\nqueue_directory = {tmp_path / 'spool'}\n"
        f"data_directory = {tmp_path / 'data'}\nnon_smtpd_milters = inet:localhost\n")
    (config / "master.cf").write_text("")
    assert main(["postfix", "-c", str(config), "check"]) != 0
    assert "non_smtpd_milters" in capsys.readouterr().err
