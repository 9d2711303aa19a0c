"""Quota warnings end to end: a real lmtpd, smtplib.LMTP over its socket, the INBOX read back."""

from __future__ import annotations

import email
import email.policy
import smtplib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[SealmailInstance]:
    with SealmailInstance(tmp_path, users=["alice"], imapd_conf_extra={"quotawarn": "90"}) as inst:
        with inst.store() as store:
            store.set_quota("user.alice", 100, None)  # 102400 bytes: the warning at 92160
        yield inst


def message(n: int, size: int) -> bytes:
    head = f"From: s@example.org\r\nTo: alice@example.com\r\nMessage-ID: <q{n}@example.org>\r\n"
    return head.encode() + b"\r\n" + b"x" * size + b"\r\n"


def deliver(inst: SealmailInstance, n: int, size: int) -> int:
    with smtplib.LMTP(inst.socket_path) as client:
        client.ehlo()
        client.mail("s@example.org")
        client.rcpt("alice@example.com")
        return client.data(message(n, size))[0]


def warnings(inst: SealmailInstance) -> list[email.message.EmailMessage]:
    found = []
    with inst.store() as store:
        for record in store.messages("user.alice"):
            parsed = email.message_from_bytes(
                store.message_bytes("user.alice", record.uid), policy=email.policy.default
            )
            if str(parsed["Subject"] or "").startswith("Quota warning"):
                assert isinstance(parsed, email.message.EmailMessage)
                found.append(parsed)
    return found


def test_crossing_the_level_gives_one_warning(instance: SealmailInstance) -> None:
    assert deliver(instance, 1, 40000) == 250
    assert warnings(instance) == []
    assert deliver(instance, 2, 40000) == 250  # about 80500 bytes with trace headers: below 90%
    assert warnings(instance) == []
    assert deliver(instance, 3, 12000) == 250  # about 92800: crossed
    [warning] = warnings(instance)
    assert warning["From"] == "Mail Delivery System <postmaster@sealmail.test.example>"
    assert warning["To"] == "alice@sealmail.test.example"
    assert warning["Message-ID"] and warning["Date"]
    text = warning.get_content()
    assert "user.alice" in text and "of 100 KiB" in text and "%)" in text
    assert deliver(instance, 4, 100) == 250  # still above: no second warning
    assert len(warnings(instance)) == 1
    # Usage falls below the level, then crosses again: one more warning.
    with instance.store() as store:
        uids = [r.uid for r in store.messages("user.alice")]
        store.expunge("user.alice", uids[:3])
    assert deliver(instance, 5, 100) == 250
    assert len(warnings(instance)) == 1
    assert deliver(instance, 6, 95000) == 250
    assert len(warnings(instance)) == 2
    assert "quota warning: root=user.alice" in instance.log_text()


def test_concurrent_deliveries_crossing_give_exactly_one(instance: SealmailInstance) -> None:
    assert deliver(instance, 0, 90000) == 250
    codes: list[int] = []
    lock = threading.Lock()

    def one(n: int) -> None:
        code = deliver(instance, n, 500)
        with lock:
            codes.append(code)

    threads = [threading.Thread(target=one, args=(n,)) for n in range(1, 9)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert codes == [250] * 8  # 90000 + 8 * ~750: across 92160, not yet full
    assert len(warnings(instance)) == 1
