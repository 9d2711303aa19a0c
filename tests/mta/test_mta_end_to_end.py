"""The seed's section 6 with sealmail as the MTA: SMTP in, the queue, and the LMTP agent (part A)
delivering into sealmail's lmtpd over its UNIX socket, with a recipient limit of 2."""

from __future__ import annotations

import smtplib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.mta import RunningMta
from tests.support.peers import free_tcp_port

USERS = ("alice", "bob", "carol", "dave", "erin")
MESSAGE = b"From: sender@example.org\r\nSubject: seed section 6\r\n\r\nsingle instance\r\n"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SealmailInstance]:
    with SealmailInstance(tmp_path / "store", users=USERS) as instance:
        yield instance


def configure(root: Path, store: SealmailInstance, port: int, extra: str = "") -> Path:
    config = root / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        "mydestination = example.com\n"
        f"queue_directory = {root / 'spool'}\n"
        f"data_directory = {root / 'data'}\n"
        "inet_interfaces = loopback-only\n"
        f"local_transport = cyrus:unix:{store.socket_path}\n"
        "cyrus_destination_recipient_limit = 2\n" + extra
    )
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "cyrus     unix  -       n       n       -       -       lmtp\n"
        "  -o lmtp_cache_connection=yes\n"
        "error     unix  -       -       n       -       -       error\n"
    )
    return config


def queue_files(directory: Path) -> list[Path]:
    """The files of a queue, hashed into subdirectories or not."""
    return [path for path in directory.rglob("*") if path.is_file()]


def wait_for(condition: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "not delivered in time"
        time.sleep(0.05)


def test_five_recipients_limit_two_into_lmtpd(
    tmp_path: Path, store: SealmailInstance, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_tcp_port()
    config = configure(tmp_path, store, port)
    caplog.set_level("INFO", logger="sealmail")
    with RunningMta(config):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            refused = client.sendmail(
                "sender@example.org", [f"{u}@example.com" for u in USERS], MESSAGE
            )
        assert refused == {}
        wait_for(lambda: all(store.message_count(u) == 1 for u in USERS))
        wait_for(lambda: "removed" in caplog.text)
    sent = [r.getMessage() for r in caplog.records if "status=sent" in r.getMessage()]
    assert len(sent) == 5
    assert all("dsn=2." in line for line in sent)
    # 5 recipients, a limit of 2: three LMTP deliveries, seen in lmtpd's log by session id.
    per_session: dict[str, int] = {}
    for line in store.log_text().splitlines():
        if "status=sent" in line:
            session = line.split("]: ", 1)[1].split(":", 1)[0]
            per_session[session] = per_session.get(session, 0) + 1
    assert sorted(per_session.values()) == [1, 2, 2]


def test_unknown_user_bounces_others_delivered(
    tmp_path: Path, store: SealmailInstance, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_tcp_port()
    config = configure(tmp_path, store, port)
    caplog.set_level("INFO", logger="sealmail")
    with RunningMta(config):
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail(
                "sender@example.com", ["alice@example.com", "nobody@example.com"], MESSAGE
            )
        wait_for(lambda: "sender non-delivery notification" in caplog.text)
    assert store.message_count("alice") == 1
    assert "to=<nobody@example.com>" in caplog.text
    assert "status=bounced" in caplog.text


def test_down_lmtp_server_defers_then_flush_delivers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SealmailInstance(tmp_path / "store", users=("alice",))
    port = free_tcp_port()
    config = configure(tmp_path, store, port)
    caplog.set_level("INFO", logger="sealmail")
    with RunningMta(config, smtpd_processes=1) as mta:  # smtpd inside the master process
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
            client.sendmail("sender@example.org", ["alice@example.com"], MESSAGE)
        wait_for(lambda: "status=deferred" in caplog.text)
        # The line is logged before the file moves to deferred/ (hashed: deferred/X/QUEUEID).
        wait_for(lambda: bool(queue_files(tmp_path / "spool" / "deferred")))
        with store:
            qmgr = mta.master.qmgr
            assert qmgr is not None

            def flushed() -> bool:
                """postqueue -f tries what is in deferred/ then; a try that starts before the
                message is there, or before lmtpd takes it (a loaded machine), defers it again:
                flush again until it is delivered (as tests/mta/agents/test_smtp_mx)."""
                mta.loop.call_soon_threadsafe(qmgr.flush)
                deadline = time.monotonic() + 1.0
                while store.message_count("alice") == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                return store.message_count("alice") == 1

            wait_for(flushed, timeout=60)
            wait_for(lambda: ": removed" in caplog.text)
    assert not queue_files(tmp_path / "spool" / "deferred")
