"""The delivery engine's failure mapping: every store error becomes its own LMTP reply."""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.stores import open_store

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.delivery.engine import DeliveryEngine, Envelope

MESSAGE = b"Subject: x\r\nMessage-ID: <e1@example.org>\r\n\r\nbody\r\n"


@pytest.fixture
def engine(tmp_path: Path, backend: str) -> Iterator[DeliveryEngine]:
    config = parse_imapd_conf(f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n")
    with open_store(backend, config) as store:
        store.create_mailbox("user.alice")
        yield DeliveryEngine(config, store, store.duplicates())


def envelope(engine: DeliveryEngine, *users: str) -> Envelope:
    recipients = tuple(engine.check_recipient(u, "example.com", ignore_quota=False) for u in users)
    return Envelope(sender="s@example.org", recipients=recipients, session_id="T1")


@pytest.mark.parametrize("backend", ["disk"])  # the disk's own failure
def test_disk_full_is_452_4_3_1_and_nothing_is_stored(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def full(fd: int, data: bytes) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    [reply] = engine.deliver(envelope(engine, "alice"), MESSAGE)
    monkeypatch.undo()
    assert (reply.code, reply.enhanced) == (452, "4.3.1")
    assert engine.store.messages("user.alice") == []


def test_an_unexpected_failure_is_451_4_3_0_and_logged(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("the index went away")

    monkeypatch.setattr(engine.store, "deliver", broken)
    [reply] = engine.deliver(envelope(engine, "alice"), MESSAGE)
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert "the index went away" in caplog.text


@pytest.mark.parametrize("backend", ["disk"])  # the disk's own failure
def test_a_store_failure_answered_451_4_3_0_logs_its_cause_and_path(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The reply says only "Internal error"; the log line says why, and where (issue 16)."""
    partition = str(engine.config.partitions["default"])
    real_open = os.open

    def refused(path: str | os.PathLike[str], *args: object, **kwargs: object) -> int:
        if str(path).startswith(partition):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "open", refused)
    [reply] = engine.deliver(envelope(engine, "alice"), MESSAGE)
    monkeypatch.undo()
    assert (reply.code, reply.enhanced) == (451, "4.3.0")
    assert "Permission denied" not in str(reply)  # the client learns no path
    [line] = [r.getMessage() for r in caplog.records if "to=<alice@example.com>" in r.getMessage()]
    assert "status=deferred (451 Internal error" in line
    assert f"PermissionError: [Errno 13] Permission denied: '{partition}/" in line


def test_duplicates_are_answered_250_and_logged(
    engine: DeliveryEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = engine.deliver(envelope(engine, "alice"), MESSAGE)
    second = engine.deliver(envelope(engine, "alice"), MESSAGE)
    assert [r.code for r in first + second] == [250, 250]
    assert len(engine.store.messages("user.alice")) == 1
    assert "eliminated duplicate" in caplog.text
    # Cyrus's line, once: for the copy stored, not for the duplicate.
    assert caplog.text.count("Delivered: ") == 1
    assert re.search(r"Delivered: <[^>]+> to mailbox: user\.alice$", caplog.text, re.MULTILINE)


def test_two_sessions_with_the_same_message_at_once_store_it_once(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An MTA retrying what it never saw acknowledged while the first try still runs (found by
    tests/reliability/test_mta_crash.py: both passed the duplicate check, two copies)."""
    import threading

    real_deliver = engine.store.deliver
    inside = threading.Event()

    def slow(*args: object, **kwargs: object) -> object:
        inside.set()
        threading.Event().wait(0.3)  # the first delivery's fsync, long enough for the second
        return real_deliver(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(engine.store, "deliver", slow)
    replies: list[object] = []
    first = threading.Thread(target=lambda: replies.extend(engine.deliver(
        envelope(engine, "alice"), MESSAGE)))
    first.start()
    assert inside.wait(10)
    replies += engine.deliver(envelope(engine, "alice"), MESSAGE)
    first.join(10)
    assert [r.code for r in replies] == [250, 250]  # type: ignore[attr-defined]
    assert len(engine.store.messages("user.alice")) == 1
def test_duplicates_among_several_recipients_are_each_their_own(engine: DeliveryEngine) -> None:
    """One query asks for every recipient's mailbox: those that had the message are 250 with
    nothing stored, the others get it; a recipient named twice gets one copy."""
    for user in ("bob", "carol"):
        engine.store.create_mailbox(f"user.{user}")
    engine.deliver(envelope(engine, "alice"), MESSAGE)
    replies = engine.deliver(envelope(engine, "alice", "bob", "carol", "bob"), MESSAGE)
    assert [r.code for r in replies] == [250, 250, 250, 250]
    assert [len(engine.store.messages(f"user.{u}")) for u in ("alice", "bob", "carol")] == [1, 1, 1]
    again = engine.deliver(envelope(engine, "bob", "carol"), MESSAGE)
    assert [r.code for r in again] == [250, 250]
    assert [len(engine.store.messages(f"user.{u}")) for u in ("bob", "carol")] == [1, 1]


@pytest.mark.parametrize("auditlog", ["yes", "no"])
def test_auditlog_append_line_per_stored_copy(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, auditlog: str
) -> None:
    """imapd.conf auditlog: Cyrus's `auditlog: append` line for each copy stored, with the
    session's id; off: none."""
    config = parse_imapd_conf(f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n"
                              f"auditlog: {auditlog}\n")
    caplog.set_level(logging.INFO)
    with open_store("memory", config) as store:
        for user in ("alice", "bob"):
            store.create_mailbox(f"user.{user}")
        engine = DeliveryEngine(config, store, store.duplicates())
        replies = engine.deliver(envelope(engine, "alice", "bob"), MESSAGE)
        uniqueids = [store.mailbox(f"user.{u}").uniqueid for u in ("alice", "bob")]
    assert [r.code for r in replies] == [250, 250]
    lines = [m for m in caplog.messages if m.startswith("auditlog:")]
    if auditlog == "no":
        assert lines == []
        return
    assert [line.split(" uid=")[0] for line in lines] == [
        f"auditlog: append sessionid=<T1> mailbox=<user.{user}> uniqueid=<{uniqueid}>"
        for user, uniqueid in zip(("alice", "bob"), uniqueids, strict=True)
    ]
    assert all(" messageid=<e1@example.org> size=<" in line for line in lines)


@pytest.mark.parametrize("backend", ["memory"])
def test_auditlog_duplicate_line(engine: DeliveryEngine, caplog: pytest.LogCaptureFixture) -> None:
    """auditlog: Cyrus's duplicate line (imap/duplicate.c) for a copy suppression left out, by
    the mailbox's uniqueid."""
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    engine.auditlog = True
    dated = b"Date: Mon, 7 Dec 2026 01:00:00 +0000\r\n" + MESSAGE
    engine.deliver(envelope(engine, "alice"), dated)
    engine.deliver(envelope(engine, "alice"), dated)
    info = engine.store.mailbox("user.alice")
    assert info is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"]
    assert lines[0].startswith("auditlog: append ") and lines[1:] == [
        f"auditlog: duplicate sessionid=<T1> action=<delivery> message-id=<e1@example.org>"
        f" user=<{info.uniqueid}> date=<Mon, 7 Dec 2026 01:00:00 +0000>"
    ]
