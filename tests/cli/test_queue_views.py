"""postqueue -j/-i, the -p table's details, postcat and qshape over sealmail's own queue files."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.mta import FakeMaster

from sealmail.cli.main import main
from sealmail.cli.postcat import render as postcat
from sealmail.mta.qshape import QshapeOptions, render_qshape
from sealmail.mta.queue import (
    AttemptResult,
    CorruptQueueFile,
    Envelope,
    Queue,
    QueueName,
    RecipientRecord,
    RecipientState,
)
from sealmail.mta.showq import queue_entries, render_listing

MESSAGE = b"Subject: hello\r\nFrom: a@x.test\r\n\r\nline one\r\nline two\r\n"


def enqueue(queue: Queue, sender: str, *recipients: str, arrival: float = 1_700_000_000.0,
            content: bytes = MESSAGE) -> str:
    envelope = Envelope(sender, tuple(RecipientRecord(r, r) for r in recipients),
                        arrival=arrival, size=len(content), client="c[127.0.0.1]",
                        protocol="ESMTP", helo="c.test")
    return queue.enqueue(envelope, content)


def defer(queue: Queue, queue_id: str, reasons: dict[int, str]) -> None:
    entry = queue.load(queue_id, QueueName.INCOMING)
    queue.record(entry, [AttemptResult(i, "deferred", "4.0.0", text, "x", 1.0)
                         for i, text in reasons.items()])
    queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)


def test_json_lines(config_dir: Path, queue: Queue, capsys: pytest.CaptureFixture[str]) -> None:
    qid = enqueue(queue, "", "bob@y.test", "ünï@y.test")
    defer(queue, qid, {0: "connect to y.test: refused"})
    assert main(["postqueue", "-c", str(config_dir), "-j"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "ünï@y.test" in out  # UTF-8 as is, as Postfix prints it
    assert json.loads(out) == {
        "queue_name": "deferred", "queue_id": qid, "arrival_time": 1_700_000_000,
        "message_size": len(MESSAGE), "forced_expire": False, "sender": "MAILER-DAEMON",
        "recipients": [{"address": "bob@y.test", "delay_reason": "connect to y.test: refused"},
                       {"address": "ünï@y.test"}]}


def test_table_marks_reasons_and_columns() -> None:
    entries = [
        {"queue_name": "active", "queue_id": "ABC", "arrival_time": 0, "message_size": 2048,
         "forced_expire": False, "sender": "s@x.test",
         "recipients": [{"address": "a@y.test", "delay_reason": "r1"},
                        {"address": "b@y.test", "delay_reason": "r1"},
                        {"address": "c@y.test", "delay_reason": "r2"},
                        {"address": "d@y.test"}]},
    ]
    lines = render_listing(entries).splitlines()
    when = time.asctime(time.localtime(0))[:20]
    assert lines[1] == f"ABC*           2048 {when} s@x.test"
    assert lines[2:] == [" " * 75 + "(r1)", " " * 41 + "a@y.test", " " * 41 + "b@y.test",
                         " " * 75 + "(r2)", " " * 41 + "c@y.test", " " * 41 + "d@y.test", "",
                         "-- 2 Kbytes in 1 Request."]
    assert render_listing([]) == "Mail queue is empty\n"


def test_a_message_with_done_recipients_lists_the_rest(queue: Queue) -> None:
    qid = enqueue(queue, "s@x.test", "a@y.test", "b@y.test")
    queue.mark(queue.load(qid, QueueName.INCOMING), [0], RecipientState.SENT)
    [item] = queue_entries(queue)
    assert item["recipients"] == [{"address": "b@y.test"}]


def test_postcat_sections(config_dir: Path, queue: Queue,
                          capsys: pytest.CaptureFixture[str]) -> None:
    qid = enqueue(queue, "s@x.test", "a@y.test")
    defer(queue, qid, {0: "greylisted"})
    assert main(["postcat", "-c", str(config_dir), "-q", qid]) == 0
    out = capsys.readouterr().out
    path = queue.locate(qid, QueueName.DEFERRED)
    assert path is not None
    name = str(path.relative_to(queue.directory))
    assert out.startswith(f"*** ENVELOPE RECORDS {name} ***\nmessage_size: ")
    assert "\nsender: s@x.test\n" in out and "\nrecipient: a@y.test\n" in out
    assert (f"*** MESSAGE CONTENTS {name} ***\nSubject: hello\nFrom: a@x.test\n\nline one\n"
            f"line two\n*** HEADER EXTRACTED {name} ***\n") in out
    assert "status=deferred (greylisted)" in out
    assert out.endswith(f"*** MESSAGE FILE END {name} ***\n")
    assert main(["postcat", "-c", str(config_dir), "-hq", qid]) == 0
    assert capsys.readouterr().out == "Subject: hello\nFrom: a@x.test\n"
    assert main(["postcat", "-c", str(config_dir), "-b", "-q", qid]) == 0
    assert capsys.readouterr().out == "\nline one\nline two\n"
    assert main(["postcat", "-c", str(config_dir), "-q", "NOSUCH"]) == 66
    assert "open queue file NOSUCH" in capsys.readouterr().err


def test_postcat_of_a_file_that_is_no_queue_file(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "junk"
    bad.write_bytes(b"sealmail-queue 2 99999 5\nE {}\n")
    assert main(["postcat", str(bad)]) == 1
    assert "junk" in capsys.readouterr().err
    for data in (b"sealmail-queue 2 0 0\n", b"", b"sealmail-queue 2 5 100\nE {}\n"):
        with pytest.raises(CorruptQueueFile):
            postcat(data, "x", envelope=True, header=True, body=True)


def test_qshape_buckets_domains_and_senders() -> None:
    now = 1_700_000_000.0
    entries = [
        {"queue_name": "deferred", "queue_id": "A", "arrival_time": now - 60, "message_size": 1,
         "forced_expire": False, "sender": "MAILER-DAEMON",
         "recipients": [{"address": "a@Y.test"}, {"address": "b@y.test"}]},
        {"queue_name": "deferred", "queue_id": "B", "arrival_time": now - 3 * 3600,
         "message_size": 1, "forced_expire": False, "sender": "s@x.test",
         "recipients": [{"address": "c@sub.z.test"}]},
        {"queue_name": "deferred", "queue_id": "C", "arrival_time": now - 30 * 86400,
         "message_size": 1, "forced_expire": False, "sender": "s@x.test",
         "recipients": [{"address": "d@z.test"}]},
    ]
    lines = render_qshape(entries, now).splitlines()
    assert lines[0] == " " * 41 + "T  5 10 20 40 80 160 320 640 1280 1280+"
    assert lines[1] == " " * 34 + "TOTAL  4  2  0  0  0  0   0   1   0    0     1"  # 3 h: <320
    assert lines[2] == " " * 33 + "y.test  2  2  0  0  0  0   0   0   0    0     0"
    assert [line.split()[0] for line in lines[3:]] == ["z.test", "sub.z.test"]
    senders = render_qshape(entries, now, QshapeOptions(senders=True)).splitlines()
    assert [line.split()[:2] for line in senders[1:]] == [
        ["TOTAL", "3"], ["x.test", "2"], ["MAILER-DAEMON", "1"]]
    parents = render_qshape(entries, now, QshapeOptions(parents=True, min_subdomains=1))
    assert ".z.test" in parents
    long = [{**entries[0], "recipients": [{"address": "a@" + "d" * 80 + ".test"}]}]
    assert "\n+" in render_qshape(long, now)  # cut on the left, as Postfix's


@pytest.fixture
def fake_master(queue: Queue) -> Iterator[FakeMaster]:
    master = FakeMaster(queue.control_socket)
    yield master
    master.close()


def test_postqueue_i_moves_one_deferred_message_to_incoming(
        config_dir: Path, queue: Queue, fake_master: FakeMaster) -> None:
    first, second = enqueue(queue, "s@x.test", "a@y.test"), enqueue(queue, "s@x.test", "b@y.test")
    defer(queue, first, {0: "later"})
    defer(queue, second, {0: "later"})
    assert main(["postqueue", "-c", str(config_dir), "-i", first]) == 0
    assert queue.find(first) is QueueName.INCOMING and queue.find(second) is QueueName.DEFERRED
    assert fake_master.lines == [f"retry {first}"]
    assert main(["postqueue", "-c", str(config_dir), "-i", "../x"]) == 64


def test_postqueue_i_without_a_master(config_dir: Path, queue: Queue,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["postqueue", "-c", str(config_dir), "-i", "BCDFGH"]) == 69
    assert "mail system is down" in capsys.readouterr().err
