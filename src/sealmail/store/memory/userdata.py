"""User data of the memory store: \\Recent marks, URLAUTH keys and subscriptions."""

from __future__ import annotations

import secrets

from sealmail.store.memory.state import Memory
from sealmail.store.names import validate_internal
from sealmail.store.seen import index_keeps_seen


class UserData:
    """What belongs to a user rather than to a mailbox's messages."""

    def __init__(self, memory: Memory) -> None:
        self._memory = memory

    def claim_recent(self, name: str, upto: int, reader: str | None = None) -> int:
        """Raise `reader`'s \\Recent mark of `name` to `upto` (never past the last UID given
        out); the mark as it was (sealmail.store.disk.userdata)."""
        with self._memory.lock:
            mailbox = self._memory.require(name)
            keeps = index_keeps_seen(name, reader)
            mark = mailbox.recentuid if keeps else mailbox.recent.get(reader or "", 0)
            new = min(upto, mailbox.uidnext - 1)
            if new > mark:
                if keeps:
                    mailbox.recentuid = new
                else:
                    assert reader is not None
                    mailbox.recent[reader] = new
            return mark

    def access_key(self, name: str) -> bytes:
        """URLAUTH's key of mailbox `name` (sealmail.store.api.AccessKeys)."""
        with self._memory.lock:
            uniqueid = self._memory.require(name).uniqueid
            return self._memory.access_keys.setdefault(uniqueid, secrets.token_bytes(32))

    def reset_access_key(self, name: str) -> None:
        with self._memory.lock:
            self._memory.access_keys.pop(self._memory.require(name).uniqueid, None)

    def subscriptions(self, userid: str) -> list[str]:
        with self._memory.lock:
            return sorted(self._memory.subscriptions.get(userid, ()))

    def subscribe(self, userid: str, name: str) -> None:
        validate_internal(name)
        with self._memory.lock:
            self._memory.subscriptions.setdefault(userid, set()).add(name)

    def unsubscribe(self, userid: str, name: str) -> bool:
        """True when the subscription existed."""
        with self._memory.lock:
            names = self._memory.subscriptions.get(userid, set())
            if name not in names:
                return False
            names.remove(name)
            return True
