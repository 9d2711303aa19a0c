"""SORT orders and THREAD answers of a mailbox, kept between commands and sessions of a process.

Why: webmail and desktop clients send the same SORT or THREAD on every listing of a folder, and
each took the store's ORDER BY over every message (SQLite sorting 10,000 joined rows, 5-15 ms)
or RFC 5256's REFERENCES algorithm in Python (about 75 ms at 10,000 messages). Dovecot keeps
sort and thread indexes for the same reason (dovecot.index.thread).

What keeps this exact: an order or a thread depends on which messages there are, never on their
flags. Everything RFC 5256 and RFC 5957 sort and thread by (internal date, size, Date, Subject,
From/To/Cc, Message-ID, References, In-Reply-To) is fixed when a message is stored, and a UID
names one message for as long as the mailbox keeps its UIDVALIDITY (RFC 9051 2.3.1.1: UIDs are
never reused). So an entry is keyed by mailbox name and UIDVALIDITY and holds the list of UIDs
of the view it was made for; it answers a session whose view has exactly that list (compared as
a whole, about 0.1 ms at 10,000), and is started afresh as soon as a message comes or goes,
with what carries over: after expunges, its orders less the messages gone (what is left of a
sorted list is sorted). Flag changes (STORE, a \\Seen set by FETCH) keep it. Sequence numbers
are positions in that same list, so a THREAD answer in sequence numbers is as valid as one in
UIDs.

New mail is cheap too: its UIDs are above every kept one's, so it comes after them in UID and
sequence order. A kept order takes the new messages at the places their sort values
give them (`merged`: the values of the new messages, and of the few kept ones a 32-way search
compares them with, from the store's `sort_values`), exactly where the store's ORDER BY puts
them (ties in UID order, and a new UID is above every kept one). A THREAD answer of the whole
mailbox is kept as a state that new messages are added to when that is exact, and rebuilt
otherwise (sealmail.imap.threads). A SORT answer of every message is kept as rendered pieces
the new numbers are put into (sealmail.imap.sort_answers): the numbers the client knows stay.

The cache is per store object (one per imapd process), so the sessions of one process share it;
a small LRU bounds it (`MAILBOXES` mailboxes, `RESULTS` orders and `RESULTS` answers each).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from functools import cmp_to_key
from typing import TypeVar

from sealmail.imap import threads
from sealmail.imap.per_store import PerStore
from sealmail.imap.selected import SelectedMailbox
from sealmail.imap.sort_answers import SortAnswer
from sealmail.imap.threads import ThreadState
from sealmail.proto.imap import Response
from sealmail.store.sorting import SortValue, ThreadFields

__all__ = ["ADDED", "MAILBOXES", "RESULTS", "MailboxOrders", "merged", "orders_for"]

MAILBOXES = 32  # mailboxes with kept results, per process
RESULTS = 8  # orders, and answers, kept per mailbox

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


class _Entry:
    """What is kept for one mailbox as a view of `uids` sees it: `orders` and `answers` for
    these UIDs; `carried`, orders of the first of them (the others are new mail to place);
    `threads`, THREAD states (sealmail.imap.threads) of the first of them."""

    __slots__ = ("answers", "carried", "orders", "sorts", "threads", "uids")

    def __init__(self, uids: list[int]) -> None:
        self.uids = uids
        self.orders: OrderedDict[Hashable, list[int]] = OrderedDict()
        self.answers: OrderedDict[Hashable, Response] = OrderedDict()
        self.carried: OrderedDict[Hashable, list[int]] = OrderedDict()
        self.threads: dict[str, ThreadState] = {}
        # SORT answers of every message by (keys, UID or not), as pieces (sealmail.imap.
        # sort_answers): of these UIDs, or of the first of them (the carried orders' UIDs)
        self.sorts: OrderedDict[tuple[Hashable, bool], SortAnswer] = OrderedDict()


# A kept order or thread takes at most this many new messages at once; more are ordered afresh.
ADDED = 256


class MailboxOrders:
    """The kept orders and SORT / THREAD answers of a store's mailboxes (`orders_for`)."""

    def __init__(self, mailboxes: int = MAILBOXES, results: int = RESULTS) -> None:
        self._mailboxes = mailboxes
        self._results = results
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()  # sessions of one process run commands in threads

    def sorted_uids(self, view: SelectedMailbox, keys: tuple[tuple[str, bool], ...],
                    compute: Callable[[], list[int]],
                    values: Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]
                    | None = None) -> list[int]:
        """The view's UIDs in the order of `keys`: kept, the kept order with new mail placed
        by `values` (the store's `sort_values` for these keys), or `compute`d (the store's
        order of the mailbox, which may also hold messages the view was not told of yet)."""
        entry = self._entry(view)

        def work() -> list[int]:
            with self._lock:
                carried = entry.carried.get(keys)
            if carried is not None and values is not None:
                order = merged(carried, entry.uids[len(carried):], keys, values)
                if order is not None:
                    return order
            return compute()

        return self._kept(entry.orders, keys, work)

    def sort(self, view: SelectedMailbox, keys: tuple[tuple[str, bool], ...], uid: bool,
             compute: Callable[[], list[int]],
             values: Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]) -> Response:
        """The SORT answer of every message of the view: kept; or the kept answer of the
        view's first messages (before new mail) with the new numbers put in where `placements`
        puts the new messages; or written from `sorted_uids`."""
        entry = self._entry(view)

        def work() -> Response:
            with self._lock:
                answer = entry.sorts.get((keys, uid))
                carried = entry.carried.get(keys)
            if answer is not None and len(answer.numbers) < len(entry.uids) and \
                    carried is not None and len(answer.numbers) == len(carried):
                added = entry.uids[len(carried):]
                placed = placements(carried, added, keys, values)
                if placed is not None:
                    self._keep(entry.orders, keys, with_placed(carried, placed))
                    number = dict(zip(added, added if uid else range(
                        len(carried) + 1, len(entry.uids) + 1), strict=True))
                    answer = answer.inserted([(p, number[u]) for p, u in placed])
                    self._keep(entry.sorts, (keys, uid), answer)
                    return answer.response()
            order = self.sorted_uids(view, keys, compute, values)
            answer = SortAnswer.of(order if uid else _sequence_numbers(view, order))
            self._keep(entry.sorts, (keys, uid), answer)
            return answer.response()

        return self._kept(entry.answers, ("SORT", keys, uid), work)

    def answer(self, view: SelectedMailbox, key: Hashable,
               compute: Callable[[], Response]) -> Response:
        """A SORT or THREAD answer for this view: `key` names everything else it depends on
        (the command, its keys or algorithm, UID or sequence numbers, what matched)."""
        return self._kept(self._entry(view).answers, key, compute)

    def thread(self, view: SelectedMailbox, algorithm: str, uid: bool,
               fields: Callable[[int], list[ThreadFields]]) -> Response:
        """THREAD `algorithm` of every message of the view: the kept answer, else from the
        kept state brought up to date, else from a state built from `fields(0)` (the store's
        thread fields of UIDs above the argument)."""
        entry = self._entry(view)

        def work() -> Response:
            with self._lock:
                state = entry.threads.get(algorithm)
            if state is not None:
                with state.lock:
                    if _brought_up(state, entry.uids, fields):
                        return threads.response(state.body(uid))
            wanted = set(entry.uids)
            state = threads.build(algorithm, [f for f in fields(0) if f.uid in wanted])
            body = state.body(uid)
            if state.uids == entry.uids:  # every message was there to thread
                with self._lock:
                    entry.threads[algorithm] = state
            return threads.response(body)

        return self._kept(entry.answers, ("THREAD", algorithm, uid, "ALL"), work)

    def _kept(self, results: OrderedDict[Hashable, T], key: Hashable,
              compute: Callable[[], T]) -> T:
        with self._lock:
            found = results.get(key)
            if found is not None:
                results.move_to_end(key)
                return found
        value = compute()  # outside the lock: other sessions go on meanwhile
        self._keep(results, key, value)
        return value

    def _keep(self, results: OrderedDict[K, T], key: K, value: T) -> None:
        with self._lock:
            results[key] = value
            results.move_to_end(key)
            while len(results) > self._results:
                results.popitem(last=False)

    def _entry(self, view: SelectedMailbox) -> _Entry:
        """The mailbox's entry, started afresh when it was made for another list of UIDs,
        with what carries over (`_carry`)."""
        name = (view.name, view.uidvalidity)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.uids != view.uids:
                fresh = _Entry(list(view.uids))
                if entry is not None:
                    self._carry(entry, fresh)
                entry = self._entries[name] = fresh
                while len(self._entries) > self._mailboxes:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(name)
            return entry

    def _carry(self, old: _Entry, fresh: _Entry) -> None:
        """What of `old` holds for `fresh`: an order less the messages gone is in order (what
        is left of a sorted list is sorted), and when the messages left are the first of
        `fresh` (the others came since: higher UIDs) it is carried for them to be placed in;
        a thread state carries over while one of the two lists of UIDs begins the other."""
        grown = fresh.uids[:len(old.uids)] == old.uids
        left = None if grown else set(fresh.uids)
        for key, order in [*old.carried.items(), *old.orders.items()]:  # newest last
            kept = order if left is None else [uid for uid in order if uid in left]
            count = len(kept)
            if count == len(fresh.uids):
                fresh.orders[key] = kept
                fresh.carried.pop(key, None)
            elif count and fresh.uids[count] > max(kept):
                # It holds just the first `count` of fresh's UIDs (not so when a message of
                # the view was gone from the store already when the order was made).
                fresh.carried[key] = kept
                fresh.carried.move_to_end(key)
        while len(fresh.carried) > self._results:
            fresh.carried.popitem(last=False)
        if grown:  # no number the client knows has changed: the answers take the new ones
            for (keys, uid), answer in old.sorts.items():
                if len(fresh.carried.get(keys, ())) == len(answer.numbers):
                    fresh.sorts[(keys, uid)] = answer
        for algorithm, state in old.threads.items():
            # Of the first of fresh's UIDs, to be added to; or of more than fresh has (a session
            # not told of new mail yet asked in between): for the sessions that were told.
            count = min(len(state.uids), len(fresh.uids))
            if state.uids[:count] == fresh.uids[:count]:
                fresh.threads[algorithm] = state


def _sequence_numbers(view: SelectedMailbox, order: list[int]) -> list[int]:
    """The sequence numbers of `order`'s UIDs in `view`: by arithmetic when its UIDs are a
    run without gaps, else through the view's map."""
    uids = view.uids
    if uids and uids[-1] - uids[0] + 1 == len(uids):
        return list(map((1 - uids[0]).__add__, order))
    return list(map(view.numbers().__getitem__, order))


def merged(order: list[int], added: Sequence[int], keys: tuple[tuple[str, bool], ...],
           values: Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]
           ) -> list[int] | None:
    """`order` (UIDs in the order of `keys`, ties in UID order) with `added` (UIDs above all
    of its) placed where the same order puts them; None if they are too many or a value is
    missing (a message gone, or without its sortable form): then order afresh."""
    if not added:
        return list(order)
    placed = placements(order, added, keys, values)
    return None if placed is None else with_placed(order, placed)


def with_placed(order: list[int], placed: list[tuple[int, int]]) -> list[int]:
    """`order` with each (place, uid) of `placed` (places ascending) put in before what is
    at `place`."""
    result: list[int] = []
    start = 0
    for place, uid in placed:
        result.extend(order[start:place])
        result.append(uid)
        start = place
    result.extend(order[start:])
    return result


def placements(order: list[int], added: Sequence[int], keys: tuple[tuple[str, bool], ...],
               values: Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]
               ) -> list[tuple[int, int]] | None:
    """Where `merged` puts each of `added`: (place in `order`, UID), places ascending and the
    UIDs of one place in their order; None as for `merged`.

    One search per new message, run side by side: each step compares it with FAN - 1 kept
    messages spread over what is left of the range (the store asked for all their values at
    once), so that ~log32(n) queries place every new message."""
    if not added or len(added) > ADDED:
        return [] if not added else None
    try:
        return _placements(order, added, keys, values)
    except TypeError:  # values that do not compare (not from one column): order afresh
        return None


def _placements(order: list[int], added: Sequence[int], keys: tuple[tuple[str, bool], ...],
                values: Callable[[Sequence[int]], dict[int, tuple[SortValue, ...]]]
                ) -> list[tuple[int, int]] | None:
    # The new ones, and the kept ones every search's first step compares with: one query.
    first = [order[p] for p in _spots(0, len(order))]
    known = values([*added, *first])
    if len(known) != len(added) + len(first) or any(None in row for row in known.values()):
        return None
    reverse = [descending for _, descending in keys]

    def compare(a: tuple[SortValue, ...], b: tuple[SortValue, ...]) -> int:
        for x, y, descending in zip(a, b, reverse, strict=True):
            if x != y:
                less = x < y  # type: ignore[operator]
                return (1 if less else -1) if descending else (-1 if less else 1)
        return 0

    # The new ones among themselves: by the keys, ties in UID order (added is ascending).
    def by_values(a: int, b: int) -> int:
        return compare(known[a], known[b])

    ranked = sorted(added, key=cmp_to_key(by_values))
    low, high = [0] * len(ranked), [len(order)] * len(ranked)
    while True:
        looking = {i: _spots(low[i], high[i]) for i in range(len(ranked)) if low[i] < high[i]}
        if not looking:
            break
        wanted = {order[p] for spots in looking.values() for p in spots} - known.keys()
        if wanted:
            found = values(sorted(wanted))
            if len(found) != len(wanted) or any(None in row for row in found.values()):
                return None
            known.update(found)
        for i, spots in looking.items():
            new = known[ranked[i]]
            for spot in spots:  # ascending: the place is after each it is not below
                # After every kept message it equals: its UID is above theirs (bisect right).
                if compare(new, known[order[spot]]) < 0:
                    high[i] = spot
                    break
                low[i] = spot + 1
    return list(zip(low, ranked, strict=True))


# A search step compares a new message with this many kept ones less one (one query for them):
# three steps place it among 10,000.
FAN = 32


def _spots(low: int, high: int) -> range | list[int]:
    """The places in [low, high) one search step compares with: all of them when they are few,
    else FAN - 1 evenly spread (which leaves a FANth of the range)."""
    if high - low <= FAN:
        return range(low, high)
    return sorted({low + (high - low) * j // FAN for j in range(1, FAN)})


def _brought_up(state: ThreadState, uids: list[int],
                fields: Callable[[int], list[ThreadFields]]) -> bool:
    """Whether `state` (of the first of `uids`; its lock held) is, or was brought, up to date
    with `uids`: False when it is of more, or other, messages, or could not take the new
    ones (rebuild then)."""
    count = len(state.uids)
    if count > len(uids) or state.uids != uids[:count]:
        return False
    if count == len(uids):
        return True
    if len(uids) - count > ADDED:
        return False
    new = uids[count:]
    wanted = set(new)
    added = [f for f in fields(state.uids[-1] if state.uids else 0) if f.uid in wanted]
    if [f.uid for f in added] != new:
        return False  # one is gone from the store already: as a fresh answer would
    return state.add(added)


# The kept orders of a store's mailboxes.
orders_for = PerStore(MailboxOrders)
