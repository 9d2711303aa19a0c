"""\\Recent (RFC 3501 2.3.2) and per-user \\Seen (Cyrus's seen state), as transcripts of several
sessions on one store, through the sans-I/O core and the session logic.

Each `Client` is one connection kept across steps, so two users' sessions can take turns on the
same mailbox. `C:` lines are sent, `S:` lines must come back in order (`<n>`: any number,
`...`: anything).
"""

from __future__ import annotations

import re

import pytest
from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession
from sealmail.proto.imap import (
    NEED_DATA,
    CommandReceived,
    ServerConnection,
    StatusResponse,
    render,
)
from sealmail.store.api import DeliveryTarget, MessageStore

MESSAGE = b"From: Fred Foobar <foobar@example.com>\r\nSubject: afternoon meeting\r\n\r\nHello\r\n"


class Client:
    """One logged-in IMAP connection of `userid`, kept across steps."""

    def __init__(self, store: MessageStore, userid: str) -> None:
        self.session = ImapSession(store, SESSION_CONFIG, userid, f"user.{userid}")
        self.conn = ServerConnection()
        self.conn.send(StatusResponse("PREAUTH", "ready"))
        self.conn.data_to_send()

    def says(self, transcript: str) -> None:
        received: list[str] = []
        expected: list[str] = []
        for line in transcript.strip().splitlines():
            kind, _, text = line.strip().partition(" ")
            if not kind:
                continue
            if kind == "C:":
                self.conn.receive_data(text.encode() + b"\r\n")
                while (event := self.conn.next_event()) is not NEED_DATA:
                    assert isinstance(event, CommandReceived), event
                    for response in self.session.execute(event.command):
                        self.conn.send(response)
                received += self.conn.data_to_send().decode().splitlines()
            else:
                assert kind == "S:", line
                expected.append(text)
        _match(received, expected)

    def idle_news(self, *expected: str) -> None:
        """What an idling client is sent at the next poll (the daemon's IDLE loop)."""
        received = b"".join(render(r) for r in self.session.poll()).decode().splitlines()
        _match(received, list(expected))


def _match(received: list[str], expected: list[str]) -> None:
    assert len(received) == len(expected), "\n".join(received)
    for got, want in zip(received, expected, strict=True):
        pattern = re.escape(want).replace(re.escape("<n>"), r"\d+").replace(re.escape("..."), ".*")
        assert re.fullmatch(pattern, got), f"{got!r} does not match {want!r}\n" + "\n".join(
            received)


def deliver(store: MessageStore, count: int, flags: tuple[str, ...] = (),
            mailbox: str = "user.fred") -> None:
    for _ in range(count):
        store.deliver(MESSAGE, [DeliveryTarget(mailbox, flags)], internaldate=1e9)


SELECT_TAIL = """
    S: * OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft \\*)] Ok
    S: * OK [UIDVALIDITY <n>] Ok
    S: * OK [UIDNEXT <n>] Ok
    S: * OK [HIGHESTMODSEQ <n>] Ok
"""


def select_inbox_of_one(*clients: Client) -> None:
    """Each client SELECTs the INBOX, which holds one message."""
    for client in clients:
        client.says(r"""
            C: a SELECT INBOX
            S: ...
            S: * 1 EXISTS
            S: ...
            S: ...
        """ + SELECT_TAIL + r"""
            S: a OK [READ-WRITE] SELECT completed
        """)


def selected(mailbox: str, exists: int, recent: int) -> str:
    """A read-write SELECT's transcript, down to its EXISTS and RECENT counts."""
    return (f"""
        C: a SELECT {mailbox}
        S: ...
        S: * {exists} EXISTS
        S: * {recent} RECENT
        S: ...
    """ + SELECT_TAIL + """
        S: a OK [READ-WRITE] SELECT completed
    """)


@pytest.fixture
def users(store: MessageStore) -> MessageStore:
    for user in ("bob", "carol"):
        store.create_mailbox(f"user.{user}")
    return store


# -- \Recent -------------------------------------------------------------------------------------


def test_first_read_write_session_claims_recent(store: MessageStore) -> None:
    deliver(store, 2)
    first, second = Client(store, "fred"), Client(store, "fred")
    first.says(r"""
        C: a SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * 2 RECENT
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b FETCH 1:* (UID FLAGS)
        S: * 1 FETCH (UID 1 FLAGS (\Recent))
        S: * 2 FETCH (UID 2 FLAGS (\Recent))
        S: b OK FETCH completed
    """)
    second.says(r"""
        C: a SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * 0 RECENT
        S: ...
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b FETCH 1:* (UID FLAGS)
        S: * 1 FETCH (UID 1 FLAGS ())
        S: * 2 FETCH (UID 2 FLAGS ())
        S: b OK FETCH completed
        C: c SEARCH RECENT
        S: * SEARCH
        S: c OK SEARCH completed
    """)
    # The mark is durable: a later session, or a re-SELECT, finds nothing recent either.
    first.says(r"""
        C: c SEARCH RECENT
        S: * SEARCH 1 2
        S: c OK SEARCH completed
        C: d SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * 0 RECENT
        S: ...
    """ + SELECT_TAIL + r"""
        S: d OK [READ-WRITE] SELECT completed
    """)


def test_new_mail_is_recent_in_the_session_that_announces_it(store: MessageStore) -> None:
    deliver(store, 1)
    selecting, other = Client(store, "fred"), Client(store, "fred")
    select_inbox_of_one(selecting, other)
    deliver(store, 2)
    # RFC 3501 7.3.2: RECENT goes with the EXISTS that changed the count.
    selecting.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: * 3 RECENT
        S: n OK NOOP completed
        C: f FETCH 2:3 FLAGS
        S: * 2 FETCH (FLAGS (\Recent))
        S: * 3 FETCH (FLAGS (\Recent))
        S: f OK FETCH completed
    """)
    other.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: n OK NOOP completed
        C: f FETCH 2:3 FLAGS
        S: * 2 FETCH (FLAGS ())
        S: * 3 FETCH (FLAGS ())
        S: f OK FETCH completed
    """)
    # While idling: the same two responses at the poll that finds the delivery.
    deliver(store, 1)
    other.idle_news("* 4 EXISTS", "* 1 RECENT")
    selecting.idle_news("* 4 EXISTS")
    # Expunging a \Recent message changes the count: told after the EXPUNGE.
    other.says(r"""
        C: s STORE 4 +FLAGS.SILENT (\Deleted)
        S: s OK STORE completed
        C: e EXPUNGE
        S: * 4 EXPUNGE
        S: * 0 RECENT
        S: e OK EXPUNGE completed
    """)


@pytest.mark.parametrize("backend", ["memory", "disk"])  # the disk store claims in the commit
def test_an_append_is_recent_in_the_appending_session_alone(store: MessageStore) -> None:
    """APPEND to the mailbox the session has selected read-write: the session announces it at
    the command's sync, so it is \\Recent there and nowhere else, whether the store claimed it
    in the APPEND's commit (the disk store, when every older UID was claimed) or the sync
    claimed it after; with mail nobody claimed yet, that mail comes along."""
    deliver(store, 1)
    appending, other = Client(store, "fred"), Client(store, "fred")
    select_inbox_of_one(appending, other)
    appending.says(r"""
        C: b APPEND INBOX {5+}
        C: hello
        S: * 2 EXISTS
        S: * 2 RECENT
        S: b OK [APPENDUID <n> 2] APPEND completed
    """)
    deliver(store, 1)  # unclaimed when the next APPEND commits: both go to its session
    appending.says(r"""
        C: c APPEND INBOX {5+}
        C: howdy
        S: * 4 EXISTS
        S: * 4 RECENT
        S: c OK [APPENDUID <n> 4] APPEND completed
        C: d APPEND INBOX {5+}
        C: hiya!
        S: * 5 EXISTS
        S: * 5 RECENT
        S: d OK [APPENDUID <n> 5] APPEND completed
        C: f FETCH 2:5 FLAGS
        S: * 2 FETCH (FLAGS (\Recent))
        S: * 3 FETCH (FLAGS (\Recent))
        S: * 4 FETCH (FLAGS (\Recent))
        S: * 5 FETCH (FLAGS (\Recent))
        S: f OK FETCH completed
    """)
    other.says(r"""
        C: n NOOP
        S: * 5 EXISTS
        S: n OK NOOP completed
        C: s SEARCH RECENT
        S: * SEARCH
        S: s OK SEARCH completed
        C: t STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 0)
        S: t OK STATUS completed
    """)
    # Appended to a mailbox it has not selected: the first session to look claims it.
    appending.says(r"""
        C: g APPEND INBOX.Archive {5+}
        C: later
        S: g OK [APPENDUID <n> 1] APPEND completed
    """)
    other.says(r"""
        C: h SELECT INBOX.Archive
        S: ...
        S: * 1 EXISTS
        S: * 1 RECENT
        S: ...
    """ + SELECT_TAIL + r"""
        S: h OK [READ-WRITE] SELECT completed
    """)


def test_examine_shows_unclaimed_recent_but_claims_nothing(store: MessageStore) -> None:
    deliver(store, 2)
    examining = Client(store, "fred")
    examining.says(r"""
        C: a EXAMINE INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * 2 RECENT
        S: ...
        S: * OK [PERMANENTFLAGS ()] Ok
        S: ...
        S: ...
        S: ...
        S: a OK [READ-ONLY] EXAMINE completed
        C: b FETCH 1 FLAGS
        S: * 1 FETCH (FLAGS (\Recent))
        S: b OK FETCH completed
    """)
    # RFC 3501 6.3.2: EXAMINE MUST NOT cause messages to lose \Recent.
    selecting = Client(store, "fred")
    selecting.says(selected("INBOX", 2, 2))
    deliver(store, 1)
    # A read-only session does not claim what it announces; the read-write one still can.
    examining.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: * 3 RECENT
        S: n OK NOOP completed
    """)
    selecting.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: * 3 RECENT
        S: n OK NOOP completed
    """)
    Client(store, "fred").says(r"""
        C: a EXAMINE INBOX
        S: ...
        S: * 3 EXISTS
        S: * 0 RECENT
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-ONLY] EXAMINE completed
    """)


def test_status_recent_counts_what_no_session_claimed(store: MessageStore) -> None:
    deliver(store, 3, ("\\Seen",))
    client = Client(store, "fred")
    client.says(r"""
        C: a STATUS INBOX (MESSAGES RECENT UNSEEN)
        S: * STATUS INBOX (MESSAGES 3 RECENT 3 UNSEEN 0)
        S: a OK STATUS completed
        C: b STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 3)
        S: b OK STATUS completed
    """)
    Client(store, "fred").says(r"""
        C: a SELECT INBOX
        S: ...
        S: ...
        S: * 3 RECENT
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-WRITE] SELECT completed
    """)
    deliver(store, 1)
    client.says(r"""
        C: c STATUS INBOX (RECENT UNSEEN)
        S: * STATUS INBOX (RECENT 1 UNSEEN 1)
        S: c OK STATUS completed
        C: d LIST "" INBOX RETURN (STATUS (RECENT))
        S: * LIST (\HasChildren) "." INBOX
        S: * STATUS INBOX (RECENT 1)
        S: d OK LIST completed
    """)


def test_search_recent_new_old_rfc3501_6_4_4(store: MessageStore) -> None:
    deliver(store, 1)
    Client(store, "fred").says(r"""
        C: a SELECT INBOX
        S: ...
        S: ...
        S: * 1 RECENT
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-WRITE] SELECT completed
    """)
    deliver(store, 1, ("\\Seen",))
    deliver(store, 1)
    Client(store, "fred").says(r"""
        C: a SELECT INBOX
        S: ...
        S: * 3 EXISTS
        S: * 2 RECENT
        S: ...
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b SEARCH RECENT
        S: * SEARCH 2 3
        S: b OK SEARCH completed
        C: c SEARCH NEW
        S: * SEARCH 3
        S: c OK SEARCH completed
        C: d SEARCH OLD
        S: * SEARCH 1
        S: d OK SEARCH completed
        C: e SEARCH OR NEW OLD
        S: * SEARCH 1 3
        S: e OK SEARCH completed
        C: f UID SEARCH NOT RECENT UNSEEN
        S: * SEARCH 1
        S: f OK UID SEARCH completed
        C: g SEARCH RECENT BODY Hello
        S: * SEARCH 2 3
        S: g OK SEARCH completed
        C: h STORE 2 FLAGS (\Flagged)
        S: * 2 FETCH (FLAGS (\Flagged \Recent))
        S: h OK STORE completed
        C: i SEARCH NEW
        S: * SEARCH 2 3
        S: i OK SEARCH completed
    """)


def test_imap4rev2_neither_shows_nor_claims_recent_rfc9051_appendix_e(store: MessageStore) -> None:
    deliver(store, 2)
    rev2 = Client(store, "fred")
    rev2.says(r"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: b SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * LIST (\HasChildren) "." INBOX
    """ + SELECT_TAIL + r"""
        S: b OK [READ-WRITE] SELECT completed
        C: c FETCH 1:* FLAGS
        S: * 1 FETCH (FLAGS ())
        S: * 2 FETCH (FLAGS ())
        S: c OK FETCH completed
        C: d SEARCH RECENT
        S: * ESEARCH (TAG "d")
        S: d OK SEARCH completed
        C: e STATUS INBOX (RECENT)
        S: * STATUS INBOX (RECENT 0)
        S: e OK STATUS completed
    """)
    deliver(store, 1)
    rev2.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: n OK NOOP completed
    """)
    Client(store, "fred").says(selected("INBOX", 3, 3))


def test_recent_is_per_user_on_a_mailbox_they_do_not_own(users: MessageStore) -> None:
    """Cyrus keeps a non-owner's \\Recent mark in their seen state: bob opening fred's INBOX
    does not take \\Recent away from fred."""
    store = users
    deliver(store, 2)
    store.set_acl("user.fred", "bob", "lrs")
    Client(store, "bob").says(selected("user.fred", 2, 2))
    Client(store, "fred").says(selected("INBOX", 2, 2))


# -- per-user \Seen ------------------------------------------------------------------------------


def test_owner_and_reader_each_have_their_own_seen(users: MessageStore) -> None:
    store = users
    deliver(store, 3)
    store.set_acl("user.fred", "bob", "lrsw")
    fred, bob = Client(store, "fred"), Client(store, "bob")
    store.claim_recent("user.fred", 3, "bob")
    fred.says(r"""
        C: a SELECT INBOX
        S: ...
        S: ...
        S: ...
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b STORE 1 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen \Recent))
        S: b OK STORE completed
    """)
    bob.says(r"""
        C: a SELECT user.fred
        S: ...
        S: * 3 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b FETCH 1:* FLAGS
        S: * 1 FETCH (FLAGS ())
        S: * 2 FETCH (FLAGS ())
        S: * 3 FETCH (FLAGS ())
        S: b OK FETCH completed
        C: c STORE 2 +FLAGS (\Seen \Flagged)
        S: * 2 FETCH (FLAGS (\Seen \Flagged))
        S: c OK STORE completed
        C: d FETCH 3 (FLAGS BODY[TEXT])
        S: * 3 FETCH (FLAGS (\Seen) BODY[TEXT] {7}
        S: Hello
        S: )
        S: d OK FETCH completed
        C: e SEARCH SEEN
        S: * SEARCH 2 3
        S: e OK SEARCH completed
        C: f SEARCH UNSEEN
        S: * SEARCH 1
        S: f OK SEARCH completed
        C: g STATUS user.fred (UNSEEN MESSAGES)
        S: * STATUS user.fred (UNSEEN 1 MESSAGES 3)
        S: g OK STATUS completed
    """)
    # fred is told of bob's \Flagged (a shared flag), not of bob's \Seen.
    fred.says(r"""
        C: n NOOP
        S: * 2 FETCH (UID 2 FLAGS (\Flagged \Recent))
        S: n OK NOOP completed
        C: e SEARCH SEEN
        S: * SEARCH 1
        S: e OK SEARCH completed
        C: g STATUS INBOX (UNSEEN)
        S: * STATUS INBOX (UNSEEN 2)
        S: g OK STATUS completed
    """)
    # bob's other session learns of bob's \Seen (the modseq moved, as Cyrus does it).
    bob2 = Client(store, "bob")
    bob2.says(r"""
        C: a ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: a OK ENABLE completed
        C: b SELECT user.fred
        S: ...
        S: ...
        S: ...
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: b OK [READ-WRITE] SELECT completed
    """)
    bob.says(r"""
        C: h STORE 1 +FLAGS.SILENT (\Seen)
        S: h OK STORE completed
    """)
    bob2.says(r"""
        C: n NOOP
        S: * 1 FETCH (UID 1 FLAGS (\Seen) MODSEQ (<n>))
        S: n OK NOOP completed
        C: s SEARCH UNSEEN
        S: * SEARCH
        S: s OK SEARCH completed
    """)
    # Removing bob's \Seen leaves fred's alone; FLAGS replaces bob's, never fred's.
    bob.says(r"""
        C: i STORE 1:3 FLAGS (\Draft)
        S: * 1 FETCH (FLAGS (\Draft))
        S: * 2 FETCH (FLAGS (\Draft))
        S: * 3 FETCH (FLAGS (\Draft))
        S: i OK STORE completed
    """)
    fred.says(r"""
        C: n NOOP
        S: * 1 FETCH (UID 1 FLAGS (\Draft \Seen \Recent))
        S: * 2 FETCH (UID 2 FLAGS (\Draft \Recent))
        S: * 3 FETCH (UID 3 FLAGS (\Draft \Recent))
        S: n OK NOOP completed
    """)


def test_shared_folder_readers_each_have_their_own_seen(users: MessageStore) -> None:
    store = users
    store.create_mailbox("Projects", acl={"anyone": "lrsi"})
    deliver(store, 2, ("\\Seen",), mailbox="Projects")  # delivered \Seen: nobody's
    for user in ("bob", "carol"):
        store.claim_recent("Projects", 2, user)
    bob, carol = Client(store, "bob"), Client(store, "carol")
    bob.says(r"""
        C: a SELECT Projects
        S: ...
        S: * 2 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b FETCH 2 BODY[TEXT]
        S: * 2 FETCH (BODY[TEXT] {7}
        S: Hello
        S:  FLAGS (\Seen))
        S: b OK FETCH completed
    """)
    carol.says(r"""
        C: a SELECT Projects
        S: ...
        S: * 2 EXISTS
        S: * 0 RECENT
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b SEARCH UNSEEN
        S: * SEARCH 1 2
        S: b OK SEARCH completed
        C: c STORE 1 +FLAGS (\Seen)
        S: * 1 FETCH (FLAGS (\Seen))
        S: c OK STORE completed
        C: d STATUS Projects (UNSEEN)
        S: * STATUS Projects (UNSEEN 1)
        S: d OK STATUS completed
    """)
    bob.says(r"""
        C: c FETCH 1:2 FLAGS
        S: * 1 FETCH (FLAGS ())
        S: * 2 FETCH (FLAGS (\Seen))
        S: c OK FETCH completed
        C: d STATUS Projects (UNSEEN)
        S: * STATUS Projects (UNSEEN 1)
        S: d OK STATUS completed
    """)
    # APPEND with \Seen by a reader: their \Seen only. (\Recent marks are per user too: each
    # reader's session that announces the message first shows it \Recent.)
    bob.says(r"""
        C: e APPEND Projects (\Seen) {5+}
        C: Hi!
        C:
        S: * 3 EXISTS
        S: * 1 RECENT
        S: e OK [APPENDUID <n> 3] APPEND completed
    """)
    carol.says(r"""
        C: n NOOP
        S: * 3 EXISTS
        S: * 1 RECENT
        S: n OK NOOP completed
        C: f FETCH 3 FLAGS
        S: * 3 FETCH (FLAGS (\Recent))
        S: f OK FETCH completed
    """)
    bob.says(r"""
        C: f FETCH 3 FLAGS
        S: * 3 FETCH (FLAGS (\Seen \Recent))
        S: f OK FETCH completed
    """)


def test_storing_seen_needs_the_s_right_rfc4314_4(users: MessageStore) -> None:
    store = users
    deliver(store, 2)
    store.set_acl("user.fred", "bob", "lrw")  # may flag, may not mark read
    store.claim_recent("user.fred", 2, "bob")
    Client(store, "bob").says(r"""
        C: a SELECT user.fred
        S: ...
        S: ...
        S: * 0 RECENT
        S: ...
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b STORE 1 +FLAGS (\Seen)
        S: b NO [NOPERM] permission denied: needs right(s) s
        C: c STORE 1 +FLAGS (\Flagged)
        S: * 1 FETCH (FLAGS (\Flagged))
        S: c OK STORE completed
        C: d FETCH 2 BODY[TEXT]
        S: * 2 FETCH (BODY[TEXT] {7}
        S: Hello
        S: )
        S: d OK FETCH completed
        C: e SEARCH UNSEEN
        S: * SEARCH 1 2
        S: e OK SEARCH completed
    """)
    # Read-only (no s, w or t): the session is READ-ONLY and STORE is refused before rights.
    store.set_acl("user.fred", "carol", "lr")
    Client(store, "carol").says(r"""
        C: a SELECT user.fred
        S: ...
        S: ...
        S: * 2 RECENT
        S: ...
        S: * OK [PERMANENTFLAGS ()] Ok
        S: ...
        S: ...
        S: ...
        S: a OK [READ-ONLY] SELECT completed
        C: b STORE 1 +FLAGS (\Seen)
        S: b NO [READ-ONLY] Mailbox is read-only
    """)


def test_copy_gives_the_copy_the_copying_users_seen(users: MessageStore) -> None:
    store = users
    deliver(store, 2, ("\\Seen",))  # fred has read both
    store.set_acl("user.fred", "bob", "lrsi")
    store.create_mailbox("Projects", acl={"anyone": "lrsi"})
    store.claim_recent("Projects", 10, "bob")
    store.claim_recent("Projects", 10, "carol")
    bob = Client(store, "bob")
    bob.says(r"""
        C: a SELECT user.fred
        S: ...
        S: ...
        S: ...
        S: * OK [UNSEEN 1] Message 1 is first unseen
    """ + SELECT_TAIL + r"""
        S: a OK [READ-WRITE] SELECT completed
        C: b STORE 2 +FLAGS.SILENT (\Seen)
        S: b OK STORE completed
        C: c COPY 1:2 INBOX
        S: c OK [COPYUID <n> 1:2 1:2] COPY completed
        C: d COPY 1:2 Projects
        S: d OK [COPYUID <n> 1:2 1:2] COPY completed
    """)
    # In bob's own INBOX the index keeps bob's \Seen: only the one bob had read.
    assert [r.flags for r in store.messages("user.bob")] == [(), ("\\Seen",)]
    # In the shared folder it is bob's seen state; carol has read neither.
    assert [r.flags for r in store.messages("Projects", "bob")] == [(), ("\\Seen",)]
    assert [r.flags for r in store.messages("Projects", "carol")] == [(), ()]
    assert [r.flags for r in store.messages("Projects")] == [(), ()]
    # Back from bob's INBOX into fred's: fred's index is not bob's, bob's seen state is.
    bob.says(r"""
        C: e SELECT INBOX
        S: ...
        S: ...
        S: ...
        S: ...
    """ + SELECT_TAIL + r"""
        S: e OK [READ-WRITE] SELECT completed
        C: f MOVE 2 user.fred
        S: * OK [COPYUID <n> 2 3] Moved
        S: * 2 EXPUNGE
        S: * 1 RECENT
        S: f OK MOVE completed
    """)
    assert [r.flags for r in store.messages("user.fred")] == [("\\Seen",)] * 2 + [()]
    assert [r.flags for r in store.messages("user.fred", "bob")] == [(), ("\\Seen",), ("\\Seen",)]
