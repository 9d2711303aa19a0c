"""smtpd's restriction stages over a real socket (smtplib and raw transcripts): delayed and
immediate refusals, DATA and end-of-data, unauthorized pipelining, and what access tables ask
of the message (HOLD, DISCARD, PREPEND, REDIRECT)."""

from __future__ import annotations

import logging
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.mta.test_mta_smtpd import MESSAGE, Server
from tests.support.peers import closed_tcp_port

from sealmail.mta.queue import QueueName


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def start(main_text: str = "", **kwargs: Any) -> Server:
        server = Server(tmp_path / f"s{len(servers)}", main_text, **kwargs)
        servers.append(server.__enter__())
        return server

    yield start
    for server in servers:
        server.__exit__()


def transcript(port: int, lines: list[bytes], *, together: bool = False) -> list[str]:
    """Send the lines (one by one after each reply, or all at once) and return every reply
    line, greeting included."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        stream = sock.makefile("rb")
        replies = [_reply(stream)]
        if together:
            sock.sendall(b"".join(lines))
            for _ in lines:
                replies.append(_reply(stream))
        else:
            for line in lines:
                sock.sendall(line)
                replies.append(_reply(stream))
        return replies


def _reply(stream: Any) -> str:
    lines = []
    while True:
        line = stream.readline().decode().rstrip("\r\n")
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return lines[-1]


def test_client_refused_at_rcpt_by_default(serve: Callable[..., Server],
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sealmail.mta.smtpd")
    server = serve("smtpd_client_restrictions = check_client_access inline:{127.0.0.1=REJECT}\n")
    with server.client() as client:
        assert client.ehlo("c.test")[0] == 250
        assert client.mail("a@example.org")[0] == 250  # smtpd_delay_reject: not yet
        assert client.rcpt("bob@example.com") == (
            554, b"5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied")
        assert client.rcpt("postmaster")[0] == 250
    assert ("NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <unknown[127.0.0.1]>: "
            "Client host rejected: Access denied; from=<a@example.org> to=<bob@example.com> "
            "proto=ESMTP helo=<c.test>") in caplog.messages


def test_without_delay_reject_the_client_is_refused_at_once(
        serve: Callable[..., Server]) -> None:
    server = serve("smtpd_delay_reject = no\n"
                   "smtpd_client_restrictions = check_client_access inline:{127.0.0.1=REJECT}\n")
    assert transcript(server.port, [b"EHLO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n",
                                    b"QUIT\r\n"]) == [
        "554 5.7.1 <unknown[127.0.0.1]>: Client host rejected: Access denied",
        "503 5.7.0 Error: access denied for unknown[127.0.0.1]",
        "503 5.7.0 Error: access denied for unknown[127.0.0.1]",
        "221 2.0.0 Bye",
    ]


def test_without_delay_reject_the_refusal_is_the_first_error(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_delay_reject = no\nsmtpd_hard_error_limit = 2\n"
                   "smtpd_client_restrictions = check_client_access inline:{127.0.0.1=REJECT}\n")
    assert transcript(server.port, [b"EHLO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n"])[1:] == [
        "503 5.7.0 Error: access denied for unknown[127.0.0.1]",
        "421 4.7.0 mx.example.com Error: too many errors",  # as Postfix's smtpd counts it
    ]


def test_without_delay_reject_helo_and_mail_are_refused_at_their_command(
        serve: Callable[..., Server]) -> None:
    server = serve("smtpd_delay_reject = no\nsmtpd_helo_restrictions = "
                   "reject_non_fqdn_helo_hostname\nsmtpd_sender_restrictions = "
                   "reject_non_fqdn_sender\n")
    replies = transcript(server.port, [b"EHLO c\r\n", b"HELO c.test\r\n",
                                       b"MAIL FROM:<a@b>\r\n", b"MAIL FROM:<a@b.test>\r\n",
                                       b"QUIT\r\n"])
    assert replies[1:] == [
        "504 5.5.2 <c>: Helo command rejected: need fully-qualified hostname",
        "250 mx.example.com",
        "504 5.5.2 <a@b>: Sender address rejected: need fully-qualified address",
        "250 2.1.0 Ok",
        "221 2.0.0 Bye",
    ]


def test_helo_and_sender_refused_at_rcpt(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_helo_required = yes\n"
                   "smtpd_helo_restrictions = reject_invalid_helo_hostname\n"
                   "smtpd_sender_restrictions = reject_non_fqdn_sender\n")
    with server.client() as client:
        client.ehlo("bad..name")
        client.mail("a@example.org")
        assert client.rcpt("bob@example.com") == (
            501, b"5.5.2 <bad..name>: Helo command rejected: Invalid name")
        client.ehlo("good.test")
        client.mail("a@localhost")
        assert client.rcpt("bob@example.com") == (
            504, b"5.5.2 <a@localhost>: Sender address rejected: need fully-qualified address")


def test_data_restrictions_catch_unauthorized_pipelining(serve: Callable[..., Server],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "sealmail.mta.smtpd")
    server = serve("smtpd_data_restrictions = reject_unauth_pipelining\n")
    lines = [b"EHLO c.test\r\n", b"MAIL FROM:<a@example.org>\r\n",
             b"RCPT TO:<bob@example.com>\r\n", b"DATA\r\n"]
    assert transcript(server.port, lines, together=True)[-1] == (
        "503 5.5.0 <DATA>: Data command rejected: Improper use of SMTP command pipelining")
    assert ("improper command pipelining after EHLO from unknown[127.0.0.1]: MAIL "
            "FROM:<a@example.org>\\r\\nRCPT TO:<bob@example.com>\\r\\nDATA\\r\\n"
            ) in caplog.messages
    # The same commands waiting for each reply are fine.
    assert transcript(server.port, lines)[-1].startswith("354 ")


def test_end_of_data_restrictions(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_end_of_data_restrictions = reject_multi_recipient_bounce\n")
    with server.client() as client:
        client.ehlo("c.test")
        client.mail("<>")
        client.rcpt("bob@example.com")
        client.rcpt("carol@example.com")
        assert client.data(MESSAGE) == (
            550, b"5.5.3 <END-OF-MESSAGE>: End-of-data rejected: Multi-recipient bounce")
        assert client.sendmail("", ["bob@example.com"], MESSAGE) == {}
    assert len(server.incoming()) == 1


def test_access_actions_reach_the_queue(serve: Callable[..., Server], tmp_path: Path) -> None:
    actions = tmp_path / "actions"
    actions.write_text("held@example.com HOLD\ngone@example.com DISCARD\n"
                       "tagged@example.com PREPEND X-Tag: checked\n"
                       "moved@example.com REDIRECT boss@example.com\n")
    server = serve(f"smtpd_recipient_restrictions = check_recipient_access texthash:{actions}\n")
    with server.client() as client:
        for recipient in ("held", "gone", "tagged", "moved"):
            client.sendmail("a@example.org", [f"{recipient}@example.com"], MESSAGE)
    [held] = server.queue.ids(QueueName.HOLD)
    assert [r.record.address for r in server.queue.load(held, QueueName.HOLD).recipients] == [
        "held@example.com"]
    incoming = {}
    for queue_id in server.incoming():
        entry = server.queue.load(queue_id, QueueName.INCOMING)
        incoming[entry.recipients[0].record.address] = entry.content.read()
    assert set(incoming) == {"tagged@example.com", "boss@example.com"}  # gone: discarded
    assert b"\r\nX-Tag: checked\r\n" in incoming["tagged@example.com"]


def test_a_dead_policy_server_defers(serve: Callable[..., Server],
                                     caplog: pytest.LogCaptureFixture) -> None:
    with closed_tcp_port() as port:
        server = serve("smtpd_recipient_restrictions = check_policy_service "
                       f"inet:127.0.0.1:{port}\n"
                       "smtpd_policy_service_retry_delay = 0s\nsmtpd_peername_lookup = no\n")
        with server.client() as client:
            client.ehlo("c.test")
            client.mail("a@example.org")
            assert client.rcpt("bob@example.com") == (
                451, b"4.3.5 <bob@example.com>: Recipient address rejected: Server "
                     b"configuration problem")
    assert (f"problem talking to server inet:127.0.0.1:{port}: Connection refused"
            in caplog.messages)


def test_smtplib_sees_refusals_as_exceptions(serve: Callable[..., Server]) -> None:
    server = serve("smtpd_sender_restrictions = check_sender_access inline:{spam.test=REJECT}\n")
    with server.client() as client, pytest.raises(smtplib.SMTPRecipientsRefused):
        client.sendmail("x@spam.test", ["bob@example.com"], MESSAGE)
    assert server.incoming() == []


@pytest.mark.skipif(shutil.which("swaks") is None, reason="swaks is not installed")
def test_swaks_pipelining_as_allowed_passes_the_data_restrictions(
        serve: Callable[..., Server]) -> None:
    """swaks --pipeline sends MAIL, RCPT and DATA together after EHLO, as RFC 2920 allows:
    reject_unauth_pipelining lets it through; a recipient the sender check refuses is named."""
    server = serve("smtpd_data_restrictions = reject_unauth_pipelining\n"
                   "smtpd_recipient_restrictions = check_recipient_access "
                   "inline:{nobody@example.com=REJECT}\n")
    result = subprocess.run(
        ["swaks", "--server", "127.0.0.1", "--port", str(server.port), "--from",
         "alice@example.org", "--to", "bob@example.com,nobody@example.com", "--helo",
         "swaks.test", "--pipeline"],
        capture_output=True, text=True, timeout=30)
    assert "554 5.7.1 <nobody@example.com>: Recipient address rejected: Access denied" \
        in result.stdout, result.stdout
    assert "Ok: queued as" in result.stdout, result.stdout
    [queue_id] = server.incoming()
    assert [r.record.address for r in server.queue.load(queue_id, QueueName.INCOMING)
            .recipients] == ["bob@example.com"]
