"""Flags, modseqs, expunge, COPY and MOVE in the memory store (as sealmail.store.disk.flags and
sealmail.store.disk.copying: only real changes get a modseq; a reader's \\Seen goes to their own
seen state; a COPY is all or nothing)."""

from __future__ import annotations

from collections.abc import Sequence

from sealmail.store import quota
from sealmail.store.api import FLAG_MODES, CopiedMessages, FlagUpdate, MessageRecord, flags_after
from sealmail.store.memory.state import Memory, StoredMessage
from sealmail.store.seen import SEEN, with_seen


class Flags:
    """STORE, EXPUNGE, COPY and MOVE, each under one hold of the lock."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def set_flags(self, name: str, uids: Sequence[int], flags: Sequence[str]) -> int:
        """Replace the flags; a message whose flags change gets a new modseq (RFC 7162 3.1)."""
        wanted = tuple(dict.fromkeys(flags))
        with self._memory.lock:
            mailbox = self._memory.require(name)
            chosen = mailbox.chosen(uids)
            for message in chosen:
                if message.flags != wanted:
                    mailbox.highestmodseq += 1
                    message.flags, message.modseq = wanted, mailbox.highestmodseq
            return len(chosen)

    def update_flags(
        self,
        name: str,
        uids: Sequence[int],
        flags: Sequence[str],
        mode: str,
        unchanged_since: int | None = None,
        reader: str | None = None,
    ) -> FlagUpdate:
        """As the disk store's (sealmail.store.disk.flags): only real changes get a modseq; a
        reader's \\Seen goes to their own seen state, the owner's stays in the index."""
        if mode not in FLAG_MODES:
            raise ValueError(f"mode must be one of {FLAG_MODES}")
        records: list[MessageRecord] = []
        refused: list[int] = []
        with self._memory.lock:
            mailbox = self._memory.require(name)
            seen = mailbox.seen_of(reader)
            seen_now: list[int] = []
            unseen_now: list[int] = []
            for message in mailbox.chosen(uids):
                current = mailbox.view(message, seen)
                if unchanged_since is not None and message.modseq > unchanged_since:
                    refused.append(message.uid)
                    records.append(message.record(current))
                    continue
                new = flags_after(current, flags, mode)
                if set(new) != set(current):
                    mailbox.highestmodseq += 1
                    message.modseq = mailbox.highestmodseq
                    if seen is None:
                        message.flags = tuple(new)
                    else:
                        if (SEEN in new) != (SEEN in current):
                            (seen_now if SEEN in new else unseen_now).append(message.uid)
                        kept = [f for f in new if f != SEEN]
                        if SEEN in message.flags:
                            kept.append(SEEN)  # the owner's: not this reader's to change
                        if set(kept) != set(message.flags):
                            message.flags = tuple(kept)
                    current = tuple(new)
                records.append(message.record(current))
            if seen is not None and (seen_now or unseen_now):
                assert reader is not None
                mailbox.seen[reader] = seen.union(seen_now).difference(unseen_now)
        return FlagUpdate(records, refused)

    def expunge(self, name: str, uids: Sequence[int]) -> list[int]:
        """Remove messages; the UIDs that were there, ascending, each with its own modseq."""
        with self._memory.lock:
            mailbox = self._memory.require(name)
            removed = [m.uid for m in mailbox.chosen(uids)]
            for uid in removed:
                mailbox.highestmodseq += 1
                mailbox.size_bytes -= mailbox.messages.pop(uid).size
                mailbox.expunged[uid] = mailbox.highestmodseq
            if removed:
                for userid, seen in list(mailbox.seen.items()):
                    mailbox.seen[userid] = seen.difference(removed)
        return removed

    def copy_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """Copy messages with their flags and internal dates, all or nothing (RFC 9051 6.4.7;
        the target's quota counts the copies); \\Seen as the disk store carries it."""
        memory = self._memory
        with memory.lock:
            src = memory.require(source)
            dst = memory.require(target)
            result = CopiedMessages(dst.uidvalidity, [])
            chosen = src.chosen(uids)
            if not chosen:
                return result
            usage = memory.usage(target)
            if usage is not None:
                quota.enforce(usage, sum(m.size for m in chosen), len(chosen))
            src_seen, dst_seen = src.seen_of(reader), dst.seen_of(reader)
            seen_copies: list[int] = []
            for message in chosen:
                new_uid = dst.uidnext
                dst.uidnext += 1
                dst.highestmodseq += 1
                flags = message.flags
                if src_seen is not None or dst_seen is not None:
                    was_seen = SEEN in flags if src_seen is None else message.uid in src_seen
                    flags = with_seen(flags, was_seen and dst_seen is None)
                    if was_seen and dst_seen is not None:
                        seen_copies.append(new_uid)
                dst.messages[new_uid] = StoredMessage(
                    new_uid, dst.highestmodseq, message.internaldate, message.size, message.guid,
                    flags, message.content, message.headers, message.listed, message.sorting,
                    message.structure,
                )
                dst.size_bytes += message.size
                result.pairs.append((message.uid, new_uid))
            if dst_seen is not None and seen_copies:
                assert reader is not None
                dst.seen[reader] = dst_seen.union(seen_copies)
            return result

    def move_messages(
        self, source: str, uids: Sequence[int], target: str, reader: str | None = None
    ) -> CopiedMessages:
        """MOVE: the copy and the expunge of the originals under one hold of the lock, so no
        reader sees the messages in both mailboxes or in neither."""
        with self._memory.lock:
            moved = self.copy_messages(source, uids, target, reader)
            self.expunge(source, [s for s, _ in moved.pairs])
            return moved
