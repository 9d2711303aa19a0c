"""THREAD=REFERENCES (RFC 5256 3), as a pure function, checked on the cases the RFC's steps name."""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from sealmail.imap.conversations import ThreadedMessage, thread_by_references
from sealmail.proto.imap import response
from sealmail.proto.imap.response import ThreadNode
from sealmail.store.sorting import base_subject


def msg(number: int, own: str = "", refs: str = "", reply_to: str = "", subject: str = "",
        sent: float | None = None) -> ThreadedMessage:
    return ThreadedMessage(number, number, own, refs, reply_to, subject or f"s{number}",
                           float(number) if sent is None else sent)


def render(roots: list[ThreadNode]) -> bytes:
    """The thread list as it goes on the wire, without `* THREAD ` and CRLF."""
    line = response.render(response.thread(roots))
    return line.removeprefix(b"* THREAD").strip()


def test_a_chain_of_replies_is_one_thread() -> None:
    assert render(thread_by_references([
        msg(1, "<a@x>"),
        msg(2, "<b@x>", "<a@x>"),
        msg(3, "<c@x>", "<a@x> <b@x>"),
    ], base_subject)) == b"(1 2 3)"


def test_in_reply_to_is_used_without_references() -> None:
    assert render(thread_by_references([
        msg(1, "<a@x>"), msg(2, "<b@x>", reply_to="<a@x> (comment)")], base_subject)) == b"(1 2)"


def test_siblings_branch_and_sort_by_date() -> None:
    assert render(thread_by_references([
        msg(1, "<a@x>", sent=1.0),
        msg(2, "<b@x>", "<a@x>", sent=5.0),
        msg(3, "<c@x>", "<a@x>", sent=3.0),
        msg(4, "<d@x>", "<a@x> <b@x>", sent=6.0),
    ], base_subject)) == b"(1 (3)(2 4))"


def test_a_missing_parent_of_two_stays_as_a_placeholder_at_the_root() -> None:
    # Step 3 B: a dummy at the root with more than one child is kept.
    assert render(thread_by_references([
        msg(1, "<b@x>", "<gone@x>"), msg(2, "<c@x>", "<gone@x>")], base_subject)) == b"((1)(2))"


def test_a_missing_parent_of_one_is_dropped() -> None:
    assert render(thread_by_references([msg(1, "<b@x>", "<gone@x>")], base_subject)) == b"(1)"


def test_missing_middle_of_a_chain_is_spliced_out() -> None:
    assert render(thread_by_references([
        msg(1, "<a@x>"), msg(2, "<c@x>", "<a@x> <gone@x>")], base_subject)) == b"(1 2)"


def test_same_subject_without_references_joins_the_original() -> None:
    # Step 5 C: a reply's subject under the original.
    assert render(thread_by_references([
        msg(1, "<a@x>", subject="Lunch"), msg(2, "<b@x>", subject="Re: lunch")],
        base_subject)) == b"(1 2)"
    # ... and two originals with one subject become siblings under a placeholder.
    assert render(thread_by_references([
        msg(1, "<a@x>", subject="Lunch"), msg(2, "<b@x>", subject="lunch")],
        base_subject)) == b"((1)(2))"
    # A "(fwd)" trailer or a "[list] Re:" leader marks a forward or reply too.
    assert render(thread_by_references([
        msg(1, "<a@x>", subject="Plans (fwd)"), msg(2, "<b@x>", subject="[team] Re: plans"),
        msg(3, "<c@x>", subject="Plans")], base_subject)) == b"(3 (1)(2))"
    # The original arriving after its reply still becomes the parent.
    assert render(thread_by_references([
        msg(1, "<b@x>", subject="Re: Lunch"), msg(2, "<a@x>", subject="Lunch")],
        base_subject)) == b"(2 1)"


def test_empty_subjects_are_never_merged() -> None:
    assert render(thread_by_references([
        msg(1, "<a@x>", subject=" "), msg(2, "<b@x>", subject=" ")],
        base_subject)) == b"(1)(2)"


def test_reference_loops_and_duplicate_ids_do_not_lose_messages() -> None:
    roots = thread_by_references([
        msg(1, "<a@x>", "<b@x>"), msg(2, "<b@x>", "<a@x>"), msg(3, "<a@x>"), msg(4, "", "<a@x>"),
        msg(5, "<e@x>", "<e@x>")], base_subject)
    assert sorted(numbers(roots)) == [1, 2, 3, 4, 5]


def numbers(nodes: list[ThreadNode] | tuple[ThreadNode, ...]) -> Iterator[int]:
    for node in nodes:
        if node.number is not None:
            yield node.number
        yield from numbers(node.children)


ids = st.sampled_from(["<a@x>", "<b@x>", "<c@x>", "<d@x>", "<e@x>", ""])


@given(st.lists(st.tuples(ids, st.lists(ids, max_size=4), ids,
                          st.sampled_from(["x", "Re: x", "y", "Fwd: y", "", "[l] x"]),
                          st.integers(0, 5)), max_size=12))
def test_every_message_appears_exactly_once(
        facts: list[tuple[str, list[str], str, str, int]]) -> None:
    messages = [msg(i + 1, own, " ".join(refs), reply, subject or "-", float(sent))
                for i, (own, refs, reply, subject, sent) in enumerate(facts)]
    roots = thread_by_references(messages, base_subject)
    assert sorted(numbers(roots)) == list(range(1, len(messages) + 1))
    assert all(r.number is not None or len(r.children) > 1 for r in roots)
