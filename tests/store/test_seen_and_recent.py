"""Per-user \\Seen and the \\Recent marks in the store (sealmail.store.seen, DiskStore): the UID
set form, whose \\Seen the index keeps, every flag-reading and flag-writing method given a
reader, claim_recent (also from several processes at once), reconstruct and the migration."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.store.conftest import make_config, on_disk
from tests.support.stores import index_of_version_11

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.store.api import DeliveryTarget, flags_after
from sealmail.store.disk import DiskStore
from sealmail.store.errors import MailboxCorrupt, MailboxNotFound
from sealmail.store.seen import UidSet, index_keeps_seen, with_seen
from sealmail.store.sorting import SORT_COLUMNS

MESSAGE = b"From: a@example.com\r\nSubject: hi\r\n\r\nbody\r\n"
SEEN = "\\Seen"


def deliver(store: DiskStore, mailbox: str, count: int, flags: tuple[str, ...] = ()) -> None:
    for _ in range(count):
        store.deliver(MESSAGE, [DeliveryTarget(mailbox, flags)])


def flags(store: DiskStore, mailbox: str, reader: str | None = None) -> list[tuple[str, ...]]:
    return [r.flags for r in store.messages(mailbox, reader)]


@pytest.fixture
def shared(store: DiskStore) -> DiskStore:
    """alice's INBOX with three messages, the first read by alice; bob may read it."""
    for name in ("user.alice", "user.bob", "user.bob.Saved"):
        store.create_mailbox(name)
    store.set_acl("user.alice", "bob", "lrswi")
    deliver(store, "user.alice", 1, (SEEN,))
    deliver(store, "user.alice", 2)
    return store


# -- the UID set --------------------------------------------------------------------------------


uid_sets = st.sets(st.integers(1, 60), max_size=30)


@given(uid_sets)
def test_uid_set_round_trips_and_is_canonical(uids: set[int]) -> None:
    made = UidSet.of(uids)
    assert UidSet.parse(made.render()) == made
    assert [uid for uid in range(1, 62) if uid in made] == sorted(uids)
    assert made.members(list(range(1, 62))) == [uid in uids for uid in range(1, 62)]
    rendered = made.render()
    assert ",," not in rendered and not rendered.startswith(",")


@given(uid_sets, uid_sets)
def test_uid_set_union_and_difference(first: set[int], second: set[int]) -> None:
    made = UidSet.of(first)
    assert made.union(second) == UidSet.of(first | second)
    assert made.difference(second) == UidSet.of(first - second)
    assert made.restricted_to(sorted(second)) == UidSet.of(first & second)


def test_uid_set_text_form() -> None:
    assert UidSet.of([1, 2, 3, 5, 9, 10]).render() == "1:3,5,9:10"
    assert UidSet.parse("7:5,1") == UidSet.of([1, 5, 6, 7])  # RFC 3501 9: either order
    assert UidSet.parse("").render() == "" and not UidSet.parse("")
    for bad in ("0", "1:", "a", "1,,2", "*", "1:*", " 1"):
        with pytest.raises(MailboxCorrupt):
            UidSet.parse(bad)


def test_whose_seen_the_index_keeps() -> None:
    assert index_keeps_seen("user.alice.Sent", "alice")
    assert index_keeps_seen("user.alice", None)  # delivery, POP, tools
    assert index_keeps_seen("example.com!user.alice", "alice@example.com")
    assert not index_keeps_seen("example.com!user.alice", "alice")
    assert not index_keeps_seen("user.alice", "bob")
    assert not index_keeps_seen("Projects", "alice")  # shared: nobody owns it
    assert index_keeps_seen("Projects", None)
    assert with_seen(("\\Seen", "\\Flagged"), False) == ("\\Flagged",)
    assert with_seen(("\\Flagged",), True) == ("\\Flagged", "\\Seen")


# -- reading and writing \Seen for a reader -------------------------------------------------------


def test_a_readers_seen_is_their_own(shared: DiskStore) -> None:
    store = shared
    assert flags(store, "user.alice") == [(SEEN,), (), ()]
    assert flags(store, "user.alice", "alice") == [(SEEN,), (), ()]
    assert flags(store, "user.alice", "bob") == [(), (), ()]
    before = store.mailbox("user.alice")
    assert before is not None
    update = store.update_flags("user.alice", [2, 3], [SEEN], "add", reader="bob")
    assert [r.flags for r in update.records] == [(SEEN,), (SEEN,)]
    # alice's flags did not change; every changed message got a new modseq (as Cyrus).
    assert flags(store, "user.alice") == [(SEEN,), (), ()]
    assert flags(store, "user.alice", "bob") == [(), (SEEN,), (SEEN,)]
    after = store.mailbox("user.alice")
    assert after is not None and after.highestmodseq == before.highestmodseq + 2
    assert [r.uid for r in store.messages_since("user.alice", before.highestmodseq, "bob")] == [
        2, 3]
    assert [r.flags for r in store.message_records("user.alice", [3, 1], "bob")] == [(), (SEEN,)]
    snapshot = store.flag_snapshot("user.alice", "bob")
    assert [snapshot.flag_sets[i] for i in snapshot.flag_ids] == [(), (SEEN,), (SEEN,)]
    snapshot = store.flag_snapshot("user.alice", "alice")
    assert [snapshot.flag_sets[i] for i in snapshot.flag_ids] == [(SEEN,), (), ()]
    # Nothing changes: nothing written, no modseq.
    again = store.update_flags("user.alice", [2], [SEEN], "add", reader="bob")
    assert again.records[0].modseq == update.records[0].modseq
    assert store.mailbox("user.alice") == after


def test_set_and_remove_keep_the_owners_seen(shared: DiskStore) -> None:
    store = shared
    store.update_flags("user.alice", [1, 2], [SEEN, "\\Flagged"], "set", reader="bob")
    assert flags(store, "user.alice") == [("\\Flagged", SEEN), ("\\Flagged",), ()]
    assert flags(store, "user.alice", "bob") == [("\\Flagged", SEEN), ("\\Flagged", SEEN), ()]
    store.update_flags("user.alice", [1, 2], ["\\seen"], "remove", reader="bob")
    assert flags(store, "user.alice") == [("\\Flagged", SEEN), ("\\Flagged",), ()]
    assert flags(store, "user.alice", "bob") == [("\\Flagged",), ("\\Flagged",), ()]
    store.update_flags("user.alice", [1], ["\\Draft"], "set", reader="bob")
    assert flags(store, "user.alice") == [("\\Draft", SEEN), ("\\Flagged",), ()]


def test_unchanged_since_refuses_for_a_reader_too(shared: DiskStore) -> None:
    store = shared
    modseq = store.messages("user.alice")[1].modseq
    store.update_flags("user.alice", [2], ["\\Flagged"], "add")
    update = store.update_flags("user.alice", [2], [SEEN], "add", modseq, reader="bob")
    assert update.refused == [2]
    assert flags(store, "user.alice", "bob")[1] == ("\\Flagged",)


def test_append_copy_and_expunge(shared: DiskStore) -> None:
    store = shared
    store.deliver(MESSAGE, [DeliveryTarget("user.alice", (SEEN, "\\Flagged"), reader="bob"),
                            DeliveryTarget("user.bob", (SEEN,), reader="bob")])
    assert flags(store, "user.alice")[3] == ("\\Flagged",)
    assert flags(store, "user.alice", "bob")[3] == ("\\Flagged", SEEN)
    assert flags(store, "user.bob") == [(SEEN,)]  # bob's own: the index
    # bob copies all four: each copy has \Seen as bob saw it, kept where bob's is kept.
    store.update_flags("user.alice", [2], [SEEN], "add", reader="bob")
    copied = store.copy_messages("user.alice", [1, 2, 3, 4], "user.bob.Saved", reader="bob")
    assert [new for _, new in copied.pairs] == [1, 2, 3, 4]
    assert flags(store, "user.bob.Saved") == [(), (SEEN,), (), ("\\Flagged", SEEN)]
    # ...and back into alice's: alice's index never gets bob's \Seen.
    store.copy_messages("user.bob.Saved", [2], "user.alice", reader="bob")
    assert flags(store, "user.alice")[4] == ()
    assert flags(store, "user.alice", "bob")[4] == (SEEN,)
    # alice copies her own into bob's folder: a plain copy of what alice sees.
    store.copy_messages("user.alice", [1], "user.bob.Saved", reader="alice")
    assert flags(store, "user.bob.Saved")[4] == ()
    assert flags(store, "user.bob.Saved", "alice")[4] == (SEEN,)
    # Without a reader a copy is as stored (what RENAME INBOX uses).
    store.copy_messages("user.alice", [1], "user.bob.Saved")
    assert flags(store, "user.bob.Saved")[5] == (SEEN,)
    # Expunged UIDs leave the seen states.
    store.expunge("user.alice", [2, 4])
    if on_disk(store):
        seen = _sql(store, "SELECT uids FROM seen WHERE userid = 'bob' AND mailbox_id ="
                           " (SELECT id FROM mailboxes WHERE name = 'user.alice')")
        assert seen == [("5",)]


def test_deleting_a_user_drops_their_seen_states(shared: DiskStore) -> None:
    store = shared
    store.update_flags("user.alice", [2], [SEEN], "add", reader="bob")
    store.claim_recent("user.alice", 3, "bob")
    store.delete_mailbox("user.bob")
    if on_disk(store):
        assert _sql(store, "SELECT count(*) FROM seen") == [(0,)]
    store.create_mailbox("user.bob")
    assert flags(store, "user.alice", "bob") == [(), (), ()]
    assert store.claim_recent("user.alice", 0, "bob") == 0
    # A deleted mailbox takes everyone's state with it.
    store.update_flags("user.alice", [2], [SEEN], "add", reader="bob")
    store.delete_mailbox("user.alice")
    if on_disk(store):
        assert _sql(store, "SELECT count(*) FROM seen") == [(0,)]


def test_rename_keeps_seen_states(shared: DiskStore) -> None:
    store = shared
    store.create_mailbox("Projects")
    deliver(store, "Projects", 2)
    store.update_flags("Projects", [2], [SEEN], "add", reader="bob")
    store.rename_mailbox("Projects", "Archive")
    assert flags(store, "Archive", "bob") == [(), (SEEN,)]
    assert flags(store, "Archive", "alice") == [(), ()]


# -- \Recent ----------------------------------------------------------------------------------


def test_claim_recent_hands_each_uid_out_once(shared: DiskStore) -> None:
    store = shared
    assert store.claim_recent("user.alice", 2) == 0  # UIDs 1..2 are this caller's
    assert store.claim_recent("user.alice", 3) == 2  # UID 3
    assert store.claim_recent("user.alice", 3) == 3  # nothing left
    assert store.claim_recent("user.alice", 1) == 3  # never goes down
    assert store.claim_recent("user.alice", 99) == 3  # never past the last UID given out
    deliver(store, "user.alice", 1)
    assert store.claim_recent("user.alice", 0) == 3  # reads only
    assert store.claim_recent("user.alice", 99) == 3
    assert store.claim_recent("user.alice", 0) == 4
    # Another reader has a mark of their own; alice's own reader id is the index's mark.
    assert store.claim_recent("user.alice", 4, "bob") == 0
    assert store.claim_recent("user.alice", 4, "alice") == 4
    assert store.claim_recent("user.alice", 0, "carol") == 0
    with pytest.raises(MailboxNotFound):
        store.claim_recent("user.nobody", 1)


@pytest.mark.disk_only("the SQLite index's write-ahead log")
def test_claim_without_a_change_writes_nothing(shared: DiskStore) -> None:
    store = shared
    store.claim_recent("user.alice", 3)
    wal = store.configdirectory / "mailboxes.db-wal"
    store._index.connection().execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert wal.stat().st_size == 0
    store.claim_recent("user.alice", 3)
    store.claim_recent("user.alice", 0)
    assert wal.stat().st_size == 0  # no transaction wrote anything
    store.claim_recent("user.alice", 0, "bob")  # a reader without a row yet: none made
    assert wal.stat().st_size == 0


def _claim_many(root: Path, uids: int, start: Any, out: Any) -> None:
    """In a process of its own: claim as a session would, one new UID at a time."""
    store = DiskStore.from_config(make_config(root))
    mine: list[int] = []
    start.wait(60)  # all together
    try:
        for upto in range(1, uids + 1):
            mark = store.claim_recent("user.alice", upto)
            mine.extend(range(mark + 1, upto + 1))
    finally:
        store.close()
    out.put(mine)


def test_claims_from_several_processes_never_overlap(tmp_path: Path) -> None:
    store = DiskStore.from_config(make_config(tmp_path))
    store.create_mailbox("user.alice")
    deliver(store, "user.alice", 40)
    store.close()
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[list[int]] = context.Queue()
    start = context.Barrier(4)
    workers = [context.Process(target=_claim_many, args=(tmp_path, 40, start, queue))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    claimed = [queue.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    everything = sorted(uid for mine in claimed for uid in mine)
    assert everything == list(range(1, 41))  # every UID claimed exactly once


# -- reconstruct and the migration ---------------------------------------------------------------


def _sql(store: DiskStore, statement: str) -> list[tuple[object, ...]]:
    return store._index.connection().execute(statement).fetchall()


@pytest.mark.disk_only("reconstruct")
def test_reconstruct_trims_seen_states_and_marks(shared: DiskStore) -> None:
    store = shared
    store.update_flags("user.alice", [1, 2, 3], [SEEN], "add", reader="bob")
    store.claim_recent("user.alice", 3, "bob")
    (store.mailbox_path("user.alice") / "3.").unlink()  # a lost file
    _sql(store, "UPDATE seen SET recentuid = 50")
    store._index.connection().commit()
    fixes = store.reconstruct("user.alice")
    assert any("seen state of bob" in fix for fix in fixes), fixes
    assert any("Recent mark" in fix for fix in fixes), fixes
    assert flags(store, "user.alice", "bob") == [(SEEN,), (SEEN,)]
    assert store.claim_recent("user.alice", 0, "bob") == 3
    assert store.reconstruct("user.alice") == []


@pytest.mark.disk_only("reconstruct")
def test_adopted_mailbox_has_nothing_recent(shared: DiskStore) -> None:
    store = shared
    _sql(store, "DELETE FROM mailboxes WHERE name = 'user.alice'")
    store.reconstruct("user.alice")
    assert store.claim_recent("user.alice", 0) == 3


def test_migration_from_schema_3_counts_old_mail_as_announced(config: ImapdConfig,
                                                              tmp_path: Path) -> None:
    store = DiskStore.from_config(config)
    store.create_mailbox("user.alice")
    deliver(store, "user.alice", 3)
    store.close()
    index = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    index.execute("DROP TABLE seen")
    index.execute("ALTER TABLE mailboxes DROP COLUMN recentuid")
    for column in (*SORT_COLUMNS, "listed"):  # what versions 5 and 6 added
        index.execute(f"ALTER TABLE header_index DROP COLUMN {column}")
    index.execute("ALTER TABLE quotaroots DROP COLUMN warned")  # what version 8 added
    index_of_version_11(index)
    index.execute("PRAGMA user_version=3")
    index.close()
    store = DiskStore.from_config(config)
    try:
        assert store.claim_recent("user.alice", 0) == 3
        assert flags(store, "user.alice", "bob") == [(), (), ()]
    finally:
        store.close()


# -- a model of the two \Seen states --------------------------------------------------------------


FLAG_CHOICES = st.lists(st.sampled_from([SEEN, "\\Flagged", "\\Deleted", "$Work"]), max_size=3)
OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["alice", "bob"]), st.sets(st.integers(1, 4), min_size=1),
              FLAG_CHOICES, st.sampled_from(["set", "add", "remove"])),
    min_size=1, max_size=8,
)


@settings(max_examples=60, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_owner_and_reader_updates_agree_with_a_model(store: DiskStore, operations: list[
        tuple[str, set[int], list[str], str]]) -> None:
    """Random STOREs by the owner and by a reader: each sees their own \\Seen and everyone's
    other flags, whatever the order."""
    name = f"user.alice.t{len(store.list_mailboxes())}"
    if store.mailbox("user.alice") is None:
        store.create_mailbox("user.alice")
    store.create_mailbox(name)
    deliver(store, name, 4)
    others: dict[int, set[str]] = {uid: set() for uid in range(1, 5)}  # the shared flags
    seen = {"alice": set[int](), "bob": set[int]()}
    for who, uids, wanted, mode in operations:
        store.update_flags(name, sorted(uids), wanted, mode, reader=who)
        for uid in uids:
            current = others[uid] | ({SEEN} if uid in seen[who] else set())
            new = set(flags_after(sorted(current), wanted, mode))
            others[uid] = new - {SEEN}
            (seen[who].add if SEEN in new else seen[who].discard)(uid)
    for who in ("alice", "bob"):
        expected = [others[uid] | ({SEEN} if uid in seen[who] else set()) for uid in range(1, 5)]
        assert [set(f) for f in flags(store, name, who)] == expected
        snapshot = store.flag_snapshot(name, who)
        assert [set(snapshot.flag_sets[i]) for i in snapshot.flag_ids] == expected
