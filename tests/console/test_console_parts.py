"""The console's parts without HTTP: failed logins and activity read from log lines, the SVG
plots, the queue actions on a real queue directory, sessions' expiry."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from sealmail.cli.trace import parse_mta_log
from sealmail.console.logs import activity, auth_failures, failures_by_client, read_tail, stamp
from sealmail.console.queue_actions import act, queue_rows
from sealmail.console.sessions import Sessions, same
from sealmail.console.svg import bar_chart, line_chart
from sealmail.mta.queue import AttemptResult, Envelope, Queue, QueueName, RecipientRecord

NOW = datetime(2026, 12, 6, 12, 0, 0)

LOG = """\
2026-12-06T11:50:01 sealmail.imapd[10]: badlogin: [192.0.2.7] plaintext alice [SASL(-13): \
authentication failure: bad password for alice@x] SESSIONID=<A1>
Dec  6 11:51:02 mx postfix/smtpd[11]: warning: unknown[198.51.100.9]: SASL LOGIN \
authentication failed: authentication failure
Dec  6 11:52:03 mx cyrus/imap[12]: badlogin: host.example [192.0.2.7] PLAIN \
[SASL(-13): authentication failure: no such user] SESSIONID=<B2>
Dec  6 11:53:04 mx postfix/smtpd[13]: connect from unknown[192.0.2.7]
"""


def test_failed_logins_of_both_halves() -> None:
    failures = auth_failures(LOG.splitlines(), NOW)
    assert [(f.client, f.user, f.mechanism, f.program) for f in failures] == [
        ("[192.0.2.7]", "alice", "plaintext", "sealmail.imapd"),
        ("unknown[198.51.100.9]", "", "LOGIN", "postfix/smtpd"),
        ("host.example [192.0.2.7]", "", "PLAIN", "cyrus/imap"),
    ]
    assert failures[0].when == datetime(2026, 12, 6, 11, 50, 1)
    assert failures[0].reason.startswith("SASL(-13): authentication failure")
    assert failures_by_client(failures)[0] == ("[192.0.2.7]", 1)


def test_syslog_stamps_without_a_year_are_never_in_the_future() -> None:
    new_year = datetime(2027, 1, 2, 0, 0, 0)
    assert stamp("Dec 31 23:00:00 host x[1]: y", new_year) == datetime(2026, 12, 31, 23, 0, 0)
    assert stamp("Jan  2 00:00:00 host x[1]: y", new_year) == datetime(2027, 1, 2, 0, 0, 0)
    assert stamp("garbage", NOW) is None


def test_read_tail_drops_the_cut_line(tmp_path: Path) -> None:
    log = tmp_path / "log"
    log.write_text("first line\nsecond line\nthird\n")
    assert read_tail(log, limit=12) == ["third"]
    assert read_tail(log) == ["first line", "second line", "third"]
    assert read_tail(tmp_path / "missing") == []


MAILLOG = """\
Dec  6 10:00:00 mx postfix/smtpd[1]: AAAAAAAAAAAA: client=unknown[127.0.0.1]
Dec  6 10:00:01 mx postfix/lmtp[2]: AAAAAAAAAAAA: to=<a@x>, relay=x, delay=1, status=deferred \
(connect refused)
Dec  6 10:00:02 mx postfix/smtpd[1]: BBBBBBBBBBBB: client=unknown[127.0.0.1]
Dec  6 10:00:03 mx postfix/lmtp[2]: BBBBBBBBBBBB: to=<b@x>, relay=x, delay=1, status=sent (ok)
Dec  6 10:00:03 mx postfix/qmgr[3]: BBBBBBBBBBBB: removed
Dec  6 11:30:00 mx postfix/lmtp[2]: AAAAAAAAAAAA: to=<a@x>, relay=x, delay=9, status=sent (ok)
Dec  6 11:30:00 mx postfix/qmgr[3]: AAAAAAAAAAAA: removed
"""


def test_activity_counts_deliveries_deferrals_and_the_queue() -> None:
    lines = list(parse_mta_log(MAILLOG.splitlines(), 2026))
    seen = activity(lines, NOW, hours=3, buckets=6)  # half-hour buckets from 09:00
    assert seen.delivered == [0, 0, 1, 0, 0, 1]
    assert seen.deferred == [0, 0, 1, 0, 0, 0]
    assert seen.queue == [0, 0, 1, 1, 1, 0]
    assert seen.label(0) == "09:00" and seen.step == timedelta(minutes=30)


def test_the_chart_is_well_formed_svg_and_escapes_its_text() -> None:
    svg = line_chart("a <b> & c", ["09:00", "09:30"], [("sent", [1, 7], "#2a7"),
                                                       ("x<y", [0, 0], "#d80")])
    root = ET.fromstring(svg)
    assert root.tag.endswith("svg")
    texts = [t.text for t in root.iter() if t.tag.endswith("text")]
    assert "a <b> & c" in texts and "10" in texts  # the axis' top: 7 rounds up to 10
    assert len([e for e in root.iter() if e.tag.endswith("polyline")]) == 2
    assert ET.fromstring(line_chart("empty", [], [("q", [], "#000")])) is not None
    bars = ET.fromstring(bar_chart("b", ["a", "b"], [("sent", [1, 0], "#2a7"),
                                                     ("deferred", [1, 2], "#d80")]))
    rects = [e for e in bars.iter() if e.tag.endswith("rect")]
    assert len(rects) == 3 + 2  # one bar per non-zero count, and the legend's two


def test_activity_buckets_end_on_a_round_time() -> None:
    seen = activity([], datetime(2026, 12, 6, 11, 54, 10), hours=6, buckets=36)
    assert seen.label(0) == "06:00" and seen.label(36) == "12:00"


@pytest.fixture
def queue(tmp_path: Path) -> Queue:
    found = Queue(tmp_path / "spool")
    found.create_directories()
    return found


def enqueue(queue: Queue, sender: str, recipient: str, message_id: str = "") -> str:
    envelope = Envelope(sender, (RecipientRecord(recipient, recipient),), arrival=1.7e9,
                        size=5, message_id=message_id)
    return queue.enqueue(envelope, b"hello")


def test_queue_rows_search_by_id_sender_recipient_and_message_id(queue: Queue) -> None:
    first = enqueue(queue, "alice@example.org", "bob@example.com", "m1@example.org")
    second = enqueue(queue, "", "carol@example.com")
    entry = queue.load(first, QueueName.INCOMING)
    queue.record(entry, [AttemptResult(0, "deferred", "4.4.1", "connect refused", "none", 1.0)])
    queue.move(first, QueueName.INCOMING, QueueName.DEFERRED, next_attempt=2e9)
    rows, total = queue_rows(queue)
    assert total == 2 and {r.queue_id for r in rows} == {first, second}
    deferred = next(r for r in rows if r.queue_id == first)
    assert deferred.recipients == (("bob@example.com", "connect refused"),)
    assert deferred.queue == "deferred" and deferred.next_attempt == 2e9
    for needle in (first, "ALICE@", "bob@example", "m1@example"):
        assert [r.queue_id for r in queue_rows(queue, needle)[0]] == [first]
    assert [r.sender for r in queue_rows(queue, "carol")[0]] == ["MAILER-DAEMON"]
    assert queue_rows(queue, "nobody")[1] == 0


def test_retry_hold_release_delete(queue: Queue) -> None:
    queue_id = enqueue(queue, "a@x.test", "b@y.test")
    queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED, next_attempt=2e9)
    outcome = act(queue, "retry", queue_id, "admin")
    assert outcome.ok and queue.find(queue_id) is QueueName.INCOMING
    assert act(queue, "hold", queue_id, "admin").text == f"{queue_id}: placed on hold"
    assert queue.find(queue_id) is QueueName.HOLD
    assert not act(queue, "retry", queue_id, "admin").ok  # release it first
    assert not act(queue, "hold", queue_id, "admin").ok
    assert act(queue, "release", queue_id, "admin").ok
    assert queue.find(queue_id) is QueueName.DEFERRED
    assert act(queue, "delete", queue_id, "admin").text == f"{queue_id}: removed"
    assert queue.find(queue_id) is None
    assert not act(queue, "delete", queue_id, "admin").ok
    assert not act(queue, "delete", "../../etc/passwd", "admin").ok
    assert not act(queue, "explode", queue_id, "admin").ok


def test_retry_says_when_no_master_is_running(queue: Queue) -> None:
    queue_id = enqueue(queue, "a@x.test", "b@y.test")
    queue.move(queue_id, QueueName.INCOMING, QueueName.DEFERRED)
    outcome = act(queue, "retry", queue_id, "admin")
    assert outcome.ok and "the MTA is not running" in outcome.text


def test_sessions_expire_when_idle_and_at_their_lifetime() -> None:
    now = [0.0]
    sessions = Sessions(idle=10, lifetime=25, capacity=2, clock=lambda: now[0])
    token, session = sessions.open("admin")
    now[0] = 9
    assert sessions.find(token) is session
    now[0] = 18
    assert sessions.find(token) is session
    now[0] = 26
    assert sessions.find(token) is None  # past its lifetime, though used 8 s ago
    token, _ = sessions.open("admin")
    now[0] = 37
    assert sessions.find(token) is None  # idle 11 s
    tokens = [sessions.open("admin")[0] for _ in range(3)]
    assert sessions.find(tokens[0]) is None and len(sessions) == 2  # the oldest went first
    assert sessions.find("") is None
    assert same("abc", "abc") and not same("abc", "abd") and not same("", "")
