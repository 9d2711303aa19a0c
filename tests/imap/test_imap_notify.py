"""NOTIFY (RFC 5465) as transcripts: imaptest's notify group (the initial STATUS of SET STATUS)
and the news of other mailboxes after changes made elsewhere: STATUS for message events, LIST
for mailboxes made and deleted (MailboxName) and for subscriptions (SubscriptionChange)."""

from __future__ import annotations

from tests.imap.test_imap_append_ext import raw_say
from tests.imap.test_imaptest_findings import Client, deliver, expect, selected

from sealmail.proto.imap import ServerConnection
from sealmail.proto.imap.state import ConnectionState
from sealmail.store.api import MessageStore


def test_set_status_sends_the_items_of_each_event(store: MessageStore) -> None:
    deliver(store, mailbox="user.fred.Archive")
    client = Client(store)
    info = store.mailbox("user.fred.Archive")
    assert info is not None
    expect(client.say("n NOTIFY SET STATUS (MAILBOXES INBOX.Archive (MessageExpunge))"),
           "* STATUS INBOX.Archive (MESSAGES 1)", "n OK NOTIFY completed")
    expect(client.say("n NOTIFY SET STATUS (MAILBOXES INBOX.Archive (MessageNew))"),
           f"* STATUS INBOX.Archive (MESSAGES 1 UIDNEXT 2 UIDVALIDITY {info.uidvalidity})",
           "n OK NOTIFY completed")
    expect(client.say("n NOTIFY SET STATUS (MAILBOXES INBOX.Archive (FlagChange))"),
           f"* STATUS INBOX.Archive (UIDVALIDITY {info.uidvalidity} HIGHESTMODSEQ <n>)",
           "n OK NOTIFY completed")
    expect(client.say("n NOTIFY SET (MAILBOXES INBOX.Archive (MessageNew MessageExpunge))"),
           "n OK NOTIFY completed")


def test_news_of_other_mailboxes_at_the_next_poll(store: MessageStore) -> None:
    client = selected(store)
    expect(client.say("n NOTIFY SET (SELECTED (MessageNew MessageExpunge)) "
                      "(PERSONAL (MessageNew MessageExpunge MailboxName SubscriptionChange))"),
           "n OK NOTIFY completed")
    assert client.session.poll() == []
    deliver(store, mailbox="user.fred.Archive")
    deliver(store)  # the selected INBOX: its own EXISTS
    store.create_mailbox("user.fred.New")
    store.subscribe("fred", "user.fred.Archive")
    news = client.session.notify_poll()
    rendered = [str(r) for r in news]
    assert any("EXISTS" in r for r in rendered), rendered
    for response in news:
        client.conn.send(response)
    lines = client.conn.data_to_send().decode().splitlines()
    assert "* 1 EXISTS" in lines
    assert any(line.startswith("* STATUS INBOX.Archive (MESSAGES 1 UIDNEXT 2") for line in lines)
    assert '* LIST () "." INBOX.New' in lines
    assert '* LIST (\\Subscribed) "." INBOX.Archive' in lines
    store.delete_mailbox("user.fred.New")
    store.unsubscribe("fred", "user.fred.Archive")
    expect(client.say("a NOOP"), '* LIST (\\NonExistent) "." INBOX.New',
           '* LIST () "." INBOX.Archive', "a OK NOOP completed")
    expect(client.say("n NOTIFY NONE"), "n OK NOTIFY completed")
    deliver(store, mailbox="user.fred.Archive")
    assert client.session.notify_poll() == []


def test_unserved_events_are_badevent(store: MessageStore) -> None:
    client = Client(store)
    got = client.say("n NOTIFY SET (PERSONAL (MessageNew AnnotationChange))")
    assert got[-1].startswith("n NO [BADEVENT (MessageNew MessageExpunge FlagChange MailboxName "
                              "SubscriptionChange)]"), got
    got = client.say("n NOTIFY SET (SELECTED (MessageNew (UID) MessageExpunge))")
    assert got[-1].startswith("n NO [BADEVENT"), got
    for bad in (b"n NOTIFY", b"n NOTIFY SET", b"n NOTIFY SET (NOWHERE (MessageNew))",
                b"n NOTIFY SET (MAILBOXES)", b"n NOTIFY SET (PERSONAL ())",
                b"n NOTIFY MAYBE", b"n NOTIFY SET (PERSONAL (MessageNew)"):
        assert raw_say(client, bad)[-1].startswith("n BAD"), bad


def test_no_news_of_mailboxes_the_user_may_not_see(store: MessageStore) -> None:
    store.create_mailbox("user.barney", acl={"barney": "lrswipkxtecda"})
    client = Client(store)
    expect(client.say("n NOTIFY SET STATUS (MAILBOXES Other.barney (MessageNew))"),
           "n OK NOTIFY completed")
    deliver(store, mailbox="user.barney")
    assert client.session.notify_poll() == []


def test_news_waits_for_the_end_of_a_half_received_command() -> None:
    conn = ServerConnection(state=ConnectionState.AUTHENTICATED)
    assert conn.between_commands
    conn.receive_data(b"a APPEND INBOX {5}\r\nab")
    conn.next_event()
    assert not conn.between_commands
    conn.receive_data(b"cde\r\n")
    conn.next_event()
    assert not conn.between_commands  # pending: the APPEND waits for its tagged reply
