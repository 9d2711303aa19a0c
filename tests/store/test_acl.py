from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.store.acl import (
    InvalidRights,
    apply_rights_change,
    canonical_rights,
    owner_rights,
    parse_acl,
    render_acl,
    rights_of,
    set_entry,
)
from sealmail.store.api import ALL_RIGHTS

rights_text = st.text(alphabet="lrswipkxtecda0123456789", max_size=15)
identities = st.sampled_from(["alice", "bob", "anyone", "anonymous", "group:staff"])
acl_entries = st.dictionaries(
    st.builds(lambda neg, who: ("-" if neg else "") + who, st.booleans(), identities),
    rights_text.map(canonical_rights),
    max_size=6,
)


def test_canonical_order_and_obsolete_rights() -> None:
    assert canonical_rights("sl") == "ls"
    assert canonical_rights(ALL_RIGHTS) == ALL_RIGHTS
    assert canonical_rights("c") == "kc"  # RFC 4314 2.1.1: c means k
    assert canonical_rights("d") == "ted"
    assert canonical_rights("te") == "ted"
    assert canonical_rights("t") == "t"


def test_unknown_right_is_rejected() -> None:
    with pytest.raises(InvalidRights):
        canonical_rights("lz")


def test_setacl_modifiers() -> None:
    assert apply_rights_change("lr", "+s") == "lrs"
    assert apply_rights_change("lrs", "-r") == "ls"
    assert apply_rights_change("lrs", "w") == "w"
    assert apply_rights_change(ALL_RIGHTS, "-t") == "lrswipkxeca"  # d goes with t
    assert set_entry({"bob": "lr"}, "bob", "") == {}
    assert set_entry({"bob": "lr"}, "bob", "-lr") == {}
    with pytest.raises(InvalidRights):
        set_entry({}, "", "lr")


def test_rights_of_counts_anyone_anonymous_and_negatives() -> None:
    acl = {"anyone": "lrs", "bob": "wi", "-bob": "s", "anonymous": "p"}
    assert rights_of(acl, "bob", is_admin=False) == "lrwi"
    assert rights_of(acl, "carol", is_admin=False) == "lrs"
    assert rights_of(acl, "anonymous", is_admin=False) == "lrsp"
    assert rights_of({}, "admin", is_admin=True) == "la"
    assert rights_of({"-admin": "l"}, "admin", is_admin=True) == "la"


@given(acl_entries, identities)
def test_negative_rights_always_win(acl: dict[str, str], who: str) -> None:
    result = rights_of(acl, who, is_admin=False)
    for identifier, rights in acl.items():
        if identifier.startswith("-") and identifier[1:] in (who, "anyone"):
            for right in canonical_rights(rights):
                if right not in "cd":
                    assert right not in result
    positive = "".join(r for i, r in acl.items() if not i.startswith("-"))
    assert set(result) <= set(canonical_rights(positive))


@given(acl_entries, identities)
def test_admin_always_has_lookup_and_administer(acl: dict[str, str], who: str) -> None:
    assert {"l", "a"} <= set(rights_of(acl, who, is_admin=True))


@given(rights_text, rights_text)
def test_add_then_remove(current: str, change: str) -> None:
    added = apply_rights_change(current, "+" + change)
    assert set(canonical_rights(change)) <= set(added)
    removed = apply_rights_change(added, "-" + change)
    assert not set(canonical_rights(change)) - set("cd") & set(removed)
    assert canonical_rights(added) == added


@given(acl_entries)
def test_stored_acl_round_trips(acl: dict[str, str]) -> None:
    assert parse_acl(render_acl(acl)) == acl


def test_implicit_rights_survive_negative_entries() -> None:
    acl = {"alice": "lrswipkxtecda", "-alice": "lra"}
    assert rights_of(acl, "alice", False) == "swipkxtecd"
    assert rights_of(acl, "alice", False, implicit="lkxa") == "lswipkxtecda"
    assert rights_of({}, "alice", False, implicit="lkxa") == "lkxca"  # c: RFC 4314 2.1.1


def test_owner_rights_belong_to_the_owner_of_the_hierarchy_only() -> None:
    assert owner_rights("user.alice", "alice", "lkxa") == "lkxa"
    assert owner_rights("user.alice.Sent", "alice", "lkxa") == "lkxa"
    assert owner_rights("user.alice", "bob", "lkxa") == ""
    assert owner_rights("Shared", "alice", "lkxa") == ""
