"""Which commands the daemon runs on its event loop (sealmail.imap.quick): read-only ones, with
the sync after them, news or not; anything that may write to the index or read a message file
goes to a worker thread."""

from __future__ import annotations

import pytest
from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession, quick
from sealmail.proto.imap import parse_command
from sealmail.proto.imap.response import render
from sealmail.store.api import DeliveryTarget, MessageStore

MESSAGE = b"Subject: quick\r\n\r\nHello\r\n"


def _session(store: MessageStore, messages: int = 3) -> ImapSession:
    for _ in range(messages):
        store.deliver(MESSAGE, [DeliveryTarget("user.fred", ())], internaldate=1e9)
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    session.execute(parse_command(b"s SELECT INBOX\r\n"))
    return session


def _quick(session: ImapSession, line: bytes) -> bool:
    return quick.read_only(session, parse_command(line + b"\r\n"))


@pytest.mark.parametrize("line", [
    b"a NOOP", b"a CHECK", b"a FETCH 1:* (FLAGS)", b"a UID FETCH 1:* (UID FLAGS MODSEQ)",
    b"a FETCH 1 FAST", b'a LIST "" *', b'a LSUB "" *', b"a STATUS INBOX (MESSAGES UNSEEN)",
])
def test_read_only_commands_without_news_are_quick(store: MessageStore, line: bytes) -> None:
    assert _quick(_session(store), line)


@pytest.mark.parametrize("line", [
    b"a FETCH 1 (BODY[])", b"a FETCH 1 (BODY.PEEK[])", b"a FETCH 1 (ENVELOPE)",
    b"a FETCH 1 (BODYSTRUCTURE)", b"a FETCH 1 (RFC822)", b"a STORE 1 +FLAGS (\\Seen)",
    b"a EXPUNGE", b"a SEARCH ALL", b"a SELECT INBOX", b"a COPY 1 Archive",
    b'a LIST "" * RETURN (STATUS (MESSAGES))', b"a APPEND INBOX {3+}\r\nabc",
])
def test_what_may_write_or_read_files_goes_to_a_thread(store: MessageStore, line: bytes) -> None:
    assert not _quick(_session(store), line)


def test_news_to_sync_stays_on_the_loop(store: MessageStore) -> None:
    """The sync after a read-only command reads the changes and may claim \\Recent in
    recent.db: no index write, no message file, so news does not send it to a thread."""
    session = _session(store)
    store.deliver(MESSAGE, [DeliveryTarget("user.fred", ())], internaldate=1e9)
    assert session.has_news()
    assert _quick(session, b"a NOOP") and _quick(session, b"a FETCH 1:* (FLAGS)")
    responses = session.execute(parse_command(b"a NOOP\r\n"))
    assert b"* 4 EXISTS\r\n" in b"".join(render(r) for r in responses)


def test_a_fetch_over_a_large_mailbox_goes_to_a_thread(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(quick, "QUICK_FETCH_MESSAGES", 2)
    session = _session(store)
    assert not _quick(session, b"a FETCH 1 (FLAGS)")
    assert _quick(session, b"a NOOP")


def test_nothing_is_quick_under_notify(store: MessageStore) -> None:
    """RFC 5465: each command also reports the other watched mailboxes' news."""
    session = _session(store)
    session.execute(parse_command(b"n NOTIFY SET (selected (MessageNew MessageExpunge))\r\n"))
    assert not _quick(session, b"a NOOP")


def test_before_select_list_and_status_are_quick(store: MessageStore) -> None:
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    assert _quick(session, b'a LIST "" *')
    assert _quick(session, b"a STATUS INBOX (MESSAGES)")
    assert not _quick(session, b"a FETCH 1 (FLAGS)")


def test_an_admins_listing_goes_to_a_thread(store: MessageStore) -> None:
    """It may name every user's mailboxes: too long to hold the loop."""
    admin = ImapSession(store, SESSION_CONFIG, "fred", "user.fred", is_admin=True)
    assert not _quick(admin, b'a LIST "" *') and not _quick(admin, b'a LSUB "" *')
    assert _quick(admin, b"a STATUS INBOX (MESSAGES)")
