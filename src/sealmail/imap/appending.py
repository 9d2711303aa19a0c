"""APPEND (RFC 9051 6.3.12) with RFC 3502 MULTIAPPEND, RFC 4469 CATENATE and RFC 4315
APPENDUID.

All or none (RFC 3502 6.3.11): every message is built and checked (flags, size, CATENATE URLs)
before any is stored, then a store with AtomicAppending (disk, memory) appends them in one
commit, or none. On a store without it (PostgreSQL, for now) they are appended one by one and,
should a later one fail (quota, disk), those stored are expunged before the NO: the mailbox
ends as it was, though another session that syncs in between may see them come and go.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed, store_failure
from sealmail.imap.fetching.kept import KeptForms, kept_for_append
from sealmail.imap.fetching.memo import memos_for
from sealmail.imap.messages import canonical_flags
from sealmail.imap.urls import catenate_url
from sealmail.proto.imap import (
    Append,
    AppendMessage,
    Atom,
    ParsedMessage,
    Response,
    ResponseCode,
    SequenceSet,
    StatusResponse,
)
from sealmail.store import auditlog
from sealmail.store.api import AppendedMessage, AtomicAppending, DeliveryTarget
from sealmail.store.errors import MailboxNotFound, StoreError

if TYPE_CHECKING:
    from sealmail.imap.selected import SelectedMailbox
    from sealmail.imap.session import ImapSession

__all__ = ["append"]


def append(session: ImapSession, command: Append) -> list[Response]:
    target = session.internal(command.mailbox)
    info = session.store.mailbox(target)  # looked up once for existence and rights
    if info is None:
        raise CommandFailed("Mailbox does not exist", "TRYCREATE")  # RFC 9051 6.3.12
    held = session.require_rights_in(info, target, "i")
    built = [_build(session, message) for message in command.messages]
    kept = [kept_for_append(content) for content, _, _ in built]
    store = session.store
    view = _announcing(session, target)
    if len(built) > 1 and isinstance(store, AtomicAppending):
        # One commit for all (RFC 3502 6.3.11): no session ever sees part of them.
        try:
            stored = store.deliver_all([
                (content, _target(session, target, flags, made, view), _date(message))
                for (content, flags, message), made in zip(built, kept, strict=True)])
        except MailboxNotFound:
            raise CommandFailed("Mailbox does not exist", "TRYCREATE") from None
        except StoreError as error:
            raise store_failure(error) from None
    else:
        stored = _one_by_one(session, target, built, kept, view)
    if view is not None:
        view.claimed.update(message.uid for message in stored if message.recent)
    if session.audit is not None:
        for message, (content, _, _) in zip(stored, built, strict=True):
            session.audit.appended([message], auditlog.message_id_of(content))
    made = {message.uid: found for message, found in zip(stored, kept, strict=True) if found}
    if made:  # in this process's memos too: the first FETCH of them here reads no blob
        memos, uidvalidity = memos_for(store), stored[0].uidvalidity
        memos.forms.add(target, uidvalidity, {uid: forms for uid, (_, forms, _) in made.items()})
        memos.parses.add(target, uidvalidity, {uid: parse for uid, (parse, _, _) in made.items()})
    if "r" not in held:
        # RFC 9051 6.3.12: a client that may APPEND but not SELECT "MUST NOT" get APPENDUID,
        # "as it would disclose information about the mailbox".
        return [StatusResponse("OK", "APPEND completed", tag=command.tag)]
    uids = SequenceSet.of([m.uid for m in stored])
    code = ResponseCode("APPENDUID", (stored[0].uidvalidity,
                                      stored[0].uid if len(stored) == 1 else Atom(str(uids))))
    return [StatusResponse("OK", "APPEND completed", tag=command.tag, code=code)]


def _announcing(session: ImapSession, mailbox: str) -> SelectedMailbox | None:
    """The session's view of `mailbox` when it is the first to be told of what is appended
    there (selected read-write, \\Recent shown: its sync after the command announces and
    claims it), so that the store may claim the copies' \\Recent in their commit
    (DeliveryTarget.claims_recent: no claim of its own after); None otherwise."""
    view = session.selected
    if (view is None or view.name != mailbox or view.readonly or not view.shows_recent
            or view.reader != session.userid):
        return None
    return view


def _target(session: ImapSession, mailbox: str, flags: tuple[str, ...],
            kept: tuple[ParsedMessage, KeptForms, bytes] | None,
            view: SelectedMailbox | None) -> DeliveryTarget:
    return DeliveryTarget(mailbox, flags, strict_quota=True, reader=session.userid,
                          kept=None if kept is None else kept[2], claims_recent=view is not None)


def _date(message: AppendMessage) -> float | None:
    return message.internaldate.timestamp() if message.internaldate else None


def _one_by_one(session: ImapSession, target: str,
                built: list[tuple[bytes, tuple[str, ...], AppendMessage]],
                kept: list[tuple[ParsedMessage, KeptForms, bytes] | None],
                view: SelectedMailbox | None) -> list[AppendedMessage]:
    """Each message in its own delivery; on a failure the ones stored are expunged before the
    NO (a store without AtomicAppending: another session may see them come and go)."""
    stored: list[AppendedMessage] = []
    try:
        for (content, flags, message), made in zip(built, kept, strict=True):
            [result] = session.store.deliver(
                content, [_target(session, target, flags, made, view)], _date(message))
            if isinstance(result, MailboxNotFound):
                raise CommandFailed("Mailbox does not exist", "TRYCREATE")
            if isinstance(result, StoreError):
                raise store_failure(result)
            assert isinstance(result, AppendedMessage)
            stored.append(result)
    except (CommandFailed, StoreError):
        if stored:
            session.store.expunge(target, [m.uid for m in stored])  # RFC 3502: none appended
        raise
    return stored


def _build(session: ImapSession, message: AppendMessage
           ) -> tuple[bytes, tuple[str, ...], AppendMessage]:
    """One message's octets and flags, or the failure that refuses the whole command."""
    if message.utf8 and not session.utf8:
        # RFC 6855 4: without ENABLE UTF8=ACCEPT the server rejects the UTF8 data extension.
        raise CommandFailed("APPEND UTF8 needs ENABLE UTF8=ACCEPT first", "CANNOT")
    flags = tuple(canonical_flags(message.flags))
    content = message.message
    if message.catenate is not None:
        # RFC 4469 3: the parts, in order; a URL names a message or part the user may read.
        content = b"".join(catenate_url(session, part.url) if part.url is not None
                           else part.text for part in message.catenate)
    if not content:
        raise CommandFailed("Empty message", status="BAD" if message.catenate is None else "NO")
    if session.max_message_size and len(content) > session.max_message_size:
        raise CommandFailed(f"Message larger than {session.max_message_size} octets", "TOOBIG")
    return content, flags, message
