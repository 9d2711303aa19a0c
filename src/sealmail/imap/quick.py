"""Which commands are quick: answered from the session's memory and an index read or two, never
writing to the index nor reading a message file, so the daemon may run them on its event loop.

Every other command goes to a worker thread, since the store blocks (fsync, another process's
write transaction, a file read). That hand-off, two thread wake-ups and two futures, cost about
as much CPU as a NOOP's whole work (docs/benchmarks.md, "Per-command overhead"); a quick command
runs in less time than the hop would take, and while it runs no other session of the process
would have had the GIL for long anyway.

A command is quick when it is read-only by nature: NOOP, CHECK, STATUS, LIST and LSUB but an
admin's, a FETCH of index items that sets no \\Seen. The sync that follows it (RFC 9051 7:
untagged news after each command) runs on the loop too, news or not: it is one index read and at
most a \\Recent claim, a short write to recent.db that never fsyncs (sealmail.store.disk.recent),
the same work an idling session's news does on the loop (sealmail.server.imapd.idle). An
earlier version sent a read-only command with news to a thread; on a mailbox that changes all the
time (imaptest's ten clients on one INBOX) that was most of them, and each paid the hop and
the GIL hand-offs of a second thread running SQLite (docs/benchmarks.md, "Read-only commands on
the loop, news or not").

Only where a read cannot wait on anything but the local disk: the disk store (SQLite, one
connection per thread, WAL readers never wait for writers) and the memory store. PostgreSQL
reads take a connection from a pool that worker threads may hold, and cross the network: there
every command goes to a thread (`ImapService.quick_commands`).
"""

from __future__ import annotations

from sealmail.imap.session import ImapSession
from sealmail.proto.imap import Check, Command, Fetch, List, Lsub, Noop, Status

# FETCH items read from the index rows alone (never the message file, never a write).
INDEX_ITEMS = frozenset({"UID", "FLAGS", "MODSEQ", "INTERNALDATE", "RFC822.SIZE"})
# A FETCH on a larger mailbox may name that many messages: its CPU would hold the loop, and with
# it every other session of the process, for longer than a GIL switch interval; it runs in a
# thread, where the others get their turns meanwhile.
QUICK_FETCH_MESSAGES = 1000


def read_only(session: ImapSession, command: Command) -> bool:
    """Whether `command`, whatever the sync after it finds, writes nothing to the index (at most
    the sync's \\Recent claim to recent.db) and reads no message file."""
    if session.notify_spec is not None:
        return False  # RFC 5465: each command also reports other mailboxes' news
    if isinstance(command, Fetch):
        selected = session.selected
        if selected is None or selected.exists > QUICK_FETCH_MESSAGES:
            return False
        if not all(a.name in INDEX_ITEMS for a in command.attributes):
            return False
    elif isinstance(command, (List, Lsub)):
        if session.is_admin:
            return False  # an admin's listing may name every user's mailboxes
        if isinstance(command, List) and command.status_items is not None:
            return False  # LIST-STATUS: a STATUS per mailbox listed
    elif not isinstance(command, (Noop, Check, Status)):
        return False
    return True
