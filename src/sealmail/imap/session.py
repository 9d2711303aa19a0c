"""One authenticated IMAP session's logic, between the sans-I/O core and the store.

Theory of operation: the daemon hands each parsed command legal in the current state to
`ImapSession.execute` (in a worker thread: the store blocks on SQLite and files) and writes the
responses it returns: untagged data, then exactly one tagged status. Handlers live in one module
per command family and are picked from `HANDLERS` by command class. After each command that
keeps a mailbox selected, the view syncs with the store so changes made by other sessions and
by deliveries are announced at the moments RFC 9051 7.4.1 / 7.5.1 allow (no EXPUNGE during
FETCH, STORE or SEARCH; their UID forms may).

Authentication, STARTTLS, IDLE's waiting and COMPRESS need the connection and live in the
daemon (sealmail.server.imapd); nothing here does I/O other than through the store.

IMAP4rev1 (RFC 3501) is what a session speaks until the client sends ENABLE IMAP4rev2; from then
on it follows RFC 9051's differences (Appendix E): SEARCH answers with ESEARCH, SELECT sends no
RECENT and no UNSEEN code but a LIST of the mailbox and [CLOSED] for the one it replaces, and
mailbox names and response text are UTF-8. ENABLE UTF8=ACCEPT (RFC 6855) alone gives UTF-8
names and strings, and the UTF8 (...) form of APPEND, on an IMAP4rev1 session.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from sealmail import __version__
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.imap import (
    access,
    appending,
    contexts,
    fetching,
    mailboxes,
    messages,
    notify,
    searching,
    urlauth,
)
from sealmail.imap.errors import CommandFailed, store_failure
from sealmail.imap.namespace import UserNamespace, net_unicode
from sealmail.imap.selected import MailboxGone, SelectedMailbox, SyncOptions
from sealmail.proto.imap import (
    Append,
    AString,
    CancelUpdate,
    Check,
    Close,
    Command,
    Copy,
    Create,
    DataResponse,
    Delete,
    DeleteAcl,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GenUrlAuth,
    GetAcl,
    GetQuota,
    GetQuotaRoot,
    Id,
    List,
    ListRights,
    Lsub,
    Move,
    MyRights,
    Namespace,
    Noop,
    Notify,
    Rename,
    ResetKey,
    Response,
    ResponseCode,
    Search,
    Select,
    SequenceSet,
    SetAcl,
    SetQuota,
    Sort,
    Status,
    StatusResponse,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
    UrlFetch,
)
from sealmail.proto.imap import response as replies
from sealmail.store import acl as acls
from sealmail.store.api import MailboxInfo, MessageStore
from sealmail.store.auditlog import AuditLog
from sealmail.store.errors import MailboxNotFound, PermissionDenied, StoreError

__all__ = ["ENABLEABLE", "HANDLERS", "ImapSession"]

# RFC 5161 / RFC 9051 6.3.1: what ENABLE may switch on here, spelt as ENABLED reports it.
ENABLEABLE = ("CONDSTORE", "QRESYNC", "IMAP4rev2", "UTF8=ACCEPT")
_CANONICAL = {name.upper(): name for name in ENABLEABLE}
# Switching these changes how mailbox names are spelt on the wire, so they must come before the
# first SELECT / EXAMINE (RFC 6855 3, RFC 9051 6.3.1).
_BEFORE_SELECT = frozenset({"IMAP4REV2", "UTF8=ACCEPT"})

# Commands during which no EXPUNGE may be sent (RFC 9051 7.5.1), unless in their UID form.
_NO_EXPUNGE = frozenset({"FETCH", "STORE", "SEARCH", "SORT", "THREAD"})
# Commands after which there is nothing (new) selected to sync.
_NO_SYNC = frozenset({"SELECT", "EXAMINE", "CLOSE", "UNSELECT"})

Handler = Callable[["ImapSession", Any], list[Response]]


class ImapSession:
    """Everything one logged-in user's commands need: identity, names, rights, selection."""

    def __init__(
        self,
        store: MessageStore,
        config: ImapdConfig,
        userid: str,
        inbox: str,
        *,
        is_admin: bool = False,
        clock: Callable[[], float] = time.time,
        max_message_size: int = 0,
        audit: AuditLog | None = None,
    ) -> None:
        self.store = store
        self.audit = audit  # imapd.conf auditlog: this session's lines (None: off)
        self.config = config
        self.userid = userid
        self.is_admin = is_admin
        self.implicit_owner_rights = config.get(IMAPD.implicit_owner_rights)
        self.clock = clock
        self.max_message_size = max_message_size
        self.namespace = UserNamespace(inbox, config.hierarchy_separator,
                                       config.get(IMAPD.altnamespace))
        self._internal_names: dict[tuple[str, bool], str] = {}
        self.selected: SelectedMailbox | None = None
        self.condstore = False
        self.qresync = False
        self.rev2 = False  # ENABLE IMAP4rev2 (RFC 9051)
        self.utf8_accept = False  # ENABLE UTF8=ACCEPT (RFC 6855)
        self.utf8 = False  # either of them: names and strings in UTF-8
        self.has_selected = False  # a SELECT / EXAMINE was seen in this session
        self.saved_search: list[int] = []
        self.update_contexts: dict[str, contexts.UpdateContext] = {}  # RFC 5267 4, by tag
        self.notify_spec: notify.NotifySpec | None = None  # RFC 5465 NOTIFY SET
        self._notify_polled = 0.0  # when `poll` last looked at the watched mailboxes
        self.pending_tag: str | None = None
        self._condstore_news: list[Response] = []  # see enable_condstore
        # Set by the daemon: sends untagged responses at once, from the command's thread.
        self.stream: Callable[[list[Response]], None] | None = None

    # -- what handlers use ------------------------------------------------------------------

    def internal(self, wire_name: str) -> str:
        """The internal name of a name the client sent; the few a session names again and
        again (INBOX, its APPEND and COPY targets) are mapped once (`UserNamespace` is fixed
        for the session, and the result depends only on the name and UTF-8 mode)."""
        key = (wire_name, self.utf8)
        name = self._internal_names.get(key)
        if name is None:
            name = self.namespace.to_internal(wire_name, self.utf8)
            if len(self._internal_names) < 64:
                self._internal_names[key] = name
        return name

    def external(self, internal: str) -> str:
        return self.namespace.to_external(internal, self.utf8)

    def denormalized(self, *wire_names: str) -> bool:
        """Whether a UTF-8 name the client sent was not in Net-Unicode normal form (and so was
        normalized on the way in, see `net_unicode`)."""
        if not self.utf8:
            return False
        try:
            return any(net_unicode(name) != name for name in wire_names)
        except StoreError:
            return False

    def oldname(self, sent: str, shown: str, attributes: tuple[str, ...] = ()) -> DataResponse:
        """RFC 9051 6.3.9.7: `LIST (...) sep shown ("OLDNAME" (sent))`, which tells the client
        which (normalized) name a de-normalized one it sent stood for."""
        return replies.list_response(list(attributes), self.namespace.separator, shown,
                                     extended=[("OLDNAME", [AString(sent)])])

    def rights_in(self, info: MailboxInfo, wanted: str) -> bool:
        held = self.rights_of(info)
        return all(right in held for right in wanted)

    def rights_of(self, info: MailboxInfo) -> str:
        implicit = acls.owner_rights(info.name, self.userid, self.implicit_owner_rights)
        return acls.rights_of(info.acl, self.userid, self.is_admin, implicit)

    def rights(self, name: str) -> str:
        info = self.store.mailbox(name)
        return "" if info is None else self.rights_of(info)

    def has_rights(self, name: str, wanted: str) -> bool:
        held = self.rights(name)
        return all(right in held for right in wanted)

    def require_rights(self, name: str, wanted: str) -> None:
        """RFC 4314 6: without "l" (or "r") a mailbox must look as if it did not exist."""
        self.require_rights_in(self.store.mailbox(name), name, wanted)

    def require_rights_in(self, info: MailboxInfo | None, name: str, wanted: str) -> str:
        """`require_rights` of a mailbox already looked up (`info`); the rights held."""
        if info is None:
            raise MailboxNotFound(f"mailbox {self.external(name)} does not exist")
        held = self.rights_of(info)
        if "l" not in held and "r" not in held:
            raise MailboxNotFound(f"mailbox {self.external(name)} does not exist")
        missing = [right for right in wanted if right not in held]
        if missing:
            raise PermissionDenied(f"permission denied: needs right(s) {''.join(missing)}")
        return held

    def require_selected(self) -> SelectedMailbox:
        if self.selected is None:
            raise CommandFailed("No mailbox selected", status="BAD")
        return self.selected

    def resolve(self, numbers: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """The (sequence number, uid) pairs a set names (see `resolve_spans`)."""
        uids = self.require_selected().uids
        return [(i + 1, uids[i]) for start, stop in self.resolve_spans(numbers, by_uid)
                for i in range(start, stop)]

    def resolve_spans(self, numbers: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """The messages a set names as [start, stop) ranges of positions in the view (sequence
        number - 1); RFC 9051 6.4: a sequence number past EXISTS is an error (BAD), except "*"
        in an empty mailbox, which names nothing."""
        view = self.require_selected()
        if numbers.saved:
            if not self.saved_search:
                return []
            numbers = SequenceSet.of(self.saved_search)
            by_uid = True
        if not by_uid and view.exists == 0:
            if numbers.uses_star:
                return []
            raise CommandFailed("No messages in the mailbox", status="BAD")
        if by_uid:
            return view.spans(numbers, by_uid)
        # Sequence numbers: the set normalized once, for the check and for the spans (imaptest
        # names up to 100 scattered messages; normalizing them twice showed in its profile).
        exists = view.exists
        merged = numbers.normalized(exists)
        if merged and merged[-1][1] > exists:
            raise CommandFailed("Invalid message sequence number", status="BAD")
        return [(max(low, 1) - 1, high) for low, high in merged if max(low, 1) <= high]

    def stream_out(self, responses: list[Response]) -> list[Response]:
        """Untagged responses of a command still running that may go to the client now (bulk
        FETCH output), so it reads while the rest is built; what is left to return. Without a
        daemon to send them (tests), they stay in the list, in order."""
        if self.stream is None or not responses:
            return responses
        self.stream(responses)
        return []

    def enable_condstore(self) -> None:
        """RFC 7162 3.1: the first CONDSTORE-enabling command switches MODSEQ reporting on.
        Issued with a mailbox selected (FETCH MODSEQ, SEARCH MODSEQ, STORE UNCHANGEDSINCE,
        STATUS HIGHESTMODSEQ), it also gets the `* OK [HIGHESTMODSEQ n]` that SELECT would have
        sent (RFC 7162 3.1.2.1): the client's starting point for later resyncs."""
        if not self.condstore and self.selected is not None:
            self._condstore_news.append(StatusResponse(
                "OK", "Highest", code=ResponseCode("HIGHESTMODSEQ",
                                                   (self.selected.highestmodseq,))))
        self.condstore = True

    def sync_options(self) -> SyncOptions:
        return SyncOptions(self.condstore, self.qresync)

    # -- running commands -------------------------------------------------------------------

    def execute(self, command: Command) -> list[Response]:
        """Untagged responses, then the one tagged response, for `command`."""
        self.pending_tag = command.tag
        self._condstore_news.clear()  # left by a command that ended the session's selection
        handler = HANDLERS.get(type(command))
        if handler is None:
            return [StatusResponse("BAD", f"{command.wire_name} is not supported here",
                                   tag=command.tag)]
        closed: list[Response] = []
        if isinstance(command, Select):
            self.has_selected = True
            if self.selected is not None and (self.rev2 or self.qresync):
                # RFC 9051 6.3.2 (and RFC 7162 3.2.11 with QRESYNC): deselecting the mailbox
                # that was selected "MUST return an untagged OK response with the [CLOSED]
                # response code", whether or not the new selection succeeds.
                closed.append(StatusResponse("OK", "Previous mailbox is now closed",
                                             code=ResponseCode("CLOSED")))
        try:
            out = closed + handler(self, self._in_revision(command))
        except CommandFailed as failure:
            out = [*closed, failure.response(command.tag)]
        except MailboxGone as gone:
            self.selected = None
            return [StatusResponse("BYE", str(gone))]
        except StoreError as error:
            out = [*closed, store_failure(error).response(command.tag)]
        tagged: Response | None = None
        if out and isinstance(out[-1], StatusResponse) and out[-1].tag is not None:
            tagged = out.pop()
        if self._condstore_news:
            out.extend(self._condstore_news)
            self._condstore_news.clear()
        if self.selected is None or command.name in _NO_SYNC:
            self.update_contexts.clear()  # RFC 5267 4.2: they end with the selection
        if self.selected is not None and command.name not in _NO_SYNC:
            allow_expunge = command.uid or command.name not in _NO_EXPUNGE
            try:
                before = list(self.selected.uids) if self.update_contexts else []
                synced = self.selected.sync(self.store, self.sync_options(), allow_expunge)
                out.extend(contexts.notice(self, before, list(synced)))
            except MailboxGone as gone:
                self.selected = None
                return [*out, StatusResponse("BYE", str(gone))]
            except StoreError:
                pass  # announced at the next command
        if self.notify_spec is not None and not isinstance(command, Notify):
            out.extend(notify.news(self))  # RFC 5465: other mailboxes' news, at every command
        out.append(tagged or StatusResponse("OK", f"{command.wire_name} completed",
                                            tag=command.tag))
        return out

    def _in_revision(self, command: Command) -> Command:
        """The command as the enabled revision reads it."""
        if isinstance(command, Search):
            if command.charset is not None and self.utf8_accept and not self.rev2:
                # RFC 6855 3: once UTF8=ACCEPT is enabled the client "MUST NOT issue a SEARCH
                # command that contains a charset specification"; the server "SHOULD reject
                # the command with a BAD response". (IMAP4rev2 permits a redundant CHARSET.)
                raise CommandFailed("No CHARSET in SEARCH after ENABLE UTF8=ACCEPT",
                                    status="BAD")
            if command.return_options is None and self.rev2:
                # RFC 9051 6.4.4: SEARCH answers with ESEARCH; without RETURN it is RETURN (ALL)
                # (the SEARCH response is deprecated, Appendix E item 4).
                return dataclasses.replace(command, return_options=())
        return command

    def poll(self) -> list[Response]:
        """News for an idling client (RFC 2177): EXISTS, EXPUNGE, FETCH FLAGS; and with NOTIFY
        (RFC 5465) the STATUS and LIST news of the other mailboxes it watches."""
        out = self._poll_selected()
        if self.notify_spec is None:
            return out
        self._notify_polled = self.clock()
        return out + notify.news(self)

    def notify_poll(self) -> list[Response]:
        """News between commands once NOTIFY is set (the daemon asks while the client is not
        in a command): the selected mailbox's only when SELECTED is watched (RFC 5465 5.1)."""
        spec = self.notify_spec
        if spec is None:
            return []
        out = self._poll_selected() if spec.selected else []
        return out + notify.news(self)

    def _poll_selected(self) -> list[Response]:
        if self.selected is None:
            return []
        try:
            before = list(self.selected.uids) if self.update_contexts else []
            synced = self.selected.sync(self.store, self.sync_options(), True)
            return contexts.notice(self, before, list(synced))
        except MailboxGone as gone:
            self.selected = None
            return [StatusResponse("BYE", str(gone))]
        except StoreError:
            return []

    def has_news(self) -> bool:
        """Cheap check (the store's `mailbox_changed`: one index row, or on PostgreSQL the
        node's change feed in memory) whether `poll` would have anything to say."""
        if self.notify_spec is not None and \
                self.clock() - self._notify_polled >= notify.POLL_INTERVAL:
            return True  # other mailboxes too: `poll` finds out, once a second at most
        if self.selected is None:
            return False
        try:
            return self.store.mailbox_changed(self.selected.name, self.selected.highestmodseq)
        except StoreError:
            return False


# -- the handlers that need no module of their own ---------------------------------------------


def _noop(session: ImapSession, command: Noop | Check) -> list[Response]:
    return []  # the sync in execute() is the whole point (RFC 9051 6.1.2)


def _enable(session: ImapSession, command: Enable) -> list[Response]:
    """RFC 9051 6.3.1 / RFC 5161: unknown capabilities are ignored; ENABLED lists the ones
    this command named that this server can enable, and the CAPABILITY list never changes."""
    wanted = [name.upper() for name in command.capabilities]
    if session.has_selected and any(name in _BEFORE_SELECT for name in wanted):
        # RFC 6855 3 / RFC 9051 6.3.1: "Clients MUST NOT issue ENABLE once they SELECT/EXAMINE
        # a mailbox"; names already sent in one spelling cannot change spelling mid-session.
        raise CommandFailed("ENABLE IMAP4rev2 or UTF8=ACCEPT must come before any SELECT",
                            status="BAD")
    done: list[str] = []
    for upper in wanted:
        if upper not in _CANONICAL:
            continue
        if upper == "QRESYNC":
            session.qresync = True
            session.condstore = True  # RFC 7162 3.2.3: QRESYNC implies CONDSTORE
        elif upper == "CONDSTORE":
            session.condstore = True
        elif upper == "IMAP4REV2":
            session.rev2 = True
            session.utf8 = True  # RFC 9051 5.1: mailbox names are Net-Unicode (UTF-8)
        else:
            session.utf8_accept = True
            session.utf8 = True
        if _CANONICAL[upper] not in done:
            done.append(_CANONICAL[upper])
    return [replies.enabled(done)]


def _append(session: ImapSession, command: Append) -> list[Response]:
    """APPEND (APPENDUID only for a client that may read the mailbox: sealmail.imap.appending)."""
    out = appending.append(session, command)
    if session.denormalized(command.mailbox):  # RFC 9051 6.3.12: SHOULD say which name
        shown = session.external(session.internal(command.mailbox))
        out.insert(0, session.oldname(command.mailbox, shown))
    return out


def server_id() -> list[tuple[str, str | None]]:
    return [("name", "sealmail"), ("version", __version__)]


def _id(session: ImapSession, command: Id) -> list[Response]:
    return [replies.id_response(server_id())]


HANDLERS: dict[type[Command], Handler] = {
    Noop: _noop,
    Check: messages.check,
    Enable: _enable,
    Id: _id,
    Select: mailboxes.examine_or_select,
    Examine: mailboxes.examine_or_select,
    Create: mailboxes.create,
    Delete: mailboxes.delete,
    Rename: mailboxes.rename,
    Subscribe: mailboxes.subscribe,
    Unsubscribe: mailboxes.unsubscribe,
    List: mailboxes.list_command,
    Lsub: mailboxes.lsub,
    Status: mailboxes.status,
    Namespace: mailboxes.namespace,
    Append: _append,
    Close: messages.close,
    Unselect: messages.unselect,
    Expunge: messages.expunge,
    Store: messages.store,
    Copy: messages.copy_or_move,
    Move: messages.copy_or_move,
    Fetch: fetching.fetch,
    Search: searching.search,
    Sort: searching.sort,
    Thread: searching.thread,
    CancelUpdate: contexts.cancel_update,
    GenUrlAuth: urlauth.genurlauth,
    ResetKey: urlauth.resetkey,
    UrlFetch: urlauth.urlfetch,
    Notify: notify.notify,
    GetAcl: access.getacl,
    SetAcl: access.setacl,
    DeleteAcl: access.deleteacl,
    ListRights: access.listrights,
    MyRights: access.myrights,
    GetQuota: access.getquota,
    GetQuotaRoot: access.getquotaroot,
    SetQuota: access.setquota,
}
