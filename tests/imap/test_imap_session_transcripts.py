"""Command transcripts after the RFCs' examples, run through the sans-I/O core and the session
logic on the memory store (tests/imap/conftest.py): no sockets, no event loop.

`C:` lines are sent as they are (CRLF added); `S:` lines must come back in order, where `*`-free
text is compared exactly and `<n>` stands for any number (UIDVALIDITY, MODSEQ).
"""

from __future__ import annotations

import re

from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession
from sealmail.proto.imap import (
    NEED_DATA,
    CommandReceived,
    ConnectionClosed,
    Logout,
    ServerConnection,
    StatusResponse,
)
from sealmail.store.api import DeliveryTarget, MessageStore

MESSAGE = b"From: Fred Foobar <foobar@example.com>\r\nSubject: afternoon meeting\r\n\r\nHello\r\n"


def run_transcript(
    store: MessageStore, transcript: str, session: ImapSession | None = None
) -> None:
    """Run `transcript` as fred (or as `session`), answering as the daemon does: the
    connection renders (and parses) with UTF-8 once the session enabled it."""
    session = session or ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    conn = ServerConnection()
    conn.send(StatusResponse("PREAUTH", "ready"))
    conn.data_to_send()
    received: list[str] = []
    expected: list[str] = []
    for line in transcript.strip().splitlines():
        kind, _, text = line.strip().partition(" ")
        if kind == "C:":
            conn.receive_data(text.encode() + b"\r\n")
            while (event := conn.next_event()) is not NEED_DATA:
                if isinstance(event, ConnectionClosed):
                    break
                if not isinstance(event, CommandReceived):
                    continue  # bad input the core answered itself
                if isinstance(event.command, Logout):
                    conn.send(StatusResponse("BYE", "bye"))
                    conn.send(StatusResponse("OK", "LOGOUT completed", tag=event.command.tag))
                    continue
                for response in session.execute(event.command):
                    conn.utf8 = session.utf8  # as sealmail.server.imapd does
                    conn.send(response)
            received += conn.data_to_send().decode().splitlines()
        elif kind == "S:":
            expected.append(text)
    assert len(received) == len(expected), "\n".join(received)
    for got, want in zip(received, expected, strict=True):
        pattern = re.escape(want).replace(re.escape("<n>"), r"\d+").replace(re.escape("..."), ".*")
        assert re.fullmatch(pattern, got), f"{got!r} does not match {want!r}"


def deliver(store: MessageStore, count: int, flags: tuple[str, ...] = ()) -> None:
    for _ in range(count):
        store.deliver(MESSAGE, [DeliveryTarget("user.fred", flags)], internaldate=1e9)


def test_select_rfc9051_6_3_2(store: MessageStore) -> None:
    deliver(store, 2, ("\\Seen",))
    deliver(store, 1)
    run_transcript(store, r"""
        C: A142 SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 3 EXISTS
        S: * 3 RECENT
        S: * OK [UNSEEN 3] Message 3 is first unseen
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Ok
        S: * OK [UIDVALIDITY <n>] Ok
        S: * OK [UIDNEXT 4] Ok
        S: * OK [HIGHESTMODSEQ <n>] Ok
        S: A142 OK [READ-WRITE] SELECT completed
        C: A143 EXAMINE INBOX.Archive
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 0 EXISTS
        S: * 0 RECENT
        S: * OK [PERMANENTFLAGS ()] Ok
        S: * OK [UIDVALIDITY <n>] Ok
        S: * OK [UIDNEXT 1] Ok
        S: * OK [HIGHESTMODSEQ <n>] Ok
        S: A143 OK [READ-ONLY] EXAMINE completed
        C: A144 SELECT INBOX.Nope
        S: A144 NO [NONEXISTENT] ...
        C: A145 FETCH 1 FLAGS
        S: A145 BAD FETCH is not allowed in the authenticated state
    """)


def test_store_and_expunge_rfc9051_6_4_3_and_6_4_6(store: MessageStore) -> None:
    deliver(store, 1, ("\\Seen",))
    deliver(store, 4)
    run_transcript(store, r"""
        C: A001 SELECT INBOX
        S: ...
        S: * 5 EXISTS
        S: * 5 RECENT
        S: * OK [UNSEEN 2] Message 2 is first unseen
        S: ...
        S: ...
        S: ...
        S: ...
        S: A001 OK [READ-WRITE] SELECT completed
        C: A003 STORE 2:4 +FLAGS (\Deleted)
        S: * 2 FETCH (FLAGS (\Deleted \Recent))
        S: * 3 FETCH (FLAGS (\Deleted \Recent))
        S: * 4 FETCH (FLAGS (\Deleted \Recent))
        S: A003 OK STORE completed
        C: A202 EXPUNGE
        S: * 4 EXPUNGE
        S: * 3 EXPUNGE
        S: * 2 EXPUNGE
        S: * 2 RECENT
        S: A202 OK EXPUNGE completed
        C: A204 FETCH 1:* (UID)
        S: * 1 FETCH (UID 1)
        S: * 2 FETCH (UID 5)
        S: A204 OK FETCH completed
        C: A205 STORE 9 FLAGS (\Seen)
        S: A205 BAD Invalid message sequence number
        C: A206 STORE 1 +FLAGS (\Recent)
        S: A206 BAD \Recent cannot be stored
    """)


def test_uidplus_and_move_rfc4315_rfc6851(store: MessageStore) -> None:
    deliver(store, 3)
    run_transcript(store, r"""
        C: A003 APPEND INBOX {3+}
        C: Hi!
        S: A003 OK [APPENDUID <n> 4] APPEND completed
        C: a SELECT INBOX
        S: ...
        S: * 4 EXISTS
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-WRITE] SELECT completed
        C: A004 COPY 2:4 INBOX.Archive
        S: A004 OK [COPYUID <n> 2:4 1:3] COPY completed
        C: a UID MOVE 1:2 INBOX.Archive
        S: * OK [COPYUID <n> 1:2 4:5] Moved
        S: * 2 EXPUNGE
        S: * 1 EXPUNGE
        S: * 2 RECENT
        S: a OK UID MOVE completed
        C: b UID EXPUNGE 3
        S: b OK UID EXPUNGE completed
        C: c COPY 1 INBOX.Nope
        S: c NO [TRYCREATE] Target mailbox does not exist
    """)


def test_list_lsub_namespace_rfc9051_6_3_9(store: MessageStore) -> None:
    store.create_mailbox("user.fred.Archive.2025")
    run_transcript(store, r"""
        C: A101 LIST "" ""
        S: * LIST (\Noselect) "." ""
        S: A101 OK LIST completed
        C: A102 LIST "" %
        S: * LIST (\HasChildren) "." INBOX
        S: A102 OK LIST completed
        C: A103 LIST INBOX. *
        S: * LIST (\HasChildren) "." INBOX.Archive
        S: * LIST (\HasNoChildren) "." INBOX.Archive.2025
        S: A103 OK LIST completed
        C: A104 SUBSCRIBE INBOX.Archive
        S: A104 OK SUBSCRIBE completed
        C: A105 LIST (SUBSCRIBED) "" * RETURN (CHILDREN)
        S: * LIST (\HasChildren \Subscribed) "." INBOX.Archive
        S: A105 OK LIST completed
        C: A106 LSUB "" *
        S: * LSUB () "." INBOX.Archive
        S: A106 OK LSUB completed
        C: A107 NAMESPACE
        S: * NAMESPACE (("INBOX." ".")) (("user." ".")) (("" "."))
        S: A107 OK NAMESPACE completed
        C: A108 STATUS INBOX.Archive (MESSAGES UIDNEXT)
        S: * STATUS INBOX.Archive (MESSAGES 0 UIDNEXT 1)
        S: A108 OK STATUS completed
        C: A109 LOGOUT
        S: * BYE bye
        S: A109 OK LOGOUT completed
    """)


def test_search_and_esearch_rfc9051_6_4_4_rfc4731(store: MessageStore) -> None:
    deliver(store, 2)
    store.deliver(b"From: smith@example.org\r\nSubject: x\r\n\r\nbody\r\n",
                  [DeliveryTarget("user.fred", ("\\Flagged",))], internaldate=1e9)
    run_transcript(store, r"""
        C: a SELECT INBOX
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-WRITE] SELECT completed
        C: A282 SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * SEARCH
        S: A282 OK SEARCH completed
        C: A283 SEARCH TEXT "meeting" NOT FLAGGED
        S: * SEARCH 1 2
        S: A283 OK SEARCH completed
        C: A284 SEARCH CHARSET KOI8-R FROM x
        S: A284 NO [BADCHARSET (US-ASCII UTF-8)] Charset KOI8-R is not supported
        C: A285 UID SEARCH RETURN (MIN COUNT) FLAGGED
        S: * ESEARCH (TAG "A285") UID MIN 3 COUNT 1
        S: A285 OK UID SEARCH completed
    """)
