"""The sortable form (sealmail.store.sorting, DiskStore.sorted_uids / thread_fields): SQLite's
order is the order of the values themselves, and the values are kept with the messages through
delivery, COPY, EXPUNGE, migration and reconstruct."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.store.conftest import on_disk

from sealmail.config.imapd_conf import ImapdConfig, parse_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.headers import listed_form
from sealmail.store.sorting import SORT_COLUMNS, SORT_KEYS, base_subject, sort_fields

MESSAGES = [
    b"Date: Wed, 25 Nov 2026 10:00:00 +0100\r\nSubject: Re: [list] Beta\r\n"
    b"From: Zoe Zed <zoe@example.org>\r\nTo: amy@example.org\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n",
    b"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\nSubject: alpha\r\n"
    b"From: bob@example.org\r\nTo: Carl <carl@example.org>\r\nCc: dan@example.org\r\n"
    b"Message-ID: <2@x>\r\nIn-Reply-To: <1@x>\r\n\r\nlonger body here\r\n",
    b"Subject: =?utf-8?q?=C3=A9t=C3=A9?=\r\nFrom: =?utf-8?q?=C3=89mile?= <emile@example.org>\r\n"
    b"References: <1@x> <2@x>\r\n\r\nno date\r\n",
    b"Date: not a date\r\nSubject: Fwd: alpha (fwd)\r\nFrom: Amy <AMY@example.org>\r\n\r\nx\r\n",
]


def _config(root: Path) -> ImapdConfig:
    return parse_imapd_conf(f"configdirectory: {root}/c\npartition-default: {root}/p\n")


def _sql(store: DiskStore, statement: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(store.configdirectory / "mailboxes.db", isolation_level=None)
    try:
        return conn.execute(statement).fetchall()
    finally:
        conn.close()


@pytest.fixture
def store(tmp_path: Path, open_store: Callable[..., DiskStore]) -> DiskStore:
    store = open_store(_config(tmp_path), clock=iter(range(1000, 2000)).__next__)
    store.create_mailbox("user.a")
    store.create_mailbox("user.a.Copy")
    for raw in MESSAGES:
        [result] = store.deliver(raw, [DeliveryTarget("user.a")])
        assert not isinstance(result, Exception)
    return store


def _expected(store: DiskStore, name: str, keys: list[tuple[str, bool]]) -> list[int]:
    """The order worked out in Python from the files themselves (RFC 5256 3: ties in UID
    order, REVERSE per key)."""
    records = {r.uid: r for r in store.messages(name)}
    fields = {uid: sort_fields(store.message_bytes(name, uid)) for uid in records}
    values = {
        "ARRIVAL": lambda uid: records[uid].internaldate,
        "DATE": lambda uid: (fields[uid].sentdate if fields[uid].sentdate is not None
                             else records[uid].internaldate),
        "SIZE": lambda uid: records[uid].size,
        "SUBJECT": lambda uid: fields[uid].base_subject,
        "FROM": lambda uid: fields[uid].from_mailbox,
        "TO": lambda uid: fields[uid].to_mailbox,
        "CC": lambda uid: fields[uid].cc_mailbox,
        "DISPLAYFROM": lambda uid: fields[uid].from_display,
        "DISPLAYTO": lambda uid: fields[uid].to_display,
    }
    ordered = sorted(records)
    for key, reverse in reversed(keys):
        ordered.sort(key=values[key], reverse=reverse)  # type: ignore[arg-type]
    return ordered


def test_each_key_both_ways(store: DiskStore) -> None:
    for key in sorted(SORT_KEYS):
        for reverse in (False, True):
            assert store.sorted_uids("user.a", [(key, reverse)]) == _expected(
                store, "user.a", [(key, reverse)]), (key, reverse)
    assert store.sorted_uids("user.a", [("DATE", False)]) == [3, 4, 2, 1]  # 3, 4: arrival (1970)
    assert store.sorted_uids("user.a", [("SUBJECT", False)]) == [2, 4, 1, 3]  # alpha x2 by UID
    assert store.sorted_uids("user.a", [("SUBJECT", True), ("SIZE", True)]) == [3, 1, 2, 4]
    assert store.sorted_uids("user.a", [("FROM", False)]) == [4, 2, 3, 1]  # amy, bob, emile
    assert store.sorted_uids("user.a", [("DISPLAYFROM", False)]) == [4, 2, 1, 3]  # é after z
    assert store.sorted_uids("user.a", []) == [1, 2, 3, 4]


def test_thread_fields(store: DiskStore) -> None:
    fields = store.thread_fields("user.a")
    assert [f.uid for f in fields] == [1, 2, 3, 4]
    assert fields[1].message_id == "<2@x>" and fields[1].in_reply_to == "<1@x>"
    assert fields[2].references == "<1@x> <2@x>" and fields[2].subject == "été"
    assert fields[2].sent == store.messages("user.a")[2].internaldate  # no Date: arrival


def test_copy_and_expunge_carry_the_form(store: DiskStore) -> None:
    store.copy_messages("user.a", [2, 3], "user.a.Copy")
    assert store.sorted_uids("user.a.Copy", [("SUBJECT", False)]) == [1, 2]
    assert store.thread_fields("user.a.Copy")[1].references == "<1@x> <2@x>"
    listed = store.listed_headers("user.a.Copy", [1, 2, 3])  # the listed fields go along
    assert listed == {1: (len(MESSAGES[1]), listed_form(MESSAGES[1])),
                      2: (len(MESSAGES[2]), listed_form(MESSAGES[2]))}
    assert listed[1][1].startswith(b"Date: Wed, 25 Nov 2026 08:00:00 +0000\r\nSubject: alpha\r\n")
    store.expunge("user.a", [2])
    assert store.sorted_uids("user.a", [("DATE", False)]) == [3, 4, 1]
    if on_disk(store):
        assert _sql(store, "SELECT count(*) FROM header_index WHERE base_subject IS NULL") == [
            (0,)]


@pytest.mark.disk_only("the rows of the SQLite index")
def test_rows_without_the_form_are_filled_on_first_use(store: DiskStore) -> None:
    """As after the migration to index version 5, or a reconstruct that rewrote a row."""
    _sql(store, "UPDATE header_index SET " + ", ".join(f"{c} = NULL" for c in SORT_COLUMNS))
    _sql(store, "DELETE FROM header_index WHERE uid = 4")
    assert store.sorted_uids("user.a", [("FROM", False)]) == [4, 2, 3, 1]
    assert _sql(store, "SELECT count(*) FROM header_index WHERE base_subject IS NOT NULL") == [
        (4,)]
    assert store.thread_fields("user.a")[1].in_reply_to == "<1@x>"


def test_sort_values_order_as_sorted_uids(store: DiskStore) -> None:
    """What a kept order places new mail by (sealmail.imap.orders): the values of each key,
    which order the messages as the store's ORDER BY does."""
    for key in sorted(SORT_KEYS):
        values = store.sort_values("user.a", [(key, False), ("SIZE", True)], [4, 2, 3, 1, 9])
        assert sorted(values) == [1, 2, 3, 4]  # UID 9 does not exist
        assert all(len(row) == 2 and None not in row for row in values.values())
        for reverse in (False, True):
            ordered = sorted(sorted(values), key=lambda uid: values[uid][0], reverse=reverse)
            assert ordered == store.sorted_uids("user.a", [(key, reverse)]), key
    assert store.sort_values("user.a", [("SUBJECT", False)], [2])[2] == ("ALPHA",)
    assert store.sort_values("user.a", [("ARRIVAL", False)], []) == {}


def test_thread_fields_since(store: DiskStore) -> None:
    every = store.thread_fields("user.a")
    assert store.thread_fields("user.a", since=2) == every[2:]
    assert store.thread_fields("user.a", since=4) == []
    assert store.thread_fields("user.a", 0) == every


@pytest.mark.disk_only("reconstruct")
def test_reconstruct_then_sort(store: DiskStore) -> None:
    _sql(store, "UPDATE header_index SET fields = x'1e' WHERE uid = 2")
    assert store.reconstruct("user.a")
    assert store.sorted_uids("user.a", [("DATE", True)]) == _expected(
        store, "user.a", [("DATE", True)])


header_values = st.lists(
    st.sampled_from([*'aAbZé ß[]:()<>@,"', "Re: ", "Fwd:", "=?utf-8?q?=C3=A9?="]),
    max_size=12,
).map("".join)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(header_values, header_values, header_values), min_size=1,
                max_size=6),
       st.lists(st.tuples(st.sampled_from(sorted(SORT_KEYS)), st.booleans()), max_size=3))
def test_sqlite_orders_as_python_does(tmp_path_factory: pytest.TempPathFactory,
                                      headers: list[tuple[str, str, str]],
                                      keys: list[tuple[str, bool]]) -> None:
    root = tmp_path_factory.mktemp("sort")
    with DiskStore.from_config(_config(root), clock=lambda: 1000.0) as store:
        store.create_mailbox("user.a")
        for subject, sender, to in headers:
            raw = f"Subject: {subject}\r\nFrom: {sender}\r\nTo: {to}\r\n\r\nx\r\n".encode()
            store.deliver(raw, [DeliveryTarget("user.a")])
        assert store.sorted_uids("user.a", keys) == _expected(store, "user.a", keys)


def test_base_subject_examples() -> None:
    """RFC 5256 2.1, kept in i;ascii-casemap form (ASCII upper case)."""
    assert base_subject("Re: [list] Fwd: Hello (fwd)") == "HELLO"
    assert base_subject("[Fwd: Re: x]") == "X"
    # imaptest's sort-subject: leaders behind blobs, a lone blob kept, nested [fwd: ...],
    # a blob with a "[" inside is no blob.
    assert base_subject("[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)") == "B"
    assert base_subject("[xyz]") == "[XYZ]"
    assert base_subject("re: [fwd: [fwd: re: [fwd: babylon]]]") == "BABYLON"
    assert base_subject("Ad: Re: Ad: Re: Ad: x") == "AD: RE: AD: RE: AD: X"
    assert base_subject("=?iso-8859-1?q?RE:_C?=") == "C"
    assert base_subject("=?iso-8859-1?q?_?=") == ""
    assert base_subject("Re: café") == "CAFé"  # only ASCII letters are mapped


def test_subjects_sort_in_ascii_casemap_order() -> None:
    """RFC 5256 3 sorts with i;ascii-casemap: "[" and "_" after the letters, whatever case."""
    subjects = ["_", "[xyz]", "b (a)", "a", "C", "babylon"]
    assert sorted(subjects, key=base_subject) == ["a", "b (a)", "babylon", "C", "[xyz]", "_"]


def test_first_address_of_a_group_is_its_name() -> None:
    """RFC 5256 3 / RFC 5957 on ENVELOPE's addresses: a group starts with its name
    (RFC 9051 7.5.2), so the group's name is its addr-mailbox and its display name."""
    fields = sort_fields(b"From: =?iso-8859-1?q?foo_aar?= <e@f.g>\r\nTo: a: x@y.org, z@y.org;\r\n"
                         b"Cc: <user (comment)@ example.org>\r\n\r\n")
    assert (fields.from_mailbox, fields.from_display) == ("E", "FOO AAR")
    assert (fields.to_mailbox, fields.to_display) == ("A", "A")
    assert fields.cc_mailbox == "USER"
    empty = sort_fields(b"To: empty:;\r\nFrom: d\r\n\r\n")
    assert (empty.to_mailbox, empty.to_display) == ("EMPTY", "EMPTY")
    assert (empty.from_mailbox, empty.from_display) == ("D", "D")


def test_the_store_orders_by_every_key_the_parser_takes() -> None:
    from sealmail.proto.imap.parser import SORT_KEYS as PARSED

    assert frozenset(PARSED) == SORT_KEYS
