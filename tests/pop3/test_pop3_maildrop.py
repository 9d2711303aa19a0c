"""The maildrop as one POP3 session holds it, on the in-memory store (the daemon's own tests,
tests/server/test_pop3d.py, run the same through poplib)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.pop3 import LockedMaildrop, TooSoon
from sealmail.proto.pop3 import MaildropMessage
from sealmail.store.api import DeliveryTarget
from sealmail.store.errors import MailboxBusy, MailboxNotFound
from sealmail.store.memory import MemoryStore

INBOX = "user.alice"


@pytest.fixture
def store() -> MemoryStore:
    store = MemoryStore()
    store.create_mailbox(INBOX)
    for n in range(3):
        content = f"Subject: {n}\r\n\r\nbody {n}\r\n".encode()
        [result] = store.deliver(content, [DeliveryTarget(INBOX)])
        assert not isinstance(result, Exception)
    return store


def held(store: MemoryStore, tmp_path: Path, **options: bool) -> LockedMaildrop:
    return LockedMaildrop(store, INBOX, **options)


def test_open_lists_the_inbox_under_the_lock(store: MemoryStore, tmp_path: Path) -> None:
    first = held(store, tmp_path)
    listing = first.open(now=1000.0)
    records = store.messages(INBOX)
    assert listing.messages == tuple(MaildropMessage(r.uid, r.size) for r in records)
    assert listing.uidvalidity == store.mailbox(INBOX).uidvalidity  # type: ignore[union-attr]
    second = held(store, tmp_path)
    with pytest.raises(MailboxBusy):  # RFC 2449 [IN-USE], without waiting
        second.open(now=1000.0)
    first.release()
    second.open(now=1001.0)  # released: the next session gets in
    second.release()
    second.release()  # twice is harmless: the session releases however it ends


def test_update_expunges_and_remembers_the_login(store: MemoryStore, tmp_path: Path) -> None:
    uids = [r.uid for r in store.messages(INBOX)]
    session = held(store, tmp_path)
    session.open(now=1000.0)
    assert session.message(uids[0]).startswith(b"Subject: 0")
    assert session.update(deleted=uids[:2], retrieved=uids[2:]) == uids[:2]
    session.release()
    assert [r.uid for r in store.messages(INBOX)] == uids[2:]
    assert all("\\Seen" not in r.flags for r in store.messages(INBOX))  # not popuseimapflags
    # popminpoll (RFC 2449 LOGIN-DELAY) counts from the login of the last completed session.
    too_soon = held(store, tmp_path)
    with pytest.raises(TooSoon):
        too_soon.open(now=1000.0 + 59, min_poll=60)
    too_soon.release()  # as any failed open: the caller releases
    later = held(store, tmp_path)
    assert len(later.open(now=1000.0 + 60, min_poll=60).messages) == 1
    later.release()


def test_imap_flags_hide_deleted_and_mark_retrieved_seen(
    store: MemoryStore, tmp_path: Path
) -> None:
    uids = [r.uid for r in store.messages(INBOX)]
    store.set_flags(INBOX, [uids[0]], ["\\Deleted"])
    session = held(store, tmp_path, use_imap_flags=True)
    assert [m.uid for m in session.open(now=1.0).messages] == uids[1:]
    session.update(deleted=(), retrieved=uids[1:2])
    session.release()
    flags = {r.uid: r.flags for r in store.messages(INBOX)}
    assert "\\Seen" in flags[uids[1]] and "\\Seen" not in flags[uids[2]]


def test_no_mailbox_takes_no_lock(tmp_path: Path) -> None:
    with pytest.raises(MailboxNotFound):
        held(MemoryStore(), tmp_path).open(now=1.0)
    assert not (tmp_path / "lock").exists()
