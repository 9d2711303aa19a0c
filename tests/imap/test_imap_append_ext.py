"""MULTIAPPEND (RFC 3502) and CATENATE (RFC 4469) as transcripts (imaptest groups multiappend,
catenate, catenate-multiappend), with their bad input: invalid URLs, missing targets, counts and
sizes over the limits."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.imap.test_imaptest_findings import Client, deliver, expect, selected
from tests.support.stores import open_store, store_config

from sealmail.proto.imap import NEED_DATA, CommandReceived, Limits, ServerConnection
from sealmail.proto.imap.append import MAX_APPEND_MESSAGES, MAX_CATENATE_PARTS
from sealmail.store.api import AtomicAppending, MessageStore

FIRST = b"From: foo@example.com\r\n\r\nHello world body\r\n"
SECOND = b"From: foo2@example.com\r\n\r\nLookslike: header\r\n\r\nAnother body\r\n"


def lit(data: bytes) -> bytes:
    return b"{%d}\r\n" % len(data) + data


def raw_say(client: Client, data: bytes) -> list[str]:
    """Like Client.say, for commands the core itself refuses (BAD)."""
    client.conn.receive_data(data + b"\r\n")
    while (event := client.conn.next_event()) is not NEED_DATA:
        if isinstance(event, CommandReceived):
            for response in client.session.execute(event.command):
                client.conn.send(response)
    return client.conn.data_to_send().decode().splitlines()


def bodies(client: Client, mailbox: str) -> list[bytes]:
    store = client.session.store
    name = client.session.internal(mailbox)
    return [store.message_bytes(name, r.uid) for r in store.messages(name)]


def test_multiappend_stores_both_messages_with_one_appenduid(store: MessageStore) -> None:
    client = Client(store)
    got = client.say(b"a APPEND INBOX.Archive (\\Seen) " + lit(b"Subject: one\r\n\r\n1\r\n") + b" "
                     + lit(b"Subject: two\r\n\r\n2\r\n"))
    expect(got, "+ Ready for literal data", "+ Ready for literal data",
           "a OK [APPENDUID <n> 1:2] APPEND completed")
    assert bodies(client, "INBOX.Archive") == [b"Subject: one\r\n\r\n1\r\n",
                                               b"Subject: two\r\n\r\n2\r\n"]
    flags = [r.flags for r in store.messages("user.fred.Archive")]
    assert flags == [("\\Seen",), ()]


def test_multiappend_is_all_or_none(store: MessageStore) -> None:
    """RFC 3502 6.3.11: a bad second message (empty) stores neither."""
    client = Client(store)
    got = client.say(b"a APPEND INBOX.Archive " + lit(b"Subject: one\r\n\r\n1\r\n") + b" {0}\r\n")
    assert got[-1].startswith("a BAD")
    assert bodies(client, "INBOX.Archive") == []


def test_multiappend_rolls_back_what_the_store_took(store: MessageStore) -> None:
    """A store failure on a later message (here: quota) expunges the earlier ones."""
    store.set_quota("user.fred", None, 1)
    client = Client(store)
    got = client.say(b"a APPEND INBOX " + lit(b"S: 1\r\n\r\n1\r\n") + b" "
                     + lit(b"S: 2\r\n\r\n2\r\n"))
    assert got[-1].startswith("a NO [OVERQUOTA]"), got
    assert store.mailbox("user.fred").exists == 0  # type: ignore[union-attr]


def test_catenate_text_and_url_parts(store: MessageStore) -> None:
    deliver(store, FIRST)
    deliver(store, SECOND)
    client = selected(store)
    cases = [
        (b'URL "/INBOX/;uid=1/;section=header" TEXT ' + lit(b"body1\r\n"),
         b"From: foo@example.com\r\n\r\nbody1\r\n"),
        (b'URL "/INBOX;UIDVALIDITY=%d/;UID=2/;SECTION=TEXT" TEXT ' % store.mailbox(
            "user.fred").uidvalidity + lit(b"body3\r\n"),  # type: ignore[union-attr]
         b"Lookslike: header\r\n\r\nAnother body\r\nbody3\r\n"),
        (b"TEXT " + lit(b"From: new@example.com\r\n\r\n") + b' URL "/INBOX/;uid=1/;section=1"',
         b"From: new@example.com\r\n\r\nHello world body\r\n"),
        (b'URL "/INBOX/;uid=2/;partial=100000.1" TEXT ' + lit(b"Hdr: foo\r\n\r\nb7\r\n"),
         b"Hdr: foo\r\n\r\nb7\r\n"),
        (b'URL "/INBOX/;uid=1/;partial=0.4" TEXT ' + lit(b": x\r\n\r\n"),
         b"From: x\r\n\r\n"),
    ]
    for parts, _ in cases:
        got = client.say(b"a APPEND INBOX.Archive (\\seen \\flagged) CATENATE (" + parts + b")")
        assert got[-1].startswith("a OK [APPENDUID"), got
    assert bodies(client, "INBOX.Archive") == [want for _, want in cases]


def test_catenate_bad_urls_store_nothing(store: MessageStore) -> None:
    deliver(store, FIRST)
    client = selected(store)
    bad = [
        b'URL "/INBOX;uidvalidity=12345/;uid=1/;section=header" TEXT ' + lit(b"x\r\n"),
        b"TEXT " + lit(b"h: 1\r\n\r\n") + b' URL "/INBOX/;uid=99"',
        b'URL "/Nowhere/;uid=1"',
        b'URL "/INBOX/;uid=1/;section=9"',
        b'URL "imap://other@example.org/INBOX/;uid=1"',
        b'URL "/INBOX"',
        b'URL "not a url"',
    ]
    for parts in bad:
        got = client.say(b"a APPEND INBOX.Archive CATENATE (" + parts + b")")
        assert got[-1].startswith("a NO [BADURL"), (parts, got)
    # A URL to a mailbox fred may not read is the same BADURL (nothing disclosed).
    store.create_mailbox("user.barney", acl={"barney": "lrswipkxtecda"})
    deliver(store, FIRST, mailbox="user.barney")
    got = client.say(b'a APPEND INBOX.Archive CATENATE (URL "/user/barney/;uid=1")')
    assert got[-1].startswith("a NO [BADURL"), got
    assert bodies(client, "INBOX.Archive") == []


def test_catenate_to_a_missing_mailbox_is_trycreate_before_urls(store: MessageStore) -> None:
    client = selected(store)
    got = client.say(b'a APPEND Nowhere CATENATE (URL "/INBOX;uidvalidity=1/;uid=1")')
    expect(got, "a NO [TRYCREATE] Mailbox does not exist")


def test_catenate_multiappend_mixes_forms(store: MessageStore) -> None:
    deliver(store, FIRST)
    client = selected(store)
    got = client.say(b'a APPEND INBOX.Archive CATENATE (URL "/INBOX/;uid=1") (\\Answered) '
                     + lit(b"New: Message\r\n\r\nbody5\r\n"))
    assert got[-1].startswith("a OK [APPENDUID <n> 1:2]".replace("<n>", got[-1].split()[3]))
    assert bodies(client, "INBOX.Archive") == [FIRST, b"New: Message\r\n\r\nbody5\r\n"]
    got = client.say(b'a APPEND INBOX.Archive CATENATE (URL "/INBOX;uidvalidity=1/;uid=1") '
                     + lit(b"x: y\r\n\r\n"))
    assert got[-1].startswith("a NO [BADURL")
    assert len(bodies(client, "INBOX.Archive")) == 2


def test_append_grammar_errors_and_counts(store: MessageStore) -> None:
    client = Client(store)
    for bad in (b"a APPEND INBOX.Archive CATENATE ()",
                b"a APPEND INBOX.Archive CATENATE (FOO {1}\r\nx)",
                b"a APPEND INBOX.Archive CATENATE (URL \"\")", b"a APPEND INBOX.Archive (\\Seen)",
                b"a APPEND INBOX.Archive " + lit(b"x") + b" junk"):
        assert raw_say(client, bad)[-1].startswith("a BAD"), bad
    many = b" ".join([b"{1+}\r\nx"] * (MAX_APPEND_MESSAGES + 1))
    assert raw_say(client, b"a APPEND INBOX.Archive " + many)[-1].startswith("a BAD")
    parts = b" ".join([b"TEXT {1+}\r\nx"] * (MAX_CATENATE_PARTS + 1))
    got = raw_say(client, b"a APPEND INBOX.Archive CATENATE (" + parts + b")")
    assert got[-1].startswith("a BAD")


def test_the_messages_of_one_append_are_bounded_together() -> None:
    """Each literal under the append limit, together over it plus the command size: refused
    before the second is read (TOOBIG), so a MULTIAPPEND cannot hold more memory than one."""
    conn = ServerConnection(Limits(max_append_size=1000, max_command_size=1000),)
    conn.state = conn.state.AUTHENTICATED
    conn.receive_data(b"a APPEND INBOX {990}\r\n" + b"x" * 990 + b" {990}\r\n")
    event = conn.next_event()
    out = conn.data_to_send()
    assert b"a NO [TOOBIG]" in out, (event, out)


@pytest.mark.parametrize("kind", ["memory", "disk"])
def test_multiappend_is_one_commit_on_stores_that_can(tmp_path: Path, kind: str) -> None:
    """AtomicAppending: a refused second message leaves no trace at all (UIDNEXT and
    HIGHESTMODSEQ as before, nothing expunged), where rolling back would leave both moved."""
    store = open_store(kind, store_config(tmp_path))
    try:
        assert isinstance(store, AtomicAppending)
        store.create_mailbox("user.fred")
        store.set_quota("user.fred", None, 1)
        before = store.mailbox("user.fred")
        client = Client(store)
        got = client.say(b"a APPEND INBOX " + lit(b"S: 1\r\n\r\n1\r\n") + b" "
                         + lit(b"S: 2\r\n\r\n2\r\n"))
        assert got[-1].startswith("a NO [OVERQUOTA]"), got
        assert store.mailbox("user.fred") == before
        assert store.expunged_since("user.fred", 0) == []
        store.set_quota("user.fred", None, None)
        got = client.say(b"a APPEND INBOX " + lit(b"S: 1\r\n\r\n1\r\n") + b" "
                         + lit(b"S: 2\r\n\r\n2\r\n"))
        assert got[-1].startswith("a OK [APPENDUID"), got
        assert [r.uid for r in store.messages("user.fred")] == [1, 2]
    finally:
        store.close()


class WithoutAtomicAppending:
    """A store as PostgreSQL is today: no deliver_all."""

    def __init__(self, store: MessageStore) -> None:
        self._store = store

    def __getattr__(self, name: str) -> object:
        if name == "deliver_all":
            raise AttributeError(name)
        return getattr(self._store, name)


def test_multiappend_rolls_back_on_stores_without_one_commit(store: MessageStore) -> None:
    store.set_quota("user.fred", None, 1)
    plain = WithoutAtomicAppending(store)
    assert not isinstance(plain, AtomicAppending)
    client = Client(plain)  # type: ignore[arg-type]
    got = client.say(b"a APPEND INBOX " + lit(b"S: 1\r\n\r\n1\r\n") + b" "
                     + lit(b"S: 2\r\n\r\n2\r\n"))
    assert got[-1].startswith("a NO [OVERQUOTA]"), got
    assert store.mailbox("user.fred").exists == 0  # type: ignore[union-attr]
    assert store.expunged_since("user.fred", 0) == [1]  # stored, then taken back
