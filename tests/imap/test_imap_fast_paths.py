"""The fast ways of answering FETCH, STORE and SEARCH give exactly what the general ways give.

Expected FETCH output is rendered here from the store's records with the generic serializer
(one `DataResponse` per message); SEARCH results are compared with the per-message evaluator
(`_Evaluator`, which reads every message) over random key trees.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession, fetching, listing, searching
from sealmail.imap.fetching import StructureCache, internaldate_text, memo
from sealmail.imap.selected import SelectedMailbox, flag_atoms
from sealmail.proto.imap import (
    Literal,
    ParserLimits,
    Response,
    SearchKey,
    SequenceSet,
    Value,
    envelope_value,
    parse_command,
    parse_message,
    render,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import DeliveryTarget, MessageRecord, MessageStore

FLAG_SETS = [(), ("\\Seen",), ("\\Flagged", "$Label1"), ("\\Seen", "\\Deleted"), ("$label1",),
             ("\\Answered", "\\Seen", "Work")]
# UIDs 1..20 were claimed as \Recent by an earlier session; 21..30 are \Recent in the first
# read-write session (and in every EXAMINE), so the fast paths render both kinds of flag sets.
RECENT_UIDS = frozenset(range(21, 31))


def message(n: int) -> bytes:
    subject = f"=?utf-8?q?caf=C3=A9_{n}?=" if n % 7 == 0 else f"message {n} topic{n % 4}"
    return (f"From: sender{n % 3}@example.org\r\nTo: fred@example.org\r\n"
            f"Subject: {subject}\r\nDate: {1 + n % 28:02d} Mar 2026 10:00:00 +0000\r\n"
            f"Message-ID: <m{n}@example.org>\r\n\r\n" + "line\r\n" * (n % 5 + 1)
            + ("needle in the body\r\n" if n % 6 == 0 else "")).encode()


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[MessageStore]:
    disk = open_store(backend, store_config(tmp_path))
    disk.create_mailbox("user.fred")
    for n in range(30):
        disk.deliver(message(n), [DeliveryTarget("user.fred", FLAG_SETS[n % len(FLAG_SETS)])],
                     internaldate=1.7e9 + n * 86400)
    disk.expunge("user.fred", [4, 11])  # UIDs with gaps
    disk.claim_recent("user.fred", min(RECENT_UIDS) - 1)
    yield disk
    disk.close()


def session_on(store: MessageStore, examine: bool = False) -> ImapSession:
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    run(session, "a EXAMINE INBOX" if examine else "a SELECT INBOX")
    return session


def responses(session: ImapSession, line: str) -> list[Response]:
    return session.execute(parse_command(line.encode() + b"\r\n", ParserLimits()))


def run(session: ImapSession, line: str) -> bytes:
    return b"".join(render(r) for r in responses(session, line))


def expected_fetch(store: MessageStore, seqs: list[int], items: list[str], tag: str,
                   tagged: str = "FETCH completed", length: int | None = None,
                   recent: frozenset[int] = frozenset()) -> bytes:
    """What the generic serializer makes of these items, from the store's records (and
    \\Recent on the UIDs of `recent`)."""
    records = store.messages("user.fred")
    out = b""
    for seq in seqs:
        record = records[seq - 1]
        if record.uid in recent:
            record = dataclasses.replace(record, flags=(*record.flags, "\\Recent"))
        values: list[tuple[str, Value]] = []
        for item in items:
            values.append((item, _value(store, record, item, length)))
        out += render(replies.fetch(seq, values))
    return out + f"{tag} OK {tagged}\r\n".encode()


def _value(store: MessageStore, record: MessageRecord, item: str, length: int | None) -> Value:
    if item == "UID":
        return record.uid
    if item == "FLAGS":
        return flag_atoms(record.flags)
    if item == "MODSEQ":
        return [record.modseq]
    if item == "INTERNALDATE":
        return internaldate_text(record.internaldate)
    if item == "RFC822.SIZE":
        return record.size
    data = store.message_bytes("user.fred", record.uid)
    origin = int(item.split("<")[1].rstrip(">")) if "<" in item else 0
    return Literal(data[origin : origin + (length or len(data))])


@pytest.fixture(params=[(1000,), (2, 3, 5)], ids=["one-chunk", "small-chunks"])
def chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching.job, "CHUNKS", request.param)
    monkeypatch.setattr(fetching.job, "BODY_CHUNKS", request.param)


@pytest.mark.usefixtures("chunks")
@pytest.mark.parametrize(("command", "seqs", "items"), [
    ("FETCH 1:* (FLAGS UID)", range(1, 29), ["FLAGS", "UID"]),
    ("FETCH 2:5,9,20:* (UID FLAGS MODSEQ)", [2, 3, 4, 5, 9, *range(20, 29)],
     ["UID", "FLAGS", "MODSEQ"]),
    ("UID FETCH 3:7,25:* (RFC822.SIZE INTERNALDATE FLAGS)", [3, 4, 5, 6, *range(23, 29)],
     ["UID", "RFC822.SIZE", "INTERNALDATE", "FLAGS"]),
    ("FETCH 7 (UID UID)", [7], ["UID", "UID"]),
    ("FETCH 1:* FAST", range(1, 29), ["FLAGS", "INTERNALDATE", "RFC822.SIZE"]),
])
def test_index_items_render_as_the_generic_way(store: MessageStore, command: str,
                                               seqs: range | list[int], items: list[str]) -> None:
    session = session_on(store)
    tagged = ("UID FETCH" if command.startswith("UID") else "FETCH") + " completed"
    expected = expected_fetch(store, list(seqs), items, "t", tagged, recent=RECENT_UIDS)
    if "MODSEQ" in items:
        expected = condstore_enabled(store, expected)
    assert run(session, "t " + command) == expected


def condstore_enabled(store: MessageStore, expected: bytes) -> bytes:
    """`expected` with the HIGHESTMODSEQ that the first CONDSTORE-enabling command gets in a
    selected mailbox (RFC 7162 3.1.2.1) before its tagged response."""
    info = store.mailbox("user.fred")
    assert info is not None
    tagged = expected[expected.rindex(b"\r\n", 0, len(expected) - 2) + 2:]
    return expected[: -len(tagged)] + b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % (
        info.highestmodseq) + tagged


@pytest.mark.usefixtures("chunks")
def test_changedsince_and_a_message_gone_from_the_store(store: MessageStore) -> None:
    session = session_on(store)
    modseq = store.messages("user.fred")[20].modseq
    assert run(session, f"t FETCH 1:* (UID FLAGS) (CHANGEDSINCE {modseq})") == condstore_enabled(
        store, expected_fetch(store, list(range(22, 29)), ["UID", "FLAGS", "MODSEQ"], "t",
                              recent=RECENT_UIDS))
    # Expunged by another session, not yet announced: no data to send for it (RFC 2180 4.1.1).
    uid = store.messages("user.fred")[1].uid
    store.expunge("user.fred", [uid])
    out = run(session, "u FETCH 1:3 (UID RFC822.SIZE)")
    assert b"* 2 FETCH" not in out and b"* 3 FETCH" in out
    assert out.endswith(b"u OK FETCH completed\r\n")
    out = run(session, "v FETCH 1:3 (UID ENVELOPE)")
    assert b"* 2 FETCH" not in out and b"* 3 FETCH" in out
    assert out.endswith(b"v OK FETCH completed\r\n")


@pytest.mark.usefixtures("chunks")
def test_whole_bodies_and_seen(store: MessageStore) -> None:
    session = session_on(store, examine=True)
    before = store.mailbox("user.fred")
    assert run(session, "e FETCH 1:* (UID BODY.PEEK[])") == expected_fetch(
        store, list(range(1, 29)), ["UID", "BODY[]"], "e")
    assert run(session, "f FETCH 2:4 (BODY[]<3.5>)") == expected_fetch(
        store, [2, 3, 4], ["BODY[]<3>"], "f", length=5)
    assert store.mailbox("user.fred") == before  # EXAMINE: nothing set \Seen
    session = session_on(store)
    records = store.messages("user.fred")
    out = run(session, "g FETCH 1:6 (RFC822.SIZE RFC822)")
    after = store.messages("user.fred")
    lines = out.split(b"* ")[1:]
    for seq, line in enumerate(lines, start=1):
        record = records[seq - 1]
        data = store.message_bytes("user.fred", record.uid)
        head = b"%d FETCH (RFC822.SIZE %d RFC822 {%d}\r\n" % (seq, record.size, len(data))
        assert line.startswith(head + data)
        assert "\\Seen" in after[seq - 1].flags
        if "\\Seen" in record.flags:  # unchanged: no FLAGS added
            assert line[len(head) + len(data):] == b")\r\n"
        else:  # RFC 9051 6.4.5: \Seen was set, so FLAGS comes too
            flags = render(replies.fetch(1, [("F", flag_atoms(after[seq - 1].flags))]))
            tail = flags.split(b"(F ", 1)[1].rsplit(b")", 1)[0]
            assert line[len(head) + len(data):].startswith(b" FLAGS " + tail)
    assert b"MODSEQ" not in out
    run(session, "h ENABLE CONDSTORE")
    out = run(session, "i FETCH 8 (BODY[])")  # UID 9: \Flagged $Label1
    assert b"line\r\n FLAGS (\\Flagged $Label1 \\Seen) MODSEQ (" in out


ODD_HEADERS = [
    b"Subject: folded\r\n  over two lines\r\nFrom: a@example.org\r\n\r\nbody\r\n",
    b"subject: bare LF\nX-%d: percent\nfrom: b@example.org\n\nbody\n",
    b"Subject: no body, no empty line\r\nTo: c@example.org",
    b"not a field\r\n folded under it\r\nSubject: after junk\r\n\r\n",
]


@pytest.mark.usefixtures("chunks")
@pytest.mark.parametrize("header_read", [40, 160, 65536])  # re-read, some re-read, none
@pytest.mark.parametrize("items", [
    '(UID BODY.PEEK[HEADER.FIELDS (From SUBJECT "X-%d")])',
    "(RFC822.HEADER RFC822.SIZE FLAGS)",
    "(BODY.PEEK[HEADER.FIELDS.NOT (To Date)]<5.20> UID)",
    "(BODY.PEEK[HEADER] INTERNALDATE)",
])
def test_header_sections_render_as_the_generic_way(store: MessageStore, items: str,
                                                    header_read: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching.bodies, "HEADER_READ", header_read)
    for raw in ODD_HEADERS:
        store.deliver(raw, [DeliveryTarget("user.fred")])
    taken: list[bool] = []
    whole = fetching.bodies.fetch_whole_bodies
    monkeypatch.setattr(fetching.bodies, "fetch_whole_bodies",
                        lambda *args: taken.append(True) or whole(*args))
    fast = run(session_on(store, examine=True), "t FETCH 1:* " + items)
    assert taken
    assert _generic(store, monkeypatch, "t FETCH 1:* " + items) == fast
    assert fast.count(b"* ") == 32


LISTED_ITEMS = "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (From to SUBJECT Date Message-ID)])"


@pytest.mark.usefixtures("chunks")
@pytest.mark.parametrize("backend", ["disk"])  # the index's rows of older versions
def test_listed_fields_come_from_the_index_alone(store: MessageStore,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    for raw in ODD_HEADERS:
        store.deliver(raw, [DeliveryTarget("user.fred")])
    generic = _generic(store, monkeypatch, "t FETCH 1:* " + LISTED_ITEMS)

    def no_file(*args: object, **kwargs: object) -> None:
        raise AssertionError("a message file was read")

    with monkeypatch.context() as patch:
        patch.setattr(store, "message_contents", no_file)
        patch.setattr(store, "message_bytes", no_file)
        assert run(session_on(store, examine=True), "t FETCH 1:* " + LISTED_ITEMS) == generic
    # Rows older than index version 6: filled by the first such FETCH, same answer.
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    conn.execute("UPDATE header_index SET listed = NULL")
    monkeypatch.setattr(listing, "memo_for", lambda store: listing.ListedMemo())  # no memory
    assert run(session_on(store, examine=True), "t FETCH 1:* " + LISTED_ITEMS) == generic
    assert conn.execute("SELECT count(*) FROM header_index WHERE listed IS NULL").fetchone() == (
        0,)
    conn.close()


def _generic(store: MessageStore, monkeypatch: pytest.MonkeyPatch, line: str) -> bytes:
    """What the general way (a `DataResponse` per message, from the parse) answers."""
    with monkeypatch.context() as patch:
        patch.setattr(fetching.bodies, "from_file", lambda attribute: None)
        patch.setattr(fetching.command, "listed_plan", lambda attributes: None)
        return run(session_on(store, examine=True), line)


@pytest.mark.usefixtures("chunks")
@pytest.mark.parametrize("items", [
    LISTED_ITEMS,
    "(FLAGS BODY.PEEK[HEADER.FIELDS (Subject)] UID MODSEQ)",
    "(BODY.PEEK[HEADER.FIELDS (From Date)]<4.11> RFC822.SIZE BODY.PEEK[HEADER.FIELDS (To)])",
    "(BODY[HEADER.FIELDS (Subject)])",  # all \\Seen already (EXAMINE: nothing is set)
])
def test_listed_items_render_as_the_generic_way(store: MessageStore, items: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Built in bulk from the index (sealmail.imap.listing), octet for octet the general way,
    odd headers and a NUL included."""
    for raw in [*ODD_HEADERS, b"Subject: a NUL \0 here\r\nTo: d@example.org\r\n\r\nbody\r\n"]:
        store.deliver(raw, [DeliveryTarget("user.fred")])
    taken: list[bool] = []
    whole = fetching.bodies.fetch_whole_bodies
    monkeypatch.setattr(fetching.bodies, "fetch_whole_bodies",
                        lambda *args: taken.append(True) or whole(*args))
    fast = run(session_on(store, examine=True), "t FETCH 1:* " + items)
    assert not taken  # no chunk went the way of whole headers
    assert _generic(store, monkeypatch, "t FETCH 1:* " + items) == fast
    assert fast.count(b" FETCH (") == 33
    assert (b"a NUL \x80 here" in fast) == ("Subject" in items or "SUBJECT" in items)


def test_listed_fields_read_once_are_kept_by_the_process(store: MessageStore,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    first = run(session_on(store, examine=True), "t FETCH 1:* " + LISTED_ITEMS)

    def no_read(*args: object) -> None:
        raise AssertionError("the store was asked again")

    with monkeypatch.context() as patch:
        patch.setattr(store, "listed_headers", no_read)
        assert run(session_on(store, examine=True), "t FETCH 1:* " + LISTED_ITEMS) == first
    store.deliver(message(99), [DeliveryTarget("user.fred")])  # only the new one is read
    asked: list[list[int]] = []
    read = store.listed_headers
    monkeypatch.setattr(store, "listed_headers", lambda name, uids: asked.append(uids) or read(
        name, uids))
    assert run(session_on(store, examine=True), "t FETCH 1:* " + LISTED_ITEMS).startswith(
        first.removesuffix(b"t OK FETCH completed\r\n"))
    assert asked == [[31]]


def test_the_listed_memo_is_bounded() -> None:
    class Store:
        def listed_headers(self, name: str, uids: list[int]) -> dict[int, tuple[int, bytes]]:
            return {uid: (uid, b"Subject: %d\r\n\r\n" % uid) for uid in uids}

    memo = listing.ListedMemo(capacity=10)
    views = [SelectedMailbox(f"user.fred.{n}", True, 1, 1) for n in range(3)]
    assert len(memo.listed(Store(), views[0], [1, 2, 3, 4])) == 4  # type: ignore[arg-type]
    assert len(memo.listed(Store(), views[1], [1, 2, 3, 4, 5, 6])) == 6  # type: ignore[arg-type]
    assert [len(kept) for kept in memo._mailboxes.values()] == [4, 6]
    memo.listed(Store(), views[2], [7, 8])  # type: ignore[arg-type]
    assert [len(kept) for kept in memo._mailboxes.values()] == [6, 2]  # the oldest went
    too_many = list(range(1, 12))  # more than it may keep at all: answered, not kept
    assert len(memo.listed(Store(), views[0], too_many)) == 11  # type: ignore[arg-type]
    assert sum(len(kept) for kept in memo._mailboxes.values()) <= 10


def test_a_listed_fetch_leaves_out_what_another_session_expunged(
        store: MessageStore) -> None:
    session = session_on(store)
    store.expunge("user.fred", [5])  # sequence number 4; this session is not told yet
    out = run(session, "t FETCH 3:5 " + LISTED_ITEMS)
    assert out.startswith(b"* 3 FETCH (UID 3 RFC822.SIZE ")
    assert b"* 4 FETCH" not in out and b"* 5 FETCH (UID 6 " in out
    assert out.endswith(b"t OK FETCH completed\r\n")


@pytest.mark.usefixtures("chunks")
def test_envelopes_kept_rendered_are_the_generic_rendering(store: MessageStore,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    for raw in ODD_HEADERS:
        store.deliver(raw, [DeliveryTarget("user.fred")])
    records = store.messages("user.fred")

    def expected(tag: str) -> bytes:
        return b"".join(render(replies.fetch(seq, [
            ("UID", r.uid),
            ("ENVELOPE", envelope_value(parse_message(
                store.message_bytes("user.fred", r.uid)).envelope)),
        ])) for seq, r in enumerate(records, start=1)) + tag.encode() + b" OK FETCH completed\r\n"

    session = session_on(store, examine=True)
    assert run(session, "t FETCH 1:* (UID ENVELOPE)") == expected("t")  # parsed, then kept
    assert run(session, "u FETCH 1:* (UID ENVELOPE)") == expected("u")  # from what was kept
    blobs = store.message_structures("user.fred", [r.uid for r in records])
    assert all(blob.startswith(b"K1;") for blob in blobs.values()) and len(blobs) == len(records)
    # Parses kept before the rendered forms were (the parse alone, then the envelope alone):
    # upgraded by the next FETCH ENVELOPE that does not find them in the process's memo.
    for old in (b"", b"E3:NIL"):
        monkeypatch.setattr(fetching.columns, "memos_for", lambda store: memo.FetchMemos())
        store.save_message_structures("user.fred", {
            r.uid: old + parse_message(store.message_bytes("user.fred", r.uid)).to_bytes()
            for r in records})
        assert run(session, "v FETCH 1:* (UID ENVELOPE)") == expected("v")
        blobs = store.message_structures("user.fred", [r.uid for r in records])
        assert all(blob.startswith(b"K1;") for blob in blobs.values())
    # A UTF-8 session quotes 8-bit text: rendered again from the kept parse.
    run(session, "w ENABLE UTF8=ACCEPT")
    assert b"ENVELOPE (" in run(session, "x FETCH 1 (ENVELOPE)")


def test_kept_forms_read_once_are_not_read_again(store: MessageStore,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Forms the process keeps (fetching.memo) are not read from the index again: a FETCH
    after a new message asks the store for that one's blob only, and answers the same."""
    first = run(session_on(store, examine=True), "t FETCH 1:* (UID ENVELOPE BODYSTRUCTURE)")
    store.deliver(message(99), [DeliveryTarget("user.fred")])
    asked: list[list[int]] = []
    read = store.message_structures
    monkeypatch.setattr(store, "message_structures",
                        lambda name, uids: asked.append(list(uids)) or read(name, uids))
    again = run(session_on(store, examine=True), "t FETCH 1:* (UID ENVELOPE BODYSTRUCTURE)")
    assert again.startswith(first.removesuffix(b"t OK FETCH completed\r\n"))
    assert b"* 29 FETCH (UID 31 ENVELOPE" in again and asked == [[31]]


def test_a_header_fetch_without_peek_sets_seen(store: MessageStore) -> None:
    session = session_on(store)
    unseen = [r.uid for r in store.messages("user.fred") if "\\Seen" not in r.flags]
    out = run(session, "t UID FETCH 1:* (BODY[HEADER.FIELDS (Subject)])")
    assert out.count(b" FLAGS (") == len(unseen)  # RFC 9051 6.4.5: with the new flags
    assert all("\\Seen" in r.flags for r in store.messages("user.fred"))


def test_streamed_output_is_the_same_in_order(store: MessageStore,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fetching.job, "CHUNKS", (2, 3))
    monkeypatch.setattr(fetching.job, "BODY_CHUNKS", (2, 3))
    for command in ("FETCH 1:* (FLAGS UID)", "FETCH 1:* (UID BODY.PEEK[])",
                    "FETCH 1:* (ENVELOPE)", "UID FETCH 1:* (UID) (CHANGEDSINCE 1 VANISHED)"):
        # EXAMINE claims no \Recent: both sessions show the same flags.
        plain = session_on(store, examine=True)
        plain.execute(parse_command(b"a ENABLE QRESYNC\r\n", ParserLimits()))
        expected = run(plain, "t " + command)
        streaming = session_on(store, examine=True)
        streaming.execute(parse_command(b"a ENABLE QRESYNC\r\n", ParserLimits()))
        sent: list[bytes] = []

        def stream(out: list[Response], sent: list[bytes] = sent) -> None:
            sent.append(b"".join(render(r) for r in out))

        streaming.stream = stream
        rest = run(streaming, "t " + command)
        assert len(sent) > 2
        assert b"".join(sent) + rest == expected


# -- STORE ---------------------------------------------------------------------------------------


def test_store_that_changes_nothing_writes_nothing(store: MessageStore) -> None:
    session = session_on(store)
    run(session, "a STORE 1:* +FLAGS.SILENT (\\Flagged)")
    info = store.mailbox("user.fred")
    assert info is not None
    assert run(session, "b STORE 1:* +FLAGS.SILENT (\\Flagged)") == b"b OK STORE completed\r\n"
    assert run(session, "c UID STORE 1:* -FLAGS.SILENT (NotThere)").endswith(
        b"c OK UID STORE completed\r\n")
    assert store.mailbox("user.fred") == info  # no modseq, no transaction that changed a thing
    run(session, "d UID STORE 3 +FLAGS ($LABEL1)")  # UID 3 has $Label1: "add" is exact
    assert store.mailbox("user.fred") != info
    run(session, "e ENABLE CONDSTORE")
    info = store.mailbox("user.fred")
    out = run(session, "f UID STORE 1:* +FLAGS (\\Flagged)")
    assert store.mailbox("user.fred") == info
    assert out == expected_fetch(store, list(range(1, 29)), ["UID", "FLAGS", "MODSEQ"], "f",
                                 "UID STORE completed", recent=RECENT_UIDS)


@pytest.mark.parametrize(("condstore", "command", "seqs", "items"), [
    (False, "STORE 2:5,21 +FLAGS (\\Answered Work)", [2, 3, 4, 5, 21], ["FLAGS"]),
    (False, "UID STORE 1:* -FLAGS (\\Seen)", range(1, 29), ["UID", "FLAGS"]),
    (False, "STORE 7:9 FLAGS ($Label1)", [7, 8, 9], ["FLAGS"]),
    (True, "UID STORE 3:8 +FLAGS (\\Flagged)", [3, 4, 5, 6, 7], ["UID", "FLAGS", "MODSEQ"]),
    (True, "STORE 1:4 -FLAGS (\\Flagged)", [1, 2, 3, 4], ["FLAGS", "MODSEQ"]),
])
def test_store_replies_render_as_the_generic_way(store: MessageStore, condstore: bool,
                                                 command: str, seqs: range | list[int],
                                                 items: list[str]) -> None:
    """STORE's own FETCH replies (written as octets from the view's flag sets) are what the
    generic serializer makes of the records after the change, \\Recent included."""
    session = session_on(store)
    if condstore:
        run(session, "e ENABLE CONDSTORE")
    tagged = ("UID STORE" if command.startswith("UID") else "STORE") + " completed"
    out = run(session, "t " + command)
    assert out == expected_fetch(store, list(seqs), items, "t", tagged, recent=RECENT_UIDS)


def test_silent_conditional_store_replies_with_the_changed_modseqs(store: MessageStore) -> None:
    """RFC 7162 3.1.3: FLAGS.SILENT with UNCHANGEDSINCE still sends MODSEQ of what changed,
    and MODIFIED names what was refused; nothing for a message left as it was."""
    session = session_on(store)
    run(session, "a ENABLE CONDSTORE")
    run(session, "b STORE 2 +FLAGS.SILENT (\\Draft)")  # message 2's modseq is now the highest
    info = store.mailbox("user.fred")
    assert info is not None
    since = info.highestmodseq - 1
    out = run(session, f"c STORE 1:3 (UNCHANGEDSINCE {since}) +FLAGS.SILENT (\\Flagged)")
    records = store.messages("user.fred")
    changed = [seq for seq in (1, 3) if "\\Flagged" not in FLAG_SETS[(seq - 1) % 6]]
    lines = b"".join(b"* %d FETCH (MODSEQ (%d))\r\n" % (seq, records[seq - 1].modseq)
                     for seq in changed)
    assert out == lines + b"c OK [MODIFIED 2] Conditional STORE failed for some messages\r\n"


def test_store_on_a_stale_view_goes_to_the_store(store: MessageStore) -> None:
    session = session_on(store)
    other = session_on(store)
    uid = store.messages("user.fred")[2].uid  # has \Flagged
    assert "\\Flagged" in store.messages("user.fred")[2].flags
    run(other, f"a UID STORE {uid} -FLAGS.SILENT (\\Flagged)")
    # Our view still says \Flagged; adding it must still reach the store.
    out = run(session, f"b UID STORE {uid} +FLAGS (\\Flagged)")
    assert "\\Flagged" in store.messages("user.fred")[2].flags
    assert b"* 3 FETCH (UID 3 FLAGS ($Label1 \\Flagged))" in out


def test_announced_expunges_keep_the_view_aligned(store: MessageStore) -> None:
    """Expunges by another session (first, last and scattered messages), announced highest
    number first; the view's UIDs, flags and modseqs stay aligned after they leave it."""
    session = session_on(store)
    other = session_on(store)
    uids = [r.uid for r in store.messages("user.fred")]
    doomed = [uids[0], uids[5], uids[6], uids[17], uids[-1]]
    listed = ",".join(map(str, doomed))
    run(other, f"a UID STORE {listed} +FLAGS.SILENT (\\Deleted)")
    run(other, f"b UID EXPUNGE {listed}")
    out = run(session, "c NOOP")
    seqs = sorted((uids.index(uid) + 1 for uid in doomed), reverse=True)
    expunges = b"".join(b"* %d EXPUNGE\r\n" % seq for seq in seqs)
    assert out.startswith(expunges) and out.endswith(b"c OK NOOP completed\r\n")
    out = run(session, "d ENABLE CONDSTORE")
    left = len(uids) - len(doomed)
    expected = expected_fetch(store, list(range(1, left + 1)), ["UID", "FLAGS", "MODSEQ"], "t",
                              "FETCH completed", recent=RECENT_UIDS)
    assert run(session, "t FETCH 1:* (UID FLAGS MODSEQ)") == expected


# -- STATUS of the selected mailbox ---------------------------------------------------------------


def _status_expected(store: MessageStore, claimed_below: int) -> bytes:
    records = store.messages("user.fred", "fred")
    unseen = sum("\\Seen" not in r.flags for r in records)
    deleted = sum("\\Deleted" in r.flags for r in records)
    recent = sum(r.uid > claimed_below for r in records)
    return (b"* STATUS INBOX (MESSAGES %d UNSEEN %d RECENT %d DELETED %d)\r\n"
            % (len(records), unseen, recent, deleted))


def test_status_of_the_selected_mailbox_counts_from_its_view(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """STATUS of the selected mailbox reads no flag snapshot: from the view when it is the
    store's state, else after syncing it first (its news, expunges included, go out before
    the STATUS line). With an RFC 5267 update context open the sync stays execute()'s, after
    the command, and the counts come from the store. The answer is the store's each time."""
    session = session_on(store)  # claims \\Recent of UIDs 21..30
    other = session_on(store)
    snapshots: list[str] = []
    real = store.flag_snapshot

    def counted(name: str, reader: str | None = None) -> object:
        snapshots.append(name)
        return real(name, reader)

    monkeypatch.setattr(store, "flag_snapshot", counted)
    status = "s STATUS INBOX (MESSAGES UNSEEN RECENT DELETED)"
    done = b"s OK STATUS completed\r\n"
    last = store.messages("user.fred")[-1].uid
    assert run(session, status) == _status_expected(store, last) + done
    run(other, "a STORE 1:3 FLAGS (\\Seen \\Deleted)")
    run(other, "b STORE 5 -FLAGS (\\Seen)")
    out = run(session, status)  # the view is behind: synced first
    news = b"".join(b"* %d FETCH (UID %d FLAGS (\\Seen \\Deleted))\r\n" % (n, n)
                    for n in (1, 2, 3))
    assert out.startswith(news) and out.endswith(_status_expected(store, last) + done)
    run(other, "d EXPUNGE")  # its own view announces; ours holds the expunges back...
    run(session, "e FETCH 1 (FLAGS)")  # ...through a FETCH (RFC 9051 7.5.1)
    out = run(session, status)
    assert out.startswith(b"* 26 EXPUNGE\r\n* 20 EXPUNGE\r\n")
    assert out.endswith(_status_expected(store, last) + done)
    assert snapshots == []
    run(session, "u SEARCH RETURN (UPDATE) DELETED")
    run(other, "f STORE 1 +FLAGS (\\Deleted)")
    out = run(session, status)  # with a context: the store's counts, the sync after
    assert out.startswith(_status_expected(store, last)) and snapshots == ["user.fred"]


def test_status_recent_of_a_read_write_view_reads_no_mark(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read-write view claims every message it shows, so STATUS RECENT of the selected
    mailbox, its view current, is 0 without reading the \\Recent mark; an EXAMINE still reads
    it (and counts what nobody claimed), as does any other mailbox's STATUS."""
    examined = session_on(store, examine=True)
    session = session_on(store)  # claims \\Recent of UIDs 21..30
    reads: list[int] = []
    real = store.claim_recent

    def counted(name: str, upto: int, reader: str | None = None) -> int:
        if upto == 0:
            reads.append(upto)
        return real(name, upto, reader)

    monkeypatch.setattr(store, "claim_recent", counted)
    status = "s STATUS INBOX (MESSAGES UNSEEN RECENT DELETED)"
    done = b"s OK STATUS completed\r\n"
    assert run(session, status) == _status_expected(store, 30) + done
    assert reads == []
    store.deliver(b"Subject: new\r\n\r\nbody\r\n", [DeliveryTarget("user.fred")])
    out = run(session, status)  # synced first: the new message claimed, then counted
    assert b" EXISTS\r\n" in out and out.endswith(_status_expected(store, 31) + done)
    assert reads == []
    store.deliver(b"Subject: newer\r\n\r\nbody\r\n", [DeliveryTarget("user.fred")])
    assert run(examined, "x NOOP").count(b"EXISTS") == 1
    assert run(examined, status) == _status_expected(store, 31) + done  # RECENT 1
    assert reads == [0]


# -- SEARCH --------------------------------------------------------------------------------------


def _reference(session: ImapSession, key: SearchKey) -> list[int]:
    store = session.store
    view = session.require_selected()
    evaluator = searching._Evaluator(session, session.saved_search)
    structures = StructureCache(store, view.name, list(view.uids))
    found = []
    for record in store.messages(view.name):
        seq = view.seq_of(record.uid)
        assert seq is not None
        if record.uid in RECENT_UIDS:  # every session of these tests shows them (EXAMINE)
            record = dataclasses.replace(record, flags=(*record.flags, "\\Recent"))
        candidate = searching._Candidate(seq, record, structures)
        if evaluator.match(key, candidate):
            found.append(seq)
    return found


LEAVES = [
    SearchKey("ALL"), SearchKey("SEEN"), SearchKey("UNSEEN"), SearchKey("FLAGGED"),
    SearchKey("DELETED"), SearchKey("UNANSWERED"), SearchKey("KEYWORD", ("$LABEL1",)),
    SearchKey("UNKEYWORD", ("work",)), SearchKey("NEW"), SearchKey("OLD"), SearchKey("RECENT"),
    SearchKey("SEQSET", (SequenceSet.parse("2:9,20:*"),)),
    SearchKey("UID", (SequenceSet.parse("5:12,30"),)), SearchKey("LARGER", (180,)),
    SearchKey("SMALLER", (190,)), SearchKey("SINCE", (date(2023, 11, 25),)),
    SearchKey("BEFORE", (date(2023, 11, 30),)), SearchKey("ON", (date(2023, 11, 22),)),
    SearchKey("SENTON", (date(2026, 3, 5),)), SearchKey("SENTBEFORE", (date(2026, 3, 10),)),
    SearchKey("SUBJECT", ("TOPIC1",)), SearchKey("SUBJECT", ("café",)),
    SearchKey("FROM", ("sender2",)), SearchKey("TO", ("FRED",)), SearchKey("CC", ("x",)),
    SearchKey("HEADER", ("Message-ID", "m1")), SearchKey("HEADER", ("Date", "mar")),
    SearchKey("HEADER", ("X-None", "")), SearchKey("HEADER", ("subject", "")),
    SearchKey("BODY", ("needle",)), SearchKey("TEXT", ("sender1",)),
    SearchKey("MODSEQ", (12,)),
]
keys = st.recursive(
    st.sampled_from(LEAVES),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda k: SearchKey("AND", tuple(k))),
        st.tuples(children, children).map(lambda k: SearchKey("OR", k)),
        children.map(lambda k: SearchKey("NOT", (k,))),
    ),
    max_leaves=5,
)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=keys)
def test_search_agrees_with_the_per_message_evaluation(store: MessageStore, key: SearchKey) -> None:
    session = session_on(store, examine=True)
    found, _ = searching._search(session, key)
    assert [p + 1 for p in found] == _reference(session, key)


def test_search_saved_result_and_modseq(store: MessageStore) -> None:
    session = session_on(store)
    assert run(session, "a SEARCH RETURN (SAVE) SUBJECT topic2") == b"a OK SEARCH completed\r\n"
    saved = list(session.saved_search)
    assert saved and all(store.search_header("user.fred", "subject", "topic2").matched)
    out = run(session, "b UID SEARCH UID $ NOT SEEN")
    expected = [uid for uid in saved if "\\Seen" not in
                next(r.flags for r in store.messages("user.fred") if r.uid == uid)]
    assert out.split(b"\r\n")[0] == b"* SEARCH" + b"".join(b" %d" % u for u in expected)
    # RFC 7162 3.1.5: MODSEQ in the key, so the highest modseq of the result is reported.
    out = run(session, "c SEARCH MODSEQ 1 SUBJECT topic3")
    assert b"(MODSEQ " in out
