"""What Dovecot's imaptest (its scripted groups and its stress run) found, each case as a
transcript through the sans-I/O core and the session logic on the memory store (CI has no
imaptest; issue 17 lists the groups). Each test names the group or the stress error, and the
RFC that decides it.

`Client` drives one session the way the daemon does; two of them on one store stand for two
connections. Expected lines compare as in test_imap_session_transcripts: `<n>` is any number,
`...` any text.
"""

from __future__ import annotations

import re

import pytest
from tests.imap.test_imap_session_transcripts import run_transcript
from tests.support.stores import SESSION_CONFIG

from sealmail.imap import ImapSession
from sealmail.proto.imap import (
    NEED_DATA,
    CommandReceived,
    ServerConnection,
    StatusResponse,
)
from sealmail.store.api import DeliveryTarget, MessageStore

PLAIN = b"From: a@example.org\r\nSubject: one\r\n\r\nHello\r\n"


class Client:
    """One connection's session, PREAUTH as fred."""

    def __init__(self, store: MessageStore) -> None:
        self.session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
        self.conn = ServerConnection()
        self.conn.send(StatusResponse("PREAUTH", "ready"))
        self.conn.data_to_send()

    def say(self, line: str | bytes) -> list[str]:
        """Send one command line (CRLF added); the response lines."""
        data = line.encode() if isinstance(line, str) else line
        self.conn.receive_data(data + b"\r\n")
        while (event := self.conn.next_event()) is not NEED_DATA:
            assert isinstance(event, CommandReceived), event
            for response in self.session.execute(event.command):
                self.conn.utf8 = self.session.utf8
                self.conn.send(response)
        return self.conn.data_to_send().decode("utf-8", "surrogateescape").splitlines()


def expect(got: list[str], *want: str) -> None:
    assert len(got) == len(want), "\n".join(got)
    for line, pattern in zip(got, want, strict=True):
        regex = re.escape(pattern).replace(re.escape("<n>"), r"\d+").replace(
            re.escape("..."), ".*")
        assert re.fullmatch(regex, line), f"{line!r} does not match {pattern!r}"


def deliver(store: MessageStore, content: bytes = PLAIN, count: int = 1,
            mailbox: str = "user.fred") -> None:
    for _ in range(count):
        store.deliver(content, [DeliveryTarget(mailbox)], internaldate=1e9)


def selected(store: MessageStore) -> Client:
    client = Client(store)
    assert client.say("s SELECT INBOX")[-1].startswith("s OK [READ-WRITE]")
    return client


# -- stress: "Keyword used without being in FLAGS" ----------------------------------------------


def test_a_new_keyword_is_announced_in_flags_to_both_sessions(store: MessageStore) -> None:
    """RFC 9051 7.3.5: FLAGS lists the flags of the mailbox; a session that STOREs a keyword
    first hears FLAGS and PERMANENTFLAGS again, and so does another one at its next sync."""
    deliver(store, count=2)
    first, second = selected(store), selected(store)
    expect(first.say(r"a STORE 1 +FLAGS ($Work)"),
           r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Work)",
           r"* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Work \*)] ...",
           r"* 1 FETCH (FLAGS ($Work \Recent))",
           "a OK STORE completed")
    expect(first.say(r"b STORE 2 +FLAGS ($Work)"),
           r"* 2 FETCH (FLAGS ($Work \Recent))",
           "b OK STORE completed")
    expect(second.say("c NOOP"),
           r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft $Work)",
           r"* OK [PERMANENTFLAGS (\Answered \Flagged \Deleted \Seen \Draft $Work \*)] ...",
           r"* 1 FETCH (UID 1 FLAGS ($Work))",
           r"* 2 FETCH (UID 2 FLAGS ($Work))",
           "c OK NOOP completed")


def test_a_keyword_learnt_while_setting_seen_is_announced(store: MessageStore) -> None:
    """A FETCH BODY[] that sets \\Seen reads back the message's flags; a keyword another
    session set meanwhile is announced before that FETCH shows it."""
    deliver(store)
    first, second = selected(store), selected(store)
    first.say(r"a STORE 1 +FLAGS (NIL)")  # a keyword spelt NIL (imaptest's nil group)
    got = second.say("b FETCH 1 (BODY[TEXT])")
    assert got[0] == r"* FLAGS (\Answered \Flagged \Deleted \Seen \Draft NIL)", got
    assert got[-2:] == [r" FLAGS (NIL \Seen))", "b OK FETCH completed"], got


# -- esearch-condstore ---------------------------------------------------------------------------


def test_fetch_modseq_in_a_selected_mailbox_reports_highestmodseq(store: MessageStore) -> None:
    """RFC 7162 3.1.2.1: a CONDSTORE-enabling command other than SELECT, issued with a mailbox
    selected, gets the HIGHESTMODSEQ that SELECT (CONDSTORE) would have sent; only the first."""
    deliver(store, count=2)
    client = selected(store)
    expect(client.say("a FETCH 1 MODSEQ"),
           "* 1 FETCH (MODSEQ (<n>))",
           "* OK [HIGHESTMODSEQ <n>] ...",
           "a OK FETCH completed")
    expect(client.say("b FETCH 2 MODSEQ"), "* 2 FETCH (MODSEQ (<n>))", "b OK FETCH completed")
    other = selected(store)
    expect(other.say("c STATUS INBOX (HIGHESTMODSEQ)"),
           "* STATUS INBOX (HIGHESTMODSEQ <n>)",
           "* OK [HIGHESTMODSEQ <n>] ...",
           "c OK STATUS completed")


def test_esearch_min_max_give_the_modseq_of_their_own_message(store: MessageStore) -> None:
    """RFC 4731 3.2 / RFC 7162 3.1.5: MODSEQ with MIN or MAX alone is that message's; with ALL
    or COUNT it is the highest of every match (imaptest's esearch-condstore)."""
    deliver(store, count=4)
    client = selected(store)
    modseqs = {}
    for n in (1, 3, 2, 4):  # each STORE gives its message a higher modseq
        client.say(f"s{n} STORE {n} +FLAGS.SILENT (\\Seen)")
        fetched = client.say(f"f{n} FETCH {n} MODSEQ")[0]
        modseqs[n] = int(fetched.split("MODSEQ (")[1].split(")")[0])
    search = 'SEARCH RETURN ({}) 1:3 MODSEQ "/flags/\\\\seen" all 1'
    expect(client.say("a " + search.format("MIN")),
           f'* ESEARCH (TAG "a") MIN 1 MODSEQ {modseqs[1]}', "a OK SEARCH completed")
    expect(client.say("b " + search.format("MAX")),
           f'* ESEARCH (TAG "b") MAX 3 MODSEQ {modseqs[3]}', "b OK SEARCH completed")
    expect(client.say("c " + search.format("MIN MAX")),
           f'* ESEARCH (TAG "c") MIN 1 MAX 3 MODSEQ {modseqs[3]}', "c OK SEARCH completed")
    expect(client.say("d " + search.format("")),
           f'* ESEARCH (TAG "d") ALL 1:3 MODSEQ {modseqs[2]}', "d OK SEARCH completed")
    expect(client.say("e " + search.format("MIN COUNT")),
           f'* ESEARCH (TAG "e") MIN 1 COUNT 3 MODSEQ {modseqs[2]}', "e OK SEARCH completed")


# -- append-binary -------------------------------------------------------------------------------


def test_nul_goes_out_only_in_binary_literal8(store: MessageStore) -> None:
    """RFC 9051 4.3: a literal ({n}) holds CHAR8, any octet but NUL; only literal8 (~{n},
    RFC 3516) holds NUL, and only BINARY answers with it. BODY, BODY[] and RFC822 are strings:
    each NUL shows as 0x80 there (as in Dovecot), octet for octet."""
    message = (b"From: user@domain.org\r\nContent-Type: application/octet-stream\r\n"
               b"Content-Transfer-Encoding: binary\r\n\r\n\x00\xe4\r\n")
    client = Client(store)
    expect(client.say(b"a APPEND INBOX ~{%d+}\r\n" % len(message) + message),
           "a OK [APPENDUID <n> 1] APPEND completed")
    client.say("s SELECT INBOX")
    body = "\udc80\udce4"  # 0x80 0xE4 as the test decodes them
    expect(client.say("b FETCH 1 (BODY.PEEK[1] BINARY.PEEK[1] BINARY.SIZE[1])"),
           "* 1 FETCH (BODY[1] {4}",
           body,
           " BINARY[1] ~{4}",
           "\x00\udce4",
           " BINARY.SIZE[1] 4)",
           "b OK FETCH completed")
    whole = client.say("c FETCH 1 BODY.PEEK[]")  # read and framed as it is (fast path)
    assert whole[0] == f"* 1 FETCH (BODY[] {{{len(message)}}}"
    assert whole[-4:] == ["", body, ")", "c OK FETCH completed"]
    parsed = client.say("d FETCH 1 (UID RFC822.TEXT)")  # through the parse
    assert parsed[:2] == ["* 1 FETCH (UID 1 RFC822.TEXT {4}", body]


# -- fetch-binary-mime-qp ------------------------------------------------------------------------


def test_binary_of_quoted_printable_drops_transport_padding(store: MessageStore) -> None:
    """RFC 2045 6.7 rule 3 (trailing whitespace is transport padding; "= " ends a soft line
    break), so BINARY and BINARY.SIZE (RFC 3516) agree with imaptest's 65 octets."""
    deliver(store, b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n--b\r\n'
                   b"Content-Transfer-Encoding: quoted-printable\r\n\r\n"
                   b"hello  \r\nfoo\t \t= \r\n=62\r\n--b--\r\n")
    client = selected(store)
    expect(client.say("a FETCH 1 (BINARY.SIZE[1] BINARY.PEEK[1])"),
           "* 1 FETCH (BINARY.SIZE[1] 14 BINARY[1] {14}",
           "hello",
           "foo\t \tb)",
           "a OK FETCH completed")


# -- id ------------------------------------------------------------------------------------------


def test_an_id_of_thirty_long_pairs_is_answered(store: MessageStore) -> None:
    """RFC 2971 3 allows 30 pairs of up to 30 + 1024 octets: imaptest's 31,809-octet ID line
    got a BYE (line too long) where it wants the ID response."""
    pairs = " ".join(f'"{chr(97 + n % 26)}{n:029d}" "{"1234567890" * 102}1234"'
                     for n in range(30))
    got = Client(store).say(f"a ID ({pairs})")
    assert got[0].startswith("* ID (") and got[1] == "a OK ID completed", got[:2]


# -- listext and subscribe -----------------------------------------------------------------------


def test_recursivematch_childinfo_only_for_descendants_not_listed(store: MessageStore) -> None:
    """RFC 5258 3: RECURSIVEMATCH returns a parent (CHILDINFO) for a matching descendant the
    patterns do not list; a descendant listed itself needs no parent (imaptest's listext)."""
    store.create_mailbox("user.fred.test2")
    store.create_mailbox("user.fred.test2.test1")
    run_transcript(store, r"""
        C: a SUBSCRIBE INBOX.test2.test1
        S: a OK SUBSCRIBE completed
        C: b LIST (SUBSCRIBED RECURSIVEMATCH) "" (INBOX.test2 INBOX.test2.test1)
        S: * LIST (\HasNoChildren \Subscribed) "." INBOX.test2.test1
        S: b OK LIST completed
        C: c LIST (SUBSCRIBED RECURSIVEMATCH) "" INBOX.test2
        S: * LIST (\HasChildren) "." INBOX.test2 (CHILDINFO ("SUBSCRIBED"))
        S: c OK LIST completed
    """)


def test_lsub_percent_returns_unsubscribed_parents_as_noselect(store: MessageStore) -> None:
    """RFC 3501 6.3.9: "foo/bar" subscribed, "foo" not: LSUB "%" "must return foo, not
    foo/bar, ... and it MUST be flagged with the \\Noselect attribute" (imaptest's subscribe),
    whether foo exists (test2) or is only a level of the hierarchy (test3)."""
    for name in ("test", "test2", "test2.test", "test3.test3"):
        store.create_mailbox(f"user.fred.{name}")
    run_transcript(store, r"""
        C: a SUBSCRIBE INBOX.test
        S: a OK SUBSCRIBE completed
        C: b SUBSCRIBE INBOX.test2.test
        S: b OK SUBSCRIBE completed
        C: c SUBSCRIBE INBOX.test3.test3
        S: c OK SUBSCRIBE completed
        C: d LSUB "" INBOX.%
        S: * LSUB () "." INBOX.test
        S: * LSUB (\Noselect) "." INBOX.test2
        S: * LSUB (\Noselect) "." INBOX.test3
        S: d OK LSUB completed
        C: e LSUB "" *test
        S: * LSUB () "." INBOX.test
        S: * LSUB () "." INBOX.test2.test
        S: e OK LSUB completed
    """)


# -- search-addresses, sort-addresses, sort-display-to, sort-subject -----------------------------

ADDRESSED = [  # imaptest's search-addresses messages (a few of them)
    b"From: user-from@domain.org\r\nTo: user-to@domain.org\r\n\r\n1\r\n",
    b"From: <user-from (comment)@ (comment) domain.org>\r\nTo: <user-to@domain.org>\r\n\r\n2\r\n",
    b"From: user-from@domain.org (RealFrom)\r\nTo: user-to@domain.org (RealTo)\r\n\r\n3\r\n",
    b"From: RealFrom <user-from@domain.org>\r\nTo: groupname: groupuser1@domain.org,"
    b" groupuser2@domain.org;,\r\n  groupname2: groupuser3@domain.org;\r\n\r\n4\r\n",
]


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_search_from_matches_the_envelope_address(store: MessageStore) -> None:
    """RFC 9051 6.4.4: FROM is a substring of "the envelope structure's FROM field", where the
    comments inside `<user-from (comment)@ (comment) domain.org>` are gone."""
    for content in ADDRESSED:
        deliver(store, content)
    client = selected(store)
    expect(client.say("a SEARCH FROM user-from@domain.org"),
           "* SEARCH 1 2 3 4", "a OK SEARCH completed")
    expect(client.say("b SEARCH FROM realfrom"), "* SEARCH 3 4", "b OK SEARCH completed")
    expect(client.say("c SEARCH TO groupuser3"), "* SEARCH 4", "c OK SEARCH completed")
    expect(client.say("d SEARCH TO groupname2"), "* SEARCH 4", "d OK SEARCH completed")
    expect(client.say('e SEARCH HEADER FROM ""'), "* SEARCH 1 2 3 4", "e OK SEARCH completed")


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_sort_by_addresses_takes_a_group_by_its_name(store: MessageStore) -> None:
    """RFC 5256 3: CC sorts by the addr-mailbox of the first Cc address; ENVELOPE starts a
    group with its name (RFC 9051 7.5.2), so `user2: blah@domain1.org;` sorts as "user2"; ties
    stay in sequence order (imaptest's sort-addresses)."""
    for hour, cc in enumerate((b"user2@domain2.org (foo bar)", b"user2: blah@domain1.org;",
                               b"user1@domain1.org")):
        store.deliver(b"Cc: " + cc + b"\r\n\r\nx\r\n", [DeliveryTarget("user.fred")],
                      internaldate=1e9 + 3600 * hour)
    client = selected(store)
    expect(client.say("a SORT (CC) US-ASCII ALL"), "* SORT 3 1 2", "a OK SORT completed")
    expect(client.say("b SORT (REVERSE CC) US-ASCII ALL"), "* SORT 1 2 3", "b OK SORT completed")
    expect(client.say("c SORT (CC REVERSE ARRIVAL) US-ASCII ALL"), "* SORT 3 2 1",
           "c OK SORT completed")


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_sort_displayto_of_groups_and_encoded_names(store: MessageStore) -> None:
    """RFC 5957: DISPLAYTO sorts by the display name, else addr-mailbox@addr-host; a group by
    its name (imaptest's sort-display-to)."""
    for to in (b"foo bar <a@b.c>", b"b@c.d", b"d", b"=?iso-8859-1?q?foo_aar?= <e@f.g>",
               b"=?iso-8859-1?q?foo_car?= <f@g.h>", b"a: xx@xx.org, yy@yy.org;",
               b"z: aa@aa.org, bb@bb.org;", b"empty:;"):
        deliver(store, b"To: " + to + b"\r\n\r\nx\r\n")
    client = selected(store)
    expect(client.say("a SORT (DISPLAYTO) US-ASCII ALL"), "* SORT 6 2 3 8 4 1 5 7",
           "a OK SORT completed")
    expect(client.say("b SORT (REVERSE DISPLAYTO) US-ASCII ALL"), "* SORT 7 5 1 4 8 3 2 6",
           "b OK SORT completed")


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_sort_subject_by_rfc5256_base_subject(store: MessageStore) -> None:
    """RFC 5256 2.1 base subjects (blobs before Re:/Fwd:, nested [fwd: ...]) compared with
    i;ascii-casemap, "[" and "_" after the letters (imaptest's sort-subject)."""
    for subject in (b"a", b"C", b"b", b"_", b"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", b"b (a)",
                    b"Re: [FWD: c]", b"[xyz]", None, b"=?iso-8859-1?q?_?=", b"Re: =?utf-8?q?b?=",
                    b"=?iso-8859-1?q?RE:_C?=", b"=?us-ascii?b?UmU6IGM=?=",
                    b"Ad: Re: Ad: Re: Ad: x", b"re: [fwd: [fwd: re: [fwd: babylon]]]"):
        deliver(store, (b"Subject: " + subject + b"\r\n" if subject is not None else b"")
                + b"From: x@y.org\r\n\r\nx\r\n")
    client = selected(store)
    expect(client.say("a SORT (SUBJECT) US-ASCII ALL"),
           "* SORT 9 10 1 14 3 5 11 6 15 2 7 12 13 8 4", "a OK SORT completed")
    expect(client.say("b SORT (REVERSE SUBJECT) US-ASCII ALL"),
           "* SORT 4 8 2 7 12 13 15 6 3 5 11 14 1 9 10", "b OK SORT completed")
