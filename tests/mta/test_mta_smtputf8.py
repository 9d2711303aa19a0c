"""SMTPUTF8 (RFC 6531) in and out, on real sockets: smtplib into sealmail's smtpd, sealmail's
smtp client out to a second sealmail MTA (which offers SMTPUTF8) and to Postfix's smtp-sink
(which does not: mail that needs the extension bounces 5.6.7, as Postfix's smtp(8) does)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import SmtpSink, free_tcp_port, traversable_tmpdir

from sealmail.mta.queue import Queue, QueueFile

SENDER = "jürgen@bücher.example"
RECIPIENT = "δοκιμή@παράδειγμα.δοκιμή"
UTF8_MESSAGE = ("From: Jürgen <jürgen@bücher.example>\r\nSubject: Grüße\r\n\r\n"
                "Hallo\r\n").encode()
ASCII_MESSAGE = b"From: a@example.org\r\nSubject: plain\r\n\r\nhello\r\n"


def configure(root: Path, port: int, relay_port: int, extra: str = "") -> Path:
    config = root / "etc"
    config.mkdir(parents=True)
    (config / "main.cf").write_text(
        f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
        "mydestination = example.com\ninet_interfaces = loopback-only\n"
        f"relayhost = [127.0.0.1]:{relay_port}\nlocal_transport = discard\n"
        "minimal_backoff_time = 1h\n" + extra)
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "smtp      unix  -       -       n       -       -       smtp\n"
        "discard   unix  -       -       n       -       -       discard\n"
        "error     unix  -       -       n       -       -       error\n")
    return config


def queued(root: Path) -> list[QueueFile]:
    return list(Queue(root / "spool").entries())


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smutf8-") as path:
        yield path


def test_smtpd_offers_smtputf8_and_wants_it_declared(root: Path) -> None:
    port = free_tcp_port()
    # Mail stays queued: the relay host is a port nobody listens on, retried in an hour.
    config = configure(root, port, free_tcp_port())
    with RunningMta(config, smtpd_processes=1):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.ehlo("client.example.org")
            assert client.has_extn("smtputf8")
            client.command_encoding = "utf-8"  # what smtplib does once SMTPUTF8 is declared
            code, text = client.mail(SENDER)
            assert (code, text[:5]) == (553, b"5.6.7")
            client.rset()
            refused = client.sendmail(SENDER, [RECIPIENT], UTF8_MESSAGE,
                                      mail_options=["SMTPUTF8", "BODY=8BITMIME"])
            assert refused == {}
        wait_for(lambda: bool(queued(root)), what="the queued message")
    [entry] = queued(root)
    assert entry.envelope.smtputf8
    assert entry.envelope.sender == SENDER
    assert [r.record.address for r in entry.recipients] == [RECIPIENT]
    assert b" with UTF8SMTP id " in entry.content.read()  # RFC 6531 3.7.3


def test_smtputf8_is_passed_on_to_a_server_that_offers_it(root: Path) -> None:
    first_port, second_port = free_tcp_port(), free_tcp_port()
    # The second MTA keeps what it gets: its relay host listens nowhere.
    second = configure(root / "second", second_port, free_tcp_port())
    first = configure(root / "first", first_port, second_port)
    with RunningMta(second, smtpd_processes=1), RunningMta(first, smtpd_processes=1):
        with smtplib.SMTP("127.0.0.1", first_port, timeout=10) as client:
            client.sendmail(SENDER, [RECIPIENT], UTF8_MESSAGE,
                            mail_options=["SMTPUTF8", "BODY=8BITMIME"])
        wait_for(lambda: bool(queued(root / "second")), what="the relayed message")
    [entry] = queued(root / "second")
    assert entry.envelope.smtputf8  # the first MTA said MAIL FROM:<...> SMTPUTF8
    assert entry.envelope.sender == SENDER
    assert [r.record.address for r in entry.recipients] == [RECIPIENT]
    assert entry.content.read().count(b" with UTF8SMTP id ") == 2


def test_without_smtputf8_on_offer_only_mail_that_needs_it_bounces(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_tcp_port()
    caplog.set_level("INFO", logger="sealmail")
    with SmtpSink(root, "127.0.0.1", free_tcp_port()) as sink:
        config = configure(root / "mta", port, sink.port)
        with RunningMta(config, smtpd_processes=1):
            with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                # Declared and needed: a UTF-8 recipient.
                client.sendmail("a@example.com", [RECIPIENT], ASCII_MESSAGE,
                                mail_options=["SMTPUTF8"])
                # Declared but all ASCII: it goes, without the parameter.
                client.sendmail("b@example.com", ["bob@example.org"], ASCII_MESSAGE,
                                mail_options=["SMTPUTF8"])
            wait_for(lambda: "dsn=5.6.7" in caplog.text and len(sink.messages()) == 1,
                     what="the bounce and the delivery")
            wait_for(lambda: "sender non-delivery notification" in caplog.text,
                     what="the notice to a@example.com")
    [bounced] = [r.getMessage() for r in caplog.records if "dsn=5.6.7" in r.getMessage()]
    assert f"to=<{RECIPIENT}>" in bounced and "status=bounced" in bounced
    assert ("(SMTPUTF8 is required, but was not offered by host "
            "127.0.0.1[127.0.0.1])") in bounced
    assert f"relay=127.0.0.1[127.0.0.1]:{sink.port}," in bounced
    [delivered] = sink.messages()
    assert "X-Mail-Args: <b@example.com>\n" in delivered  # no SMTPUTF8 parameter
    assert "X-Rcpt-Args: <bob@example.org>" in delivered


def test_what_needs_smtputf8(tmp_path: Path) -> None:
    from sealmail.mta.agents import DeliveryRequest, QueuedRecipient
    from sealmail.mta.agents.smtputf8 import Smtputf8Required, mail_parameters
    from sealmail.mta.config import MainConfig
    from sealmail.mta.config.main_cf import parse_main_cf
    from sealmail.mta.queue import MessageContent

    def request(sender: str, recipient: str, declared: bool) -> DeliveryRequest:
        return DeliveryRequest("Q", sender, (QueuedRecipient(recipient, recipient, 0),), "smtp",
                               "[h]", MessageContent(tmp_path / "m"), 0, 0.0,
                               MainConfig.from_document(parse_main_cf("")), smtputf8=declared)

    ascii_only, utf8_header = ASCII_MESSAGE, UTF8_MESSAGE.replace("jürgen".encode(), b"j")
    assert mail_parameters(request("a@x", "b@y", True), ascii_only, True, "h") == ["SMTPUTF8"]
    assert mail_parameters(request("a@x", "b@y", False), ascii_only, True, "h") == []
    assert mail_parameters(request("a@x", "b@y", True), ascii_only, False, "h") == []
    for needs in (request(SENDER, "b@y", True), request("a@x", RECIPIENT, True)):
        with pytest.raises(Smtputf8Required, match="was not offered by host h"):
            mail_parameters(needs, ascii_only, False, "h")
    with pytest.raises(Smtputf8Required):  # a UTF-8 header (Subject: Grüße) needs it too
        mail_parameters(request("a@x", "b@y", True), utf8_header, False, "h")
    # Not declared: sent as it always was, Postfix's "not requested" case.
    assert mail_parameters(request(SENDER, "b@y", False), utf8_header, False, "h") == []
