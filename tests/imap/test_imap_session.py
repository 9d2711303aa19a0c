"""Session logic without sockets: names, the selected view's sync, subjects; store additions."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession, SelectedMailbox, SyncOptions, UserNamespace, fetching
from sealmail.imap.fetching import memo
from sealmail.proto.imap import Fetch, FetchAttribute, Search, SearchKey, SequenceSet, Store
from sealmail.store.api import DeliveryTarget, MessageStore
from sealmail.store.errors import InvalidMailboxName, OverQuota
from sealmail.store.sorting import base_subject

levels = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="./%*\"\\!^"),
    min_size=1, max_size=8,
).filter(lambda s: s.upper() != "INBOX")


@pytest.mark.parametrize("separator", [".", "/"])
@pytest.mark.parametrize("alternate", [False, True])
@given(path=st.lists(levels, min_size=1, max_size=4))
def test_personal_names_round_trip(separator: str, alternate: bool, path: list[str]) -> None:
    namespace = UserNamespace("user.alice", separator, alternate)
    external = separator.join(["INBOX", *path]) if not alternate else separator.join(path)
    if alternate and path[0] in ("Other Users", "Shared Folders"):
        return
    for utf8 in (False, True):
        wire = external if utf8 else namespace.to_external(namespace.to_internal(external, True))
        internal = namespace.to_internal(wire, utf8)
        assert internal.startswith("user.alice.")
        assert namespace.to_internal(namespace.to_external(internal, utf8), utf8) == internal


@given(st.text(max_size=30))
def test_to_internal_never_crashes_unexpectedly(text: str) -> None:
    namespace = UserNamespace("user.alice", ".", False)
    with contextlib.suppress(InvalidMailboxName):
        assert namespace.to_internal(text)


def test_cyrus_namespaces() -> None:
    standard = UserNamespace("user.alice")
    assert standard.to_internal("INBOX") == "user.alice"
    assert standard.to_internal("inbox.Sent") == "user.alice.Sent"
    assert standard.to_internal("user.bob.Lists") == "user.bob.Lists"
    assert standard.to_internal("Projects") == "Projects"
    assert standard.to_external("user.alice.Sent") == "INBOX.Sent"
    assert standard.to_external("user.bob") == "user.bob"
    alternate = UserNamespace("user.john^doe", "/", True)
    assert alternate.to_internal("Other Users/bob") == "user.bob"
    assert alternate.to_internal("Shared Folders/Projects") == "Projects"
    assert alternate.to_internal("Sent") == "user.john^doe.Sent"
    assert alternate.to_external("user.john^doe.a^b") == "a.b"
    assert alternate.to_external("user.john^doe") == "INBOX"
    assert alternate.to_external("Projects") == "Shared Folders/Projects"
    assert standard.to_external("user.alice.Caf&AOk-") == "INBOX.Caf&AOk-"
    assert standard.to_external("user.alice.Caf&AOk-", utf8=True) == "INBOX.Café"
    with pytest.raises(InvalidMailboxName):
        alternate.to_internal("Other Users")
    with pytest.raises(InvalidMailboxName):
        standard.to_internal("INBOX.a!b")


@pytest.mark.parametrize(("subject", "base"), [  # in i;ascii-casemap form (RFC 5256 3)
    ("Re: [list] Fwd: Hello (fwd)", "HELLO"),
    ("RE:  re: hello world ", "HELLO WORLD"),
    ("[Fwd: Meeting]", "MEETING"),
    ("", ""),
])
def test_base_subject(subject: str, base: str) -> None:
    assert base_subject(subject) == base


@pytest.fixture
def store(tmp_path: Path, backend: str) -> MessageStore:
    disk = open_store(backend, store_config(tmp_path))
    disk.create_mailbox("user.alice")
    disk.create_mailbox("user.alice.Archive")
    return disk


def _session(store: MessageStore) -> ImapSession:
    return ImapSession(store, SESSION_CONFIG, "alice", "user.alice")


def test_store_additions_flags_copy_structure_subscriptions(store: MessageStore) -> None:
    [first] = store.deliver(b"Subject: a\r\n\r\nx\r\n", [DeliveryTarget("user.alice", ("\\Seen",))])
    assert not isinstance(first, Exception)
    update = store.update_flags("user.alice", [1, 99], ["\\Flagged"], "add")
    assert [r.flags for r in update.records] == [("\\Seen", "\\Flagged")]
    modseq = update.records[0].modseq
    assert store.update_flags("user.alice", [1], ["\\flagged"], "remove").records[0].flags == (
        "\\Seen",)
    refused = store.update_flags("user.alice", [1], ["x"], "set", unchanged_since=modseq)
    assert refused.refused == [1]
    assert [r.uid for r in store.messages_since("user.alice", modseq)] == [1]
    copied = store.copy_messages("user.alice", [1], "user.alice.Archive")
    assert copied.pairs == [(1, 1)]
    assert store.messages("user.alice.Archive")[0].flags == ("\\Seen",)
    assert store.message_bytes("user.alice.Archive", 1) == b"Subject: a\r\n\r\nx\r\n"
    store.set_quota("user.alice", None, 2)
    with pytest.raises(OverQuota):
        store.copy_messages("user.alice", [1], "user.alice.Archive")
    assert store.expunge("user.alice", [1]) == [1]
    assert store.expunged_since("user.alice", 0) == [1]
    assert store.message_structures("user.alice.Archive", [1, 7]) == {}
    store.save_message_structures("user.alice.Archive", {1: b"[1]"})
    assert store.message_structures("user.alice.Archive", [1, 7]) == {1: b"[1]"}
    store.subscribe("alice", "user.alice.Archive")
    assert store.subscriptions("alice") == ["user.alice.Archive"]
    assert store.unsubscribe("alice", "user.alice.Archive") is True
    assert store.subscriptions("alice") == []
    store.set_special_use("user.alice.Archive", "\\Archive")
    assert store.special_uses() == {"user.alice.Archive": "\\Archive"}


def test_structure_is_parsed_once_and_kept(store: MessageStore,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store.deliver(b"Subject: kept\r\n\r\nbody\r\n", [DeliveryTarget("user.alice")])
    session = _session(store)
    session.selected = SelectedMailbox.open(store, "user.alice", False)
    session.execute(Fetch("a", SequenceSet.all(), (FetchAttribute("ENVELOPE"),)))
    blob = store.message_structures("user.alice", [1])[1]
    assert b"kept" in blob
    store.save_message_structures("user.alice", {1: blob.replace(b"kept", b"KEPT")})
    out = session.execute(Fetch("b", SequenceSet.all(), (FetchAttribute("ENVELOPE"),)))
    assert "kept" in repr(out[0])  # served from the process's memo, no query
    monkeypatch.setattr(fetching.columns, "memos_for", lambda store: memo.FetchMemos())
    out = session.execute(Fetch("c", SequenceSet.all(), (FetchAttribute("ENVELOPE"),)))
    assert "KEPT" in repr(out[0])  # served from the index, not parsed again


def test_sync_defers_expunge_during_fetch_store_search(store: MessageStore) -> None:
    for _ in range(2):
        store.deliver(b"Subject: s\r\n\r\nb\r\n", [DeliveryTarget("user.alice")])
    session = _session(store)
    session.selected = SelectedMailbox.open(store, "user.alice", False)
    store.expunge("user.alice", [1])
    out = session.execute(Search("s", SearchKey("AND", (SearchKey("ALL"),))))
    assert all("EXPUNGE" not in repr(r) for r in out)
    out = session.execute(Store("t", SequenceSet.all(), "+", False, ("\\Seen",)))
    assert all("EXPUNGE" not in repr(r) for r in out)
    out = session.execute(Search("u", SearchKey("AND", (SearchKey("ALL"),)), by_uid=True))
    assert any("EXPUNGE" in repr(r) for r in out)
    assert session.selected.uids == [2]
    assert session.selected.sync(store, SyncOptions(), True) == []
