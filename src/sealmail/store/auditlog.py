"""Cyrus's auditlog lines (imapd.conf `auditlog: yes`): one line for each change a session makes
to the store, in the shape Cyrus 3.6 writes them, so the operators' tools that read Cyrus's log
read ours.

    auditlog: append sessionid=<S> mailbox=<user.bob> uniqueid=<U> uid=<5> modseq=<12>
              sysflags=<SE> guid=<sha1hex> messageid=<id@host> size=<1234>
    auditlog: expunge sessionid=<S> mailbox=<M> uniqueid=<U> uid=<5> modseq=<13>
              sysflags=<DE|EX> guid=<sha1hex> size=<1234>
    auditlog: create sessionid=<S> mailbox=<M> uniqueid=<U> uidvalidity=<N>
    auditlog: delete sessionid=<S> mailbox=<M> uniqueid=<U>
    auditlog: rename sessionid=<S> oldmailbox=<M> newmailbox=<N> uniqueid=<U>
    auditlog: acl: sessionid=<S> mailbox=<M> uniqueid=<U> mbtype=<e> oldacl=<...> acl=<...>
              foldermodseq=<N>
    auditlog: discard sessionid=<S> message-id=<id@host>
    auditlog: redirect sessionid=<S> message-id=<id@host> target=<a@b> userid=<bob>
    auditlog: LMTP reject sessionid=<S> message-id=<id@host> userid=<bob>
    auditlog: duplicate sessionid=<S> action=<delivery> message-id=<id@host> user=<U> date=<D>

(each on one line). As in Cyrus: `messageid=` is the field's value as sent, brackets and all,
or `unknown`; `sysflags=` is Cyrus's two-letter codes joined by `|` (AN FL DE DR SE, and EX on an
expunge); an ACL is Cyrus's `identifier<TAB>rights<TAB>` list, `NONE` before a mailbox had one;
`acl:` has its colon (Cyrus writes that line with xsyslog), not its trailing blank.

The lines are written by the callers that change the store on behalf of a session (delivery,
imap, pop3, and the cli's store commands, with a session id per run), from what the store's
calls return (the helpers at the end read what those lack around the call); `AuditLog` is None
when the option is off, so an off switch costs nothing. Names are internal names (`user.bob`),
as Cyrus logs them.
"""

from __future__ import annotations

import itertools
import logging
import os
import secrets
from collections.abc import Mapping, Sequence

from sealmail import rfc5322
from sealmail.store.api import (
    AppendedMessage,
    CopiedMessages,
    MailboxAdmin,
    MailboxInfo,
    MailboxView,
    MessageRecord,
)

log = logging.getLogger("sealmail.auditlog")

# Cyrus's msgflagmap (imap/mailbox.c), in its order; EX: the record is expunged.
_SYSFLAG_CODES = (
    ("\\Answered", "AN"), ("\\Flagged", "FL"), ("\\Deleted", "DE"), ("\\Draft", "DR"),
    ("\\Seen", "SE"),
)


def sysflags(flags: Sequence[str], expunged: bool = False) -> str:
    """Cyrus's `sysflags=` value: the system flags' codes in Cyrus's order, `|` between."""
    held = {flag.lower() for flag in flags}
    codes = [code for flag, code in _SYSFLAG_CODES if flag.lower() in held]
    if expunged:
        codes.append("EX")
    return "|".join(codes)


def acl_text(acl: Mapping[str, str] | None) -> str:
    """An ACL as Cyrus keeps it (`bob<TAB>lrswipkxtea<TAB>anyone<TAB>lrs<TAB>`); None: NONE."""
    if acl is None:
        return "NONE"
    return "".join(f"{identifier}\t{rights}\t" for identifier, rights in acl.items())


def field_value(header: bytes, name: str) -> str:
    """The first field `name` of a header (or of a whole message), unfolded; "" if none."""
    fields = rfc5322.header_fields(rfc5322.message_header(header), (name,), False)
    lines = fields.split(b"\n")
    first = [lines[0]]  # the first such field: its line and the folded ones after it
    first += itertools.takewhile(lambda line: line[:1] in (b" ", b"\t"), lines[1:])
    _, _, value = b"\n".join(first).partition(b":")
    return " ".join(value.decode("utf-8", "replace").split())


def message_id_of(header: bytes) -> str:
    """The Message-ID field of a header (or of a whole message) as Cyrus's `messageid=` shows
    it: the value unfolded, brackets kept, or `unknown`."""
    return field_value(header, "message-id") or "unknown"


def append_line(session_id: str, message: AppendedMessage, message_id: str) -> str:
    return (
        f"auditlog: append sessionid=<{session_id}> mailbox=<{message.mailbox}>"
        f" uniqueid=<{message.uniqueid}> uid=<{message.uid}> modseq=<{message.modseq}>"
        f" sysflags=<{sysflags(message.flags)}> guid=<{message.guid}> messageid={message_id}"
        f" size=<{message.size}>"
    )


def expunge_line(session_id: str, mailbox: MailboxInfo, record: MessageRecord) -> str:
    return (
        f"auditlog: expunge sessionid=<{session_id}> mailbox=<{mailbox.name}>"
        f" uniqueid=<{mailbox.uniqueid}> uid=<{record.uid}> modseq=<{record.modseq}>"
        f" sysflags=<{sysflags(record.flags, expunged=True)}> guid=<{record.guid}>"
        f" size=<{record.size}>"
    )


def create_line(session_id: str, mailbox: MailboxInfo) -> str:
    return (
        f"auditlog: create sessionid=<{session_id}> mailbox=<{mailbox.name}>"
        f" uniqueid=<{mailbox.uniqueid}> uidvalidity=<{mailbox.uidvalidity}>"
    )


def delete_line(session_id: str, mailbox: MailboxInfo) -> str:
    return (
        f"auditlog: delete sessionid=<{session_id}> mailbox=<{mailbox.name}>"
        f" uniqueid=<{mailbox.uniqueid}>"
    )


def rename_line(session_id: str, old: str, new: MailboxInfo) -> str:
    return (
        f"auditlog: rename sessionid=<{session_id}> oldmailbox=<{old}> newmailbox=<{new.name}>"
        f" uniqueid=<{new.uniqueid}>"
    )


def acl_line(session_id: str, old: MailboxInfo | None, new: MailboxInfo) -> str:
    """`old` None: the mailbox had no entry before (Cyrus logs this beside each create)."""
    old_acl = acl_text(None if old is None else old.acl)
    return (
        f"auditlog: acl: sessionid=<{session_id}> mailbox=<{new.name}>"
        f" uniqueid=<{new.uniqueid}> mbtype=<e> oldacl=<{old_acl}>"
        f" acl=<{acl_text(new.acl)}> foldermodseq=<{new.highestmodseq}>"
    )


# lmtpd's lines about what Sieve and duplicate suppression did (Cyrus's imap/lmtp_sieve.c,
# imap/duplicate.c): `message-id=` is the field's value, or `<nomsgid>`.


def discard_line(session_id: str, message_id: str) -> str:
    return f"auditlog: discard sessionid=<{session_id}> message-id={message_id}"


def redirect_line(session_id: str, message_id: str, target: str, userid: str) -> str:
    return (
        f"auditlog: redirect sessionid=<{session_id}> message-id={message_id}"
        f" target=<{target}> userid=<{userid}>"
    )


def lmtp_reject_line(session_id: str, message_id: str, userid: str) -> str:
    return (
        f"auditlog: LMTP reject sessionid=<{session_id}> message-id={message_id}"
        f" userid=<{userid}>"
    )


def duplicate_line(session_id: str, action: str, message_id: str, user: str, date: str) -> str:
    """`user` is the mailbox's uniqueid for a delivery (Cyrus 3.6 keys by it), `date` the
    message's Date field."""
    return (
        f"auditlog: duplicate sessionid=<{session_id}> action=<{action}>"
        f" message-id={message_id} user=<{user}> date=<{date}>"
    )


class AuditLog:
    """The audit lines of one session (its SESSIONID), written to the `sealmail.auditlog`
    logger. A caller holds None instead of one when `auditlog` is off."""

    __slots__ = ("session_id",)

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def appended(self, messages: Sequence[AppendedMessage], message_id: str) -> None:
        for message in messages:
            log.info("%s", append_line(self.session_id, message, message_id))

    def expunged(self, mailbox: MailboxInfo, records: Sequence[MessageRecord]) -> None:
        for record in records:
            log.info("%s", expunge_line(self.session_id, mailbox, record))

    def created(self, mailbox: MailboxInfo) -> None:
        log.info("%s", create_line(self.session_id, mailbox))
        log.info("%s", acl_line(self.session_id, None, mailbox))

    def deleted(self, mailbox: MailboxInfo) -> None:
        log.info("%s", delete_line(self.session_id, mailbox))

    def renamed(self, old: str, new: MailboxInfo) -> None:
        log.info("%s", rename_line(self.session_id, old, new))

    def acl_changed(self, old: MailboxInfo, new: MailboxInfo) -> None:
        if dict(old.acl) != dict(new.acl):  # as Cyrus: only a change is logged
            log.info("%s", acl_line(self.session_id, old, new))

    def discarded(self, message_id: str) -> None:
        log.info("%s", discard_line(self.session_id, message_id))

    def redirected(self, message_id: str, target: str, userid: str) -> None:
        log.info("%s", redirect_line(self.session_id, message_id, target, userid))

    def lmtp_rejected(self, message_id: str, userid: str) -> None:
        log.info("%s", lmtp_reject_line(self.session_id, message_id, userid))

    def duplicate(self, action: str, message_id: str, user: str, date: str) -> None:
        log.info("%s", duplicate_line(self.session_id, action, message_id, user, date))


def audit_for(enabled: bool, session_id: str) -> AuditLog | None:
    """The session's AuditLog, or None with `auditlog` off."""
    return AuditLog(session_id) if enabled else None


def command_session_id() -> str:
    """The session id of a command-line run that changes the store (`sealmail mailbox`,
    `sealmail admin expunge`; Cyrus's tools log theirs too), in the daemons' shape."""
    return f"{os.getpid():x}{secrets.token_hex(4)}".upper()


# The store's calls whose results do not carry all a line needs: with auditlog on, what is
# missing is read around the call (the records before an expunge, the copies after a copy, a
# mailbox's row before a delete or an ACL change); with it off, they are the plain call.


def create_mailbox(
    store: MailboxAdmin, name: str, audit: AuditLog | None, partition: str | None = None
) -> MailboxInfo:
    created = store.create_mailbox(name, partition=partition)
    if audit is not None:
        audit.created(created)
    return created


def delete_mailbox(store: MailboxAdmin, name: str, audit: AuditLog | None) -> None:
    doomed = store.mailbox(name) if audit is not None else None
    store.delete_mailbox(name)
    if audit is not None and doomed is not None:
        audit.deleted(doomed)


def rename_mailbox(store: MailboxAdmin, old: str, new: str, audit: AuditLog | None) -> None:
    """store.rename_mailbox, with a `rename` line for the mailbox and one for each mailbox
    below it, which moved with it (as Cyrus logs each)."""
    store.rename_mailbox(old, new)
    if audit is None:
        return
    for info in store.list_mailboxes(new):
        if info.name == new or info.name.startswith(new + "."):
            audit.renamed(old + info.name[len(new):], info)


def set_acl(
    store: MailboxAdmin, name: str, identifier: str, rights: str, audit: AuditLog | None
) -> None:
    """store.set_acl, with the `acl:` line of the ACL before and after (when it changed)."""
    before = store.mailbox(name) if audit is not None else None
    store.set_acl(name, identifier, rights)
    if audit is not None and before is not None:
        after = store.mailbox(name)
        if after is not None:
            audit.acl_changed(before, after)


def expunge(
    store: MailboxView, name: str, uids: Sequence[int], audit: AuditLog | None
) -> list[int]:
    """store.expunge, with an `expunge` line for each message removed.

    The store does not report the modseq each removal took. When HIGHESTMODSEQ rose by exactly
    one per message removed (nothing else changed the mailbox meanwhile), the backends' rule (one
    modseq per message, in UID order) gives each its own; otherwise each line shows HIGHESTMODSEQ
    as it was right after."""
    if audit is None or not uids:
        return store.expunge(name, uids)
    first = store.mailbox(name)
    before = {r.uid: r for r in store.message_records(name, uids)}
    removed = store.expunge(name, uids)
    _log_expunges(store, name, audit, first, before, removed)
    return removed


def _log_expunges(
    store: MailboxView,
    name: str,
    audit: AuditLog,
    first: MailboxInfo | None,
    before: Mapping[int, MessageRecord],
    removed: Sequence[int],
    others: int = 0,
) -> None:
    """The `expunge` lines of `removed` (records as they were `before`), the mailbox read now;
    `others`: how many modseqs the same call took first, before the expunges (a MOVE's copies
    into the mailbox it moves from)."""
    after = store.mailbox(name)
    if first is None or after is None or not removed:
        return
    exact = after.highestmodseq - first.highestmodseq == others + len(removed)
    base = first.highestmodseq + others + 1
    audit.expunged(after, [
        _with_modseq(before[uid], base + i if exact else after.highestmodseq)
        for i, uid in enumerate(removed) if uid in before
    ])


def move_messages(
    store: MailboxView,
    source: str,
    uids: Sequence[int],
    target: str,
    reader: str | None,
    audit: AuditLog | None,
) -> CopiedMessages:
    """store.move_messages (one store operation), logged as COPY and EXPUNGE log it: an
    `append` line per copy, then an `expunge` line per original. What the lines need of the
    originals (records, Message-IDs) is read before the move: after it they are gone."""
    if audit is None or not uids:
        return store.move_messages(source, uids, target, reader)
    first = store.mailbox(source)
    before = {r.uid: r for r in store.message_records(source, uids)}
    headers = store.listed_headers(source, uids)
    moved = store.move_messages(source, uids, target, reader)
    log_copies(store, source, target, moved, audit, headers)
    removed = [s for s, _ in moved.pairs]
    _log_expunges(store, source, audit, first, before, removed,
                  len(removed) if source == target else 0)
    return moved


def _with_modseq(record: MessageRecord, modseq: int) -> MessageRecord:
    return MessageRecord(record.uid, modseq, record.internaldate, record.size, record.guid,
                         record.flags)


def log_copies(
    store: MailboxView,
    source: str,
    target: str,
    copied: CopiedMessages,
    audit: AuditLog | None,
    headers: Mapping[int, tuple[int, bytes]] | None = None,
) -> None:
    """An `append` line for each copy COPY / MOVE made (Cyrus appends a record to the target
    for each): the copies' records, read after the copy, and the originals' Message-IDs (from
    `headers`, the originals' listed_headers, when given: a MOVE's are gone by then)."""
    if audit is None or not copied.pairs:
        return
    mailbox = store.mailbox(target)
    if mailbox is None:
        return
    if headers is None:
        headers = store.listed_headers(source, [s for s, _ in copied.pairs])
    by_uid = {r.uid: r for r in store.message_records(target, [t for _, t in copied.pairs])}
    for source_uid, target_uid in copied.pairs:
        record = by_uid.get(target_uid)
        if record is None:
            continue  # expunged meanwhile by another session
        message = AppendedMessage(
            mailbox.name, mailbox.uidvalidity, record.uid, record.modseq, record.guid,
            record.size, uniqueid=mailbox.uniqueid, flags=record.flags,
        )
        _, listed = headers.get(source_uid, (0, b""))
        audit.appended([message], message_id_of(listed))
