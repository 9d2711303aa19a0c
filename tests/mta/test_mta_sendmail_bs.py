"""`sendmail -bs`: SMTP on standard input and output into maildrop, then pickup and cleanup as
for any local submission; driven by a pipelining script and by swaks --pipe, with the whole
MTA running and Postfix's smtp-sink receiving."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import SmtpSink, free_tcp_port, traversable_tmpdir

from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config import load_mta_config
from sealmail.mta.pickup import pickup_once, read_posting
from sealmail.mta.queue import Queue, QueueName

SENDMAIL_BS = [sys.executable, "-m", "sealmail", "sendmail", "-bs", "-C"]


def configure(root: Path, extra: str = "") -> Path:
    config = root / "etc"
    config.mkdir(parents=True)
    (config / "main.cf").write_text(
        f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
        "myhostname = mx.example.com\nmydestination =\ninet_interfaces = loopback-only\n"
        "message_size_limit = 2000\n" + extra)
    (config / "master.cf").write_text(
        "smtp      unix  -       -       n       -       -       smtp\n")
    return config


def session(config: Path, commands: bytes) -> list[str]:
    done = subprocess.run([*SENDMAIL_BS, str(config)], input=commands, capture_output=True,
                          timeout=60, check=True)
    return done.stdout.decode("utf-8").splitlines()


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smbs-") as path:
        yield path


def test_a_pipelined_session_posts_each_message_for_pickup(root: Path) -> None:
    config = configure(root)
    queue = Queue(root / "spool")
    queue.create_directories()
    replies = session(config, (
        "EHLO client\r\n"
        "MAIL FROM:<alice>\r\nRCPT TO:<bob@example.org>\r\nRCPT TO:<carol>\r\nDATA\r\n"
        "Subject: one\r\n\r\n..dot-stuffed\r\n.\r\n"
        "MAIL FROM:<jürgen@bücher.example>\r\n"  # UTF-8 without SMTPUTF8: refused
        "MAIL FROM:<jürgen@bücher.example> SMTPUTF8\r\nRCPT TO:<δοκιμή@example.org>\r\n"
        "DATA\r\nSubject: two\r\n\r\nx\r\n.\r\n"
        "MAIL FROM:<a@example.org> SIZE=5000\r\n"  # over message_size_limit
        "QUIT\r\n").encode())
    assert replies[0] == "220 mx.example.com ESMTP sealmail"
    assert "250-SMTPUTF8" in replies or "250 SMTPUTF8" in replies
    queued = [r for r in replies if r.startswith("250 2.0.0 Ok: queued as ")]
    assert len(queued) == 2
    assert "553 5.6.7 Must declare SMTPUTF8 to send unicode address" in replies
    assert replies[-2].startswith("552 5.2.3")
    assert replies[-1] == "221 2.0.0 Bye"
    names = sorted(r.rsplit(" ", 1)[1] for r in queued)
    assert sorted(p.name for p in queue.maildrop.iterdir()) == names
    first = read_posting(queue.maildrop / queued[0].rsplit(" ", 1)[1])
    assert first.sender == "alice@mx.example.com"  # qualified with $myorigin
    assert first.recipients == ("bob@example.org", "carol@mx.example.com")
    assert first.uid == os.getuid()

    ids = pickup_once(queue, cleanup_from_config(load_mta_config(config).main))
    entries = [queue.load(i, QueueName.INCOMING) for i in ids]
    one = next(e for e in entries if e.envelope.sender == "alice@mx.example.com")
    assert b"\r\n.dot-stuffed\r\n" in one.content.read()
    assert one.content.read().startswith(b"Received: by mx.example.com (sealmail, from userid")
    two = next(e for e in entries if e.envelope.smtputf8)
    assert [r.record.address for r in two.recipients] == ["δοκιμή@example.org"]


def test_truncated_and_garbage_input_ends_cleanly(root: Path) -> None:
    config = configure(root)
    Queue(root / "spool").create_directories()
    replies = session(config, b"EHLO x\r\nMAIL FROM:<a@b.c>\r\nRCPT TO:<d@e.f>\r\nDATA\r\n"
                              b"Subject: cut short\r\n\r\nno end")
    assert replies[-1].startswith("354 ")  # nothing posted: the data never ended
    assert list((root / "spool" / "maildrop").iterdir()) == []
    replies = session(config, b"\xff\xfe garbage\r\nHELO\r\n")
    assert replies[1].startswith("500 5.5.2") and replies[2].startswith("501 5.5.4")


def test_swaks_through_sendmail_bs_to_the_sink(root: Path) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed")
    with SmtpSink(root, "127.0.0.1", free_tcp_port()) as sink:
        config = configure(root / "mta", f"relayhost = [127.0.0.1]:{sink.port}\n")
        with RunningMta(config):
            done = subprocess.run(
                [swaks, "--pipe", " ".join([*SENDMAIL_BS, str(config)]),
                 "--from", "alice@example.org", "--to", "bob@example.net",
                 "--header", "Subject: through -bs"],
                capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 0, done.stdout + done.stderr
            assert "250 2.0.0 Ok: queued as" in done.stdout
            wait_for(lambda: bool(sink.messages()), what="the message at the sink")
    [arrived] = sink.messages()
    assert "X-Mail-Args: <alice@example.org>" in arrived
    assert "X-Rcpt-Args: <bob@example.net>" in arrived
    assert "Subject: through -bs" in arrived
    assert "by mx.example.com (sealmail, from userid" in arrived  # pickup's Received: line
