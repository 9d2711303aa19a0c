"""IMAP commands as frozen dataclasses: what the parser produces and the host consumes.

Each class declares its wire `name` and the `states` it is legal in (RFC 9051 6.1-6.4 and each
extension's RFC); the connection checks `states` before the host sees a command. `render()` gives
the wire form (with literals inline), so parse(render(cmd)) == cmd, and a test client or proxy can
use the same classes. Mailbox names are kept as sent (modified UTF-7, or UTF-8 once UTF8=ACCEPT is
enabled); INBOX is normalized to "INBOX" because it is case-insensitive (RFC 9051 5.1).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from sealmail.proto.imap.append import AppendMessage, CatenatePart
from sealmail.proto.imap.fetch import MACROS, FetchAttribute, render_fetch_attribute
from sealmail.proto.imap.search import SearchKey, render_search_key
from sealmail.proto.imap.sequence import SequenceSet
from sealmail.proto.imap.state import ANY, AUTHENTICATED_OR_SELECTED, ConnectionState
from sealmail.proto.imap.syntax import (
    render_astring,
    render_list_mailbox,
    render_nstring,
    render_string,
)

__all__ = [
    "COMMANDS",
    "Append",
    "Authenticate",
    "CancelUpdate",
    "Capability",
    "Check",
    "Close",
    "Command",
    "Compress",
    "Copy",
    "Create",
    "Delete",
    "DeleteAcl",
    "Enable",
    "Examine",
    "Expunge",
    "Fetch",
    "GetAcl",
    "GetQuota",
    "GetQuotaRoot",
    "Id",
    "Idle",
    "List",
    "ListRights",
    "Login",
    "Logout",
    "Lsub",
    "Move",
    "MyRights",
    "Namespace",
    "Noop",
    "QresyncParameters",
    "Rename",
    "Search",
    "Select",
    "SetAcl",
    "SetQuota",
    "Sort",
    "SortCriterion",
    "StartTLS",
    "Status",
    "Store",
    "Subscribe",
    "Thread",
    "Unselect",
    "Unsubscribe",
]

_NOT_AUTH = frozenset({ConnectionState.NOT_AUTHENTICATED})
_SELECTED = frozenset({ConnectionState.SELECTED})
_ALL_MESSAGES = SearchKey("AND", (SearchKey("ALL"),))
_EVERY_MESSAGE = SequenceSet.all()


def _mailbox(name: str) -> bytes:
    return render_astring(name, utf8=True)


def _flags(flags: tuple[str, ...]) -> bytes:
    return b"(" + " ".join(flags).encode("ascii") + b")"


@dataclass(frozen=True, slots=True)
class Command:
    """Base of every command: the tag, and the class-level name and legal states."""

    tag: str
    name: ClassVar[str] = ""
    states: ClassVar[frozenset[ConnectionState]] = ANY

    @property
    def uid(self) -> bool:
        return False

    @property
    def wire_name(self) -> str:
        """The name as sent: "UID FETCH" for a UID command."""
        return f"UID {self.name}" if self.uid else self.name

    def arguments(self) -> bytes:
        """The arguments with their leading space ("" when the command takes none)."""
        return b""

    def render(self) -> bytes:
        return f"{self.tag} {self.wire_name}".encode("ascii") + self.arguments() + b"\r\n"


# -- any state (RFC 9051 6.1; RFC 2971 ID) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Capability(Command):
    name: ClassVar[str] = "CAPABILITY"


@dataclass(frozen=True, slots=True)
class Noop(Command):
    name: ClassVar[str] = "NOOP"


@dataclass(frozen=True, slots=True)
class Logout(Command):
    name: ClassVar[str] = "LOGOUT"


@dataclass(frozen=True, slots=True)
class Id(Command):
    """RFC 2971: `parameters` is None for NIL, else (field, value-or-None) pairs in order."""

    name: ClassVar[str] = "ID"
    parameters: tuple[tuple[str, str | None], ...] | None = None

    def arguments(self) -> bytes:
        if self.parameters is None:
            return b" NIL"
        items = [render_string(k, utf8=True) + b" " + render_nstring(v, utf8=True)
                 for k, v in self.parameters]
        return b" (" + b" ".join(items) + b")"


# -- not authenticated (RFC 9051 6.2; RFC 4959 SASL-IR) -----------------------------------------


@dataclass(frozen=True, slots=True)
class StartTLS(Command):
    name: ClassVar[str] = "STARTTLS"
    states: ClassVar[frozenset[ConnectionState]] = _NOT_AUTH


@dataclass(frozen=True, slots=True)
class Authenticate(Command):
    """`initial_response` is the still-base64 SASL-IR argument; "=" (empty response) is b""."""

    name: ClassVar[str] = "AUTHENTICATE"
    states: ClassVar[frozenset[ConnectionState]] = _NOT_AUTH
    mechanism: str = ""
    initial_response: bytes | None = None

    def arguments(self) -> bytes:
        wire = b" " + self.mechanism.encode("ascii")
        if self.initial_response is not None:
            wire += b" " + (self.initial_response or b"=")
        return wire


@dataclass(frozen=True, slots=True)
class Login(Command):
    name: ClassVar[str] = "LOGIN"
    states: ClassVar[frozenset[ConnectionState]] = _NOT_AUTH
    userid: str = ""
    password: str = ""

    def arguments(self) -> bytes:
        return b" " + render_astring(self.userid, True) + b" " + render_astring(self.password, True)

    def __repr__(self) -> str:  # never put a password in a log line
        return f"Login(tag={self.tag!r}, userid={self.userid!r}, password='***')"


# -- authenticated (RFC 9051 6.3 and extensions) -------------------------------------------------


@dataclass(frozen=True, slots=True)
class Enable(Command):
    """RFC 5161 3.1: "The ENABLE command is only valid in the authenticated state"."""

    name: ClassVar[str] = "ENABLE"
    states: ClassVar[frozenset[ConnectionState]] = frozenset({ConnectionState.AUTHENTICATED})
    capabilities: tuple[str, ...] = ()

    def arguments(self) -> bytes:
        return b"".join(b" " + c.encode("ascii") for c in self.capabilities)


@dataclass(frozen=True, slots=True)
class QresyncParameters:
    """RFC 7162 3.2.5: (uidvalidity modseq [known-uids] [(known-seqs known-uids)])."""

    uidvalidity: int
    modseq: int
    known_uids: SequenceSet | None = None
    known_sequence_set: SequenceSet | None = None
    known_uid_set: SequenceSet | None = None

    def render(self) -> bytes:
        wire = f"{self.uidvalidity} {self.modseq}".encode()
        if self.known_uids is not None:
            wire += b" " + str(self.known_uids).encode()
        if self.known_sequence_set is not None and self.known_uid_set is not None:
            wire += f" ({self.known_sequence_set} {self.known_uid_set})".encode()
        return b"(" + wire + b")"


@dataclass(frozen=True, slots=True)
class Select(Command):
    """SELECT; `condstore` / `qresync` are the RFC 7162 select parameters."""

    name: ClassVar[str] = "SELECT"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    condstore: bool = False
    qresync: QresyncParameters | None = None

    @property
    def readonly(self) -> bool:
        return False

    def arguments(self) -> bytes:
        params = []
        if self.condstore:
            params.append(b"CONDSTORE")
        if self.qresync is not None:
            params.append(b"QRESYNC " + self.qresync.render())
        wire = b" " + _mailbox(self.mailbox)
        return wire + (b" (" + b" ".join(params) + b")" if params else b"")


@dataclass(frozen=True, slots=True)
class Examine(Select):
    name: ClassVar[str] = "EXAMINE"

    @property
    def readonly(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class Create(Command):
    """`special_use` is RFC 6154 5.2's (USE (...)) parameter."""

    name: ClassVar[str] = "CREATE"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    special_use: tuple[str, ...] = ()

    def arguments(self) -> bytes:
        wire = b" " + _mailbox(self.mailbox)
        if self.special_use:
            wire += b" (USE " + _flags(self.special_use) + b")"
        return wire


@dataclass(frozen=True, slots=True)
class _OneMailbox(Command):
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.mailbox)


@dataclass(frozen=True, slots=True)
class Delete(_OneMailbox):
    name: ClassVar[str] = "DELETE"


@dataclass(frozen=True, slots=True)
class Subscribe(_OneMailbox):
    name: ClassVar[str] = "SUBSCRIBE"


@dataclass(frozen=True, slots=True)
class Unsubscribe(_OneMailbox):
    name: ClassVar[str] = "UNSUBSCRIBE"


@dataclass(frozen=True, slots=True)
class GetAcl(_OneMailbox):
    """RFC 4314 3.3."""

    name: ClassVar[str] = "GETACL"


@dataclass(frozen=True, slots=True)
class MyRights(_OneMailbox):
    """RFC 4314 3.5."""

    name: ClassVar[str] = "MYRIGHTS"


@dataclass(frozen=True, slots=True)
class GetQuotaRoot(_OneMailbox):
    """RFC 9208 4.3.2."""

    name: ClassVar[str] = "GETQUOTAROOT"


@dataclass(frozen=True, slots=True)
class Rename(Command):
    name: ClassVar[str] = "RENAME"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    new_name: str = ""

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.mailbox) + b" " + _mailbox(self.new_name)


@dataclass(frozen=True, slots=True)
class List(Command):
    """LIST with RFC 5258 LIST-EXTENDED, RFC 5819 LIST-STATUS and RFC 6154 SPECIAL-USE.

    `selection` is None when no selection options were given; `multiple` records a parenthesized
    pattern list; `return_options` is None without RETURN; `status_items` is RETURN's
    STATUS (...) list. So a plain `LIST "" *` renders back as it came.
    """

    name: ClassVar[str] = "LIST"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    reference: str = ""
    patterns: tuple[str, ...] = ("",)
    selection: tuple[str, ...] | None = None
    multiple: bool = False
    return_options: tuple[str, ...] | None = None
    status_items: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if not self.patterns or (len(self.patterns) > 1 and not self.multiple):
            raise ValueError("several patterns need multiple=True (a parenthesized list)")
        if self.status_items is not None and self.return_options is None:
            raise ValueError("STATUS is a RETURN option: return_options must not be None")

    @property
    def extended(self) -> bool:
        """RFC 5258 3: the extended form was used (its replies may differ)."""
        return self.selection is not None or self.multiple or self.return_options is not None

    def arguments(self) -> bytes:
        wire = b""
        if self.selection is not None:
            wire += b" (" + " ".join(self.selection).encode("ascii") + b")"
        wire += b" " + _mailbox(self.reference)
        rendered = [render_list_mailbox(p, utf8=True) for p in self.patterns]
        if self.multiple:
            wire += b" (" + b" ".join(rendered) + b")"
        else:
            wire += b" " + rendered[0]
        if self.return_options is not None or self.status_items is not None:
            options = [o.encode("ascii") for o in self.return_options or ()]
            if self.status_items is not None:
                options.append(b"STATUS (" + " ".join(self.status_items).encode("ascii") + b")")
            wire += b" RETURN (" + b" ".join(options) + b")"
        return wire


@dataclass(frozen=True, slots=True)
class Lsub(Command):
    name: ClassVar[str] = "LSUB"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    reference: str = ""
    pattern: str = ""

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.reference) + b" " + render_list_mailbox(self.pattern, True)


@dataclass(frozen=True, slots=True)
class Namespace(Command):
    """RFC 2342; RFC 9051 6.3.10."""

    name: ClassVar[str] = "NAMESPACE"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED


@dataclass(frozen=True, slots=True)
class Status(Command):
    """`items` upper case: MESSAGES UIDNEXT UIDVALIDITY UNSEEN DELETED SIZE RECENT HIGHESTMODSEQ."""

    name: ClassVar[str] = "STATUS"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    items: tuple[str, ...] = ()

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.mailbox) + b" (" + " ".join(self.items).encode() + b")"


@dataclass(frozen=True, slots=True)
class Append(Command):
    """APPEND. The fields below `mailbox` are the first message: `binary` is RFC 3516's
    literal8 form (~{n}); `utf8` is RFC 6855 4's `UTF8 (literal8)` data extension, legal only
    once UTF8=ACCEPT is enabled (the session checks); `catenate` holds RFC 4469's parts instead
    of `message`. `more` are the further messages of RFC 3502 MULTIAPPEND.
    """

    name: ClassVar[str] = "APPEND"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    flags: tuple[str, ...] = ()
    flag_list: bool = False  # a (possibly empty) flag list was given
    internaldate: datetime | None = None
    message: bytes = b""
    binary: bool = False
    utf8: bool = False
    catenate: tuple[CatenatePart, ...] | None = None
    more: tuple[AppendMessage, ...] = ()

    @property
    def messages(self) -> tuple[AppendMessage, ...]:
        """Every message of the command, in order."""
        first = AppendMessage(self.flags, self.flag_list, self.internaldate, self.message,
                              self.binary, self.utf8, self.catenate)
        return (first, *self.more)

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.mailbox) + b"".join(m.render() for m in self.messages)


@dataclass(frozen=True, slots=True)
class Idle(Command):
    """RFC 2177; RFC 9051 6.3.13. The connection reads DONE after the host's continuation."""

    name: ClassVar[str] = "IDLE"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED


@dataclass(frozen=True, slots=True)
class _MailboxIdentifier(Command):
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    identifier: str = ""

    def arguments(self) -> bytes:
        return b" " + _mailbox(self.mailbox) + b" " + render_astring(self.identifier, True)


@dataclass(frozen=True, slots=True)
class DeleteAcl(_MailboxIdentifier):
    """RFC 4314 3.2."""

    name: ClassVar[str] = "DELETEACL"


@dataclass(frozen=True, slots=True)
class ListRights(_MailboxIdentifier):
    """RFC 4314 3.4."""

    name: ClassVar[str] = "LISTRIGHTS"


@dataclass(frozen=True, slots=True)
class SetAcl(Command):
    """RFC 4314 3.1: `rights` may start with "+" or "-" (mod-rights)."""

    name: ClassVar[str] = "SETACL"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str = ""
    identifier: str = ""
    rights: str = ""

    def arguments(self) -> bytes:
        return (b" " + _mailbox(self.mailbox) + b" " + render_astring(self.identifier, True)
                + b" " + render_astring(self.rights))


@dataclass(frozen=True, slots=True)
class GetQuota(Command):
    """RFC 9208 4.3.1."""

    name: ClassVar[str] = "GETQUOTA"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    root: str = ""

    def arguments(self) -> bytes:
        return b" " + render_astring(self.root, True)


@dataclass(frozen=True, slots=True)
class SetQuota(Command):
    """RFC 9208 4.3.3: `limits` are (resource name upper case, limit) pairs."""

    name: ClassVar[str] = "SETQUOTA"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    root: str = ""
    limits: tuple[tuple[str, int], ...] = ()

    def arguments(self) -> bytes:
        items = " ".join(f"{name} {limit}" for name, limit in self.limits)
        return b" " + render_astring(self.root, True) + b" (" + items.encode() + b")"


@dataclass(frozen=True, slots=True)
class Compress(Command):
    """RFC 4978: COMPRESS DEFLATE."""

    name: ClassVar[str] = "COMPRESS"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mechanism: str = "DEFLATE"

    def arguments(self) -> bytes:
        return b" " + self.mechanism.encode("ascii")


# -- selected (RFC 9051 6.4 and extensions) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Check(Command):
    """RFC 3501 6.4.1 (gone in RFC 9051, still accepted from IMAP4rev1 clients)."""

    name: ClassVar[str] = "CHECK"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Close(Command):
    name: ClassVar[str] = "CLOSE"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Unselect(Command):
    """RFC 3691; RFC 9051 6.4.2."""

    name: ClassVar[str] = "UNSELECT"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED


@dataclass(frozen=True, slots=True)
class Expunge(Command):
    """EXPUNGE, or UID EXPUNGE with `uid_set` (RFC 4315 2.1)."""

    name: ClassVar[str] = "EXPUNGE"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    uid_set: SequenceSet | None = None

    @property
    def uid(self) -> bool:
        return self.uid_set is not None

    def arguments(self) -> bytes:
        return b"" if self.uid_set is None else b" " + str(self.uid_set).encode()


@dataclass(frozen=True, slots=True)
class Search(Command):
    """SEARCH / UID SEARCH; `return_options` is None without RETURN (else RFC 4731 ESEARCH)."""

    name: ClassVar[str] = "SEARCH"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    criteria: SearchKey = _ALL_MESSAGES
    charset: str | None = None
    return_options: tuple[str, ...] | None = None
    by_uid: bool = False

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        wire = b""
        if self.return_options is not None:
            wire += b" RETURN (" + " ".join(self.return_options).encode() + b")"
        if self.charset is not None:
            wire += b" CHARSET " + self.charset.encode()
        return wire + b" " + render_search_key(self.criteria, top=True)


@dataclass(frozen=True, slots=True)
class Fetch(Command):
    """FETCH / UID FETCH with RFC 7162 CHANGEDSINCE and VANISHED modifiers."""

    name: ClassVar[str] = "FETCH"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    sequence_set: SequenceSet = _EVERY_MESSAGE
    attributes: tuple[FetchAttribute, ...] = ()
    macro: str | None = None
    changed_since: int | None = None
    vanished: bool = False
    by_uid: bool = False

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        wire = b" " + str(self.sequence_set).encode() + b" "
        if self.macro is not None:
            wire += self.macro.encode()
        elif len(self.attributes) == 1 and self.attributes[0].name not in MACROS:
            wire += render_fetch_attribute(self.attributes[0])
        else:
            wire += b"(" + b" ".join(render_fetch_attribute(a) for a in self.attributes) + b")"
        modifiers = []
        if self.changed_since is not None:
            modifiers.append(f"CHANGEDSINCE {self.changed_since}".encode())
        if self.vanished:
            modifiers.append(b"VANISHED")
        if modifiers:
            wire += b" (" + b" ".join(modifiers) + b")"
        return wire


@dataclass(frozen=True, slots=True)
class Store(Command):
    """STORE / UID STORE. `mode` is "" (replace), "+" (add) or "-" (remove)."""

    name: ClassVar[str] = "STORE"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    sequence_set: SequenceSet = _EVERY_MESSAGE
    mode: str = ""
    silent: bool = False
    flags: tuple[str, ...] = ()
    unchanged_since: int | None = None
    by_uid: bool = False

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        wire = b" " + str(self.sequence_set).encode()
        if self.unchanged_since is not None:
            wire += f" (UNCHANGEDSINCE {self.unchanged_since})".encode()
        item = f"{self.mode}FLAGS{'.SILENT' if self.silent else ''}".encode()
        return wire + b" " + item + b" " + _flags(self.flags)


@dataclass(frozen=True, slots=True)
class Copy(Command):
    name: ClassVar[str] = "COPY"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    sequence_set: SequenceSet = _EVERY_MESSAGE
    mailbox: str = ""
    by_uid: bool = False

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        return b" " + str(self.sequence_set).encode() + b" " + _mailbox(self.mailbox)


@dataclass(frozen=True, slots=True)
class Move(Copy):
    """RFC 6851."""

    name: ClassVar[str] = "MOVE"


@dataclass(frozen=True, slots=True)
class SortCriterion:
    """RFC 5256 sort-criterion: a key (ARRIVAL CC DATE FROM SIZE SUBJECT TO, RFC 5957's
    DISPLAYFROM DISPLAYTO) and whether REVERSE precedes it."""

    key: str
    reverse: bool = False

    def render(self) -> bytes:
        return (b"REVERSE " if self.reverse else b"") + self.key.encode()


@dataclass(frozen=True, slots=True)
class Sort(Command):
    """RFC 5256 SORT / UID SORT (the charset is mandatory there)."""

    name: ClassVar[str] = "SORT"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    criteria: tuple[SortCriterion, ...] = ()
    charset: str = "UTF-8"
    keys: SearchKey = _ALL_MESSAGES
    by_uid: bool = False
    return_options: tuple[str, ...] | None = None  # RFC 5267 ESORT / CONTEXT=SORT

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        criteria = b" ".join(c.render() for c in self.criteria)
        wire = b""
        if self.return_options is not None:
            wire = b" RETURN (" + " ".join(self.return_options).encode() + b")"
        return (wire + b" (" + criteria + b") " + self.charset.encode() + b" "
                + render_search_key(self.keys, top=True))


@dataclass(frozen=True, slots=True)
class CancelUpdate(Command):
    """RFC 5267 4.2: end the UPDATE contexts of the searches with these tags."""

    name: ClassVar[str] = "CANCELUPDATE"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    tags: tuple[str, ...] = ()

    def arguments(self) -> bytes:
        return b"".join(b" " + render_string(t) for t in self.tags)


@dataclass(frozen=True, slots=True)
class Thread(Command):
    """RFC 5256 THREAD / UID THREAD: algorithm ORDEREDSUBJECT or REFERENCES."""

    name: ClassVar[str] = "THREAD"
    states: ClassVar[frozenset[ConnectionState]] = _SELECTED
    algorithm: str = "REFERENCES"
    charset: str = "UTF-8"
    keys: SearchKey = _ALL_MESSAGES
    by_uid: bool = False

    @property
    def uid(self) -> bool:
        return self.by_uid

    def arguments(self) -> bytes:
        return (f" {self.algorithm} {self.charset} ".encode()
                + render_search_key(self.keys, top=True))


COMMANDS: dict[str, type[Command]] = {
    cls.name: cls
    for cls in (
        Capability, Noop, Logout, Id, StartTLS, Authenticate, Login, Enable, Select, Examine,
        Create, Delete, Subscribe, Unsubscribe, GetAcl, MyRights, GetQuotaRoot, Rename, List,
        Lsub, Namespace, Status, Append, Idle, DeleteAcl, ListRights, SetAcl, GetQuota,
        SetQuota, Compress, Check, Close, Unselect, Expunge, Search, Fetch, Store, Copy, Move,
        Sort, Thread, CancelUpdate,
    )
}
