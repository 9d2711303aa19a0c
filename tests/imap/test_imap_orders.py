"""SORT and THREAD answers kept between commands (sealmail.imap.orders) are those worked out
afresh: kept across flag changes, started again when a message comes or goes, shared by the
sessions of one store, and equal to a fresh answer after any sequence of changes (hypothesis),
above all new mail placed into kept orders and added to kept threads (SEALMAIL_LONG=1: 5,000
examples of that)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from tests.support.stores import SESSION_CONFIG, open_store, store_config

from sealmail.imap import ImapSession, searching, threads
from sealmail.imap.orders import MailboxOrders, orders_for
from sealmail.imap.selected import SelectedMailbox
from sealmail.proto.imap import ParserLimits, Response, Sort, parse_command, render
from sealmail.store.api import DeliveryTarget, MessageStore
from sealmail.store.sorting import ThreadFields


def message(n: int, parent: int | tuple[int, ...] | None = None, subject: str | None = None,
            message_id: int | None = None) -> bytes:
    """Message `n`: a reply to message `parent` (or naming several), if any; dates out of UID
    order; Message-ID that of message `message_id` (a duplicate) if given."""
    named = (parent,) if isinstance(parent, int) else parent or ()
    references = ("References: " + " ".join(f"<m{p}@example.org>" for p in named) + "\r\n"
                  if named else "")
    subject = subject if subject is not None else f"topic {n % 3}"
    own = n if message_id is None else message_id
    return (f"From: sender{n % 4}@example.org\r\nTo: to{n % 5}@example.org\r\n"
            f"Subject: {subject}\r\nDate: {1 + (n * 7) % 28:02d} Mar 2026 10:00:00 +0000\r\n"
            f"Message-ID: <m{own}@example.org>\r\n{references}\r\n"
            + "line\r\n" * (n % 4 + 1)).encode()


def deliver(store: MessageStore, n: int, parent: int | tuple[int, ...] | None = None,
            subject: str | None = None, message_id: int | None = None) -> None:
    store.deliver(message(n, parent, subject, message_id), [DeliveryTarget("user.fred", ())],
                  internaldate=1.7e9 + (n * 5 % 11) * 3600)


@pytest.fixture
def store(tmp_path: Path, backend: str) -> Iterator[MessageStore]:
    opened = open_store(backend, store_config(tmp_path))
    opened.create_mailbox("user.fred")
    for n in range(8):
        deliver(opened, n, parent=n - 2 if n >= 2 and n % 2 else None)
    yield opened
    opened.close()


def session_on(store: MessageStore) -> ImapSession:
    session = ImapSession(store, SESSION_CONFIG, "fred", "user.fred")
    run(session, "a SELECT INBOX")
    return session


def run(session: ImapSession, line: str) -> bytes:
    responses = session.execute(parse_command(line.encode() + b"\r\n", ParserLimits()))
    return b"".join(render(r) for r in responses)


def answer(session: ImapSession, line: str) -> bytes:
    """The SORT or THREAD handler's answer alone: the view is not synced after it."""
    command = parse_command(line.encode() + b"\r\n", ParserLimits())
    handler = searching.sort if isinstance(command, Sort) else searching.thread
    return b"".join(render(r) for r in handler(session, command))  # type: ignore[arg-type]


class Afresh(MailboxOrders):
    """Nothing kept is used, and THREAD of every message is worked out by the plain
    algorithms (threads.threaded), not from a kept state (sealmail.imap.threads)."""

    def thread(self, view: SelectedMailbox, algorithm: str, uid: bool,
               fields: Callable[[int], list[ThreadFields]]) -> Response:
        wanted = {u: n for n, u in enumerate(view.uids, 1)}
        return threads.threaded(fields(0), algorithm, uid, wanted)


def fresh(session: ImapSession, line: str, monkeypatch: pytest.MonkeyPatch) -> bytes:
    """`line`'s answer worked out anew: nothing kept is used, nothing is kept."""
    with monkeypatch.context() as patch:
        patch.setattr(searching, "orders_for", lambda store: Afresh())
        return run(session, line)


COMMANDS = ("a SORT (SUBJECT) UTF-8 ALL", "a UID SORT (REVERSE DATE) UTF-8 ALL",
            "a SORT (FROM REVERSE ARRIVAL) UTF-8 UNSEEN", "a THREAD REFERENCES UTF-8 ALL",
            "a UID THREAD ORDEREDSUBJECT UTF-8 ALL", "a THREAD REFERENCES UTF-8 UNSEEN",
            "a UID THREAD REFERENCES UTF-8 ALL", "a THREAD ORDEREDSUBJECT UTF-8 ALL",
            "a SORT (REVERSE SUBJECT SIZE) UTF-8 ALL", "a UID SORT (TO REVERSE CC DATE) UTF-8 ALL")


def test_an_answer_is_kept_across_flag_changes(store: MessageStore) -> None:
    session = session_on(store)
    first = run(session, "a THREAD REFERENCES UTF-8 ALL")
    kept = orders_for(store)
    run(session, "b STORE 1:* +FLAGS (\\Flagged)")
    assert run(session, "a THREAD REFERENCES UTF-8 ALL") == first
    assert len(kept._entries) == 1  # the one entry, not started again
    entry = next(iter(kept._entries.values()))
    assert len(entry.answers) == 1


def test_a_new_message_and_an_expunge_start_afresh(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    session = session_on(store)
    before = run(session, "a SORT (SUBJECT) UTF-8 ALL")
    assert before == b"* SORT 1 4 7 2 5 8 3 6\r\na OK SORT completed\r\n"
    deliver(store, 8, subject="a first subject")
    # The session hears of the new message after this SORT (RFC 9051 7: at the command's end).
    assert run(session, "a SORT (SUBJECT) UTF-8 ALL") == (
        b"* SORT 1 4 7 2 5 8 3 6\r\n* 9 EXISTS\r\n* 9 RECENT\r\na OK SORT completed\r\n")
    assert run(session, "a SORT (SUBJECT) UTF-8 ALL") == (
        b"* SORT 9 1 4 7 2 5 8 3 6\r\na OK SORT completed\r\n")
    store.expunge("user.fred", [1])
    # Expunged by another session, this one not told yet: answered from what was kept, as
    # RFC 2180 4.1 allows (SEARCH ALL finds it too), once; then left out until the EXPUNGE.
    assert run(session, "a SORT (SUBJECT) UTF-8 ALL") == (
        b"* SORT 9 1 4 7 2 5 8 3 6\r\na OK SORT completed\r\n")
    assert run(session, "a SORT (SUBJECT) UTF-8 ALL") == (
        b"* SORT 9 4 7 2 5 8 3 6\r\na OK SORT completed\r\n")
    assert run(session, "a NOOP").startswith(b"* 1 EXPUNGE\r\n")
    assert run(session, "a SORT (SUBJECT) UTF-8 ALL") == (
        b"* SORT 8 3 6 1 4 7 2 5\r\na OK SORT completed\r\n")
    for command in COMMANDS:
        assert run(session, command) == fresh(session, command, monkeypatch)


def test_after_expunges_only_the_orders_are_what_is_left(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    session = session_on(store)
    assert run(session, "a UID SORT (SUBJECT) UTF-8 ALL").startswith(
        b"* SORT 1 4 7 2 5 8 3 6\r\n")
    store.expunge("user.fred", [4, 5])
    run(session, "b NOOP")

    def no_order(*args: object) -> None:
        raise AssertionError("the store was asked to order the mailbox again")

    monkeypatch.setattr(store, "sorted_uids", no_order)
    assert run(session, "c UID SORT (SUBJECT) UTF-8 ALL").startswith(
        b"* SORT 1 7 2 8 3 6\r\n")
    assert run(session, "d SORT (SUBJECT) UTF-8 ALL").startswith(b"* SORT 1 5 2 6 3 4\r\n")


SORTS = ("a SORT (SUBJECT) UTF-8 ALL", "a UID SORT (REVERSE DATE) UTF-8 ALL",
         "a SORT (FROM REVERSE SIZE) UTF-8 ALL", "a UID SORT (DISPLAYTO CC) UTF-8 ALL")
THREADS = ("a THREAD REFERENCES UTF-8 ALL", "a UID THREAD REFERENCES UTF-8 ALL",
           "a THREAD ORDEREDSUBJECT UTF-8 ALL", "a UID THREAD ORDEREDSUBJECT UTF-8 ALL")


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_new_mail_is_placed_into_kept_orders(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    session = session_on(store)
    for line in SORTS:
        run(session, line)
    deliver(store, 8, subject="a first subject")
    deliver(store, 9, parent=3)
    deliver(store, 10, subject="topic 1")
    run(session, "b NOOP")

    def no_order(*args: object) -> None:
        raise AssertionError("the store was asked to order the mailbox again")

    with monkeypatch.context() as patch:
        patch.setattr(store, "sorted_uids", no_order)
        placed = [run(session, line) for line in SORTS]
    assert placed == [fresh(session, line, monkeypatch) for line in SORTS]
    assert placed[0] == b"* SORT 9 1 4 7 10 2 5 8 11 3 6\r\na OK SORT completed\r\n"


def asked_since(store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The `since` of each call of the store's thread_fields from now on."""
    calls: list[int] = []
    every = store.thread_fields

    def thread_fields(name: str, since: int = 0) -> list[ThreadFields]:
        calls.append(since)
        return every(name, since)

    monkeypatch.setattr(store, "thread_fields", thread_fields)
    return calls


@pytest.mark.parametrize("backend", ["memory", "disk"])
def test_new_mail_is_added_to_kept_threads(
        store: MessageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    session = session_on(store)
    for line in THREADS:
        run(session, line)
    deliver(store, 8, subject="news")  # its own subject, no references: a thread of its own
    deliver(store, 9, subject="more news")
    run(session, "b NOOP")
    with monkeypatch.context() as patch:
        calls = asked_since(store, patch)
        added = [run(session, line) for line in THREADS]
    assert calls == [8, 8]  # the new messages only, once per algorithm
    assert added == [fresh(session, line, monkeypatch) for line in THREADS]
    assert added[0] == (b"* THREAD ((1)(7))((5)(2 4 6 8))(9)(10)(3)\r\n"
                        b"a OK THREAD completed\r\n")


@pytest.mark.parametrize(("delivery", "rebuilt"), [
    # Message n is sent on day 1 + 7n % 28 of March, its subject "topic n%3" unless given.
    ({"n": 11, "parent": 3}, []),  # a reply to a message: a child of it, nothing else moves
    ({"n": 11, "parent": (0, 3)}, []),  # naming its parent's parent too, as replies do
    ({"n": 11, "parent": (1, 3)}, []),  # 3 is 1's reply already: nothing to link
    ({"n": 11, "parent": (3, 0)}, ["REFERENCES"]),  # step 1 would link 0 under 3
    ({"n": 11, "parent": 20}, ["REFERENCES"]),  # a reply to a dummy: pruning may change
    ({"n": 11, "parent": 30}, ["REFERENCES"]),  # naming a message unknown: a new dummy
    ({"n": 11, "subject": "Re: topic 1"}, ["REFERENCES"]),  # step 5 merges it (REFERENCES)
    ({"n": 11, "message_id": 2}, ["REFERENCES"]),  # a duplicate Message-ID
    ({"n": 20}, ["REFERENCES", "ORDEREDSUBJECT"]),  # message 7 names it: it fills a dummy;
    # and sent on the 1st, it would start the thread of "topic 2" (ORDEREDSUBJECT)
    ({"n": 23}, ["REFERENCES"]),  # "topic 2" sent on the 22nd: the thread's last child
])
def test_new_mail_that_could_change_threads_rebuilds_them(
        tmp_path: Path, delivery: dict[str, int | str], rebuilt: list[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store("memory", store_config(tmp_path))
    store.create_mailbox("user.fred")
    for n in range(8):
        deliver(store, n, parent=20 if n == 7 else n - 2 if n >= 2 and n % 2 else None)
    session = session_on(store)
    for line in THREADS:
        run(session, line)
    deliver(store, **delivery)  # type: ignore[arg-type]
    run(session, "b NOOP")
    with monkeypatch.context() as patch:
        calls = asked_since(store, patch)
        got = [run(session, line) for line in THREADS]
    assert got == [fresh(session, line, monkeypatch) for line in THREADS]
    # The new message's fields (since UID 8) for each algorithm; all of them again (since 0)
    # where it cannot be added.
    assert calls == [8, *([0] if "REFERENCES" in rebuilt else []),
                     8, *([0] if "ORDEREDSUBJECT" in rebuilt else [])]
    store.close()


def test_sessions_of_one_store_share_answers_and_views_that_differ_do_not(
        store: MessageStore) -> None:
    first, second = session_on(store), session_on(store)
    expected = run(first, "a UID SORT (DATE) UTF-8 ALL")
    assert run(second, "a UID SORT (DATE) UTF-8 ALL") == expected
    run(second, "b STORE 2 +FLAGS (\\Deleted)")
    run(second, "c EXPUNGE")  # the second session's view changes; the first one's not yet
    assert run(second, "a UID SORT (DATE) UTF-8 ALL") == expected.replace(b" 2 ", b" ")
    # The first session's view still has UID 2 (its EXPUNGE follows the answer): worked out
    # afresh for that view, from what the store has.
    answer = run(first, "a UID SORT (DATE) UTF-8 ALL")
    assert answer.startswith(expected.replace(b" 2 ", b" ").split(b"\r\n")[0] + b"\r\n")
    assert b"* 2 EXPUNGE\r\n" in answer


def test_stores_do_not_share(tmp_path: Path, store: MessageStore) -> None:
    assert orders_for(store) is orders_for(store)
    other = open_store("memory", store_config(tmp_path / "other"))
    assert orders_for(other) is not orders_for(store)
    other.close()


def test_the_kept_results_are_bounded(store: MessageStore) -> None:
    session = session_on(store)
    for keys in ("SUBJECT", "DATE", "FROM", "TO", "CC", "SIZE", "ARRIVAL", "DISPLAYFROM",
                 "DISPLAYTO", "REVERSE SUBJECT"):
        run(session, f"a SORT ({keys}) UTF-8 ALL")
    entry = next(iter(orders_for(store)._entries.values()))
    assert len(entry.orders) == len(entry.answers) == 8


# -- any sequence of changes: the kept answer is the fresh one -------------------------------------

# A delivery: (parent: 0 for none, else a message (or several, References) that may not have
# come yet, which then is a dummy it fills; subject: the default "topic n%3", a reply, one of
# its own, one of a few new ones; whose Message-ID: its own (0) or a duplicate of message 1 or
# 3). Several deliveries may come between two commands: new mail added in one go.
deliveries = st.lists(
    st.tuples(st.sampled_from([0] * 8 + [1, 2, 5, 9, 12, 14, 16, (1, 2), (2, 9), (16, 3),
                               (0, 4, 7), (30, 2)]),
              st.sampled_from(["", "Re: topic 1", "own", "own", "own", "Re: own", "other", "x"]),
              st.sampled_from([0] * 10 + [1, 3])),
    min_size=1, max_size=3)

steps = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), deliveries, st.booleans()),
        st.tuples(st.just("deliver"), deliveries, st.booleans()),
        st.tuples(st.just("expunge"), st.integers(1, 20), st.booleans()),
        st.tuples(st.just("flag"), st.integers(1, 20), st.sampled_from(["\\Seen", "$x"])),
        st.tuples(st.just("sync"), st.sampled_from(["x SEARCH ALL", "x NOOP"]), st.booleans()),
        st.tuples(st.just("command"), st.sampled_from(COMMANDS), st.booleans()),
    ),
    min_size=3, max_size=16,
)


# Mostly new mail, told to one session or both, between commands: the kept orders take it in
# (sealmail.imap.orders.merged) and the kept threads add it or are rebuilt
# (sealmail.imap.threads); few expunges.
growth = st.lists(
    st.one_of(
        st.tuples(st.just("deliver"), deliveries, st.booleans()),
        st.tuples(st.just("command"), st.sampled_from(COMMANDS), st.booleans()),
        st.tuples(st.just("commands"), st.just(COMMANDS), st.booleans()),
        st.tuples(st.just("commands"), st.just(COMMANDS), st.booleans()),
        st.tuples(st.just("sync"), st.just("x NOOP"), st.booleans()),
        st.tuples(st.just("flag"), st.integers(1, 20), st.just("\\Seen")),
    ),
    min_size=4, max_size=24,
) | steps


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=steps)
def test_kept_answers_equal_fresh_ones(tmp_path: Path, plan: list[tuple[str, object, object]],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    play(tmp_path, plan, monkeypatch)


@settings(max_examples=5000 if os.environ.get("SEALMAIL_LONG") else 200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=growth)
# An expunge announced in place, then new mail as many as went: the view's UID -> number map
# must not be the one from before the expunge (KeyError in the SORT's numbers).
@example(plan=[("expunge", 1, False), ("flag", 1, "\\Seen"), ("deliver", [(0, "", 0)], False),
               ("expunge", 1, False), ("command", "a SORT (SUBJECT) UTF-8 ALL", True),
               ("flag", 1, "\\Seen"), ("deliver", [(0, "", 0)], False),
               ("command", "a SORT (SUBJECT) UTF-8 ALL", True)])
def test_answers_with_new_mail_added_equal_fresh_ones(
        tmp_path: Path, plan: list[tuple[str, object, object]],
        monkeypatch: pytest.MonkeyPatch) -> None:
    play(tmp_path, plan, monkeypatch)


def play(tmp_path: Path, plan: list[tuple[str, object, object]],
         monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs `plan` on a mailbox two sessions have selected, checking each SORT or THREAD
    against the answer worked out afresh."""
    store = open_store("memory", store_config(tmp_path))
    store.create_mailbox("user.fred")
    for n in range(6):
        deliver(store, n, parent=n - 1 if n % 3 else None)
    session, other = session_on(store), session_on(store)
    delivered = 6
    for kind, value, extra in plan:
        if kind == "deliver":
            assert isinstance(value, list)
            for parent, subject, duplicate in value:
                deliver(store, delivered, parent=parent or None,
                        subject=f"own {delivered}" if subject == "own" else subject or None,
                        message_id=duplicate or None)
                delivered += 1
            if extra:  # told now: the next SORT or THREAD is the first after new mail
                run(session, "x NOOP")
        elif kind == "expunge":
            uids = [r.uid for r in store.messages("user.fred")]
            if uids:
                store.expunge("user.fred", [uids[int(str(value)) % len(uids)]])
            if extra:
                run(session, "x NOOP")  # told now, else at some later command
        elif kind == "flag":
            run(other, f"x UID STORE {value} +FLAGS ({extra})")
        elif kind == "sync":  # SEARCH notes expunges without announcing them, NOOP announces
            run(other if extra else session, str(value))
        else:
            for line in value if isinstance(value, tuple) else [value]:
                check(store, other if extra else session, str(line), monkeypatch)
    store.close()


def check(store: MessageStore, asked: ImapSession, line: str,
          monkeypatch: pytest.MonkeyPatch) -> None:
    """`line`'s answer (kept, or added to) is the one worked out afresh."""
    # Still in the view, gone from the store: a kept answer may hold them, a fresh one
    # cannot (sealmail.imap.orders); SORT is then compared without them.
    view = asked.require_selected()
    gone = set(view.uids) - view.vanished - {r.uid for r in store.messages("user.fred")}
    actual = answer(asked, line)  # the handler alone: the view stays as it is
    with monkeypatch.context() as patch:
        patch.setattr(searching, "orders_for", lambda store: Afresh())
        expected = answer(asked, line)
    run(asked, line)  # and the whole command, with its sync
    if gone and "SORT" in line:
        leave_out = {str(uid if "UID" in line else view.uids.index(uid) + 1).encode()
                     for uid in gone}
        actual, expected = (b" ".join(w for w in got.split() if w not in leave_out)
                            for got in (actual, expected))
    if not gone or "SORT" in line:
        assert actual == expected, line
