"""Quota warning levels (imapd.conf quotawarn): the pure rule, and the once-per-crossing mark
every backend keeps with a root's limits."""

from __future__ import annotations

from typing import Any

import pytest

from sealmail.store.api import AppendedMessage, DeliveryTarget, QuotaUsage, QuotaWarn
from sealmail.store.quota import at_warning_level, warning_due

WARN = QuotaWarn(90)


def usage(storage: int = 0, storage_kb: int | None = None, messages: int = 0,
          messages_limit: int | None = None) -> QuotaUsage:
    return QuotaUsage("user.alice", storage, storage_kb, messages, messages_limit)


@pytest.mark.parametrize(
    ("state", "warn", "expected"),
    [
        (usage(922, 1), WARN, True),  # 90% of 1024 bytes is 921.6
        (usage(921, 1), WARN, False),
        (usage(0, None, 9, 10), WARN, True),
        (usage(0, None, 8, 10), WARN, False),
        (usage(10**6, None, 0, None), WARN, False),  # no limits: nothing to warn of
        (usage(0, 0), WARN, False),  # a limit of 0 refuses everything; no warning
        (usage(1000, 1), QuotaWarn(0), False),  # quotawarn 0: off
        # quotawarnkb: at 90% of 100 KiB, 10 KiB are left; warn only when fewer than kb are.
        (usage(92 * 1024, 100), QuotaWarn(90, storage_kb=5), False),
        (usage(96 * 1024, 100), QuotaWarn(90, storage_kb=5), True),
        (usage(92 * 1024, 100), QuotaWarn(90, storage_kb=500), True),  # limit below kb: always
        (usage(0, None, 95, 100), QuotaWarn(90, messages=3), False),
        (usage(0, None, 98, 100), QuotaWarn(90, messages=3), True),
    ],
)
def test_warning_level(state: QuotaUsage, warn: QuotaWarn, expected: bool) -> None:
    assert at_warning_level(state, warn) is expected


def test_warning_due_once_per_crossing() -> None:
    below, above = usage(800, 1), usage(950, 1)
    assert warning_due(below, 200, WARN, warned=False)
    assert not warning_due(below, 10, WARN, warned=False)  # stays below
    assert not warning_due(above, 10, WARN, warned=True)  # already warned
    assert warning_due(above, 10, WARN, warned=False)  # at the level, never warned (new limit)
    assert warning_due(below, 200, WARN, warned=True)  # fell below since: a new crossing


def _deliver(store: Any, size: int, warn: QuotaWarn | None = WARN) -> AppendedMessage:
    [result] = store.deliver(b"x" * size, [DeliveryTarget("user.alice", quota_warn=warn)])
    assert isinstance(result, AppendedMessage)
    return result


def test_store_reports_each_crossing_once(store: Any) -> None:
    store.create_mailbox("user.alice")
    store.create_mailbox("user.alice.Sub")
    store.set_quota("user.alice", 10, None)  # 10240 bytes; warn at 9216
    assert _deliver(store, 5000).quota_warning is None
    assert _deliver(store, 1000, None).quota_warning is None  # no quota_warn: not asked
    crossing = _deliver(store, 3500)  # 9500
    assert crossing.quota_warning == QuotaUsage("user.alice", 9500, 10, 3, None)
    assert _deliver(store, 10).quota_warning is None  # still above: warned already
    store.expunge("user.alice", [m.uid for m in store.messages("user.alice")][:2])
    assert _deliver(store, 10).quota_warning is None  # below again (3520)
    assert _deliver(store, 6000).quota_warning is not None  # crossed again
    # The subtree shares its root's mark.
    [result] = store.deliver(b"x", [DeliveryTarget("user.alice.Sub", quota_warn=WARN)])
    assert isinstance(result, AppendedMessage) and result.quota_warning is None


@pytest.mark.disk_only("the mark is durable on disk")
def test_the_mark_survives_reopening(open_store: Any, config: Any) -> None:
    store = open_store(config)
    store.create_mailbox("user.alice")
    store.set_quota("user.alice", 1, None)
    assert _deliver(store, 950).quota_warning is not None
    store.close()
    again = open_store(config)
    assert _deliver(again, 10).quota_warning is None
