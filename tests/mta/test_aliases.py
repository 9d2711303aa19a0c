"""aliases(5): parsing, destinations, the hash: database, lookup order and expansion state."""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support.peers import POSTALIAS, postfix_config_dir

from sealmail.mta.aliases import (
    AliasError,
    Destination,
    DestinationKind,
    ExpansionState,
    build_alias_database,
    classify,
    find_alias,
    lookup_keys,
    parse_aliases,
    parse_include,
    split_destinations,
)
from sealmail.mta.config import open_table
from sealmail.mta.config.tables import MemoryTable

ALIASES = """\
# the postmaster
postmaster: root
root:   alice
staff:  alice, bob,
        carol@remote.example
# a comment inside the continuation

  , "|/usr/bin/filter -x, y", /var/log/staff.mbox, :include:/etc/mail/staff.list
"Odd.Name": \\alice
Upper: alice
upper: bob
"""

A, C, F, INC = (DestinationKind.ADDRESS, DestinationKind.COMMAND, DestinationKind.FILE,
                DestinationKind.INCLUDE)


def test_parse_entries_continuations_comments_and_duplicates() -> None:
    entries = parse_aliases(ALIASES, "aliases")
    assert [(e.name, e.line) for e in entries] == [
        ("postmaster", 2), ("root", 3), ("staff", 4), ("odd.name", 9), ("upper", 10)]
    staff = entries[2]
    assert [classify(item) for item in split_destinations(staff.value)] == [
        Destination(A, "alice"), Destination(A, "bob"), Destination(A, "carol@remote.example"),
        Destination(C, "/usr/bin/filter -x, y"), Destination(F, "/var/log/staff.mbox"),
        Destination(INC, "/etc/mail/staff.list")]
    assert entries[3].value == "\\alice" and classify(entries[3].value).literal
    assert entries[4].value == "alice"  # the first duplicate wins, as postalias


@pytest.mark.parametrize(("text", "message"), [
    ("no colon here\n", "missing ':'"),
    ("name:\n", "without a value"),
    ('"open: x\n', "unterminated"),
    ("two words: x\n", "bad alias name"),
])
def test_malformed_entries_name_file_and_line(text: str, message: str) -> None:
    with pytest.raises(AliasError, match=message) as caught:
        parse_aliases("ok: x\n" + text, "/etc/aliases")
    assert "/etc/aliases" in str(caught.value) and "2" in str(caught.value)


def test_destination_forms() -> None:
    assert classify("<bob@x.example>") == Destination(A, "bob@x.example")
    assert classify('"|cat > /dev/null"') == Destination(C, "cat > /dev/null")
    assert classify(":INCLUDE: /l") == Destination(INC, "/l")
    assert classify("\\bob") == Destination(A, "bob", literal=True)
    assert parse_include("# list\na, b\n\nc\n") == [
        Destination(A, "a"), Destination(A, "b"), Destination(A, "c")]
    with pytest.raises(AliasError, match="double quote"):
        parse_include('"|unbalanced\n')


@given(st.lists(st.from_regex(r"[a-z][a-z0-9.+-]{0,10}(@[a-z]{1,8}\.example)?", fullmatch=True),
                min_size=1, max_size=8))
def test_split_round_trips_address_lists(addresses: list[str]) -> None:
    assert split_destinations(", ".join(addresses)) == addresses
    assert split_destinations(",\n ".join(addresses)) == addresses


@given(st.text(max_size=200))
def test_parser_never_crashes_on_text(text: str) -> None:
    with contextlib.suppress(AliasError):
        parse_aliases(text)


def test_lookup_order_with_delimiter_and_owner_request_special() -> None:
    assert lookup_keys("Alice+Lists", "+") == ["alice+lists", "alice"]
    assert lookup_keys("alice", "+") == ["alice"]
    assert lookup_keys("owner-staff", "-") == ["owner-staff"]
    assert lookup_keys("staff-request", "-") == ["staff-request"]
    assert lookup_keys("staff-request", "-", owner_request_special=False) == [
        "staff-request", "staff"]
    assert lookup_keys("a-b", "+-") == ["a-b", "a"]


def test_find_alias_reports_the_owner_companion() -> None:
    tables = [("inline", MemoryTable("inline", {"staff": "a, b", "owner-staff": "boss"},
                                     fold=True))]
    hit = find_alias(tables, "Staff+x", "+")
    assert hit is not None and (hit.key, hit.value, hit.owner) == ("staff", "a, b", "owner-staff")
    assert find_alias(tables, "nobody", "+") is None


def test_expansion_state_eliminates_duplicates_and_sees_loops() -> None:
    state = ExpansionState(frozenset({"list@example.com"}))
    assert state.first_time(Destination(A, "Bob@x"))
    assert not state.first_time(Destination(A, "bob@X"))
    assert state.first_time(Destination(A, "bob@x", literal=True))
    assert state.is_loop("List@Example.com") and not state.is_loop("other@example.com")


def test_build_and_open_through_the_hash_table(tmp_path: Path) -> None:
    source = tmp_path / "aliases"
    source.write_text(ALIASES)
    source.chmod(0o640)
    index = build_alias_database(source)
    assert index == tmp_path / "aliases.sqlite"
    assert index.stat().st_mode & 0o077 == 0o040
    table = open_table(f"hash:{source}")
    staff = table.lookup("STAFF")
    assert staff is not None and staff.startswith("alice, bob,")
    assert table.lookup("odd.name") == "\\alice"
    assert table.lookup("missing") is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["aliases", "aliases.sqlite"]


@pytest.mark.skipif(not Path(POSTALIAS).exists(), reason="Debian's postalias not installed")
def test_values_match_debian_postalias(tmp_path: Path) -> None:
    ours = tmp_path / "ours"
    theirs = tmp_path / "theirs"
    text = ALIASES.replace('"Odd.Name": \\alice\n', "")  # Postfix keeps the quotes in the key
    ours.write_text(text)
    theirs.write_text(text)
    build_alias_database(ours)
    config = str(postfix_config_dir(tmp_path / "postfix"))  # never the host's /etc/postfix
    subprocess.run([POSTALIAS, "-c", config, str(theirs)], check=True, capture_output=True)
    table = open_table(f"hash:{ours}")
    for key in ("postmaster", "root", "staff", "upper", "Upper", "absent"):
        done = subprocess.run([POSTALIAS, "-c", config, "-q", key, str(theirs)],
                              capture_output=True, text=True, check=False)
        expected = done.stdout.rstrip("\n") if done.returncode == 0 else None
        found = table.lookup(key)
        # Postfix joins a continuation keeping the line break's whitespace; compare the lists.
        if expected is None or found is None:
            assert found == expected, key
        else:
            assert split_destinations(found) == split_destinations(expected), key
