"""IMAP4rev2 (RFC 9051) once ENABLEd, and UTF8=ACCEPT (RFC 6855): transcripts after the RFCs'
examples, run through the sans-I/O core and the session on the memory store
(tests/imap/conftest.py), beside what an IMAP4rev1 session on the same store sees.

Transcript lines as in test_imap_session_transcripts: `C:` sent, `S:` expected (`<n>` any
number, `...` anything).
"""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.imap.test_imap_session_transcripts import run_transcript

from sealmail.imap import ENABLEABLE, UserNamespace
from sealmail.imap.namespace import net_unicode
from sealmail.store.api import DeliveryTarget, MessageStore
from sealmail.store.errors import InvalidMailboxName

MESSAGE = b"From: Fred Foobar <foobar@example.com>\r\nSubject: afternoon meeting\r\n\r\nHello\r\n"
SMITH = (b"From: smith@example.org\r\nSubject: x\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
         + "отпуск\r\n".encode())
CAFE_DECOMPOSED = "Cafe\u0301"  # "Café" as e + COMBINING ACUTE ACCENT: not in NFC
BELL = "\x07"
REV2_SELECT = r"""
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * <n> EXISTS
        S: * LIST ...
        S: * OK [PERMANENTFLAGS ...] Ok
        S: * OK [UIDVALIDITY <n>] Ok
        S: * OK [UIDNEXT <n>] Ok
        S: * OK [HIGHESTMODSEQ <n>] Ok
"""


def deliver(store: MessageStore, message: bytes, flags: tuple[str, ...] = ()) -> None:
    [result] = store.deliver(message, [DeliveryTarget("user.fred", flags)], internaldate=1e9)
    assert not isinstance(result, Exception)


# -- ENABLE (RFC 9051 6.3.1, RFC 5161) -------------------------------------------------------


def test_enable_lists_what_it_enabled_rfc9051_6_3_1(store: MessageStore) -> None:
    assert ENABLEABLE == ("CONDSTORE", "QRESYNC", "IMAP4rev2", "UTF8=ACCEPT")
    run_transcript(store, r"""
        C: t2 ENABLE CONDSTORE X-GOOD-IDEA imap4REV2
        S: * ENABLED CONDSTORE IMAP4rev2
        S: t2 OK ENABLE completed
        C: t3 ENABLE X-GOOD-IDEA
        S: * ENABLED
        S: t3 OK ENABLE completed
        C: t4 ENABLE utf8=accept
        S: * ENABLED UTF8=ACCEPT
        S: t4 OK ENABLE completed
    """)


def test_enable_rev2_or_utf8_only_before_select_rfc6855_3(store: MessageStore) -> None:
    run_transcript(store, r"""
        C: a EXAMINE INBOX.Archive
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-ONLY] EXAMINE completed
        C: b ENABLE UTF8=ACCEPT
        S: b BAD ENABLE is not allowed in the selected state
        C: c CLOSE
        S: c OK CLOSE completed
        C: d ENABLE IMAP4rev2
        S: d BAD ENABLE IMAP4rev2 or UTF8=ACCEPT must come before any SELECT
        C: e ENABLE CONDSTORE
        S: * ENABLED CONDSTORE
        S: e OK ENABLE completed
    """)


# -- SELECT / EXAMINE (RFC 9051 6.3.2, 6.3.3; Appendix E items 9-12) --------------------------


def test_select_in_rev2_rfc9051_6_3_2(store: MessageStore) -> None:
    deliver(store, MESSAGE, ("\\Seen",))
    deliver(store, MESSAGE)
    store.set_special_use("user.fred.Archive", "\\Archive")
    run_transcript(store, r"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: A142 SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 2 EXISTS
        S: * LIST (\HasChildren) "." INBOX
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Ok
        S: * OK [UIDVALIDITY <n>] Ok
        S: * OK [UIDNEXT 3] Ok
        S: * OK [HIGHESTMODSEQ <n>] Ok
        S: A142 OK [READ-WRITE] SELECT completed
        C: A143 EXAMINE INBOX.Archive
        S: * OK [CLOSED] Previous mailbox is now closed
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 0 EXISTS
        S: * LIST (\HasNoChildren \Archive) "." INBOX.Archive
        S: * OK [PERMANENTFLAGS ()] Ok
        S: * OK [UIDVALIDITY <n>] Ok
        S: * OK [UIDNEXT 1] Ok
        S: * OK [HIGHESTMODSEQ <n>] Ok
        S: A143 OK [READ-ONLY] EXAMINE completed
        C: A144 SELECT INBOX.Nope
        S: * OK [CLOSED] Previous mailbox is now closed
        S: A144 NO [NONEXISTENT] mailbox INBOX.Nope does not exist
        C: A145 SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: A145 OK [READ-WRITE] SELECT completed
        C: A146 UNSELECT
        S: A146 OK UNSELECT completed
        C: A147 CREATE INBOX.Archive
        S: A147 NO [ALREADYEXISTS] Mailbox already exists
        C: A148 DELETE INBOX.Nope
        S: A148 NO [NONEXISTENT] mailbox INBOX.Nope does not exist
        C: A149 RENAME INBOX.Nope INBOX.Other
        S: A149 NO [NONEXISTENT] mailbox INBOX.Nope does not exist
        C: A150 COPY 1 INBOX.Nope
        S: A150 BAD COPY is not allowed in the authenticated state
    """)


def test_closed_with_qresync_rfc7162_3_2_11_but_not_in_plain_rev1(store: MessageStore) -> None:
    run_transcript(store, r"""
        C: a SELECT INBOX
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: a OK [READ-WRITE] SELECT completed
        C: b SELECT INBOX
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 0 EXISTS
        S: * 0 RECENT
        S: ...
        S: ...
        S: ...
        S: ...
        S: b OK [READ-WRITE] SELECT completed
    """)
    run_transcript(store, r"""
        C: a ENABLE QRESYNC
        S: * ENABLED QRESYNC
        S: a OK ENABLE completed
        C: b SELECT INBOX
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: b OK [READ-WRITE] SELECT completed
        C: c EXAMINE INBOX
        S: * OK [CLOSED] Previous mailbox is now closed
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: ...
        S: c OK [READ-ONLY] EXAMINE completed
    """)


# -- SEARCH answered with ESEARCH (RFC 9051 6.4.4; Appendix E item 4) ------------------------


def test_search_answers_esearch_in_rev2_rfc9051_6_4_4(store: MessageStore) -> None:
    deliver(store, MESSAGE)
    deliver(store, MESSAGE)
    deliver(store, SMITH, ("\\Flagged",))
    run_transcript(store, r"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: s SELECT INBOX
    """ + REV2_SELECT + r"""
        S: s OK [READ-WRITE] SELECT completed
        C: A282 SEARCH RETURN (MIN COUNT) FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A282") COUNT 0
        S: A282 OK SEARCH completed
        C: A283 SEARCH RETURN () NOT FLAGGED SINCE 1-Feb-1994 NOT FROM "Smith"
        S: * ESEARCH (TAG "A283") ALL 1:2
        S: A283 OK SEARCH completed
        C: A284 SEARCH TEXT "string not in mailbox"
        S: * ESEARCH (TAG "A284")
        S: A284 OK SEARCH completed
        C: A285 SEARCH CHARSET UTF-8 TEXT {12+}
        C: отпуск
        S: * ESEARCH (TAG "A285") ALL 3
        S: A285 OK SEARCH completed
        C: A286 SEARCH RETURN (MIN) UNSEEN
        S: * ESEARCH (TAG "A286") MIN 1
        S: A286 OK SEARCH completed
        C: A287 UID SEARCH RETURN (MIN MAX) 1:5000
        S: * ESEARCH (TAG "A287") UID MIN 1 MAX 3
        S: A287 OK UID SEARCH completed
        C: A288 SEARCH RETURN (COUNT) DELETED
        S: * ESEARCH (TAG "A288") COUNT 0
        S: A288 OK SEARCH completed
        C: A289 UID SEARCH FROM smith
        S: * ESEARCH (TAG "A289") UID ALL 3
        S: A289 OK UID SEARCH completed
        C: A290 SEARCH RETURN (SAVE) FLAGGED
        S: A290 OK SEARCH completed
        C: A291 FETCH $ (UID)
        S: * 3 FETCH (UID 3)
        S: A291 OK FETCH completed
        C: A292 SEARCH "отпуск"
        S: A292 BAD ...
        C: A293 SEARCH SUBJECT "отпуск" RECENT
        S: * ESEARCH (TAG "A293")
        S: A293 OK SEARCH completed
        C: A294 SORT (SUBJECT) UTF-8 ALL
        S: * SORT 1 2 3
        S: A294 OK SORT completed
    """)


def test_status_size_and_deleted_rfc9051_6_3_11(store: MessageStore) -> None:
    deliver(store, MESSAGE, ("\\Deleted",))
    deliver(store, MESSAGE)
    run_transcript(store, r"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: A042 STATUS INBOX (UIDNEXT MESSAGES DELETED SIZE UNSEEN)
        S: * STATUS INBOX (UIDNEXT 3 MESSAGES 2 DELETED 1 SIZE 154 UNSEEN 2)
        S: A042 OK STATUS completed
        C: A043 STATUS INBOX.Nope (MESSAGES)
        S: A043 NO [NONEXISTENT] mailbox INBOX.Nope does not exist
    """)


# -- LIST (RFC 9051 6.3.9) -----------------------------------------------------------------------


def test_list_rev2_rules_rfc9051_6_3_9(store: MessageStore) -> None:
    for name in ("user.fred.Fruit.Banana", "user.fred.Fruit.Peach", "user.fred.Vegetable",
                 "user.bob", "user.bob.Shared"):
        store.create_mailbox(name)
    store.set_acl("user.bob.Shared", "fred", "l")
    run_transcript(store, r"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: s1 SUBSCRIBE INBOX.Fruit.Banana
        S: s1 OK SUBSCRIBE completed
        C: s2 SUBSCRIBE INBOX.Fruit.Peach
        S: s2 OK SUBSCRIBE completed
        C: s3 DELETE INBOX.Fruit.Peach
        S: s3 OK DELETE completed
        C: A02 LIST (SUBSCRIBED) "" "INBOX.*"
        S: * LIST (\HasNoChildren \Subscribed) "." INBOX.Fruit.Banana
        S: * LIST (\NonExistent \HasNoChildren \Subscribed) "." INBOX.Fruit.Peach
        S: A02 OK LIST completed
        C: A03 LIST () "" "INBOX.%" RETURN (CHILDREN)
        S: * LIST (\HasNoChildren) "." INBOX.Archive
        S: * LIST (\NonExistent \HasChildren) "." INBOX.Fruit
        S: * LIST (\HasNoChildren) "." INBOX.Vegetable
        S: A03 OK LIST completed
        C: A04 LIST "" "INBOX.%"
        S: * LIST (\HasNoChildren) "." INBOX.Archive
        S: * LIST (\Noselect \HasChildren) "." INBOX.Fruit
        S: * LIST (\HasNoChildren) "." INBOX.Vegetable
        S: A04 OK LIST completed
        C: C04 LIST (SUBSCRIBED RECURSIVEMATCH) "" "INBOX.%"
        S: * LIST (\NonExistent \HasChildren) "." INBOX.Fruit (CHILDINFO ("SUBSCRIBED"))
        S: C04 OK LIST completed
        C: C05 LIST (RECURSIVEMATCH) "" "%"
        S: C05 BAD RECURSIVEMATCH needs another selection option
        C: A01 LIST "" user.bob.% RETURN (STATUS (MESSAGES UNSEEN))
        S: * LIST (\Noselect \HasNoChildren) "." user.bob.Shared
        S: A01 OK LIST completed
        C: A05 LIST "" ("INBOX" "INBOX.Veg*")
        S: * LIST (\HasChildren) "." INBOX
        S: * LIST (\HasNoChildren) "." INBOX.Vegetable
        S: A05 OK LIST completed
    """)


# -- UTF8=ACCEPT (RFC 6855) -----------------------------------------------------------------------


def test_utf8_accept_names_both_ways_rfc6855_3(store: MessageStore) -> None:
    run_transcript(store, r"""
        C: a ENABLE UTF8=ACCEPT
        S: * ENABLED UTF8=ACCEPT
        S: a OK ENABLE completed
        C: b CREATE "INBOX.Café"
        S: b OK CREATE completed
        C: c CREATE INBOX.Tōkyō
        S: c OK CREATE completed
        C: d CREATE "INBOX.R&D"
        S: d OK CREATE completed
        C: e LIST "" "INBOX.*"
        S: * LIST (\HasNoChildren) "." INBOX.Archive
        S: * LIST (\HasNoChildren) "." "INBOX.Café"
        S: * LIST (\HasNoChildren) "." INBOX.R&D
        S: * LIST (\HasNoChildren) "." "INBOX.Tōkyō"
        S: e OK LIST completed
        C: f STATUS "INBOX.Café" (MESSAGES)
        S: * STATUS "INBOX.Café" (MESSAGES 0)
        S: f OK STATUS completed
        C: g LIST "" "INBOX.T*ky*"
        S: * LIST (\HasNoChildren) "." "INBOX.Tōkyō"
        S: g OK LIST completed
        C: h SUBSCRIBE "INBOX.Café"
        S: h OK SUBSCRIBE completed
        C: i LSUB "" *
        S: * LSUB () "." "INBOX.Café"
        S: i OK LSUB completed
        C: j GETACL "INBOX.Café"
        S: * ACL "INBOX.Café" fred lrswipkxtecda
        S: j OK GETACL completed
        C: k RENAME "INBOX.Café" "INBOX.Café noir"
        S: k OK RENAME completed
        C: l MYRIGHTS "INBOX.Café noir"
        S: * MYRIGHTS "INBOX.Café noir" lrswipkxtecda
        S: l OK MYRIGHTS completed
        C: m DELETE "INBOX.Café noir"
        S: m OK DELETE completed
        C: n SELECT "INBOX.Café"
        S: n NO [NONEXISTENT] mailbox INBOX.Café does not exist
    """)
    # The same mailboxes, to an IMAP4rev1 client that did not enable UTF-8: modified UTF-7.
    run_transcript(store, r"""
        C: a LIST "" "INBOX.*"
        S: * LIST (\HasNoChildren) "." INBOX.Archive
        S: * LIST (\HasNoChildren) "." INBOX.R&-D
        S: * LIST (\HasNoChildren) "." INBOX.T&AU0-ky&AU0-
        S: a OK LIST completed
        C: b SELECT INBOX.Tōkyō
        S: b BAD Invalid syntax: expected end of command ...
        C: c SELECT "INBOX.Tōkyō"
        S: c NO [CANNOT] non-ASCII byte in modified UTF-7 name 'INBOX.T?ky?'
        C: d STATUS INBOX.T&AU0-ky&AU0- (MESSAGES)
        S: * STATUS INBOX.T&AU0-ky&AU0- (MESSAGES 0)
        S: d OK STATUS completed
        C: e NOOP ünïcode
        S: e BAD Invalid syntax: expected end of command near ...
    """)


def test_utf8_append_and_search_rfc6855_3_and_4(store: MessageStore) -> None:
    store.create_mailbox("user.fred.Caf&AOk-")
    run_transcript(store, r"""
        C: a APPEND INBOX UTF8 (~{4+}
        C: hi
        C: )
        S: a NO [CANNOT] APPEND UTF8 needs ENABLE UTF8=ACCEPT first
        C: b ENABLE UTF8=ACCEPT
        S: * ENABLED UTF8=ACCEPT
        S: b OK ENABLE completed
        C: c APPEND "INBOX.Café" (\Seen) UTF8 (~{30+}
        C: Subject: café au lait
        C:
        C: hi
        C: )
        S: c OK [APPENDUID <n> 1] APPEND completed
        C: d SELECT "INBOX.Café"
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 1 EXISTS
        S: * 1 RECENT
        S: ...
        S: ...
        S: ...
        S: ...
        S: d OK [READ-WRITE] SELECT completed
        C: e SEARCH CHARSET UTF-8 SUBJECT café
        S: e BAD No CHARSET in SEARCH after ENABLE UTF8=ACCEPT
        C: f SEARCH SUBJECT "café"
        S: * SEARCH 1
        S: f OK SEARCH completed
        C: g SEARCH SUBJECT café
        S: * SEARCH 1
        S: g OK SEARCH completed
        C: h FETCH 1 (ENVELOPE BODY.PEEK[HEADER.FIELDS (SUBJECT)])
        S: * 1 FETCH (ENVELOPE (NIL "café au lait" NIL NIL NIL NIL NIL NIL NIL NIL) ...
        S: Subject: café au lait
        S:
        S: )
        S: h OK FETCH completed
    """)


def test_denormalized_names_get_oldname_rfc9051_6_3_9_7(store: MessageStore) -> None:
    decomposed = f"INBOX.{CAFE_DECOMPOSED}"
    run_transcript(store, rf"""
        C: a ENABLE IMAP4rev2
        S: * ENABLED IMAP4rev2
        S: a OK ENABLE completed
        C: b CREATE "{decomposed}"
        S: * LIST () "." "INBOX.Café" (OLDNAME ("{decomposed}"))
        S: b OK CREATE completed
        C: c CREATE "INBOX.Café"
        S: c NO [ALREADYEXISTS] Mailbox already exists
        C: d SELECT "{decomposed}"
        S: * FLAGS (\Answered \Flagged \Deleted \Seen \Draft)
        S: * 0 EXISTS
        S: * LIST (\HasNoChildren) "." "INBOX.Café" (OLDNAME ("{decomposed}"))
        S: * OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft \*)] Ok
        S: ...
        S: ...
        S: ...
        S: d OK [READ-WRITE] SELECT completed
        C: e APPEND "{decomposed}" {{2+}}
        C: hi
        S: * LIST () "." "INBOX.Café" (OLDNAME ("{decomposed}"))
        S: * 1 EXISTS
        S: e OK [APPENDUID <n> 1] APPEND completed
        C: f UNSELECT
        S: f OK UNSELECT completed
        C: g RENAME "{decomposed}" INBOX.Tea
        S: * LIST () "." INBOX.Tea (OLDNAME ("{decomposed}"))
        S: g OK RENAME completed
        C: h DELETE "{decomposed}"
        S: h NO [NONEXISTENT] ...
        C: i CREATE "INBOX.Caf{BELL}"
        S: i NO [CANNOT] control character in mailbox name ...
    """)


def test_appenduid_only_for_who_may_read_rfc9051_6_3_12(store: MessageStore) -> None:
    store.create_mailbox("user.bob")
    store.create_mailbox("user.bob.Dropbox")
    store.set_acl("user.bob.Dropbox", "fred", "li")
    run_transcript(store, r"""
        C: a APPEND user.bob.Dropbox {2+}
        C: hi
        S: a OK APPEND completed
        C: b APPEND INBOX {2+}
        C: hi
        S: b OK [APPENDUID <n> 1] APPEND completed
    """)


# -- names: Net-Unicode (RFC 9051 5.1, RFC 5198) ---------------------------------------------


def test_net_unicode_names() -> None:
    namespace = UserNamespace("user.alice")
    assert net_unicode(CAFE_DECOMPOSED) == "Café"
    for bad in ("a\x00b", "tab\there", "del\x7f", "c1\x85"):
        with pytest.raises(InvalidMailboxName):
            net_unicode(bad)
    composed = namespace.to_internal("INBOX.Café", utf8=True)
    assert composed == "user.alice.Caf&AOk-"
    assert namespace.to_internal(f"INBOX.{CAFE_DECOMPOSED}", utf8=True) == composed
    assert namespace.to_internal("INBOX.R&D", utf8=True) == "user.alice.R&-D"
    assert namespace.to_internal("INBOX.R&-D") == "user.alice.R&-D"  # '&' as modified UTF-7
    assert namespace.to_external("user.alice.R&-D", utf8=True) == "INBOX.R&D"


@given(st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="./!^"),
               min_size=1, max_size=12))
def test_every_spelling_of_a_name_is_the_same_mailbox(level: str) -> None:
    """RFC 9051 5.1: a server that accepts de-normalized names "MUST accept them in all IMAP
    commands"; NFD and NFC spellings reach one internal name, which reads back in NFC."""
    namespace = UserNamespace("user.alice")
    try:
        composed = namespace.to_internal(f"INBOX.{level}", utf8=True)
    except InvalidMailboxName:
        return  # e.g. a level that normalizes to something empty or too long
    decomposed = unicodedata.normalize("NFD", f"INBOX.{level}")
    assert namespace.to_internal(decomposed, utf8=True) == composed
    external = namespace.to_external(composed, utf8=True)
    assert external == unicodedata.normalize("NFC", f"INBOX.{level}")
    assert namespace.to_internal(namespace.to_external(composed), utf8=False) == composed
