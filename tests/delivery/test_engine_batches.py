"""deliver_batch, as lmtpd's delivery thread runs it: each envelope decided as if alone, all of
a batch stored in one commit, a failure its envelope's alone."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.support.stores import open_store

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.durable import Fsyncs
from sealmail.store.disk import commit
from sealmail.store.errors import MailboxBusy


def message(number: int, message_id: str | None = None) -> bytes:
    mid = message_id or f"<b{number}@example.org>"
    return f"Subject: m{number}\r\nMessage-ID: {mid}\r\n\r\nbody {number}\r\n".encode()


@pytest.fixture
def engine(tmp_path: Path, backend: str) -> Iterator[DeliveryEngine]:
    config = parse_imapd_conf(
        f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n"
        "duplicatesuppression: 1\n"
    )
    with open_store(backend, config) as store:
        for user in ("alice", "bob"):
            store.create_mailbox(f"user.{user}")
        yield DeliveryEngine(config, store, store.duplicates())


def envelope(engine: DeliveryEngine, *users: str, session: str = "T1") -> Envelope:
    recipients = tuple(engine.check_recipient(u, "example.com", ignore_quota=False) for u in users)
    return Envelope(sender="s@example.org", recipients=recipients, session_id=session)


def subjects(engine: DeliveryEngine, user: str) -> list[bytes]:
    name = f"user.{user}"
    return [
        engine.store.message_bytes(name, r.uid).split(b"Subject: ")[1].split(b"\r\n")[0]
        for r in engine.store.messages(name)
    ]


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_a_batch_answers_each_envelope_in_order_and_stores_all(engine: DeliveryEngine) -> None:
    items = [
        (envelope(engine, "alice"), message(1)),
        (envelope(engine, "alice", "bob"), message(2)),
        (envelope(engine, "bob"), message(3)),
    ]
    replies = engine.deliver_batch(items)
    assert [[r.code for r in each] for each in replies] == [[250], [250, 250], [250]]
    assert subjects(engine, "alice") == [b"m1", b"m2"]
    assert subjects(engine, "bob") == [b"m2", b"m3"]


def _fsync_rounds(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """The disk store's fsync rounds from now on, as (directories, stage files) each."""
    rounds: list[tuple[int, int]] = []
    real = commit.fsyncs_started

    def counted(directories: set[str], fds: list[int]) -> Fsyncs:
        rounds.append((len(directories), len(fds)))
        return real(directories, fds)

    monkeypatch.setattr(commit, "fsyncs_started", counted)
    return rounds


@pytest.mark.parametrize("backend", ["disk"])
def test_a_message_to_two_recipients_is_staged_once(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Copies of one content go to the store together (grouped without hashing the content)."""
    rounds = _fsync_rounds(monkeypatch)
    [[first, second]] = engine.deliver_batch([(envelope(engine, "alice", "bob"), message(1))])
    assert first.code == second.code == 250
    assert rounds == [(1, 1)]  # one stage file for both copies
    assert subjects(engine, "alice") == subjects(engine, "bob") == [b"m1"]


@pytest.mark.parametrize("backend", ["disk"])
def test_the_disk_store_commits_a_batch_once_with_every_stage_file_in_one_fsync_round(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds = _fsync_rounds(monkeypatch)
    items = [(envelope(engine, "alice"), message(n)) for n in range(4)]
    assert all(r.code == 250 for [r] in engine.deliver_batch(items))
    assert rounds == [(1, 4)]  # one commit: one directory, four stage files
    assert [r.uid for r in engine.store.messages("user.alice")] == [1, 2, 3, 4]


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_the_same_message_id_twice_in_a_batch_is_stored_once(engine: DeliveryEngine) -> None:
    items = [
        (envelope(engine, "alice", session="A"), message(1, "<same@example.org>")),
        (envelope(engine, "alice", session="B"), message(2, "<same@example.org>")),
        (envelope(engine, "bob", session="C"), message(3)),
    ]
    [[first], [second], [third]] = engine.deliver_batch(items)
    assert (first.code, second.code, third.code) == (250, 250, 250)
    assert "duplicate" in str(second.text)
    assert subjects(engine, "alice") == [b"m1"]
    assert subjects(engine, "bob") == [b"m3"]


@pytest.mark.parametrize("backend", ["disk", "memory"])
def test_a_missing_mailbox_fails_its_envelope_alone(engine: DeliveryEngine) -> None:
    gone = envelope(engine, "bob")
    engine.store.delete_mailbox("user.bob")
    items = [(envelope(engine, "alice"), message(1)), (gone, message(2)),
             (envelope(engine, "alice"), message(3))]
    [[first], [second], [third]] = engine.deliver_batch(items)
    assert (first.code, third.code) == (250, 250)
    assert second.code >= 400
    assert subjects(engine, "alice") == [b"m1", b"m3"]


@pytest.mark.parametrize("backend", ["disk"])
def test_a_lock_that_cannot_be_had_defers_its_envelope_alone(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicates = engine.duplicates
    assert duplicates is not None
    real = duplicates.exclusive

    @contextmanager
    def exclusive(message_id: str) -> Iterator[None]:
        if message_id == "<busy@example.org>":
            raise MailboxBusy("held on another node")
        with real(message_id):
            yield

    monkeypatch.setattr(duplicates, "exclusive", exclusive)
    items = [(envelope(engine, "alice"), message(1)),
             (envelope(engine, "alice"), message(2, "<busy@example.org>"))]
    [[first], [second]] = engine.deliver_batch(items)
    assert first.code == 250
    assert (second.code, second.enhanced[:2]) == (451, "4.")
    assert subjects(engine, "alice") == [b"m1"]


@pytest.mark.parametrize("backend", ["disk"])
def test_a_stage_file_that_cannot_be_fsynced_fails_the_batch_and_leaves_no_link(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = os.fsync

    def failing(fd: int) -> None:
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).split("-")[0].isdigit():
            raise OSError(errno.EIO, os.strerror(errno.EIO))  # a stage file: PID-N-RANDOM
        real(fd)

    monkeypatch.setattr(os, "fsync", failing)
    items = [(envelope(engine, "alice"), message(n)) for n in range(3)]
    replies = engine.deliver_batch(items)
    monkeypatch.undo()
    assert all(r.code == 451 for [r] in replies)
    assert engine.store.messages("user.alice") == []
    files = [p.name for p in engine.store.mailbox_path("user.alice").iterdir()]
    assert not [name for name in files if name.endswith(".") and name[:-1].isdigit()]
    assert engine.deliver_batch(items[:1])[0][0].code == 250  # the store goes on


@pytest.mark.parametrize("backend", ["disk"])
def test_a_batch_marks_its_deliveries_in_one_write_and_a_retry_is_suppressed(
    engine: DeliveryEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    duplicates = engine.duplicates
    assert duplicates is not None
    writes: list[int] = []
    real = duplicates.mark_pairs

    def counted(pairs: list[tuple[str, str]]) -> None:
        writes.append(len(pairs))
        real(pairs)

    monkeypatch.setattr(duplicates, "mark_pairs", counted)
    items = [
        (envelope(engine, "alice"), message(1)), (envelope(engine, "alice", "bob"), message(2))
    ]
    engine.deliver_batch(items)
    assert writes == [3]
    again = engine.deliver_batch(items)
    assert all("duplicate" in str(r.text) for replies in again for r in replies)
    assert subjects(engine, "alice") == [b"m1", b"m2"]
