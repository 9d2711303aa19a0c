"""ESORT and CONTEXT=SEARCH / CONTEXT=SORT (RFC 5267) as transcripts: imaptest's esort,
search-partial, sort-partial and search-context-update 1-3 groups, with bad input."""

from __future__ import annotations

import pytest
from tests.imap.test_imap_append_ext import raw_say
from tests.imap.test_imaptest_findings import Client, expect, selected

from sealmail.imap.contexts import MAX_CONTEXTS
from sealmail.proto.imap.returns import ordered_set
from sealmail.store.api import DeliveryTarget, MessageStore


def five(store: MessageStore) -> Client:
    for n in range(5):
        content = b"From: a@example.org\r\nSubject: s%d\r\n\r\nbody\r\n" % n
        # Message 4 arrives with message 1's date: REVERSE ARRIVAL ties keep mailbox order.
        store.deliver(content, [DeliveryTarget("user.fred")], internaldate=1e9 + n * (n != 3))
    return selected(store)


def test_esort_min_max_all_count(store: MessageStore) -> None:
    client = five(store)
    expect(client.say("a SORT RETURN (MIN) (ARRIVAL) US-ASCII 1:5"),
           '* ESEARCH (TAG "a") MIN 1', "a OK SORT completed")
    expect(client.say("a SORT RETURN (MAX) (ARRIVAL) US-ASCII 1:5"),
           '* ESEARCH (TAG "a") MAX 5', "a OK SORT completed")
    expect(client.say("a SORT RETURN (ALL COUNT) (REVERSE SUBJECT) US-ASCII 1:5"),
           '* ESEARCH (TAG "a") ALL 5,4,3,2,1 COUNT 5', "a OK SORT completed")
    expect(client.say("a UID SORT RETURN () (ARRIVAL) US-ASCII 2:3"),
           '* ESEARCH (TAG "a") UID ALL 2:3', "a OK UID SORT completed")


def test_sort_partial_keeps_sort_order(store: MessageStore) -> None:
    client = five(store)
    expect(client.say("a SORT RETURN (PARTIAL 2:4) (REVERSE ARRIVAL) US-ASCII ALL"),
           '* ESEARCH (TAG "a") PARTIAL (2:4 3,2,1)',
           "a OK SORT completed")
    expect(client.say("a SORT RETURN (PARTIAL 4:2) (ARRIVAL) US-ASCII ALL"),
           '* ESEARCH (TAG "a") PARTIAL (2:4 4,2:3)', "a OK SORT completed")


def test_search_partial(store: MessageStore) -> None:
    client = five(store)
    for options, want in (("1:1", "1:1 1"), ("4:2", "2:4 2:4"), ("1:6", "1:6 1:5"),
                          ("6:6", "6:6 NIL")):
        expect(client.say(f"a SEARCH RETURN (PARTIAL {options}) ALL"),
               f'* ESEARCH (TAG "a") PARTIAL ({want})', "a OK SEARCH completed")
    expect(client.say("a SEARCH RETURN (PARTIAL 2:3) 1:2,4:5"),
           '* ESEARCH (TAG "a") PARTIAL (2:3 2,4)', "a OK SEARCH completed")
    expect(client.say("a UID SEARCH RETURN (PARTIAL 2:2) ALL"),
           '* ESEARCH (TAG "a") UID PARTIAL (2:2 2)', "a OK UID SEARCH completed")


@pytest.mark.parametrize("bad", ["PARTIAL 1", "PARTIAL 1:*", "PARTIAL *:1", "PARTIAL 0:2",
                                 "PARTIAL 1:2 PARTIAL 3:4", "PARTIAL 1:99999999999", "BOGUS"])
def test_bad_return_options(store: MessageStore, bad: str) -> None:
    client = five(store)
    assert raw_say(client, f"a SEARCH RETURN ({bad}) ALL".encode())[-1].startswith("a BAD")
    got = raw_say(client, f"a SORT RETURN ({bad}) (ARRIVAL) US-ASCII ALL".encode())
    assert got[-1].startswith("a BAD")
    assert raw_say(client, b"a SORT RETURN (SAVE) (ARRIVAL) US-ASCII ALL")[-1].startswith("a BAD")


def test_search_update_addto_removefrom_and_cancel(store: MessageStore) -> None:
    """imaptest search-context-update: REMOVEFROM before the EXPUNGEs (old numbers), ADDTO
    after EXISTS."""
    client = five(store)
    expect(client.say("s SEARCH RETURN (UPDATE) SEEN"), '* ESEARCH (TAG "s")',
           "s OK SEARCH completed")
    expect(client.say(r"a STORE 1,2,4 +FLAGS.SILENT (\Seen)"),
           '* ESEARCH (TAG "s") ADDTO (1 1:2,4)', "a OK STORE completed")
    expect(client.say(r"a STORE 1,2 -FLAGS.SILENT (\Seen)"),
           '* ESEARCH (TAG "s") REMOVEFROM (1 1:2)', "a OK STORE completed")
    client.say(r"a STORE 3:5 +FLAGS.SILENT (\Deleted)")
    expect(client.say("a EXPUNGE"), '* ESEARCH (TAG "s") REMOVEFROM (1 4)',
           "* 5 EXPUNGE", "* 4 EXPUNGE", "* 3 EXPUNGE", "* 2 RECENT",
           "a OK EXPUNGE completed")
    store.deliver(b"S: x\r\n\r\nx\r\n", [DeliveryTarget("user.fred", ("\\Seen",))])
    expect(client.say("a NOOP"), "* 3 EXISTS", "* <n> RECENT",
           '* ESEARCH (TAG "s") ADDTO (1 3)', "a OK NOOP completed")
    expect(client.say('a CANCELUPDATE "s"'), "a OK CANCELUPDATE completed")
    expect(client.say(r"a STORE 1 +FLAGS.SILENT (\Seen)"), "a OK STORE completed")
    assert raw_say(client, b'a CANCELUPDATE "s"')[-1].startswith("a BAD")
    assert raw_say(client, b"a CANCELUPDATE")[-1].startswith("a BAD")


def test_uid_search_update_and_sort_update(store: MessageStore) -> None:
    client = five(store)
    client.say(r"a STORE 1,2 +FLAGS.SILENT (\Seen)")
    expect(client.say("s UID SEARCH RETURN (UPDATE ALL) OR SEEN SUBJECT s33"),
           '* ESEARCH (TAG "s") UID ALL 1:2', "s OK UID SEARCH completed")
    expect(client.say("t SORT RETURN (UPDATE) (REVERSE ARRIVAL) US-ASCII SEEN"),
           '* ESEARCH (TAG "t")', "t OK SORT completed")
    expect(client.say(r"a STORE 3 +FLAGS.SILENT (\Seen)"),
           '* ESEARCH (TAG "s") UID ADDTO (3 3)', '* ESEARCH (TAG "t") ADDTO (1 3)',
           "a OK STORE completed")
    # Deselecting ends every context.
    client.say("a UNSELECT")
    assert client.session.update_contexts == {}


def test_update_contexts_are_bounded(store: MessageStore) -> None:
    client = five(store)
    for n in range(MAX_CONTEXTS):
        client.say(f"s{n} SEARCH RETURN (UPDATE) SEEN")
    got = client.say("x SEARCH RETURN (UPDATE) SEEN")
    assert got[-1].startswith("x NO [LIMIT]"), got


def test_ordered_set() -> None:
    assert ordered_set([5, 3, 4, 2, 1]) == "5,3:4,2,1"
    assert ordered_set([1, 2, 3]) == "1:3"
    assert ordered_set([]) == ""

