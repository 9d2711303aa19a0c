"""The header index (sealmail.store.headers, DiskStore.search_header): the same answers as
reading the message, kept with the messages through delivery, COPY, EXPUNGE, deletion,
migration and reconstruct."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.support.stores import index_of_version_11

from sealmail.proto.imap import parse_message, section_bytes
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.disk.index_writes import SHARED_FROM
from sealmail.store.headers import (
    INDEXED_FIELDS,
    decode_words,
    header_block,
    header_fields,
    searchable_form,
)
from sealmail.store.sorting import SORT_COLUMNS


def _sql(store: DiskStore, statement: str, *args: object) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    try:
        conn.execute("PRAGMA foreign_keys=ON")
        return conn.execute(statement, args).fetchall()
    finally:
        conn.close()


def _reference(raw: bytes, field: str, needle: str) -> bool:
    """RFC 9051 6.4.4 on the message itself: the definition the index must agree with."""
    values = [v for name, v in header_fields(header_block(raw)) if name == field.lower()]
    return bool(values) and any(needle.casefold() in v.casefold() for v in values)


def _deliver(store: DiskStore, raw: bytes, mailbox: str = "user.a") -> int:
    [result] = store.deliver(raw, [DeliveryTarget(mailbox)])
    assert not isinstance(result, Exception)
    return result.uid


header_bytes = st.lists(
    st.sampled_from([b"Subject", b"From", b"To", b"Cc", b"X-Other", b"subject", b"Message-ID",
                     b" ", b"\t", b":", b"\r", b"\n", b"\r\n", b"a", b"B", b"\xc3\xa9",
                     b"=?utf-8?q?Caf=C3=A9?=", b"=?utf-8?b?dG9waWMz?=", b"\x1d", b"\x1e", b"\xff",
                     b"\x00", b"\xc3\x9f"]),
    max_size=40,
).map(b"".join)


@given(header_bytes, st.binary(max_size=20))
def test_header_block_is_what_the_mime_parser_calls_the_header(head: bytes, tail: bytes) -> None:
    raw = head + tail
    assert header_block(raw) == section_bytes(raw, parse_message(raw).body, (), "HEADER")


MESSAGES = [
    b"Subject: Hello World\r\nFrom: Amy <amy@example.org>\r\n\r\nbody topic3\r\n",
    b"Subject: =?utf-8?q?Caf=C3=A9?= topic3\r\nTo: bob@example.org\r\n\r\nx\r\n",
    b"subject: STRASSE\r\nCc: one@example.org\r\ncc: two@example.org\r\n\r\n",
    b"Subject: Stra\xc3\x9fe \xff\r\nFrom: =?utf-8?b?dG9waWMz?= <t@example.org>\r\n\r\n",
    b"Subject: folded\r\n  over lines\r\nBcc: hidden@example.org\r\n\r\nSubject: not a header\r\n",
    b"From: a@example.org\nSubject: bare LF\n\nbody\n",
    b"Subject: with \x1d group separator\r\n\r\n",
    b"No-Blank-Line: the whole message is header",
    b"\r\nSubject: in the body",
    b"Message-ID: <id1@example.org>\r\nIn-Reply-To: <id0@example.org>\r\n"
    b"List-Id: <l.example>\r\n\r\n",
    b"X-Other: topic3\r\nSubject: \r\n\r\n",
]
NEEDLES = ["", "topic3", "TOPIC3", "café", "CAFÉ", "strasse", "STRASSE", "straße", "one", "two",
           "one\x1dtwo", "over lines", "hello world", "amy", "bare lf", "not a header", "<id",
           "\x1e", " ", "é", "\udcff"]


@pytest.fixture
def filled(store: DiskStore) -> DiskStore:
    store.create_mailbox("user.a")
    for raw in MESSAGES:
        _deliver(store, raw)
    return store


@pytest.mark.parametrize("field", [*INDEXED_FIELDS, "x-other", "Subject", "no-blank-line"])
def test_search_header_agrees_with_the_messages(filled: DiskStore, field: str) -> None:
    for needle in NEEDLES:
        answer = filled.search_header("user.a", field, needle)
        assert not set(answer.matched) & set(answer.unanswered)
        for uid, raw in enumerate(MESSAGES, start=1):
            if uid in answer.unanswered:
                continue
            assert (uid in answer.matched) == _reference(raw, field, needle), (uid, needle)
        if field.lower() not in INDEXED_FIELDS:
            assert answer.unanswered == list(range(1, len(MESSAGES) + 1))


def test_only_messages_without_a_searchable_form_are_unanswered(filled: DiskStore) -> None:
    answer = filled.search_header("user.a", "subject", "e")
    assert answer.unanswered == [7]  # its subject holds a separator
    assert searchable_form(MESSAGES[6]) is None
    assert filled.search_header("user.a", "cc", "one\x1dtwo").unanswered == list(range(1, 12))


def test_a_from_that_is_no_address_is_searched_decoded(store: DiskStore) -> None:
    """A display name alone parses as a host-less mailbox: searched as such, its undecoded
    encoded-word matched "3" (the "C3" of `=C3=A9`); hypothesis found it (the property below)."""
    store.create_mailbox("user.p")
    uid = _deliver(store, b"From:=?utf-8?q?Caf=C3=A9?=\r\n\r\nbody", "user.p")
    for needle, found in (("3", False), ("utf-8", False), ("café", True), ("CAF", True)):
        answer = store.search_header("user.p", "from", needle)
        assert (uid in answer.matched) is found, needle


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=header_bytes, needle=st.text(alphabet="aBé ß:tOpIc3\x1d", max_size=4))
def test_search_header_property(store: DiskStore, head: bytes, needle: str) -> None:
    if store.mailbox("user.p") is None:
        store.create_mailbox("user.p")
    raw = head + b"\r\n\r\nbody"
    uid = _deliver(store, raw, "user.p")
    for field in ("subject", "from", "to", "cc"):
        answer = store.search_header("user.p", field, needle)
        if uid not in answer.unanswered:
            assert (uid in answer.matched) == _reference(raw, field, needle)


@pytest.mark.disk_only("the rows of the SQLite index")
def test_rows_follow_copy_expunge_and_delete(filled: DiskStore) -> None:
    filled.create_mailbox("user.a.Copy")
    filled.copy_messages("user.a", [1, 2], "user.a.Copy")
    assert filled.search_header("user.a.Copy", "subject", "topic3").matched == [2]
    filled.expunge("user.a", [2])
    assert filled.search_header("user.a", "subject", "topic3").matched == []
    assert _sql(filled, "SELECT count(*) FROM header_index WHERE uid = 2") == [(1,)]
    filled.delete_mailbox("user.a.Copy")
    assert _sql(filled, "SELECT count(*) FROM header_index WHERE uid = 2") == [(0,)]
    assert _sql(filled, "SELECT count(*) FROM header_index") == [(len(MESSAGES) - 1,)]


@pytest.mark.disk_only("the rows of the SQLite index")
def test_missing_rows_are_filled_by_the_first_search(filled: DiskStore) -> None:
    _sql(filled, "DELETE FROM header_index WHERE uid IN (1, 2)")
    _sql(filled, "INSERT INTO header_index (mailbox_id, uid, fields) VALUES (1, 99, NULL)")
    assert filled.search_header("user.a", "subject", "topic3").matched == [2]
    assert _sql(filled, "SELECT count(*) FROM header_index") == [(len(MESSAGES),)]


def test_migration_from_schema_2_then_backfill(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    store = DiskStore.from_config(config)
    store.create_mailbox("user.a")
    for raw in MESSAGES[:3]:
        _deliver(store, raw)
    store.close()
    # What a version-2 index looks like: no header_index table (nor what version 3 added).
    _sql_store = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    _sql_store.execute("DROP TABLE header_index")
    _sql_store.execute("DROP TABLE seen")
    _sql_store.execute("ALTER TABLE mailboxes DROP COLUMN recentuid")
    _sql_store.execute("ALTER TABLE quotaroots DROP COLUMN warned")  # version 8's
    index_of_version_11(_sql_store)
    _sql_store.execute("PRAGMA user_version=2")
    _sql_store.close()
    store = DiskStore.from_config(config)
    try:
        assert store.search_header("user.a", "subject", "TOPIC3").matched == [2]
        assert store.search_header("user.a", "to", "bob").matched == [2]
    finally:
        store.close()


def test_migration_from_schema_6_makes_every_row_again(config, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Version 7 changed what a row holds (addresses searched as ENVELOPE parses them, RFC 5256
    base subjects and collation): rows written before are dropped, then made again."""
    store = DiskStore.from_config(config)
    store.create_mailbox("user.a")
    _deliver(store, b"From: <amy (x)@ (y) example.org>\r\nSubject: [a] Re: [b] hi\r\n\r\n.\r\n")
    store.close()
    conn = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    conn.execute("UPDATE header_index SET fields = x'1e', base_subject = 'old'")
    conn.execute("ALTER TABLE quotaroots DROP COLUMN warned")  # what version 8 added
    index_of_version_11(conn)
    conn.execute("PRAGMA user_version=6")
    conn.close()
    store = DiskStore.from_config(config)
    try:
        assert store.search_header("user.a", "from", "amy@example.org").matched == [1]
        assert store.thread_fields("user.a")[0].base_subject == "HI"
    finally:
        store.close()


@pytest.mark.disk_only("reconstruct")
def test_reconstruct_fills_and_repairs_rows(filled: DiskStore) -> None:
    _sql(filled, "DELETE FROM header_index WHERE uid = 1")
    _sql(filled, "UPDATE header_index SET fields = x'1e' WHERE uid = 2")
    fixes = filled.reconstruct("user.a")
    assert any("header index" in fix for fix in fixes), fixes
    assert filled.reconstruct("user.a") == []
    assert filled.search_header("user.a", "subject", "topic3").matched == [2]
    assert filled.search_header("user.a", "from", "amy").matched == [1]
    # A file changed behind the index's back: its row follows the new content.
    (filled.mailbox_path("user.a") / "1.").write_bytes(b"Subject: replaced\r\n\r\n")
    filled.reconstruct("user.a")
    assert filled.search_header("user.a", "subject", "replaced").matched == [1]
    assert filled.search_header("user.a", "from", "amy").matched == []


def test_flags_after_defines_the_modes() -> None:
    from sealmail.store.api import flags_after

    assert flags_after(("\\Seen", "$A"), ["$a", "\\Flagged", "$a"], "add") == [
        "\\Seen", "$A", "$a", "\\Flagged"]  # "add" compares exactly
    assert flags_after(("\\Seen", "$A"), ["$a"], "remove") == ["\\Seen"]  # "remove" does not
    assert flags_after(("\\Seen",), ["x", "x"], "set") == ["x"]
    with pytest.raises(ValueError):
        flags_after((), [], "toggle")


@given(st.text(alphabet=" \t\r\nab=?é\udcff_Q", max_size=30))
def test_decode_words_shortcut_is_what_the_email_package_gives(value: str) -> None:
    import email.header

    try:
        slow = str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        slow = value
    assert decode_words(value) == slow


# -- the listed fields, once per content of many copies (index version 11) ------------------------


MANY = [f"user.m{i}" for i in range(SHARED_FROM)]  # enough copies to keep them once


def _contents(store: DiskStore) -> list[tuple[object, ...]]:
    return _sql(store, "SELECT c.copies, count(m.uid) FROM header_content AS c LEFT JOIN"
                       " messages AS m ON m.guid = c.guid GROUP BY c.guid ORDER BY c.guid")


def _own_listed(store: DiskStore) -> int:
    return int(_sql(store, "SELECT count(*) FROM header_index WHERE listed IS NOT NULL")[0][0])


@pytest.mark.disk_only("the rows of the SQLite index")
def test_one_listed_row_per_content_follows_its_copies(store: DiskStore) -> None:
    for name in MANY:
        store.create_mailbox(name)
    store.deliver_batch([(MESSAGES[0], [DeliveryTarget(n) for n in MANY]),
                         (MESSAGES[1], [DeliveryTarget(MANY[0])])])
    assert _contents(store) == [(len(MANY), len(MANY))]
    assert _own_listed(store) == 1  # the message with one copy keeps them in its row
    listed = store.listed_headers(MANY[1], [1])[1][1]
    assert listed.startswith(b"Subject: Hello World\r\n")
    assert store.listed_headers(MANY[0], [2])[2][1].startswith(b"Subject: =?utf-8?q?Caf")
    copied = store.copy_messages(MANY[0], [1, 1, 2], MANY[1])  # COPY: one copy more of each
    assert len(copied.pairs) == 2
    assert _contents(store) == [(len(MANY) + 1, len(MANY) + 1)]
    assert store.listed_headers(MANY[1], [2, 3]) == {
        2: store.listed_headers(MANY[0], [1])[1], 3: store.listed_headers(MANY[0], [2])[2]}
    store.move_messages(MANY[1], [2], MANY[2])  # MOVE: as many as before
    assert _contents(store) == [(len(MANY) + 1, len(MANY) + 1)]
    store.expunge(MANY[3], [1])
    store.delete_mailbox(MANY[2])  # its rows go by cascade, and the trigger counts them
    assert _contents(store) == [(len(MANY) - 2, len(MANY) - 2)]
    for name in MANY:
        if store.mailbox(name) is not None:
            store.expunge(name, [1])
    assert _contents(store) == []  # gone with the last copy
    assert store.listed_headers(MANY[0], [1, 2]) == {2: store.listed_headers(MANY[0], [2])[2]}


@pytest.mark.disk_only("the rows of the SQLite index")
def test_listed_rows_dropped_or_miscounted_are_made_again(store: DiskStore) -> None:
    for name in MANY:
        store.create_mailbox(name)
    store.deliver(MESSAGES[0], [DeliveryTarget(n) for n in MANY])
    first = store.listed_headers(MANY[0], [1])
    _sql(store, "DELETE FROM header_content")
    assert store.listed_headers(MANY[0], [1]) == first  # from the file, into the copy's row
    assert _own_listed(store) == 1
    assert store.listed_headers(MANY[1], [1]) == first
    _sql(store, "INSERT INTO header_content SELECT guid, 7, x'00' FROM messages LIMIT 1")
    fixes = store.reconstruct_all()
    assert any("copy counts corrected" in fix for fix in fixes), fixes
    assert any("listed fields made again" in fix for fix in fixes), fixes
    assert store.reconstruct_all() == []
    assert _contents(store) == [(len(MANY), len(MANY))]
    for name in MANY:
        assert store.listed_headers(name, [1]) == first


def test_migration_from_schema_10_keeps_the_listed_fields(config) -> None:  # type: ignore[no-untyped-def]
    store = DiskStore.from_config(config)
    store.create_mailbox("user.a")
    store.create_mailbox("user.b")
    store.deliver(MESSAGES[0], [DeliveryTarget("user.a"), DeliveryTarget("user.b")])
    store.deliver(MESSAGES[1], [DeliveryTarget("user.a")])
    expected = store.listed_headers("user.a", [1, 2])
    store.close()
    conn = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    # What version 10 had: the listed fields in every copy's row, no header_content.
    conn.execute("DROP TRIGGER header_content_copies")
    conn.execute("DROP TABLE header_content")
    conn.execute("DROP TABLE unconfirmed_rounds")  # and version 10's shape of it
    conn.execute("CREATE TABLE unconfirmed (mailbox_id INTEGER, uid INTEGER, owner TEXT,"
                 " round INTEGER)")
    index_of_version_11(conn)
    conn.execute("PRAGMA user_version=10")
    conn.close()
    store = DiskStore.from_config(config)
    try:
        assert _contents(store) == []
        assert _own_listed(store) == 3
        assert store.listed_headers("user.a", [1, 2]) == expected
        assert store.reconstruct_all() == []
    finally:
        store.close()


@pytest.mark.disk_only("reconstruct")
def test_reconstruct_makes_the_listed_fields_again(store: DiskStore) -> None:
    for name in MANY:
        store.create_mailbox(name)
    store.deliver(MESSAGES[0], [DeliveryTarget(n) for n in MANY])
    store.deliver(MESSAGES[1], [DeliveryTarget(MANY[0])])
    expected = store.listed_headers(MANY[0], [1, 2])
    _sql(store, "UPDATE header_content SET listed = x'00'")
    _sql(store, "UPDATE header_index SET listed = x'01' WHERE listed IS NOT NULL")
    fixes = store.reconstruct_all()
    assert any("listed fields made again for 1 messages, 1 shared" in fix for fix in fixes), fixes
    assert store.reconstruct_all() == []
    assert _contents(store) == [(len(MANY), len(MANY))]
    assert store.listed_headers(MANY[0], [1, 2]) == expected
    assert store.listed_headers(MANY[-1], [1]) == {1: expected[1]}


def test_migration_from_schema_10_keys_header_rows_by_one_integer(config) -> None:  # type: ignore[no-untyped-def]
    store = DiskStore.from_config(config)
    for name in ("user.a", "user.b"):
        store.create_mailbox(name)
    for raw in MESSAGES:
        store.deliver(raw, [DeliveryTarget("user.a"), DeliveryTarget("user.b")])
    answers = (store.search_header("user.b", "subject", "topic3"),
               store.sorted_uids("user.b", [("SUBJECT", False)]),
               store.listed_headers("user.b", range(1, len(MESSAGES) + 1)))
    store.close()
    conn = sqlite3.connect(config.configdirectory / "mailboxes.db", isolation_level=None)
    columns = ", ".join(("fields", "listed", *SORT_COLUMNS))
    conn.executescript(f"""
        CREATE TABLE old (mailbox_id INTEGER NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
            uid INTEGER NOT NULL, fields BLOB, sentdate REAL, subject TEXT, base_subject TEXT,
            from_mailbox TEXT, from_display TEXT, to_mailbox TEXT, to_display TEXT,
            cc_mailbox TEXT, message_id TEXT, refs TEXT, in_reply_to TEXT, listed BLOB,
            PRIMARY KEY (mailbox_id, uid)) WITHOUT ROWID;
        INSERT INTO old (mailbox_id, uid, {columns})
            SELECT mailbox_id, uid, {columns} FROM header_index;
        DROP TABLE header_index;
        ALTER TABLE old RENAME TO header_index;
        DROP TABLE unconfirmed_rounds;
        CREATE TABLE unconfirmed (mailbox_id INTEGER, uid INTEGER, owner TEXT, round INTEGER);
    """)
    index_of_version_11(conn)
    conn.execute("PRAGMA user_version=10")
    conn.close()
    store = DiskStore.from_config(config)
    try:
        assert _sql(store, "SELECT count(*), sum(id = ((mailbox_id << 32) | uid))"
                           " FROM header_index") == [(2 * len(MESSAGES), 2 * len(MESSAGES))]
        assert (store.search_header("user.b", "subject", "topic3"),
                store.sorted_uids("user.b", [("SUBJECT", False)]),
                store.listed_headers("user.b", range(1, len(MESSAGES) + 1))) == answers
        store.delete_mailbox("user.a")  # its range goes with it
        assert _sql(store, "SELECT count(*) FROM header_index") == [(len(MESSAGES),)]
        assert store.reconstruct_all() == []
    finally:
        store.close()
