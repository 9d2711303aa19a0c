"""The maildrop as one POP3 session holds it: the user's INBOX, locked from login to the end.

RFC 1939 8 lets a server lock the maildrop for the whole session, and a second POP session then
gets -ERR [IN-USE] (RFC 2449 8.1.1). The POP lock (`PopLock`) is a flock(2) of its own, taken
without waiting, apart from the store's index locks, as Cyrus keeps it: IMAP sessions and
deliveries go on meanwhile, and see the DELE'd messages go only when the session QUITs (the
UPDATE state, RFC 1939 6), as one store expunge.

The lock file also keeps the time of the last completed POP session, which `popminpoll`
(RFC 2449 LOGIN-DELAY) compares against, as Cyrus keeps pop3_last_login in its index header.

Every method blocks (files, flock, the store's fsyncs): the daemon calls them in worker threads.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from sealmail.proto.pop3 import Maildrop, MaildropMessage
from sealmail.store.api import MessageStore
from sealmail.store.errors import MailboxBusy, MailboxNotFound, StoreError
from sealmail.store.locks import lock_filename

__all__ = ["LockedMaildrop", "PopLock", "TooSoon"]


class TooSoon(Exception):
    """popminpoll: this maildrop was POP'd too recently (RFC 2449 8.1.2 LOGIN-DELAY)."""


class PopLock:
    """The exclusive POP lock on one maildrop: flock(2), taken without waiting.

    flock belongs to the open file description, so a second session of the same process is
    refused as one of another process is, and a crashed process leaves no lock behind.
    """

    def __init__(self, directory: Path, mailbox: str) -> None:
        self.path = directory / "pop" / lock_filename(mailbox)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock, or MailboxBusy at once when another POP session holds the maildrop."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open POP lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise MailboxBusy("Mailbox is locked by another POP session") from None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
        self._fd = fd

    def last_login(self) -> float:
        """When the last POP session on this maildrop ended well (0: never)."""
        assert self._fd is not None
        raw = os.pread(self._fd, 64, 0).strip()
        try:
            return float(raw) if raw else 0.0
        except ValueError:
            return 0.0

    def record_login(self, when: float) -> None:
        assert self._fd is not None
        data = f"{when:.0f}\n".encode("ascii")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


class LockedMaildrop:
    """One session's hold on a user's INBOX: `open` at login, `message` for RETR/TOP, `update`
    at QUIT, `release` at the end (however the session ends)."""

    def __init__(
        self,
        store: MessageStore,
        lock_directory: Path,
        mailbox: str,
        *,
        use_imap_flags: bool = False,
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.use_imap_flags = use_imap_flags  # popuseimapflags: \Deleted hides, RETR sets \Seen
        self.lock = PopLock(lock_directory, mailbox)
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
        return self.store.message_bytes(self.mailbox, uid)

    def update(self, deleted: Sequence[int], retrieved: Sequence[int]) -> list[int]:
        """RFC 1939 6 UPDATE: expunge the DELE'd UIDs (the ones removed are returned), mark the
        retrieved ones \\Seen under popuseimapflags, and note the session's end for popminpoll."""
        store, name = self.store, self.mailbox
        removed = store.expunge(name, deleted) if deleted else []
        if self.use_imap_flags and retrieved:
            wanted = set(retrieved)
            for record in store.messages(name):
                if record.uid in wanted and "\\Seen" not in record.flags:
                    store.set_flags(name, [record.uid], [*record.flags, "\\Seen"])
        self.lock.record_login(self.login_time)
        return removed

    def release(self) -> None:
        self.lock.release()
