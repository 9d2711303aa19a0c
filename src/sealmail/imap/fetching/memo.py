"""What an imapd process keeps of the messages it has answered FETCH for, per mailbox.

A message's kept forms (ENVELOPE, BODYSTRUCTURE, BODY), parse, size and INTERNALDATE never
change while its UID names it (a UID names one message for as long as the mailbox keeps its
UIDVALIDITY), so a FETCH of a folder this process has answered before needs no index query, no
blob decoded and no date formatted: as Dovecot reads its cache file. Mailboxes are dropped
whole, oldest first, past a capacity in messages. A message another session expunged and this
one was not told of yet may then still be answered, which RFC 2180 4.1.1 allows until its
EXPUNGE is sent (as sealmail.imap.listing's memo of listed fields does).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sealmail.imap.fetching.kept import KeptForms
from sealmail.imap.per_store import PerStore
from sealmail.proto.imap import ParsedMessage

__all__ = ["FORMS_MESSAGES", "PARSE_MESSAGES", "RECORD_MESSAGES", "FetchMemos", "MessageMemo",
           "memos_for"]

FORMS_MESSAGES = 10_000  # messages whose forms a process keeps (~1 KiB each: ~10 MB)
# messages whose parse it keeps (1.4 KiB of objects for a small one, 2.9 for five parts: 3-6 MB)
PARSE_MESSAGES = 2_000
RECORD_MESSAGES = 100_000  # messages whose size and INTERNALDATE it keeps (~150 B each)

T = TypeVar("T")


class MessageMemo(Generic[T]):
    """A value per message, per mailbox (name, UIDVALIDITY), at most `capacity` messages."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._mailboxes: OrderedDict[tuple[str, int], dict[int, T]] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, name: str, uidvalidity: int, uids: list[int]) -> dict[int, T]:
        """Those of `uids` whose value is kept."""
        key = (name, uidvalidity)
        with self._lock:
            entry = self._mailboxes.get(key)
            if entry is None:
                return {}
            self._mailboxes.move_to_end(key)
            return {uid: entry[uid] for uid in uids if uid in entry}

    def add(self, name: str, uidvalidity: int, values: dict[int, T]) -> None:
        if not values:
            return
        key = (name, uidvalidity)
        with self._lock:
            entry = self._mailboxes.setdefault(key, {})
            self._mailboxes.move_to_end(key)
            if len(entry) + len(values) > self._capacity:
                return
            entry.update(values)
            total = sum(map(len, self._mailboxes.values()))
            while total > self._capacity:  # never this mailbox: it fits alone
                total -= len(self._mailboxes.popitem(last=False)[1])


@dataclass
class FetchMemos:
    """The memos of one store: kept forms, parses (FETCH of a body section: the part offsets
    without the blob read and decoded again), and (RFC822.SIZE, INTERNALDATE as sent)."""

    forms: MessageMemo[KeptForms] = field(default_factory=lambda: MessageMemo(FORMS_MESSAGES))
    parses: MessageMemo[ParsedMessage] = field(
        default_factory=lambda: MessageMemo(PARSE_MESSAGES))
    records: MessageMemo[tuple[int, bytes]] = field(
        default_factory=lambda: MessageMemo(RECORD_MESSAGES))


# This process's memos of a store's messages.
memos_for = PerStore(FetchMemos)
