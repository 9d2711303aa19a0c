"""The maildrop as one POP3 session holds it: the user's INBOX, locked from login to the end.

RFC 1939 8 lets a server lock the maildrop for the whole session, and a second POP session then
gets -ERR [IN-USE] (RFC 2449 8.1.1). The POP lock is the store's (`MessageStore.pop_lock`: on
disk a flock(2) of its own, `sealmail.store.locks.PopLock`; on PostgreSQL a lease every node
sees), taken without waiting, apart from the store's index locks, as Cyrus keeps it: IMAP
sessions and deliveries go on meanwhile, and see the DELE'd messages go only when the session
QUITs (the UPDATE state, RFC 1939 6), as one store expunge.

The lock also keeps the time of the last completed POP session, which `popminpoll`
(RFC 2449 LOGIN-DELAY) compares against, as Cyrus keeps pop3_last_login in its index header.

Every method blocks (files, flock, the store's fsyncs): the daemon calls them in worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence

from sealmail.proto.pop3 import Maildrop, MaildropMessage
from sealmail.store import auditlog
from sealmail.store.api import MessageStore
from sealmail.store.errors import MailboxNotFound
from sealmail.store.locks import PopLock

__all__ = ["LockedMaildrop", "PopLock", "TooSoon"]


class TooSoon(Exception):
    """popminpoll: this maildrop was POP'd too recently (RFC 2449 8.1.2 LOGIN-DELAY)."""


class LockedMaildrop:
    """One session's hold on a user's INBOX: `open` at login, `message` for RETR/TOP, `update`
    at QUIT, `release` at the end (however the session ends)."""

    def __init__(
        self,
        store: MessageStore,
        mailbox: str,
        *,
        use_imap_flags: bool = False,
        audit: auditlog.AuditLog | None = None,
    ) -> None:
        self.store = store
        self.audit = audit  # imapd.conf auditlog: an expunge line for each message QUIT removes
        self.mailbox = mailbox
        self.use_imap_flags = use_imap_flags  # popuseimapflags: \Deleted hides, RETR sets \Seen
        self.lock = store.pop_lock(mailbox)
        self.login_time = 0.0

    def open(self, now: float, min_poll: int = 0) -> Maildrop:
        """Lock the INBOX for POP, check LOGIN-DELAY (`min_poll` seconds since the last
        session; TooSoon), and list its messages. MailboxBusy when another POP session holds
        it; any StoreError leaves the lock to `release`."""
        store, name = self.store, self.mailbox
        if store.mailbox(name) is None:
            raise MailboxNotFound(f"no mailbox {name}")
        self.lock.acquire()
        self.login_time = now
        last = self.lock.last_login()
        if min_poll and last and last + min_poll > now:
            raise TooSoon(f"last POP session ended {now - last:.0f}s ago")
        info = store.mailbox(name)  # read under the lock: the UIDVALIDITY UIDL is made of
        if info is None:
            raise MailboxNotFound(f"no mailbox {name}")
        records = store.messages(name)
        if self.use_imap_flags:
            records = [r for r in records if "\\Deleted" not in r.flags]
        return Maildrop(info.uidvalidity, tuple(MaildropMessage(r.uid, r.size) for r in records))

    def message(self, uid: int) -> bytes:
        """A message's bytes, for RETR and TOP."""
        self.lock.renew()
        return self.store.message_bytes(self.mailbox, uid)

    def update(self, deleted: Sequence[int], retrieved: Sequence[int]) -> list[int]:
        """RFC 1939 6 UPDATE: expunge the DELE'd UIDs (the ones removed are returned), mark the
        retrieved ones \\Seen under popuseimapflags, and note the session's end for popminpoll."""
        store, name = self.store, self.mailbox
        removed = auditlog.expunge(store, name, deleted, self.audit) if deleted else []
        if self.use_imap_flags and retrieved:
            wanted = set(retrieved)
            for record in store.messages(name):
                if record.uid in wanted and "\\Seen" not in record.flags:
                    store.set_flags(name, [record.uid], [*record.flags, "\\Seen"])
        self.lock.record_login(self.login_time)
        return removed

    def release(self) -> None:
        self.lock.release()
