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
a whole, about 0.1 ms at 10,000), and is started afresh as soon as a message comes or goes
(after expunges only, with its orders less the messages gone).
Flag changes (STORE, a \\Seen set by FETCH) keep it. Sequence numbers are positions in that
same list, so a THREAD answer in sequence numbers is as valid as one in UIDs.

The cache is per store object (one per imapd process), so the sessions of one process share it;
a small LRU bounds it (`MAILBOXES` mailboxes, `RESULTS` orders and `RESULTS` answers each).
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TypeVar

from sealmail.imap.selected import SelectedMailbox
from sealmail.proto.imap import Response

__all__ = ["MAILBOXES", "RESULTS", "MailboxOrders", "orders_for"]

MAILBOXES = 32  # mailboxes with kept results, per process
RESULTS = 8  # orders, and answers, kept per mailbox

T = TypeVar("T")


class _Entry:
    """What is kept for one mailbox as a view of `uids` sees it."""

    __slots__ = ("answers", "orders", "uids")

    def __init__(self, uids: list[int]) -> None:
        self.uids = uids
        self.orders: OrderedDict[Hashable, list[int]] = OrderedDict()
        self.answers: OrderedDict[Hashable, Response] = OrderedDict()


class MailboxOrders:
    """The kept orders and SORT / THREAD answers of a store's mailboxes (`orders_for`)."""

    def __init__(self, mailboxes: int = MAILBOXES, results: int = RESULTS) -> None:
        self._mailboxes = mailboxes
        self._results = results
        self._entries: OrderedDict[tuple[str, int], _Entry] = OrderedDict()
        self._lock = threading.Lock()  # sessions of one process run commands in threads

    def sorted_uids(self, view: SelectedMailbox, keys: tuple[tuple[str, bool], ...],
                    compute: Callable[[], list[int]]) -> list[int]:
        """The view's UIDs in the order of `keys`: kept, or `compute`d (the store's order of
        the mailbox, which may also hold messages the view was not told of yet) and kept."""
        return self._kept(view, "orders", keys, compute)

    def answer(self, view: SelectedMailbox, key: Hashable,
               compute: Callable[[], Response]) -> Response:
        """A SORT or THREAD answer for this view: `key` names everything else it depends on
        (the command, its keys or algorithm, UID or sequence numbers, what matched)."""
        return self._kept(view, "answers", key, compute)

    def _kept(self, view: SelectedMailbox, kind: str, key: Hashable,
              compute: Callable[[], T]) -> T:
        entry = self._entry(view)
        results: OrderedDict[Hashable, T] = getattr(entry, kind)
        with self._lock:
            found = results.get(key)
            if found is not None:
                results.move_to_end(key)
                return found
        value = compute()  # outside the lock: other sessions go on meanwhile
        with self._lock:
            results[key] = value
            while len(results) > self._results:
                results.popitem(last=False)
        return value

    def _entry(self, view: SelectedMailbox) -> _Entry:
        """The mailbox's entry, started afresh when it was made for another list of UIDs; when
        messages only went (expunged), its orders are those kept less the messages gone: what
        is left of a sorted list is sorted."""
        name = (view.name, view.uidvalidity)
        with self._lock:
            entry = self._entries.get(name)
            if entry is None or entry.uids != view.uids:
                fresh = _Entry(list(view.uids))
                if entry is not None and len(fresh.uids) < len(entry.uids):
                    left = set(fresh.uids)
                    if left.issubset(entry.uids):
                        for key, order in entry.orders.items():
                            fresh.orders[key] = [uid for uid in order if uid in left]
                entry = self._entries[name] = fresh
                while len(self._entries) > self._mailboxes:
                    self._entries.popitem(last=False)
            self._entries.move_to_end(name)
            return entry


_by_store: weakref.WeakKeyDictionary[object, MailboxOrders] = weakref.WeakKeyDictionary()
_by_store_lock = threading.Lock()


def orders_for(store: object) -> MailboxOrders:
    """The kept orders of `store`'s mailboxes: one set per store object (a test's stores never
    share one), gone with the store."""
    with _by_store_lock:
        orders = _by_store.get(store)
        if orders is None:
            orders = _by_store[store] = MailboxOrders()
        return orders
