"""Sequence sets: wire form, "*" and "$", membership and iteration (RFC 9051 9, RFC 5182)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sealmail.proto.imap import BadCommand, SequenceSet
from sealmail.proto.imap.sequence import STAR

numbers = st.integers(min_value=1, max_value=2000)
seq_numbers = st.one_of(numbers, st.just(STAR))
ranges = st.tuples(seq_numbers, seq_numbers)
sets = st.lists(ranges, min_size=1, max_size=8).map(lambda r: SequenceSet(tuple(r)))


def test_parse_and_render() -> None:
    for text in ("1", "1:*", "*", "2,4:7,9,12:*", "*:4", "$", "4294967295"):
        assert str(SequenceSet.parse(text)) == text


@pytest.mark.parametrize(
    "text",
    ["", "0", "1:", ":1", "1,,2", "a", "1:0", "$,1", "1 2", "4294967296", "-1", "01",
     "1:4294967296", "3,4294967296:*"],
)
def test_bad_sets(text: str) -> None:
    with pytest.raises(BadCommand):
        SequenceSet.parse(text)


def test_a_long_set_as_imaptest_sends_it() -> None:
    text = ",".join(f"{n}:{n + 1}" if n % 3 else str(n) for n in range(1, 600, 4)) + ",*"
    parsed = SequenceSet.parse(text)
    assert str(parsed) == text and len(parsed.ranges) == 151
    with pytest.raises(ValueError):
        SequenceSet(((1, 2), (3, 2**32)))


def test_star_is_the_largest_even_below_the_start() -> None:
    # RFC 9051 9: "559:*" includes the last UID even when that is lower than 559.
    uid_set = SequenceSet.parse("559:*")
    assert list(uid_set.iter_members([3, 10, 400])) == [400]
    assert uid_set.contains(400, 400)
    assert not uid_set.contains(399, 400)


def test_reversed_range_is_the_same_range() -> None:
    assert SequenceSet.parse("7:3").normalized(10) == [(3, 7)]


def test_iter_numbers_skips_numbers_past_exists() -> None:
    assert list(SequenceSet.parse("2,4:6,9").iter_numbers(5)) == [2, 4, 5]
    assert list(SequenceSet.parse("1:*").iter_numbers(0)) == []


def test_saved_result_must_be_substituted() -> None:
    with pytest.raises(ValueError):
        SequenceSet.parse("$").normalized(5)


def test_of_is_compact() -> None:
    assert str(SequenceSet.of([5, 1, 2, 3, 9, 10])) == "1:3,5,9:10"
    with pytest.raises(ValueError):
        SequenceSet.of([])


def test_iter_indexes_maps_uids_to_positions() -> None:
    uids = [3, 7, 8, 20, 21]
    assert list(SequenceSet.parse("7:20").iter_indexes(uids)) == [1, 2, 3]


def test_large_uid_set_iterates_in_one_pass() -> None:
    uids = list(range(1, 200_001, 2))
    assert sum(1 for _ in SequenceSet.all().iter_members(uids)) == len(uids)


@given(sets)
def test_round_trip(value: SequenceSet) -> None:
    assert SequenceSet.parse(str(value)) == value


@given(sets, st.integers(min_value=1, max_value=2000), st.integers(min_value=1, max_value=2100))
def test_contains_agrees_with_the_definition(value: SequenceSet, largest: int, probe: int) -> None:
    expected = False
    for start, end in value.ranges:
        low = largest if start == STAR else start
        high = largest if end == STAR else end
        expected |= min(low, high) <= probe <= max(low, high)
    assert value.contains(probe, largest) == expected


@given(sets, st.lists(numbers, max_size=60, unique=True).map(sorted))
def test_iter_members_is_the_filtered_list(value: SequenceSet, uids: list[int]) -> None:
    if not uids:
        assert list(value.iter_members(uids)) == []
        return
    expected = [uid for uid in uids if value.contains(uid, uids[-1])]
    assert list(value.iter_members(uids)) == expected
    assert [uids[i] for i in value.iter_indexes(uids)] == expected


@given(st.sets(numbers, min_size=1, max_size=80))
def test_of_holds_exactly_its_numbers(values: set[int]) -> None:
    compact = SequenceSet.of(values)
    assert set(compact.iter_numbers(2000)) == values
    assert SequenceSet.parse(str(compact)) == compact


@given(sets, st.integers(min_value=0, max_value=60))
def test_number_spans_are_iter_numbers_as_ranges(numbers: SequenceSet, exists: int) -> None:
    spans = numbers.number_spans(exists)
    assert [i + 1 for start, stop in spans for i in range(start, stop)] == list(
        numbers.iter_numbers(exists))
    assert all(start < stop for start, stop in spans)
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))


@given(sets, st.lists(numbers, max_size=40).map(lambda v: sorted(set(v))))
def test_index_spans_are_iter_indexes_as_ranges(numbers: SequenceSet, uids: list[int]) -> None:
    spans = numbers.index_spans(uids)
    assert [i for start, stop in spans for i in range(start, stop)] == list(
        numbers.iter_indexes(uids))
    assert all(start < stop for start, stop in spans)
