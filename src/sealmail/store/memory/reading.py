"""Reading the memory store: records, flag snapshots, changes since a modseq, contents, the
stored parses, and SEARCH / SORT / THREAD from the forms worked out at delivery (the functions
the disk store indexes with: sealmail.store.headers, sealmail.store.sorting)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import partial

from sealmail.store.api import FlagSnapshot, HeaderMatches, MailboxChanges, MessageRecord
from sealmail.store.errors import NoSuchMessage
from sealmail.store.headers import INDEXED_FIELDS, VALUE_SEPARATOR, encode, indexed_value
from sealmail.store.memory.state import Memory, StoredMessage
from sealmail.store.seen import index_keeps_seen
from sealmail.store.sorting import SortValue, ThreadFields, sort_value, thread_fields_of


def _sort_value(key: str, message: StoredMessage) -> float | str:
    return sort_value(key, message.sorting, message.internaldate, message.size)


class Reading:
    """FETCH's, SEARCH's and SORT's side of the memory store."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def messages(self, name: str, reader: str | None = None) -> list[MessageRecord]:
        with self._memory.lock:
            mailbox = self._memory.require(name)
            return mailbox.records(list(mailbox.messages.values()), reader)

    def message_bytes(self, name: str, uid: int) -> bytes:
        with self._memory.lock:
            message = self._memory.require(name).messages.get(uid)
        if message is None:
            raise NoSuchMessage(f"no message with UID {uid} in {name!r}")
        return message.content

    def message_contents(
        self, name: str, uids: Sequence[int], limit: int | None = None
    ) -> Iterator[bytes | None]:
        with self._memory.lock:
            messages = self._memory.require(name).messages
            contents = [None if (m := messages.get(uid)) is None else m.content for uid in uids]
        if limit is not None:
            return iter([c if c is None else c[:limit] for c in contents])
        return iter(contents)

    def message_records(
        self, name: str, uids: Sequence[int], reader: str | None = None
    ) -> list[MessageRecord]:
        with self._memory.lock:
            mailbox = self._memory.require(name)
            return mailbox.records(mailbox.chosen(uids), reader)

    def flag_snapshot(self, name: str, reader: str | None = None) -> FlagSnapshot:
        with self._memory.lock:
            mailbox = self._memory.require(name)
            seen = mailbox.seen_of(reader)
            ids: dict[tuple[str, ...], int] = {}
            uids, modseqs, flag_ids = [], [], []
            for message in mailbox.messages.values():
                uids.append(message.uid)
                modseqs.append(message.modseq)
                flag_ids.append(ids.setdefault(mailbox.view(message, seen), len(ids)))
            return FlagSnapshot(mailbox.info(), uids, modseqs, flag_ids, list(ids))

    def messages_since(
        self, name: str, modseq: int, reader: str | None = None
    ) -> list[MessageRecord]:
        with self._memory.lock:
            mailbox = self._memory.require(name)
            changed = [m for m in mailbox.messages.values() if m.modseq > modseq]
            return mailbox.records(changed, reader)

    def expunged_since(self, name: str, modseq: int) -> list[int]:
        with self._memory.lock:
            expunged = self._memory.require(name).expunged
            return sorted(uid for uid, when in expunged.items() if when > modseq)

    def mailbox_changes(
        self, name: str, modseq: int, reader: str | None = None
    ) -> MailboxChanges | None:
        with self._memory.lock:
            mailbox = self._memory.mailboxes.get(name)
            if mailbox is None:
                return None
            counters = (mailbox.uidvalidity, mailbox.uidnext, mailbox.highestmodseq,
                        len(mailbox.messages))
            if mailbox.highestmodseq == modseq:
                return MailboxChanges(*counters)
            changed = [m for m in mailbox.messages.values() if m.modseq > modseq]
            expunged = sorted(uid for uid, when in mailbox.expunged.items() if when > modseq)
            keeps = index_keeps_seen(name, reader)
            mark = mailbox.recentuid if keeps else mailbox.recent.get(reader or "", 0)
            return MailboxChanges(*counters, mailbox.records(changed, reader), expunged, mark)

    def message_structures(self, name: str, uids: Sequence[int]) -> dict[int, bytes]:
        with self._memory.lock:
            return {m.uid: m.structure for m in self._memory.require(name).chosen(uids)
                    if m.structure is not None}

    def save_message_structures(self, name: str, structures: Mapping[int, bytes]) -> None:
        if not structures:
            return
        with self._memory.lock:
            messages = self._memory.require(name).messages
            for uid, blob in structures.items():
                if uid in messages:
                    messages[uid].structure = blob

    # ------------------------------------------------------------------ search, sort, thread

    def search_header(self, name: str, field: str, needle: str) -> HeaderMatches:
        """As the disk store's: from the searchable forms (sealmail.store.headers)."""
        field = field.lower()
        wanted = encode(needle.casefold())
        with self._memory.lock:
            messages = list(self._memory.require(name).messages.values())
        if field not in INDEXED_FIELDS or VALUE_SEPARATOR in wanted:
            return HeaderMatches([], [m.uid for m in messages])
        matched: list[int] = []
        unanswered: list[int] = []
        for message in messages:
            if message.headers is None:
                unanswered.append(message.uid)
                continue
            value = indexed_value(message.headers, field)
            if value is not None and wanted in value:
                matched.append(message.uid)
        return HeaderMatches(matched, unanswered)

    def listed_headers(self, name: str, uids: Sequence[int]) -> dict[int, tuple[int, bytes]]:
        with self._memory.lock:
            return {m.uid: (m.size, m.listed) for m in self._memory.require(name).chosen(uids)}

    def sorted_uids(self, name: str, keys: Sequence[tuple[str, bool]]) -> list[int]:
        """Ordered by `keys` (most significant first), ties in UID order (RFC 5256 3)."""
        with self._memory.lock:
            messages = list(self._memory.require(name).messages.values())
        for key, reverse in reversed(keys):  # a stable sort per key, least significant first
            messages.sort(key=partial(_sort_value, key), reverse=reverse)
        return [m.uid for m in messages]

    def sort_values(self, name: str, keys: Sequence[tuple[str, bool]],
                    uids: Sequence[int]) -> dict[int, tuple[SortValue, ...]]:
        with self._memory.lock:
            messages = self._memory.require(name).messages
            chosen = [messages[uid] for uid in uids if uid in messages]
        return {m.uid: tuple(_sort_value(key, m) for key, _ in keys) for m in chosen}

    def thread_fields(self, name: str, since: int = 0) -> list[ThreadFields]:
        with self._memory.lock:
            messages = [m for m in self._memory.require(name).messages.values() if m.uid > since]
        return [thread_fields_of(m.uid, m.sorting, m.internaldate) for m in messages]
