"""A kept SORT answer with new numbers put in (sealmail.imap.sort_answers) is, byte for byte,
the answer written afresh from the whole list (hypothesis: any sizes, places and repeats)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sealmail.imap.sort_answers import PIECE, SortAnswer
from sealmail.proto.imap import render
from sealmail.proto.imap.response import sort


def expected(numbers: list[int], placed: list[tuple[int, int]]) -> list[int]:
    out: list[int] = []
    for i in range(len(numbers) + 1):
        out += [n for p, n in placed if p == i]
        out += numbers[i:i + 1]
    return out


@given(first=st.lists(st.integers(1, 10**6), max_size=3 * PIECE),
       rounds=st.lists(st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 10**6)),
                                max_size=2 * PIECE + 5), max_size=4))
def test_numbers_put_in_answer_as_written_afresh(first: list[int],
                                                 rounds: list[list[tuple[int, int]]]) -> None:
    numbers = first
    answer = SortAnswer.of(numbers)
    assert render(answer.response()) == render(sort(numbers))
    for wanted in rounds:
        placed = sorted(((p % (len(numbers) + 1), n) for p, n in wanted), key=lambda x: x[0])
        answer = answer.inserted(placed)
        numbers = expected(numbers, placed)
        assert list(answer.numbers) == numbers
        assert render(answer.response()) == render(sort(numbers))
        assert sum(answer.sizes) == len(numbers) and max(answer.sizes, default=0) < 2 * PIECE


def test_an_empty_answer_takes_numbers() -> None:
    answer = SortAnswer.of([]).inserted([(0, 7), (0, 3)])
    assert render(answer.response()) == b"* SORT 7 3\r\n"
    assert render(SortAnswer.of([]).response()) == b"* SORT\r\n"
