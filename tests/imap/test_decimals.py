"""Lines put together a column at a time (sealmail.imap.decimals) are what the %-format gives
(hypothesis: numbers in and past the table, `%%` in the text, any number of items)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sealmail.imap import decimals

numbers = st.integers(0, 3 * decimals.TABLE)
texts = st.binary(max_size=6).map(lambda b: b.replace(b"%", b"%%"))


@settings(max_examples=60)
@given(st.lists(numbers, max_size=50))
def test_decimals_are_percent_d(values: list[int]) -> None:
    assert decimals.decimals(values) == [b"%d" % v for v in values]
    ascending = sorted(set(values))
    assert decimals.decimals(ascending, ascending=True) == [b"%d" % v for v in ascending]
    if values:
        run = range(min(values), min(values) + len(values))
        assert decimals.decimals(run) == decimals.decimals(list(run), ascending=True) == [
            b"%d" % v for v in run]
    assert decimals.written(values) == b"".join(b" %d" % v for v in values)


@settings(max_examples=60)
@given(st.data(), st.lists(st.tuples(texts, st.sampled_from([b"%d", b"%b"])), min_size=1,
                           max_size=5),
       texts, st.integers(0, 20))
def test_interleaved_lines_are_the_format_applied(
        data: st.DataObject, places: list[tuple[bytes, bytes]], tail: bytes, count: int) -> None:
    line = b"".join(text + place for text, place in places) + tail
    rows = [tuple(data.draw(numbers) if place == b"%d" else data.draw(st.binary(max_size=8))
                  for _, place in places) for _ in range(count)]
    columns = [[decimals.decimals([row[j]])[0] if place == b"%d" else row[j] for row in rows]
               for j, (_, place) in enumerate(places)]
    expected = b"".join(line % row for row in rows)
    assert decimals.interleaved(decimals.pieces_of(line), columns) == expected
