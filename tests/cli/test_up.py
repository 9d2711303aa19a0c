"""The README's run command: `sealmail up` brings a whole instance up on loopback."""

from __future__ import annotations

import imaplib
import poplib
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path

from tests.support.instance import store_root_opt_in
from tests.support.peers import free_tcp_port

from sealmail.cli.up import prepare


def test_up_runs_an_instance_that_receives_and_serves_mail(tmp_path: Path) -> None:
    lmtp_port, pop3_port, sieve_port, smtp_port, imap_port = (free_tcp_port() for _ in range(5))
    log = tmp_path / "up.log"
    # up keeps an imapd.conf it finds: this one carries the suite's opt-in when run by root.
    imapd_conf, _ = prepare(tmp_path / "inst", lmtp_port, pop3_port, sieve_port, imap_port)
    with imapd_conf.open("a") as conf:
        conf.write(store_root_opt_in())
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "sealmail",
                "up",
                "--dir",
                str(tmp_path / "inst"),
                "--lmtp-port",
                str(lmtp_port),
                "--pop3-port",
                str(pop3_port),
                "--sieve-port",
                str(sieve_port),
                "--smtp-port",
                str(smtp_port),
                "--imap-port",
                str(imap_port),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        socket_path = tmp_path / "inst" / "lib" / "socket" / "lmtp"
        deadline = time.monotonic() + 30
        while "master ready" not in log.read_text():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        with smtplib.LMTP(str(socket_path)) as client:
            client.sendmail("me@localhost", ["demo@localhost"], b"Subject: hi\r\n\r\nhello\r\n")
        deadline = time.monotonic() + 30
        while True:  # the MTA starts beside the store; SMTP in, then LMTP to the store
            try:
                with smtplib.SMTP("127.0.0.1", smtp_port, timeout=10) as smtp:
                    smtp.sendmail(
                        "you@example.org", ["demo@localhost"], b"Subject: via smtp\r\n\r\nhello\r\n"
                    )
                break
            except OSError:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
        pop.user("demo")
        pop.pass_("demo")
        while pop.stat()[0] < 2:  # the SMTP message is delivered by the queue
            pop.quit()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
            pop = poplib.POP3("127.0.0.1", pop3_port, timeout=10)
            pop.user("demo")
            pop.pass_("demo")
        messages = [b"\r\n".join(pop.retr(n)[1]) for n in (1, 2)]
        assert any(b"Subject: hi" in m for m in messages)
        assert any(b"Subject: via smtp" in m and b"Received: from" in m for m in messages)
        pop.quit()
        imap = imaplib.IMAP4("127.0.0.1", imap_port)
        imap.login("demo", "demo")
        assert imap.select("INBOX") == ("OK", [b"2"])
        imap.logout()
        with socket.create_connection(("127.0.0.1", sieve_port), timeout=10) as sieve:
            assert b'"IMPLEMENTATION"' in sieve.recv(4096)
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0, log.read_text()
    assert (tmp_path / "inst" / "etc" / "cyrus.conf").exists()
    assert not socket_path.exists()
