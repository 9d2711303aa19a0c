"""Which commands the daemon runs on its event loop (sealmail.imap.quick): read-only ones whose
sync after them has nothing to do; anything that may write, read a message file or catch up
with news goes to a worker thread."""

from __future__ import annotations

import pytest
from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession, quick
from sealmail.proto.imap import parse_command
from sealmail.store.api import DeliveryTarget, MessageStore

MESSAGE = b"Subject: quick\r\n\r\nHello\r\n"


def _session(store: MessageStore, messages: int = 3) -> ImapSession:
    for _ in range(messages):
        store.deliver(MESSAGE, [DeliveryTarget("user.fred", ())], internaldate=1e9)
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    session.execute(parse_command(b"s SELECT INBOX\r\n"))
    return session


def _quick(session: ImapSession, line: bytes) -> bool:
    return quick.is_quick(session, parse_command(line + b"\r\n"))


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


def test_news_to_sync_sends_a_noop_to_a_thread(store: MessageStore) -> None:
    """The sync after the command would read the changes and may claim \\Recent (a write)."""
    session = _session(store)
    store.deliver(MESSAGE, [DeliveryTarget("user.fred", ())], internaldate=1e9)
    assert not _quick(session, b"a NOOP")
    session.execute(parse_command(b"a NOOP\r\n"))  # the news told
    assert _quick(session, b"a NOOP")


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


def test_after_news_the_check_is_skipped_for_a_while(store: MessageStore) -> None:
    """On a mailbox that keeps changing, the index read that finds news is mostly wasted: after
    news, QuickCommands sends read-only commands to a thread without asking, 1, 2, 4 ... up to
    SKIP_MOST of them, and asks afresh after each skip."""
    session = _session(store)
    noop = parse_command(b"a NOOP\r\n")
    gate = quick.QuickCommands()
    asked: list[bool] = []
    session.has_news = lambda: asked.append(True) or True  # type: ignore[method-assign]
    decisions = [gate.allows(session, noop) for _ in range(1 + 1 + 1 + 2 + 1 + 4)]
    assert decisions == [False] * len(decisions)
    assert len(asked) == 3  # asked, skipped 1, asked, skipped 2, asked, skipped 4
    session.has_news = lambda: False  # type: ignore[method-assign]
    while not gate.allows(session, noop):
        pass
    assert gate.allows(session, noop) and gate.allows(session, noop)  # no news: asks each time
    store_line = parse_command(b"a STORE 1 +FLAGS (\\Seen)\r\n")
    assert not gate.allows(session, store_line)


def test_nothing_is_quick_when_switched_off(store: MessageStore) -> None:
    """On PostgreSQL (ImapService.quick_commands) a read may wait for a pooled connection."""
    session = _session(store)
    assert not quick.QuickCommands(enabled=False).allows(session, parse_command(b"a NOOP\r\n"))
    assert quick.QuickCommands().allows(session, parse_command(b"a NOOP\r\n"))


def test_an_admins_listing_goes_to_a_thread(store: MessageStore) -> None:
    """It may name every user's mailboxes: too long to hold the loop."""
    admin = ImapSession(store, SESSION_CONFIG, "fred", "user.fred", is_admin=True)
    assert not _quick(admin, b'a LIST "" *') and not _quick(admin, b'a LSUB "" *')
    assert _quick(admin, b"a STATUS INBOX (MESSAGES)")
