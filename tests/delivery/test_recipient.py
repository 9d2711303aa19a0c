"""Recipient resolution by Cyrus's rules, on a real store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.delivery.recipient import RecipientResolver, split_local_part
from sealmail.store.errors import MailboxNotFound, PermissionDenied
from sealmail.store.memory import MemoryStore


def resolver_for(tmp_path: Path, *mailboxes: str, **options: str) -> Iterator[RecipientResolver]:
    text = f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n" + "".join(
        f"{key}: {value}\n" for key, value in options.items()
    )
    config = parse_imapd_conf(text)
    with MemoryStore.from_config(config) as store:
        for name in mailboxes:
            store.create_mailbox(name)
        yield RecipientResolver(config, store)


@pytest.fixture
def plain(tmp_path: Path) -> Iterator[RecipientResolver]:
    yield from resolver_for(tmp_path, "user.alice", "user.john^doe", "user.alice.Lists")


def test_split_local_part() -> None:
    assert split_local_part("alice+x+y", "+") == ("alice", "x+y")
    assert split_local_part("alice", "+") == ("alice", None)
    assert split_local_part("alice-x", "+-") == ("alice", "x")
    assert split_local_part("alice+", "+") == ("alice", "")


def test_inbox_downcase_and_domain_ignored(plain: RecipientResolver) -> None:
    recipient = plain.resolve("Alice", "Example.COM")
    assert (recipient.mailbox, recipient.user, recipient.address) == (
        "user.alice",
        "alice",
        "alice@example.com",
    )
    assert plain.resolve("john.doe", "x").mailbox == "user.john^doe"
    assert plain.resolve("alice+", None).mailbox == "user.alice"  # empty detail: INBOX


def test_detail_without_post_right_falls_back_to_inbox(plain: RecipientResolver) -> None:
    closed = plain.resolve("alice+Lists", None)
    assert closed.mailbox == "user.alice"
    assert closed.detail_fallback == ("user.alice.Lists", "no p right for anyone")
    assert plain.resolve("alice+Lists", None, poster="bob").detail_fallback == (
        "user.alice.Lists", "no p right for bob")
    plain.store.set_acl("user.alice.Lists", "anyone", "p")
    opened = plain.resolve("alice+Lists", None)
    assert (opened.mailbox, opened.detail_fallback) == ("user.alice.Lists", None)
    missing = plain.resolve("alice+Nope", None)
    assert (missing.mailbox, missing.detail_fallback) == (
        "user.alice", ("user.alice.Nope", "no such mailbox"))
    assert plain.resolve("alice", None).detail_fallback is None
    assert plain.resolve("alice+", None).detail_fallback is None


def test_poster_identity_opens_folders(plain: RecipientResolver) -> None:
    plain.store.set_acl("user.alice.Lists", "bob", "p")
    assert plain.resolve("alice+Lists", None).mailbox == "user.alice"
    assert plain.resolve("alice+Lists", None, poster="bob").mailbox == "user.alice.Lists"


def test_unknown_users(plain: RecipientResolver) -> None:
    for local in ("nobody", "", "a%b"):
        with pytest.raises(MailboxNotFound):
            plain.resolve(local, "example.com")


def test_downcase_off_is_case_sensitive(tmp_path: Path) -> None:
    for resolver in resolver_for(tmp_path, "user.alice", lmtp_downcase_rcpt="no"):
        assert resolver.resolve("alice", None).mailbox == "user.alice"
        with pytest.raises(MailboxNotFound):
            resolver.resolve("Alice", None)


def test_shared_folders_by_postuser_and_bare_plus(tmp_path: Path) -> None:
    for resolver in resolver_for(tmp_path, "Projects", "Closed", postuser="bb"):
        resolver.store.set_acl("Projects", "anyone", "+p")
        assert resolver.resolve("bb+Projects", None).mailbox == "Projects"
        assert resolver.resolve("+Projects", None).user is None
        with pytest.raises(PermissionDenied):
            resolver.resolve("bb+Closed", None)
        with pytest.raises(MailboxNotFound):
            resolver.resolve("bb+Missing", None)


def test_virtual_domains(tmp_path: Path) -> None:
    for resolver in resolver_for(
        tmp_path,
        "example.com!user.alice",
        "user.bob",
        virtdomains="userid",
        defaultdomain="home.example",
    ):
        recipient = resolver.resolve("alice", "EXAMPLE.com")
        assert (recipient.mailbox, recipient.user) == (
            "example.com!user.alice",
            "alice@example.com",
        )
        assert resolver.resolve("bob", "home.example").mailbox == "user.bob"
        with pytest.raises(MailboxNotFound):
            resolver.resolve("alice", "other.example")


def test_unixhierarchysep_details(tmp_path: Path) -> None:
    for resolver in resolver_for(
        tmp_path,
        "user.alice",
        "user.alice.Lists",
        "user.alice.Lists.sealmail",
        "user.alice.a^b",
        unixhierarchysep="yes",
    ):
        for name in ("user.alice.Lists.sealmail", "user.alice.a^b"):
            resolver.store.set_acl(name, "anyone", "+p")
        assert resolver.resolve("alice+Lists/sealmail", None).mailbox == "user.alice.Lists.sealmail"
        assert resolver.resolve("alice+a.b", None).mailbox == "user.alice.a^b"


def test_a_detail_that_names_no_mailbox_says_so(plain: RecipientResolver) -> None:
    recipient = plain.resolve("alice+a..b", None)
    assert (recipient.mailbox, recipient.detail_fallback) == (
        "user.alice", ("a..b", "not a valid mailbox name"))
