"""POP3 and IMAP on one store: a POP3 deletion takes effect at QUIT and an IMAP session that has
the INBOX selected sees it as an EXPUNGE (issue 7's proof), with real poplib and imaplib."""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.peers import free_tcp_port, wait_until_accepting


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SealmailInstance, int, int]]:
    pop_port, imap_port = free_tcp_port(), free_tcp_port()
    with SealmailInstance(
        tmp_path,
        ["alice"],
        imapd_conf_extra={
            "allowplaintext": "yes",
            "sasl_sasldb_path": str(tmp_path / "sasldb2"),
            "servername": "sealmail.test.example",
        },
    ) as inst:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sealmail",
                "saslpasswd2",
                "-C",
                str(inst.conf_path),
                "-p",
                "-c",
                "alice",
            ],
            input="alice-pw\n",
            text=True,
            check=True,
        )
        daemons = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "sealmail",
                    name,
                    "-C",
                    str(inst.conf_path),
                    "--listen",
                    f"127.0.0.1:{port}",
                ],
                stdin=subprocess.DEVNULL,
            )
            for name, port in (("pop3d", pop_port), ("imapd", imap_port))
        ]
        try:
            for daemon, port in zip(daemons, (pop_port, imap_port), strict=True):
                wait_until_accepting(("127.0.0.1", port), 30.0, daemon)
            yield inst, pop_port, imap_port
        finally:
            for daemon in daemons:
                daemon.terminate()
                daemon.wait(30)


def test_pop_deletion_is_an_expunge_for_imap(servers: tuple[SealmailInstance, int, int]) -> None:
    inst, pop_port, imap_port = servers
    with smtplib.LMTP(inst.socket_path) as lmtp:
        for n in (1, 2):
            lmtp.sendmail(
                "s@example.org",
                ["alice@example.com"],
                f"Subject: message {n}\r\n\r\nbody {n}\r\n".encode(),
            )
    imap = imaplib.IMAP4("127.0.0.1", imap_port)
    imap.login("alice", "alice-pw")
    assert imap.select("INBOX") == ("OK", [b"2"])

    pop = poplib.POP3("127.0.0.1", pop_port)
    pop.user("alice")
    pop.pass_("alice-pw")
    pop.dele(1)
    imap.noop()
    assert imap.response("EXPUNGE") == ("EXPUNGE", [None])  # nothing before QUIT
    pop.quit()

    deadline = time.monotonic() + 10
    while True:
        imap.noop()
        _, data = imap.response("EXPUNGE")
        if data != [None]:
            break
        assert time.monotonic() < deadline, "the IMAP session never saw the POP deletion"
        time.sleep(0.1)
    assert data == [b"1"]
    typ, found = imap.uid("SEARCH", "ALL")
    assert typ == "OK" and found == [b"2"]
    imap.logout()
