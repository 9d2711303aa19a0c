"""Commands on messages: STORE, COPY, MOVE (RFC 6851), EXPUNGE and UID EXPUNGE (RFC 4315),
CLOSE, UNSELECT, CHECK (APPEND is sealmail.imap.appending).

Each changes the store in one call (one transaction) and reports what this session did; what
other sessions see comes from their own sync with the store.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.fetching import fetch_index_responses
from sealmail.imap.selected import RECENT
from sealmail.proto.imap import (
    Atom,
    Check,
    Close,
    Copy,
    Expunge,
    RenderedResponses,
    Response,
    ResponseCode,
    SequenceSet,
    StatusResponse,
    Store,
    Unselect,
)
from sealmail.proto.imap.syntax import canonical_flag
from sealmail.store import auditlog
from sealmail.store.api import MailboxInfo, MessageRecord, flags_after
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["canonical_flags", "check", "close", "copy_or_move", "expunge", "store", "unselect"]

_MODES = {"": "set", "+": "add", "-": "remove"}


def canonical_flags(flags: tuple[str, ...]) -> list[str]:
    """Flags as stored; BAD for \\Recent and unknown system flags (RFC 3501 2.3.2)."""
    out = []
    for flag in flags:
        canonical = canonical_flag(flag)
        if canonical == "\\Recent":
            # RFC 3501 2.3.2: \Recent cannot be altered by the client.
            raise CommandFailed("\\Recent cannot be stored", status="BAD")
        if canonical.startswith("\\") and canonical not in (
                "\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft"):
            raise CommandFailed(f"Unknown system flag {flag}", status="BAD")
        out.append(canonical)
    return out


def _rights_for(flags: list[str]) -> str:
    """RFC 4314 4: \\Seen needs "s", \\Deleted "t", any other flag "w"."""
    needed = set()
    for flag in flags:
        needed.add({"\\Seen": "s", "\\Deleted": "t"}.get(flag, "w"))
    return "".join(sorted(needed))


def store(session: ImapSession, command: Store) -> list[Response]:
    view = session.require_selected()
    if view.readonly:
        raise CommandFailed("Mailbox is read-only", "READ-ONLY")
    flags = canonical_flags(command.flags)
    info = session.store.mailbox(view.name)  # once, for the rights and _changes_nothing
    session.require_rights_in(info, view.name, _rights_for(flags) or "w")
    assert info is not None  # require_rights_in refuses a mailbox that is not there
    if command.unchanged_since is not None:
        session.enable_condstore()
    spans = session.resolve_spans(command.sequence_set, command.uid)
    positions = view.positions(spans)
    if not positions:
        return []
    mode = _MODES[command.mode]
    if command.unchanged_since is None and _changes_nothing(session, info, spans, positions,
                                                            flags, mode):
        # Nothing to write (Dovecot does nothing either): no transaction, no modseq; the
        # replies are what they would be after an update that matched and changed nothing.
        if command.silent:
            return []
        names = (["UID"] if command.uid else []) + ["FLAGS"]
        return fetch_index_responses(session, positions,
                                     names + (["MODSEQ"] if session.condstore else []))
    before = {view.uids[i]: view.modseqs[i] for i in positions}
    update = session.store.update_flags(view.name, list(before), flags, mode,
                                        command.unchanged_since, reader=session.userid)
    refused = set(update.refused)
    out: list[Response] = view.remember(update.records)
    told = _store_replies(session, command, update.records, before, refused)
    if told is not None:
        out.append(told)
    if refused:
        # RFC 7162 3.1.3: the messages that failed UNCHANGEDSINCE, as numbers of the command.
        numbers = sorted(uid if command.uid else (view.seq_of(uid) or 0) for uid in refused)
        out.append(StatusResponse("OK", "Conditional STORE failed for some messages",
                                  tag=command.tag, code=ResponseCode(
                                      "MODIFIED", (Atom(str(SequenceSet.of(numbers))),))))
    return out


def _store_replies(session: ImapSession, command: Store, records: list[MessageRecord],
                   before: dict[int, int], refused: set[int]) -> RenderedResponses | None:
    """`* n FETCH (UID u FLAGS (...) MODSEQ (m))` for what this STORE changed, as octets at
    once from the view's rendered flag sets (`view.remember` has just set them from these
    records): a response tree per message, rendered value by value, cost more than the
    store's own work for imaptest's STOREs."""
    from sealmail.imap.fetching import render_flags  # fetching imports selected, as we do

    view = session.require_selected()
    rendered = view.rendered_flag_sets(render_flags)
    flag_ids = view.flag_ids
    condstore, silent, uid_form = session.condstore, command.silent, command.uid
    conditional = command.unchanged_since is not None
    lines: list[bytes] = []
    for record in records:
        index = view.index_of(record.uid)
        if index is None or record.uid in refused:
            continue
        changed = before[record.uid] != record.modseq
        if silent and not (changed and condstore and conditional):
            continue
        line = b"* %d FETCH (" % (index + 1)
        items: list[bytes] = []
        if uid_form:
            items.append(b"UID %d" % record.uid)
        if not silent:
            items.append(b"FLAGS " + rendered[flag_ids[index]])
        if condstore:
            items.append(b"MODSEQ (%d)" % record.modseq)
        lines.append(line + b" ".join(items) + b")\r\n")
    return RenderedResponses(b"".join(lines)) if lines else None


def _changes_nothing(session: ImapSession, info: MailboxInfo, spans: list[tuple[int, int]],
                     positions: list[int], flags: list[str], mode: str) -> bool:
    """Whether a STORE would leave every message as it is, told from the view alone.

    Only when the view is current (the store's highestmodseq is the one the view last saw), so
    the flags it holds are the store's; a change by anyone after that check is ordered after
    this STORE, which then did nothing. The question is asked once per distinct flag set.
    """
    view = session.require_selected()
    if info.highestmodseq != view.highestmodseq:
        return False
    flag_ids = view.flag_ids
    if view.vanished:
        distinct = {flag_ids[i] for i in positions}
    else:
        distinct = set()
        for start, stop in spans:
            distinct.update(flag_ids[start:stop])
    for flag_id in distinct:
        # \Recent is this session's, not a stored flag: no STORE mode changes it.
        current = tuple(f for f in view.flag_sets[flag_id] if f != RECENT)
        if set(flags_after(current, flags, mode)) != set(current):
            return False
    return True


def copy_or_move(session: ImapSession, command: Copy) -> list[Response]:
    view = session.require_selected()
    moving = command.name == "MOVE"
    target = session.internal(command.mailbox)
    if session.store.mailbox(target) is None:
        # RFC 9051 6.4.7: TRYCREATE when the target does not exist.
        raise CommandFailed("Target mailbox does not exist", "TRYCREATE")
    session.require_rights(view.name, "rte" if moving else "r")
    session.require_rights(target, "i")
    if moving and view.readonly:
        raise CommandFailed("Mailbox is read-only", "READ-ONLY")
    pairs = view.live(session.resolve(command.sequence_set, command.uid))
    if not pairs:
        return []
    # Each copy gets \Seen as this user sees the original (their own seen state where they
    # have one, in the source and in the target: sealmail.store.seen).
    uids = [uid for _, uid in pairs]
    if moving:
        # RFC 6851 3.3: one store operation (copy and expunge in one commit), so the messages
        # are never in both mailboxes, nor in neither; the expunges reach this session (and
        # every other) through the sync after the command, as EXPUNGE's do.
        copied = auditlog.move_messages(session.store, view.name, uids, target,
                                        session.userid, session.audit)
    else:
        copied = session.store.copy_messages(view.name, uids, target, reader=session.userid)
        auditlog.log_copies(session.store, view.name, target, copied, session.audit)
    code = None
    if copied.pairs:
        sources = SequenceSet.of([s for s, _ in copied.pairs])
        targets = SequenceSet.of([t for _, t in copied.pairs])
        code = ResponseCode("COPYUID", (copied.uidvalidity, Atom(str(sources)),
                                        Atom(str(targets))))
    if not moving:
        return [StatusResponse("OK", "COPY completed", tag=command.tag, code=code)]
    # RFC 6851 4.3: COPYUID in an untagged OK before the expunges.
    out: list[Response] = []
    if code is not None:
        out.append(StatusResponse("OK", "Moved", code=code))
    return out


def expunge(session: ImapSession, command: Expunge) -> list[Response]:
    view = session.require_selected()
    if view.readonly:
        raise CommandFailed("Mailbox is read-only", "READ-ONLY")
    session.require_rights(view.name, "e")
    spans = [(0, view.exists)]
    if command.uid_set is not None:
        spans = command.uid_set.index_spans(view.uids)
    doomed = view.uids_where(view.positions(spans), "\\Deleted")
    if doomed:
        auditlog.expunge(session.store, view.name, doomed, session.audit)
    return []


def close(session: ImapSession, command: Close) -> list[Response]:
    """RFC 9051 6.4.1: expunge \\Deleted messages silently (not in EXAMINE), then deselect."""
    view = session.require_selected()
    session.selected = None
    if not view.readonly and session.has_rights(view.name, "e"):
        doomed = view.uids_where(view.positions([(0, view.exists)]), "\\Deleted")
        if doomed:
            with contextlib.suppress(StoreError):  # closed in any case (RFC 9051 6.4.1)
                auditlog.expunge(session.store, view.name, doomed, session.audit)
    return []


def unselect(session: ImapSession, command: Unselect) -> list[Response]:
    session.require_selected()
    session.selected = None
    return []


def check(session: ImapSession, command: Check) -> list[Response]:
    """RFC 3501 6.4.1: every change is already durable; the sync after it reports news."""
    session.require_selected()
    return []
