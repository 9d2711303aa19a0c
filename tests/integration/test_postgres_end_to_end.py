"""lmtpd and imapd on `store_backend: postgresql` (issue 24): what `sealmail lmtpd` delivered over
LMTP, a real imaplib session reads through `sealmail imapd`, both daemons sharing nothing but
the database (store_dsn) of a private PostgreSQL cluster."""

from __future__ import annotations

import imaplib
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.peers import PeerUnavailable, free_tcp_port, wait_until_accepting

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.store.backends import open_store
from sealmail.store.postgres import PostgresStore


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[SealmailInstance, int]]:
    from tests.support.postgres import shared_cluster

    try:
        dsn = shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    imap_port = free_tcp_port()
    with SealmailInstance(
        tmp_path,
        [],
        imapd_conf_extra={
            "store_backend": "postgresql",
            "store_dsn": dsn,
            "allowplaintext": "yes",
            "sasl_sasldb_path": str(tmp_path / "sasldb2"),
        },
    ) as inst:
        store = open_store(parse_imapd_conf(inst.conf_path.read_text(), str(inst.conf_path)))
        try:
            assert isinstance(store, PostgresStore)
            store.create_mailbox("user.alice")
        finally:
            store.close()
        subprocess.run(
            [sys.executable, "-m", "sealmail", "saslpasswd2", "-C", str(inst.conf_path), "-p",
             "-c", "alice"],
            input="alice-pw\n", text=True, check=True,
        )
        imapd = subprocess.Popen(
            [sys.executable, "-m", "sealmail", "imapd", "-C", str(inst.conf_path), "--listen",
             f"127.0.0.1:{imap_port}"],
            stdin=subprocess.DEVNULL,
        )
        try:
            wait_until_accepting(("127.0.0.1", imap_port), 30.0, imapd)
            yield inst, imap_port
        finally:
            imapd.terminate()
            imapd.wait(30)


def lmtp_send(inst: SealmailInstance, subject: str) -> None:
    with smtplib.LMTP(inst.socket_path) as lmtp:
        lmtp.sendmail("s@example.org", ["alice@example.com"],
                      f"Subject: {subject}\r\n\r\nbody of {subject}\r\n".encode())


def test_imap_reads_what_lmtpd_delivered(servers: tuple[SealmailInstance, int]) -> None:
    inst, imap_port = servers
    lmtp_send(inst, "first")
    imap = imaplib.IMAP4("127.0.0.1", imap_port)
    imap.login("alice", "alice-pw")
    assert imap.select("INBOX") == ("OK", [b"1"])
    typ, data = imap.uid("FETCH", "1", "(FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
    assert typ == "OK" and b"Subject: first" in data[0][1]  # type: ignore[index]

    lmtp_send(inst, "second")  # while the session has the INBOX selected
    imap.noop()
    typ, data = imap.uid("FETCH", "2:*", "(BODY.PEEK[TEXT])")
    assert typ == "OK" and data[0][1] == b"body of second\r\n"  # type: ignore[index]
    assert imap.uid("STORE", "1", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert imap.uid("SEARCH", "FLAGGED") == ("OK", [b"1"])
    assert imap.uid("COPY", "1:2", "INBOX")[0] == "OK"
    assert imap.uid("SEARCH", "ALL") == ("OK", [b"1 2 3 4"])
    imap.logout()
