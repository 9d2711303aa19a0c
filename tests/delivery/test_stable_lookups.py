"""RCPT lookups kept while the namespace stamp holds (sealmail.delivery.recipient.StableLookups):
one query per LMTP transaction, and every namespace change, by another process too, seen by the
next transaction."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.stores import index_of_version_11

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.errors import MailboxNotFound, OverQuota, PermissionDenied

MESSAGE = b"Subject: x\r\n\r\nbody\r\n"


@pytest.fixture
def config(tmp_path: Path) -> ImapdConfig:
    return parse_imapd_conf(f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n")


@pytest.fixture
def store(config: ImapdConfig) -> Iterator[DiskStore]:
    with DiskStore.from_config(config) as store:
        store.create_mailbox("user.alice")
        yield store


@pytest.fixture
def other(config: ImapdConfig, store: DiskStore) -> Iterator[DiskStore]:
    """Another process's store (an imapd's, `sealmail mailbox`'s): its own connections."""
    with DiskStore.from_config(config) as other:
        yield other


def check(engine: DeliveryEngine, user: str, fresh: bool = True) -> str:
    return engine.check_recipient(user, None, ignore_quota=False, fresh=fresh).mailbox


def test_one_stamp_query_per_transaction_and_none_per_later_rcpt(
    config: ImapdConfig, store: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("bob", "carol"):
        store.create_mailbox(f"user.{user}")
    engine = DeliveryEngine(config, store, None)
    for user in ("alice", "bob", "carol"):
        check(engine, user)  # kept from here on
    asked: list[str] = []
    monkeypatch.setattr(store, "mailbox", lambda name: asked.append(name))
    monkeypatch.setattr(store, "check_quota", lambda *args: asked.append("quota"))
    stamps: list[int] = []
    stamp_of = engine.lookups._stamp_of  # type: ignore[union-attr]
    engine.lookups._stamp_of = lambda: stamps.append(1) or stamp_of()  # type: ignore[union-attr]
    assert [check(engine, u, fresh=u == "alice") for u in ("alice", "bob", "carol")] == [
        "user.alice", "user.bob", "user.carol"
    ]
    assert (asked, len(stamps)) == ([], 1)


def test_deliveries_do_not_move_the_stamp(config: ImapdConfig, store: DiskStore) -> None:
    engine = DeliveryEngine(config, store, None)
    before = store.namespace_stamp()
    recipients = (engine.check_recipient("alice", None, ignore_quota=False),)
    assert engine.deliver(Envelope("", recipients, "S1"), MESSAGE)[0].code == 250
    store.set_flags("user.alice", [1], ["\\Seen"])
    assert store.namespace_stamp() == before


@pytest.mark.parametrize(
    "change",
    [
        lambda s: s.create_mailbox("user.bob"),
        lambda s: s.delete_mailbox("user.alice"),
        lambda s: s.rename_mailbox("user.alice", "user.bob"),
        lambda s: s.set_acl("user.alice", "anyone", "p"),
        lambda s: s.set_quota("user.alice", 1, None),
        lambda s: (s.set_quota("user.alice", 1, None), s.set_quota("user.alice", None, None)),
    ],
    ids=["create", "delete", "rename", "setacl", "setquota", "quota-removed"],
)
def test_every_namespace_change_of_another_process_moves_the_stamp(
    store: DiskStore, other: DiskStore, change: object
) -> None:
    before = store.namespace_stamp()
    change(other)  # type: ignore[operator]
    assert store.namespace_stamp() != before


def test_a_mailbox_created_or_deleted_elsewhere_is_seen_by_the_next_transaction(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    engine = DeliveryEngine(config, store, None)
    with pytest.raises(MailboxNotFound):
        check(engine, "bob")
    other.create_mailbox("user.bob")
    with pytest.raises(MailboxNotFound):  # within the transaction: as it was
        check(engine, "bob", fresh=False)
    assert check(engine, "bob") == "user.bob"  # the next transaction
    other.delete_mailbox("user.bob")
    with pytest.raises(MailboxNotFound):
        check(engine, "bob")


def test_a_delivery_to_a_mailbox_deleted_after_its_rcpt_fails_that_recipient_alone(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    other.create_mailbox("user.bob")
    engine = DeliveryEngine(config, store, None)
    recipients = tuple(
        engine.check_recipient(u, None, ignore_quota=False, fresh=u == "alice")
        for u in ("alice", "bob")
    )
    other.delete_mailbox("user.bob")
    alice, bob = engine.deliver(Envelope("", recipients, "S1"), MESSAGE)
    assert alice.code == 250 and bob.code >= 400
    assert len(store.messages("user.alice")) == 1


def test_an_acl_change_elsewhere_is_seen_by_the_next_transaction(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    other.create_mailbox("user.alice.lists", acl={"alice": "lrswipkxtecda"})
    engine = DeliveryEngine(config, store, None)
    recipient = engine.check_recipient("alice+lists", None, ignore_quota=False)
    assert recipient.mailbox == "user.alice"  # no p right for anyone: the INBOX
    other.set_acl("user.alice.lists", "anyone", "p")
    assert engine.check_recipient("alice+lists", None, ignore_quota=False).mailbox == (
        "user.alice.lists"
    )
    other.create_mailbox("shared", acl={"anyone": "p"})
    assert engine.check_recipient("+shared", None, ignore_quota=False).mailbox == "shared"
    other.set_acl("shared", "anyone", "")
    with pytest.raises(PermissionDenied):
        engine.check_recipient("+shared", None, ignore_quota=False)


def test_quota_roots_set_elsewhere_are_enforced_from_the_next_transaction(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    engine = DeliveryEngine(config, store, None)
    check(engine, "alice")  # no root: kept as ungoverned
    other.set_quota("user.alice", 0, None)  # full at once
    with pytest.raises(OverQuota):
        check(engine, "alice")
    other.set_quota("user.alice", None, None)
    assert check(engine, "alice") == "user.alice"


def test_usage_under_a_root_is_read_at_every_rcpt(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    """The root is kept; its usage moves with deliveries and is never kept."""
    other.set_quota("user.alice", 1, None)  # 1 KiB
    engine = DeliveryEngine(config, store, None)
    check(engine, "alice")
    other.deliver(b"x" * 2048, [DeliveryTarget("user.alice", ignore_quota=True)])
    with pytest.raises(OverQuota):
        check(engine, "alice", fresh=False)


def test_an_index_of_version_8_gains_the_stamp(config: ImapdConfig, store: DiskStore) -> None:
    store.close()
    conn = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'").fetchall():
        conn.execute(f"DROP TRIGGER {name}")
    conn.execute("DROP TABLE namespace")
    index_of_version_11(conn)
    conn.execute("PRAGMA user_version=8")
    conn.close()
    with DiskStore.from_config(config) as again:
        before = again.namespace_stamp()
        again.create_mailbox("user.bob")
        assert again.namespace_stamp() == before + 1


def test_an_address_resolved_once_is_kept_while_the_stamp_holds(
    config: ImapdConfig, store: DiskStore, other: DiskStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = DeliveryEngine(config, store, None)
    first = engine.check_recipient("alice", None, ignore_quota=False)
    resolve = engine.resolver.resolve
    monkeypatch.setattr(engine.resolver, "resolve", lambda *args: pytest.fail("resolved again"))
    assert engine.check_recipient("alice", None, ignore_quota=False) is first
    assert engine.check_recipient("alice", None, ignore_quota=False, fresh=False) is first
    monkeypatch.setattr(engine.resolver, "resolve", resolve)
    other.create_mailbox("user.bob")  # the stamp moves: resolved again
    monkeypatch.setattr(engine.resolver, "resolve", lambda *args: pytest.fail("kept"))
    with pytest.raises(pytest.fail.Exception, match="kept"):
        engine.check_recipient("alice", None, ignore_quota=False)


def test_what_a_recipient_is_kept_by_includes_ignorequota_and_the_poster(
    config: ImapdConfig, store: DiskStore
) -> None:
    store.create_mailbox("user.alice.lists", acl={"alice": "lrswipkxtecda", "bob": "p"})
    engine = DeliveryEngine(config, store, None)

    def resolve(ignore_quota: bool = False, poster: str | None = None) -> tuple[str, bool]:
        found = engine.check_recipient(
            "alice+lists", None, ignore_quota=ignore_quota, poster=poster, fresh=False
        )
        return found.mailbox, found.ignore_quota

    assert resolve() == ("user.alice", False)
    assert resolve(poster="bob") == ("user.alice.lists", False)
    assert resolve(ignore_quota=True) == ("user.alice", True)
    assert resolve() == ("user.alice", False)


def test_a_limit_changed_elsewhere_is_enforced_from_the_next_transaction(
    config: ImapdConfig, store: DiskStore, other: DiskStore
) -> None:
    """The root and its limits are kept with the stamp, its usage read at every RCPT."""
    store.create_mailbox("user.alice.sub")
    other.set_quota("user.alice", 1000, None)
    engine = DeliveryEngine(config, store, None)
    assert check(engine, "alice+sub") == "user.alice"  # no p right on sub: the INBOX
    check(engine, "alice", fresh=False)
    other.set_quota("user.alice", 0, None)  # the limit changes: the stamp moves
    with pytest.raises(OverQuota):
        check(engine, "alice")
    other.set_quota("user.alice", 1, None)
    assert check(engine, "alice") == "user.alice"
    other.deliver(b"x" * 2048, [DeliveryTarget("user.alice.sub", ignore_quota=True)])
    with pytest.raises(OverQuota):  # usage below the root, in a folder: read at this RCPT
        check(engine, "alice", fresh=False)
