"""The flag snapshot SELECT starts from, kept by the process (sealmail.imap.snapshots), is the
one the store reads afresh: after any mix of new mail, expunges, flag and keyword changes, the
owner's and another reader's \\Seen, the mailbox made again, and a session's own changes
handed over when it selects the mailbox again (hypothesis, both backends);
and EXAMINE / FETCH FLAGS answer the same bytes with it as without it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession, selected, snapshots
from sealmail.imap.snapshots import KeptSnapshots
from sealmail.proto.imap import ParserLimits, parse_command, render
from sealmail.store.api import DeliveryTarget, FlagSnapshot, MessageStore

READERS = ("fred", "bob")  # the owner (\Seen in the index) and a reader with their own


def deliver(store: MessageStore, n: int) -> None:
    store.deliver(b"Subject: %d\r\n\r\nbody %d\r\n" % (n, n), [DeliveryTarget("user.fred", ())])


def run(session: ImapSession, line: str) -> bytes:
    responses = session.execute(parse_command(line.encode() + b"\r\n", ParserLimits()))
    return b"".join(render(r) for r in responses)


def fields(snapshot: FlagSnapshot) -> tuple[object, ...]:
    info = snapshot.mailbox
    return (info.uidvalidity, info.uidnext, info.highestmodseq, info.exists, snapshot.uids,
            snapshot.modseqs, snapshot.flag_ids, snapshot.flag_sets)


@pytest.fixture
def every_mailbox(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the snapshots of small mailboxes too (the tests' are)."""
    monkeypatch.setattr(snapshots, "SMALLEST", 0)


def shared_store(root: Path, backend: str) -> MessageStore:
    store = open_store(backend, store_config(root))
    store.create_mailbox("user.fred")
    store.create_mailbox("user.bob")
    store.set_acl("user.fred", "bob", "lrsw")
    for n in range(5):
        deliver(store, n)
    return store


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[MessageStore]:
    opened = shared_store(tmp_path, backend)
    yield opened
    opened.close()


@pytest.mark.usefixtures("every_mailbox")
def test_an_unchanged_mailbox_reads_only_its_changes(store: MessageStore,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    kept = KeptSnapshots()
    first = kept.snapshot(store, "user.fred", "fred")
    read: list[str] = []
    monkeypatch.setattr(store, "flag_snapshot", lambda *a: read.append("snapshot"))
    again = kept.snapshot(store, "user.fred", "fred")
    assert fields(again) == fields(first) and read == []
    again.uids.append(99)  # the caller's own lists
    assert fields(kept.snapshot(store, "user.fred", "fred")) == fields(first)
    store.update_flags("user.fred", [2], ["$x"], "add")
    deliver(store, 9)
    assert fields(kept.snapshot(store, "user.fred", "fred"))[4] == [1, 2, 3, 4, 5, 6]
    assert read == []


@pytest.mark.usefixtures("every_mailbox")
def test_a_mailbox_made_again_is_read_afresh(store: MessageStore) -> None:
    kept = KeptSnapshots()
    kept.snapshot(store, "user.fred", "fred")
    store.delete_mailbox("user.fred")
    store.create_mailbox("user.fred")
    deliver(store, 1)
    assert fields(kept.snapshot(store, "user.fred", "fred")) == fields(
        store.flag_snapshot("user.fred", "fred"))


@pytest.mark.usefixtures("every_mailbox")
def test_a_session_selecting_again_hands_over_its_view(store: MessageStore) -> None:
    """Its own many changes, new mail it was told of (\\Recent in its view, not in a
    snapshot) and an expunge it has noted but not announced: the next SELECT starts from its
    view, and only what came after is read."""
    kept = snapshots.snapshots_for(store)
    own = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    run(own, "a SELECT INBOX")
    deliver(store, 5)
    run(own, "b STORE 1:* +FLAGS ($c)")  # told of the new message too
    store.expunge("user.fred", [2])
    assert b"EXPUNGE" not in run(own, "c SEARCH ALL")  # noted, not announced
    view = own.selected
    assert view is not None and view.vanished == {2} and 6 in view.recent
    asked: list[int] = []
    changes = store.mailbox_changes

    def mailbox_changes(name: str, modseq: int, reader: str | None = None) -> object:
        asked.append(modseq)
        return changes(name, modseq, reader)

    store.mailbox_changes = mailbox_changes  # type: ignore[method-assign]
    snapshot = store.flag_snapshot
    store.flag_snapshot = None  # type: ignore[assignment, method-assign]  # not read afresh
    run(own, "d SELECT INBOX")
    assert asked[0] == view.highestmodseq  # caught up from the view handed over
    assert fields(kept.snapshot(store, "user.fred", "fred")) == fields(
        snapshot("user.fred", "fred"))


def test_small_mailboxes_are_not_kept(store: MessageStore) -> None:
    kept = KeptSnapshots()
    kept.snapshot(store, "user.fred", "fred")
    assert not kept._kept


@pytest.mark.usefixtures("every_mailbox")
def test_the_kept_snapshots_are_bounded(store: MessageStore) -> None:
    kept = KeptSnapshots(mailboxes=2, messages=7)
    kept.snapshot(store, "user.fred", "fred")
    kept.snapshot(store, "user.fred", "bob")
    assert len(kept._kept) == 1  # 10 messages in all: over 7
    kept = KeptSnapshots(mailboxes=2)
    for reader in ("fred", "bob", "carol"):
        kept.snapshot(store, "user.fred", reader)
    assert list(kept._kept) == [("user.fred", "bob"), ("user.fred", "carol")]


steps = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), st.integers(1, 3), st.none()),
        st.tuples(st.just("expunge"), st.integers(0, 30), st.integers(1, 3)),
        st.tuples(st.just("flag"), st.integers(0, 30),
                  st.tuples(st.sampled_from(["add", "remove"]),
                            st.sampled_from(["\\Seen", "\\Flagged", "$a", "$b", "\\Deleted"]),
                            st.sampled_from(READERS))),
        st.tuples(st.just("recreate"), st.none(), st.none()),
        st.tuples(st.just("store"), st.integers(0, 30),
                  st.tuples(st.sampled_from(["+", "-"]), st.sampled_from(["\\Seen", "$c"]))),
        st.tuples(st.just("reselect"), st.sampled_from(["SELECT", "EXAMINE", "NOOP"]),
                  st.none()),
        st.tuples(st.just("check"), st.sampled_from(READERS), st.none()),
        st.tuples(st.just("check"), st.sampled_from(READERS), st.none()),
    ),
    max_size=25,
)


def play(root: Path, backend: str, plan: list[tuple[str, object, object]]) -> None:
    """`plan` on fred's INBOX (bob may read it, with his own \\Seen); at each check, the kept
    snapshot is the store's, and EXAMINE and FETCH 1:* (FLAGS UID) answer alike with it."""
    store = shared_store(root, backend)
    kept = snapshots.snapshots_for(store)  # the one sessions use
    own = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")  # selects again (`offer`)
    run(own, "a SELECT INBOX")
    delivered = 5
    for kind, value, extra in plan:
        uids = store.flag_snapshot("user.fred").uids
        if kind == "deliver":
            assert isinstance(value, int)
            for _ in range(value):
                deliver(store, delivered)
                delivered += 1
        elif kind == "expunge" and uids:
            assert isinstance(value, int) and isinstance(extra, int)
            store.expunge("user.fred", uids[value % len(uids):][:extra])
        elif kind == "flag" and uids:
            assert isinstance(value, int) and isinstance(extra, tuple)
            mode, flag, reader = extra
            store.update_flags("user.fred", [uids[value % len(uids)]], [flag], mode,
                               reader=reader)
        elif kind == "recreate":
            store.delete_mailbox("user.fred")
            store.create_mailbox("user.fred")
            store.set_acl("user.fred", "bob", "lrsw")
        elif kind == "store" and uids:
            assert isinstance(value, int) and isinstance(extra, tuple)
            run(own, f"s UID STORE {uids[value % len(uids)]} {extra[0]}FLAGS ({extra[1]})")
        elif kind == "reselect":
            run(own, f"s {value} INBOX" if value != "NOOP" else "s NOOP")
        elif kind == "check":
            reader = str(value)
            assert fields(kept.snapshot(store, "user.fred", reader)) == fields(
                store.flag_snapshot("user.fred", reader))
            examined(store, kept, reader)
    store.close()


def examined(store: MessageStore, kept: KeptSnapshots, reader: str) -> None:
    """EXAMINE and FETCH FLAGS as `reader`, with the kept snapshots and without."""
    mailbox = "INBOX" if reader == "fred" else "user.fred"
    answers = []
    for source in (lambda _: kept, lambda _: Afresh()):
        selected.snapshots_for = source  # type: ignore[assignment]
        try:
            session = ImapSession(store, SESSION_CONFIG, reader, f"user.{reader}")
            answers.append(run(session, f"a EXAMINE \"{mailbox}\"")
                           + run(session, "b FETCH 1:* (FLAGS UID)"))
        finally:
            selected.snapshots_for = snapshots.snapshots_for
    assert answers[0] == answers[1]


class Afresh(KeptSnapshots):
    def snapshot(self, store: object, name: str, reader: str | None) -> FlagSnapshot:
        return store.flag_snapshot(name, reader)  # type: ignore[attr-defined, no-any-return]


@settings(max_examples=2000 if os.environ.get("SEALMAIL_LONG") else 150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
@pytest.mark.usefixtures("every_mailbox")
def test_kept_snapshots_are_the_stores_memory(tmp_path_factory: pytest.TempPathFactory,
                                              plan: list[tuple[str, object, object]]) -> None:
    play(tmp_path_factory.mktemp("s"), "memory", plan)


@settings(max_examples=500 if os.environ.get("SEALMAIL_LONG") else 25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
@pytest.mark.usefixtures("every_mailbox")
def test_kept_snapshots_are_the_stores_disk(tmp_path_factory: pytest.TempPathFactory,
                                            plan: list[tuple[str, object, object]]) -> None:
    play(tmp_path_factory.mktemp("s"), "disk", plan)
