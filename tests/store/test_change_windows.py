"""The disk store's per-process window of a mailbox's latest changes (sealmail.store.disk.windows)
that every session's sync answers from: the window alone (merge, an expunge after a change, the
floor, the bounds, another UIDVALIDITY), and through the store, whose answers must equal a direct
read of the index for any sequence of changes and syncs from any modseq."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.store.api import DeliveryTarget, MessageRecord
from sealmail.store.disk import DiskStore
from sealmail.store.disk.windows import ChangeWindow, ChangeWindows

pytestmark = pytest.mark.disk_only("the disk store's window of changes")

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
BOX = "user.alice"


def row(highestmodseq: int, mailbox_id: int = 1, uidvalidity: int = 7) -> tuple[Any, ...]:
    """A mailbox row as syncing reads it (id 0, uidvalidity 4, highestmodseq 6)."""
    return (mailbox_id, BOX, "u1", "default", uidvalidity, 99, highestmodseq, "", 0, 0)


def record(uid: int, modseq: int, *flags: str) -> MessageRecord:
    return MessageRecord(uid, modseq, 0.0, 10, f"g{uid}", flags)


def test_a_window_answers_from_any_modseq_above_its_floor() -> None:
    window = ChangeWindow()
    window.reset(row(12), [record(1, 11), record(2, 12)], [], floor=10)
    window.extend(row(15), [record(1, 14, "\\Seen"), record(3, 15)], [(4, 13)])
    assert window.covers(row(15), 10) and not window.covers(row(15), 9)
    assert window.since(10) == ([record(1, 14, "\\Seen"), record(2, 12), record(3, 15)], [4])
    assert window.since(12) == ([record(1, 14, "\\Seen"), record(3, 15)], [4])
    assert window.since(13) == ([record(1, 14, "\\Seen"), record(3, 15)], [])
    assert window.since(15) == ([], [])


def test_an_expunge_after_a_change_replaces_it() -> None:
    window = ChangeWindow()
    window.reset(row(12), [record(1, 11), record(2, 12, "\\Deleted")], [], floor=10)
    window.extend(row(13), [], [(2, 13)])
    assert window.since(10) == ([record(1, 11)], [2])
    assert window.since(11) == ([], [2])
    assert window.since(12) == ([], [2])


def test_another_mailbox_or_uidvalidity_is_not_covered() -> None:
    window = ChangeWindow()
    assert not window.covers(row(5), 5)  # nothing read yet
    window.reset(row(5), [record(1, 5)], [], floor=3)
    assert window.covers(row(5), 3)
    assert not window.covers(row(5, uidvalidity=8), 3)
    assert not window.covers(row(5, mailbox_id=2), 3)


def test_the_floor_rises_past_the_bound_and_keeps_the_latest() -> None:
    window = ChangeWindow(limit=4)
    window.reset(row(3), [record(1, 1), record(2, 2), record(3, 3)], [], floor=0)
    window.extend(row(6), [record(1, 4), record(4, 6)], [(2, 5)])  # six entries, one replaced
    window.bound()
    assert len(window.entries) <= 4
    assert window.floor == 4 and not window.covers(row(6), 3)
    assert window.since(4) == ([record(4, 6)], [2])


def test_entries_of_one_modseq_leave_together() -> None:
    window = ChangeWindow(limit=2)
    window.reset(row(2), [record(1, 1), record(2, 2), record(3, 2), record(4, 2)], [], floor=0)
    window.bound()
    assert window.floor == 2 and window.entries == []
    assert window.since(2) == ([], [])


def test_the_least_recently_used_window_goes() -> None:
    windows = ChangeWindows(size=2)
    first, second = windows.get("a"), windows.get("b")
    assert windows.get("a") is first  # now the most recent
    windows.get("c")
    assert windows.get("a") is first and windows.get("b") is not second


@pytest.fixture
def alice(store: DiskStore) -> DiskStore:
    store.create_mailbox(BOX)
    for _ in range(3):
        store.deliver(MESSAGE, [DeliveryTarget(BOX)])
    return store


def syncing_of(store: DiskStore) -> Any:
    return store.mailbox_changes.__self__  # type: ignore[attr-defined]


def test_sessions_of_one_thread_read_the_changes_once(alice: DiskStore) -> None:
    store = alice
    before = store.mailbox(BOX).highestmodseq
    store.mailbox_changes(BOX, before)  # the window is at the top
    store.update_flags(BOX, [2], ["\\Flagged"], "add")
    statements: list[str] = []
    store._index.connection().set_trace_callback(statements.append)
    try:
        answers = [store.mailbox_changes(BOX, before) for _ in range(5)]
    finally:
        store._index.connection().set_trace_callback(None)
    assert all(a == answers[0] for a in answers)
    assert [(r.uid, r.flags) for r in answers[0].changed] == [(2, ("\\Flagged",))]
    reads = [s for s in statements if s.startswith("SELECT") and "messages" in s]
    assert len(reads) == 1


def test_a_mailbox_made_again_is_read_whole(config: ImapdConfig, alice: DiskStore) -> None:
    store = alice
    other = DiskStore.from_config(config)
    try:
        old = store.mailbox(BOX)
        assert store.mailbox_changes(BOX, 0) is not None
        other.delete_mailbox(BOX)
        other.create_mailbox(BOX)
        other.deliver(MESSAGE, [DeliveryTarget(BOX)])
        news = store.mailbox_changes(BOX, old.highestmodseq)
        new = store.mailbox(BOX)
        assert news is not None and news.uidvalidity == new.uidvalidity
        assert news.changed == store.messages_since(BOX, old.highestmodseq)
        other.delete_mailbox(BOX)
        assert store.mailbox_changes(BOX, 0) is None
    finally:
        other.close()


def test_threads_share_one_window(alice: DiskStore) -> None:
    store = alice
    before = store.mailbox(BOX).highestmodseq
    store.update_flags(BOX, [1, 3], ["$Label1"], "add")
    store.expunge(BOX, [2])
    answers: list[Any] = []

    def sync() -> None:
        answers.append(store.mailbox_changes(BOX, before))

    threads = [threading.Thread(target=sync) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(answers) == 4 and all(a == answers[0] for a in answers)
    assert [r.uid for r in answers[0].changed] == [1, 3] and answers[0].expunged == [2]
    assert len(syncing_of(store)._windows._windows) == 1


def test_a_sync_far_behind_leaves_the_window_alone(alice: DiskStore) -> None:
    store = alice
    syncing_of(store)._windows = ChangeWindows(entries=2)
    for _ in range(3):
        store.deliver(MESSAGE, [DeliveryTarget(BOX)])
    top = store.mailbox(BOX).highestmodseq
    store.mailbox_changes(BOX, top)
    store.update_flags(BOX, [1], ["\\Seen"], "add")
    store.mailbox_changes(BOX, top)  # the window: from `top`, one change
    window = syncing_of(store)._windows.get(BOX)
    kept = (window.floor, window.top, list(window.entries))
    news = store.mailbox_changes(BOX, 0)  # six messages: more than the window holds
    assert news is not None and len(news.changed) == 6
    assert news.changed == store.messages_since(BOX, 0)
    assert (window.floor, window.top, window.entries) == kept


class BusyOnce:
    """A window's lock that another session holds at the first try without waiting."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tries = 0

    def acquire(self, blocking: bool = True) -> bool:
        self.tries += 1
        return False if not blocking and self.tries == 1 else self.lock.acquire(blocking)

    def release(self) -> None:
        self.lock.release()


def test_a_session_finding_the_window_busy_reads_the_row_meanwhile(alice: DiskStore) -> None:
    store = alice
    before = store.mailbox(BOX).highestmodseq
    store.mailbox_changes(BOX, before)
    window = syncing_of(store)._windows.get(BOX)
    store.update_flags(BOX, [3], ["\\Answered"], "add")
    window.lock = BusyOnce()
    statements: list[str] = []
    store._index.connection().set_trace_callback(statements.append)
    try:
        news = store.mailbox_changes(BOX, before)
    finally:
        store._index.connection().set_trace_callback(None)
    assert window.lock.tries == 2
    assert news is not None and news.changed == store.messages_since(BOX, before)
    assert statements[1].startswith("SELECT") and statements[2] == "BEGIN"  # after the PRAGMA


# A step: ("deliver", n), ("flag", uid index, flag), ("expunge", uid index), ("sync", modseq
# index): a sync from one of the modseqs the mailbox has had, compared with a direct read.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(1, 3)),
        st.tuples(st.just("flag"), st.integers(0, 30), st.sampled_from(["\\Seen", "$A"])),
        st.tuples(st.just("expunge"), st.integers(0, 30)),
        st.tuples(st.just("sync"), st.integers(0, 60)),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=STEPS, limit=st.sampled_from([2, 5, 1024]))
def test_the_window_answers_as_a_direct_read(
    alice: DiskStore, steps: list[tuple[Any, ...]], limit: int
) -> None:
    store = alice
    syncing_of(store)._windows = ChangeWindows(entries=limit)
    modseqs = [0, store.mailbox(BOX).highestmodseq]
    for step in steps:
        uids = [r.uid for r in store.messages(BOX)]
        if step[0] == "deliver":
            for _ in range(step[1]):
                store.deliver(MESSAGE, [DeliveryTarget(BOX)])
        elif step[0] == "flag" and uids:
            store.update_flags(BOX, [uids[step[1] % len(uids)]], [step[2]], "add")
        elif step[0] == "expunge" and uids:
            store.expunge(BOX, [uids[step[1] % len(uids)]])
        elif step[0] == "sync":
            since = modseqs[step[1] % len(modseqs)]
            news = store.mailbox_changes(BOX, since)
            info = store.mailbox(BOX)
            assert news is not None
            assert (news.uidvalidity, news.uidnext, news.highestmodseq, news.exists) == (
                info.uidvalidity, info.uidnext, info.highestmodseq, info.exists)
            if since != info.highestmodseq:
                assert news.changed == store.messages_since(BOX, since)
                assert news.expunged == store.expunged_since(BOX, since)
        modseqs.append(store.mailbox(BOX).highestmodseq)
