"""mailbox_changes, the IMAP view's per-command sync (sealmail.store.api.MailboxChanges), on
every backend: nothing but the counters while the mailbox is unchanged; changed records, expunged
UIDs and the reader's \\Recent mark, read at one moment, once it moved; None once it is gone.
On the disk store also its memo (no SELECT while nothing was committed, by any connection)."""

from __future__ import annotations

from typing import Any

import pytest

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.store.api import DeliveryTarget, MailboxChanges
from sealmail.store.disk import DiskStore

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
SEEN = "\\Seen"


def deliver(store: Any, mailbox: str, count: int, flags: tuple[str, ...] = ()) -> list[int]:
    return [store.deliver(MESSAGE, [DeliveryTarget(mailbox, flags)])[0].uid
            for _ in range(count)]


@pytest.fixture
def shared(store: Any) -> Any:
    """alice's INBOX with three messages, the first read by alice; bob may read it."""
    store.create_mailbox("user.alice")
    store.set_acl("user.alice", "bob", "lrswi")
    deliver(store, "user.alice", 1, (SEEN,))
    deliver(store, "user.alice", 2)
    return store


def test_unchanged_mailbox_gives_only_its_counters(shared: Any) -> None:
    info = shared.mailbox("user.alice")
    news = shared.mailbox_changes("user.alice", info.highestmodseq)
    assert news == MailboxChanges(info.uidvalidity, info.uidnext, info.highestmodseq, 3)
    assert news.changed == news.expunged == [] and news.recent_mark is None
    assert shared.mailbox_changes("user.alice", info.highestmodseq, "bob") == news


def test_changes_since_a_modseq_in_one_read(shared: Any) -> None:
    store = shared
    before = store.mailbox("user.alice").highestmodseq
    store.update_flags("user.alice", [2], ["\\Flagged"], "add")
    store.expunge("user.alice", [3])
    [new] = deliver(store, "user.alice", 1)
    store.claim_recent("user.alice", 2)
    news = store.mailbox_changes("user.alice", before)
    info = store.mailbox("user.alice")
    assert (news.uidvalidity, news.uidnext, news.highestmodseq, news.exists) == (
        info.uidvalidity, info.uidnext, info.highestmodseq, info.exists)
    assert [(r.uid, r.flags) for r in news.changed] == [(2, ("\\Flagged",)), (new, ())]
    assert news.changed == store.messages_since("user.alice", before)
    assert news.expunged == [3] == store.expunged_since("user.alice", before)
    assert news.recent_mark == 2 == store.claim_recent("user.alice", 0)
    # From the start: every message there, and nothing above the highestmodseq.
    assert [r.uid for r in store.mailbox_changes("user.alice", 0).changed] == [1, 2, new]
    assert store.mailbox_changes("user.alice", info.highestmodseq).changed == []


def test_a_reader_sees_their_own_seen_and_recent_mark(shared: Any) -> None:
    store = shared
    store.update_flags("user.alice", [2], [SEEN], "add", reader="bob")
    store.claim_recent("user.alice", 1, "bob")
    news = store.mailbox_changes("user.alice", 0, "bob")
    assert [r.flags for r in news.changed] == [(), (SEEN,), ()]  # alice's \Seen is not bob's
    assert news.recent_mark == 1
    mine = store.mailbox_changes("user.alice", 0, "alice")
    assert [r.flags for r in mine.changed] == [(SEEN,), (), ()]
    assert mine.recent_mark == 0


def test_a_gone_mailbox_gives_none(shared: Any) -> None:
    store = shared
    modseq = store.mailbox("user.alice").highestmodseq
    assert store.mailbox_changes("user.nobody", 0) is None
    store.create_mailbox("user.alice.Old")
    store.rename_mailbox("user.alice.Old", "user.alice.New")
    assert store.mailbox_changes("user.alice.Old", 1) is None
    assert store.mailbox_changes("user.alice.New", 1) is not None
    store.delete_mailbox("user.alice")
    assert store.mailbox_changes("user.alice", modseq) is None
    assert store.mailbox_changed("user.alice", modseq)


@pytest.mark.disk_only("the SQLite index's data_version memo")
def test_memo_sees_commits_of_every_connection(config: ImapdConfig, shared: DiskStore) -> None:
    store = shared
    other = DiskStore.from_config(config)  # another connection, as another process's
    try:
        info = store.mailbox("user.alice")
        assert store.mailbox("user.alice") is info  # from the memo
        assert not store.mailbox_changed("user.alice", info.highestmodseq)
        other.update_flags("user.alice", [1], ["\\Answered"], "add")
        assert store.mailbox_changed("user.alice", info.highestmodseq)
        news = store.mailbox_changes("user.alice", info.highestmodseq)
        assert news is not None and [r.uid for r in news.changed] == [1]
        assert store.mailbox("user.alice").highestmodseq == news.highestmodseq
        other.set_acl("user.alice", "carol", "lr")
        assert store.mailbox("user.alice").acl["carol"] == "lr"
        # The store's own writes, on this thread's connection, count as well.
        store.create_mailbox("user.alice.Sub")
        assert store.mailbox("user.alice.Sub") is not None
        other.delete_mailbox("user.alice.Sub")
        assert store.mailbox("user.alice.Sub") is None
    finally:
        other.close()


@pytest.mark.disk_only("the SQLite index's data_version memo")
def test_unchanged_sync_reads_no_row(shared: DiskStore) -> None:
    store = shared
    modseq = store.mailbox("user.alice").highestmodseq
    statements: list[str] = []
    store._index.connection().set_trace_callback(statements.append)
    try:
        for _ in range(3):
            store.mailbox_changes("user.alice", modseq)
            store.mailbox("user.alice")
            store.mailbox_changed("user.alice", modseq)
    finally:
        store._index.connection().set_trace_callback(None)
    assert statements and all(s == "PRAGMA data_version" for s in statements)


def test_expunges_since_a_modseq_in_uid_order(shared: Any) -> None:
    """Expunged out of UID order, in several changes: both reads give them ascending (the
    disk store reads them without ORDER BY, through its (mailbox_id, modseq) index)."""
    uids = deliver(shared, "user.alice", 6)
    modseq = shared.mailbox("user.alice").highestmodseq
    for batch in ([uids[4]], [uids[0], uids[5]], [uids[2]]):
        shared.expunge("user.alice", batch)
    expected = sorted([uids[0], uids[2], uids[4], uids[5]])
    assert shared.expunged_since("user.alice", modseq) == expected
    news = shared.mailbox_changes("user.alice", modseq)
    assert news is not None and news.expunged == expected


def test_changes_since_a_modseq_in_uid_order(shared: Any) -> None:
    """Flags changed out of UID order: both reads give the changed records ascending (the disk
    store reads them without ORDER BY, through its messages (mailbox_id, modseq) index)."""
    uids = deliver(shared, "user.alice", 6)
    modseq = shared.mailbox("user.alice").highestmodseq
    for uid in (uids[4], uids[1], uids[5], uids[0]):
        shared.set_flags("user.alice", [uid], ["\\Flagged"])
    expected = sorted([uids[0], uids[1], uids[4], uids[5]])
    assert [r.uid for r in shared.messages_since("user.alice", modseq)] == expected
    news = shared.mailbox_changes("user.alice", modseq)
    assert news is not None and [r.uid for r in news.changed] == expected


@pytest.mark.disk_only("the SQLite index's query plan")
@pytest.mark.parametrize(("query", "index"), [
    ("CHANGED_SINCE", "messages_modseq"), ("EXPUNGED_SINCE", "expunged_modseq"),
])
def test_since_modseq_reads_only_the_newer_rows(shared: DiskStore, query: str, index: str
                                                 ) -> None:
    """"Changed since modseq m" and "expunged since modseq m" (the index keeps a row per
    message ever expunged) find the newer rows by a (mailbox_id, modseq) index instead of
    reading every row of the mailbox, and an index made before that index gets it when
    opened."""
    from sealmail.store.disk import reading
    from sealmail.store.index import Index

    conn = shared._index.connection()
    plan = " ".join(str(row) for row in conn.execute(
        f"EXPLAIN QUERY PLAN {getattr(reading, query)}", (1, 0)))
    assert index in plan and "modseq>?" in plan
    with shared._index.transaction() as writing:
        writing.execute(f"DROP INDEX {index}")
    reopened = Index(shared._index.path)
    try:
        assert reopened.connection().execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'index' AND name = ?", (index,)
        ).fetchone() == (1,)
    finally:
        reopened.close()
