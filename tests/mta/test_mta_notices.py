"""Delay warnings, double bounces and the postmaster's copies (notify_classes), as Postfix's
bounce(8) sends them: the queue manager with a fake agent and an injectable clock."""

from __future__ import annotations

import email
from email.message import Message
from pathlib import Path

import pytest
from tests.mta.test_mta_qmgr import Clock, FakeAgent, make, run, submit

from sealmail.mta.agents import Status
from sealmail.mta.config.parameters import PARAMETERS
from sealmail.mta.qmgr import QueueManager
from sealmail.mta.queue import Envelope, Queue, QueueName, RecipientRecord

DEFERRING = {"bob@example.com": (Status.DEFERRED, "4.4.1", "connect to x: Connection refused")}
BOUNCING = (Status.BOUNCED, "5.1.1", "550 5.1.1 User unknown")


class Notices:
    """Records every notice the queue manager queues (envelope and parsed content)."""

    def __init__(self, queue: Queue) -> None:
        self.sent: list[tuple[Envelope, Message]] = []
        enqueue = queue.enqueue

        def spy(envelope: Envelope, content: bytes,
                target: QueueName = QueueName.INCOMING) -> str:
            if envelope.client == "local":  # made by the queue manager, not by the test
                self.sent.append((envelope, email.message_from_bytes(content)))
            return enqueue(envelope, content, target)

        queue.enqueue = spy  # type: ignore[method-assign]

    def to(self, address: str) -> list[tuple[Envelope, Message]]:
        return [(e, m) for e, m in self.sent if e.recipients[0].address == address]


def attempt_until_deferred_again(queue: Queue, qmgr: QueueManager, clock: Clock,
                                 queue_id: str) -> None:
    """Make the deferred message due and run the queue manager once."""
    clock.now = queue.load(queue_id, QueueName.DEFERRED).mtime
    run(qmgr.run_once())


def test_a_delay_warning_goes_out_once_when_mail_has_waited_long_enough(tmp_path: Path) -> None:
    clock = Clock()
    agent = FakeAgent(dict(DEFERRING))
    queue, qmgr = make(tmp_path, "delay_warning_time = 150s\nminimal_backoff_time = 100s\n"
                       "maximal_backoff_time = 100s\nqueue_run_delay = 1s\n"
                       "maximal_queue_lifetime = 2d\n", agent, clock)
    notices = Notices(queue)
    queue_id = submit(queue, "bob@example.com", sender="sender@example.org", arrival=clock.now)
    run(qmgr.run_once())  # t=0: deferred, not waited long enough
    attempt_until_deferred_again(queue, qmgr, clock, queue_id)  # t=100: not yet
    assert notices.sent == []
    attempt_until_deferred_again(queue, qmgr, clock, queue_id)  # t=200: warn
    [(envelope, warning)] = notices.sent
    assert envelope.sender == "" and envelope.recipients[0].address == "sender@example.org"
    assert warning["Subject"] == "Delayed Mail (still being retried)"
    assert warning["To"] == "sender@example.org"
    assert warning["Auto-Submitted"] == "auto-replied"
    text, report, returned = warning.get_payload()
    body = text.get_payload()
    assert "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #" in body
    assert "Your message could not be delivered for more than 0 hour(s)." in body
    assert "It will be retried until it is 2 day(s) old." in body
    assert "<bob@example.com>: connect to x: Connection refused" in body
    _, bob = report.get_payload()
    assert bob["Action"] == "delayed"
    assert bob["Status"] == "4.4.1"
    assert bob["Will-Retry-Until"]
    assert returned.get_content_type() == "text/rfc822-headers"
    assert queue.load(queue_id, QueueName.DEFERRED).warned
    for _ in range(3):
        attempt_until_deferred_again(queue, qmgr, clock, queue_id)
    assert len(notices.sent) == 1  # once per message


def test_dsn_notify_and_notify_classes_decide_who_is_warned(tmp_path: Path) -> None:
    clock = Clock()
    agent = FakeAgent(dict(DEFERRING))
    agent.outcomes["carol@example.com"] = DEFERRING["bob@example.com"]
    queue, qmgr = make(tmp_path, "delay_warning_time = 1s\nnotify_classes = delay\n"
                       "delay_notice_recipient = hostmaster@example.net\n", agent, clock)
    notices = Notices(queue)
    envelope = Envelope("sender@example.org", (
        RecipientRecord("bob@example.com", notify=("FAILURE",)),
        RecipientRecord("carol@example.com", notify=("DELAY", "FAILURE"))),
        arrival=clock.now - 10, size=3)
    queue.enqueue(envelope, b"Subject: t\r\n\r\nx\r\n")
    run(qmgr.run_once())
    [(_, to_sender)] = notices.to("sender@example.org")
    assert [block["Final-Recipient"] for block in to_sender.get_payload()[1].get_payload()[1:]] \
        == ["rfc822; carol@example.com"]  # bob asked for failures only
    [(envelope, copy)] = notices.to("hostmaster@example.net")
    assert envelope.sender == "double-bounce@mx.example.com"
    assert copy["Subject"] == "Postmaster Warning: Delayed Mail"
    assert copy["Auto-Submitted"] == "auto-generated"
    assert "THIS IS A WARNING ONLY" not in copy.get_payload()[0].get_payload()  # no boiler-plate
    assert len(copy.get_payload()[1].get_payload()) == 3  # every recipient


def test_null_sender_mail_gets_no_delay_warning(tmp_path: Path) -> None:
    clock = Clock()
    queue, qmgr = make(tmp_path, "delay_warning_time = 1s\nnotify_classes = delay\n",
                       FakeAgent(dict(DEFERRING)), clock)
    notices = Notices(queue)
    submit(queue, "bob@example.com", sender="", arrival=clock.now - 10)
    run(qmgr.run_once())
    assert notices.sent == []


def test_a_bounce_that_bounces_is_discarded_by_default(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    queue, qmgr = make(tmp_path, "", FakeAgent({"gone@example.com": BOUNCING}), Clock())
    notices = Notices(queue)
    caplog.set_level("INFO", logger="sealmail")
    submit(queue, "gone@example.com", sender="")
    run(qmgr.run_once())
    assert notices.sent == []
    assert list(queue.entries()) == []
    assert "notify_classes has no 2bounce" in caplog.text


def test_a_double_bounce_goes_to_2bounce_notice_recipient_and_never_loops(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Every local address bounces, the postmaster's too: the chain must still end.
    agent = FakeAgent({a: BOUNCING for a in ("sender@example.com", "pm@example.com",
                                             "bob@example.com")})
    queue, qmgr = make(tmp_path, "notify_classes = 2bounce\n"
                       "2bounce_notice_recipient = pm@example.com\n", agent, Clock())
    notices = Notices(queue)
    caplog.set_level("INFO", logger="sealmail")
    submit(queue, "bob@example.com", sender="sender@example.com")
    for _ in range(6):
        run(qmgr.run_once())
    assert list(queue.entries()) == []
    senders = [(e.sender, e.recipients[0].address) for e, _ in notices.sent]
    assert senders == [("", "sender@example.com"),  # the bounce, which bounces:
                       ("double-bounce@mx.example.com", "pm@example.com")]  # the double bounce
    double = notices.sent[1][1]
    assert double["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert double.get_payload()[2].get_content_type() == "message/rfc822"  # all of it
    assert "undeliverable postmaster notification discarded" in caplog.text  # no triple


def test_the_postmaster_gets_a_copy_of_bounces_with_notify_classes_bounce(tmp_path: Path) -> None:
    agent = FakeAgent({"bob@example.com": BOUNCING})
    queue, qmgr = make(tmp_path, "notify_classes = bounce, resource, software\n"
                       "bounce_notice_recipient = pm@example.com\n", agent, Clock())
    notices = Notices(queue)
    submit(queue, "bob@example.com", sender="sender@example.org")
    run(qmgr.run_once())
    assert [e.recipients[0].address for e, _ in notices.sent] == [
        "sender@example.org", "pm@example.com"]
    envelope, copy = notices.sent[1]
    assert envelope.sender == "double-bounce@mx.example.com"
    assert copy["Subject"] == "Postmaster Copy: Undelivered Mail"
    assert copy.get_payload()[2].get_content_type() == "text/rfc822-headers"
    assert "I'm sorry" not in copy.get_payload()[0].get_payload()


def test_mail_to_the_double_bounce_address_is_discarded(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    agent = FakeAgent()
    queue, qmgr = make(tmp_path, "", agent, Clock())
    caplog.set_level("INFO", logger="sealmail")
    submit(queue, "double-bounce@mx.example.com", "Double-Bounce@example.com")
    run(qmgr.run_once())
    assert agent.requests == []
    assert list(queue.entries()) == []
    assert caplog.text.count("status=sent (undeliverable postmaster notification discarded)") == 2


def test_notify_classes_names_are_checked() -> None:
    option = PARAMETERS["notify_classes"]
    assert option.refusal("bounce, 2bounce, delay, resource, software, policy, protocol") is None
    refusal = option.refusal("bounce, spam")
    assert refusal is not None and "spam" in refusal
