"""postqueue -p / mailq, postsuper -d/-h/-H, sendmail into maildrop, pickup (in-process)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from sealmail.cli.main import main
from sealmail.cli.sendmail import header_recipients, read_message
from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config import load_mta_config
from sealmail.mta.pickup import pickup_once, read_posting
from sealmail.mta.queue import (
    AttemptResult,
    Envelope,
    Queue,
    QueueName,
    RecipientRecord,
    RecipientState,
)


def enqueue(queue: Queue, sender: str, *recipients: str) -> str:
    envelope = Envelope(sender, tuple(RecipientRecord(r, r) for r in recipients),
                        arrival=1_700_000_000.0, size=1500)
    return queue.enqueue(envelope, b"x" * 1500)


def test_empty_queue(config_dir: Path, queue: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postqueue", "-c", str(config_dir), "-p"]) == 0
    assert capsys.readouterr().out == "Mail queue is empty\n"


def test_listing_in_postfix_shape(config_dir: Path, queue: Queue,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    first = enqueue(queue, "alice@example.org", "bob@example.com", "carol@example.com")
    second = enqueue(queue, "", "dave@example.com")
    entry = queue.load(first, QueueName.INCOMING)
    queue.mark(entry, [1], RecipientState.SENT)
    queue.record(entry, [AttemptResult(0, "deferred", "4.4.1", "connect to x: refused",
                                       "none", 1.0)])
    queue.move(first, QueueName.INCOMING, QueueName.DEFERRED)
    queue.move(second, QueueName.INCOMING, QueueName.HOLD)
    assert main(["mailq", "-c", str(config_dir)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == "-Queue ID-  --Size-- ----Arrival Time---- -Sender/Recipient-------"
    assert any(line.startswith(f"{first}    1500 ") and line.endswith("  alice@example.org")
               for line in lines)
    assert any(line.startswith(f"{second}!") and "MAILER-DAEMON" in line for line in lines)
    assert "(connect to x: refused)".rjust(79) in lines
    assert " " * 41 + "bob@example.com" in lines
    assert " " * 41 + "carol@example.com" not in lines  # delivered already
    assert lines[-1] == "-- 2 Kbytes in 2 Requests."  # 3000 octets: Postfix floors


def test_postsuper_delete_one_and_all(config_dir: Path, queue: Queue,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    ids = [enqueue(queue, "a@x.test", f"r{i}@x.test") for i in range(3)]
    queue.move(ids[2], QueueName.INCOMING, QueueName.DEFERRED)
    assert main(["postsuper", "-c", str(config_dir), "-d", ids[0]]) == 0
    assert queue.find(ids[0]) is None
    assert not any(ids[0] in p.name for p in queue.directory.rglob('*'))
    assert main(["postsuper", "-c", str(config_dir), "-d", "ALL", "deferred"]) == 0
    assert queue.find(ids[2]) is None
    assert queue.find(ids[1]) is QueueName.INCOMING
    assert main(["postsuper", "-c", str(config_dir), "-d", "ALL"]) == 0
    assert list(queue.entries()) == []
    err = capsys.readouterr().err
    assert "Deleted: 1 message" in err


def test_postsuper_refuses_bad_ids(config_dir: Path, queue: Queue,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postsuper", "-c", str(config_dir), "-d", "../../etc/passwd"]) == 0
    assert "invalid mail queue id" in capsys.readouterr().err
    assert main(["postsuper", "-c", str(config_dir), "-d", "ALL", "outgoing"]) == 64


def test_postsuper_hold_and_release(config_dir: Path, queue: Queue) -> None:
    queue_id = enqueue(queue, "a@x.test", "r@x.test")
    assert main(["postsuper", "-c", str(config_dir), "-h", queue_id]) == 0
    assert queue.find(queue_id) is QueueName.HOLD
    assert main(["postsuper", "-c", str(config_dir), "-H", "ALL"]) == 0
    assert queue.find(queue_id) is QueueName.DEFERRED


def test_read_message_dot_rule() -> None:
    data = b"Subject: x\n\nline\n.\nafter\n"
    assert read_message(data, ignore_dots=False) == b"Subject: x\n\nline\n"
    assert read_message(data, ignore_dots=True) == data


def test_header_recipients() -> None:
    message = b"To: A <a@x.test>, b@x.test\nCc: c@x.test\nBcc: d@x.test\nSubject: s\n\nbody\n"
    assert header_recipients(message) == ["a@x.test", "b@x.test", "c@x.test", "d@x.test"]


def test_sendmail_posts_to_maildrop_and_pickup_queues(
        config_dir: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"Subject: local\nBcc: hidden@x.test\n\nhello\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    assert main(["sendmail", "-C", str(config_dir), "-f", "root", "-t", "bob"]) == 0
    [posted] = [p for p in queue.maildrop.iterdir() if not p.name.startswith(".")]
    posting = read_posting(posted)
    assert posting.sender == "root@mx.example.com"  # myorigin = $myhostname
    assert posting.recipients == ("bob@mx.example.com", "hidden@x.test")
    config = load_mta_config(config_dir)
    [queue_id] = pickup_once(queue, cleanup_from_config(config.main))
    assert list(queue.maildrop.iterdir()) == []
    entry = queue.load(queue_id, QueueName.INCOMING)
    content = entry.content.read()
    assert content.startswith(b"Received: by mx.example.com (sealmail, from userid ")
    assert b"hidden@x.test" not in content  # Bcc: dropped by cleanup
    assert entry.envelope.protocol == "local"


def test_sendmail_without_recipients(config_dir: Path, queue: Queue,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Subject: x\n\n")))
    assert main(["sendmail", "-C", str(config_dir)]) == 64


def test_pickup_drops_garbage(queue: Queue, config_dir: Path) -> None:
    (queue.maildrop / "JUNK").write_bytes(b"not a maildrop file")
    config = load_mta_config(config_dir)
    assert pickup_once(queue, cleanup_from_config(config.main)) == []
    assert list(queue.maildrop.iterdir()) == []


def test_postfix_status_when_stopped(config_dir: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postfix", "-c", str(config_dir), "status"]) == 1
    assert "not running" in capsys.readouterr().err
    assert main(["postfix", "-c", str(config_dir), "check"]) == 0
    assert (config_dir.parent / "spool" / "maildrop").is_dir()


def test_pickup_refuses_links(queue: Queue, config_dir: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(b"sealmail-maildrop 1\n"
                       b'{"sender": "x@x.test", "recipients": ["thief@x.test"], "time": 1}\n'
                       b"root's secret\n")
    (queue.maildrop / "SYMLINK").symlink_to(secret)
    (queue.maildrop / "HARDLINK").hardlink_to(secret)
    config = load_mta_config(config_dir)
    assert pickup_once(queue, cleanup_from_config(config.main)) == []
    assert list(queue.entries()) == []
    assert secret.exists()


# -- postsuper -r (requeue) and -s (structure) ------------------------------------------------


def queue_files(queue: Queue, queue_id: str) -> list[Path]:
    return [p for p in queue.directory.rglob(queue_id) if p.is_file()]


def requeue_config(config_dir: Path) -> Path:
    """main.cf with a virtual alias table that changed after the mail was queued."""
    table = config_dir / "virtual"
    table.write_text("bob@example.com carol@example.com\n")
    with (config_dir / "main.cf").open("a") as main_cf:
        main_cf.write(f"virtual_alias_maps = texthash:{table}\n")
    return config_dir


def test_postsuper_requeue_cleans_again_with_a_new_id(
        config_dir: Path, queue: Queue, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    old_id = enqueue(queue, "alice@example.org", "bob@example.com", "dave@example.com",
                     "erin@example.com")
    entry = queue.load(old_id, QueueName.INCOMING)
    queue.mark(entry, [1], RecipientState.SENT)  # dave was delivered already
    queue.move(old_id, QueueName.INCOMING, QueueName.DEFERRED)
    requeue_config(config_dir)
    assert main(["postsuper", "-c", str(config_dir), "-r", old_id]) == 0
    err = capsys.readouterr().err
    assert f"{old_id}: requeued" in err and "Requeued: 1 message" in err
    assert [p.name for p in queue.maildrop.iterdir()] == [old_id]
    assert queue.find(old_id) is None

    caplog.set_level("INFO", logger="sealmail")
    config = load_mta_config(config_dir)
    [new_id] = pickup_once(queue, cleanup_from_config(config.main))
    assert new_id != old_id
    assert list(queue.maildrop.iterdir()) == []
    assert queue.find(new_id) is QueueName.INCOMING
    requeued = queue.load(new_id, QueueName.INCOMING)
    assert requeued.envelope.sender == "alice@example.org"
    assert requeued.envelope.arrival == 1_700_000_000.0  # its lifetime still counts from then
    # bob through today's virtual_alias_maps, dave not again, erin as she was.
    assert [(r.record.address, r.record.original) for r in requeued.pending] == [
        ("carol@example.com", "bob@example.com"), ("erin@example.com", "erin@example.com")]
    content = requeued.content.read()
    assert content.startswith(b"Received: by mx.example.com (sealmail, from userid ")
    assert content.endswith(b"x" * 1500 + b"\r\n")
    assert f"{new_id}: uid=" in caplog.text and f"orig_id={old_id}" in caplog.text


def test_postsuper_requeue_all_of_one_queue(config_dir: Path, queue: Queue,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    held = enqueue(queue, "a@x.test", "r1@x.test")
    queue.move(held, QueueName.INCOMING, QueueName.HOLD)
    deferred = [enqueue(queue, "a@x.test", f"r{n}@x.test") for n in range(2, 4)]
    for queue_id in deferred:
        queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)
    assert main(["postsuper", "-c", str(config_dir), "-r", "ALL", "deferred"]) == 0
    assert "Requeued: 2 messages" in capsys.readouterr().err
    assert sorted(p.name for p in queue.maildrop.iterdir()) == sorted(deferred)
    assert queue.find(held) is QueueName.HOLD
    config = load_mta_config(config_dir)
    assert len(pickup_once(queue, cleanup_from_config(config.main))) == 2
    assert len(queue.ids(QueueName.INCOMING)) == 2


def test_a_crash_during_requeue_leaves_the_message_in_exactly_one_place(
        config_dir: Path, queue: Queue, monkeypatch: pytest.MonkeyPatch) -> None:
    import sealmail.mta.pickup as pickup

    old_id = enqueue(queue, "alice@example.org", "bob@example.com")
    queue.move(old_id, QueueName.INCOMING, QueueName.DEFERRED)
    assert main(["postsuper", "-c", str(config_dir), "-r", old_id]) == 0
    config = load_mta_config(config_dir)
    real = pickup._into_incoming

    def power_lost(*args: object) -> None:
        raise KeyboardInterrupt("power lost between pickup's two renames")

    monkeypatch.setattr(pickup, "_into_incoming", power_lost)
    with pytest.raises(KeyboardInterrupt):
        pickup_once(queue, cleanup_from_config(config.main))
    # The new file has replaced the old one in maildrop: one copy, with its new id inside.
    [left] = [p for p in queue.directory.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert left.parent == queue.maildrop
    monkeypatch.setattr(pickup, "_into_incoming", real)
    queue.recover()  # the master's start: the temporary file is gone already
    [new_id] = pickup_once(queue, cleanup_from_config(config.main))
    assert list(queue.maildrop.iterdir()) == []
    content = queue.load(new_id, QueueName.INCOMING).content.read()
    assert content.count(b"from userid") == 1  # cleaned once, not twice
    assert queue_files(queue, new_id) == [queue.path_of(new_id, QueueName.INCOMING)]


def test_pickup_takes_a_queue_file_only_from_the_mail_system(
        config_dir: Path, queue: Queue) -> None:
    source = enqueue(queue, "spoofed@example.org", "victim@example.com")
    path = queue.path_of(source, QueueName.INCOMING)
    data = path.read_bytes()
    path.unlink()
    forged = queue.maildrop / "FORGED"
    forged.write_bytes(data)
    forged.chmod(0o644)  # what sendmail makes: readable by the world
    os_user = 65534
    (queue.maildrop / "NOBODY").write_bytes(data)
    import os

    os.chown(queue.maildrop / "NOBODY", os_user, os_user)
    (queue.maildrop / "NOBODY").chmod(0o700)
    config = load_mta_config(config_dir)
    assert pickup_once(queue, cleanup_from_config(config.main)) == []
    assert list(queue.maildrop.iterdir()) == []
    assert list(queue.entries()) == []


def test_postsuper_structure_check_is_the_default(config_dir: Path, queue: Queue,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    flat = Queue(queue.directory, hashed=frozenset())
    queue_id = enqueue(flat, "a@x.test", "r@x.test")
    flat.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)
    assert (queue.directory / "deferred" / queue_id).is_file()
    assert main(["postsuper", "-c", str(config_dir)]) == 0
    assert "Moved to match hash_queue_names and hash_queue_depth: 1 message" in (
        capsys.readouterr().err)
    assert queue_files(queue, queue_id) == [queue.path_of(queue_id, QueueName.DEFERRED)]
    assert main(["postsuper", "-c", str(config_dir), "-s"]) == 0
