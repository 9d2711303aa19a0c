"""The IMAP command parser: one assembled command in, one `Command` out, or a typed error.

    command = tag SP (command-any / command-auth / command-nonauth / command-select) CRLF

The input is the whole command as it came over the wire, literals in place and the final CRLF
included (what `Command.render()` gives and what the connection assembles). Errors are
`BadCommand` subclasses carrying the tag when one could be read, so the caller sends
`error.reply_bytes()` as is; an unsupported SEARCH charset is a `CommandRefused` (tagged NO).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from sealmail.proto.imap.append import parse_append_messages
from sealmail.proto.imap.commands import (
    Append,
    Authenticate,
    CancelUpdate,
    Capability,
    Check,
    Close,
    Command,
    Compress,
    Copy,
    Create,
    Delete,
    DeleteAcl,
    Enable,
    Examine,
    Expunge,
    Fetch,
    GetAcl,
    GetQuota,
    GetQuotaRoot,
    Id,
    Idle,
    List,
    ListRights,
    Login,
    Logout,
    Lsub,
    Move,
    MyRights,
    Namespace,
    Noop,
    QresyncParameters,
    Rename,
    Search,
    Select,
    SetAcl,
    SetQuota,
    Sort,
    SortCriterion,
    StartTLS,
    Status,
    Store,
    Subscribe,
    Thread,
    Unselect,
    Unsubscribe,
)
from sealmail.proto.imap.errors import BadCommand, ImapError, LiteralTooLarge, UnknownCommand
from sealmail.proto.imap.fetch import (
    MACROS,
    FetchAttribute,
    parse_fetch_attribute,
    parse_fetch_attribute_list,
)
from sealmail.proto.imap.notify import PARSERS as NOTIFY_PARSERS
from sealmail.proto.imap.returns import parse_return_options
from sealmail.proto.imap.search import parse_charset, parse_search_program
from sealmail.proto.imap.sequence import SequenceSet
from sealmail.proto.imap.syntax import TAG, Memo, Reader
from sealmail.proto.imap.urlauth import PARSERS as URLAUTH_PARSERS

__all__ = ["ParserLimits", "parse_command", "peek_command"]

STATUS_ITEMS = frozenset({
    "MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "DELETED", "SIZE", "RECENT", "HIGHESTMODSEQ",
    "APPENDLIMIT", "MAILBOXID",
})
SORT_KEYS = frozenset({
    "ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO", "DISPLAYFROM", "DISPLAYTO",
})
THREAD_ALGORITHMS = frozenset({"ORDEREDSUBJECT", "REFERENCES"})
LIST_SELECTION = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})
LIST_RETURN = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE", "MYRIGHTS"})
_UID_COMMANDS = frozenset({"COPY", "MOVE", "FETCH", "SEARCH", "STORE", "EXPUNGE", "SORT", "THREAD"})
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_NAME = re.compile(rb"[A-Za-z]+")
_STORE_ITEM = re.compile(rb"([+-]?)FLAGS(\.SILENT)?", re.IGNORECASE)
# ASTRING-CHAR / list-char (RFC 9051 9) plus 8-bit octets, for `_Utf8Reader`.
_ASTRING_UTF8 = re.compile(rb'[^(){ \x00-\x1f\x7f%*"\\]+')
_LIST_MAILBOX_UTF8 = re.compile(rb'[^(){ \x00-\x1f\x7f"\\]+')


@dataclass(frozen=True, slots=True)
class ParserLimits:
    """Bounds the grammar does not set: parenthesis / SEARCH nesting and items per command."""

    max_depth: int = 20
    max_items: int = 10000

    def __post_init__(self) -> None:
        if self.max_depth < 2 or self.max_items < 8:
            raise ValueError("max_depth must be at least 2 and max_items at least 8")


def peek_command(line: bytes) -> tuple[str | None, str | None]:
    """(tag, upper-case command name) of a command's first line, as far as they can be read.

    "UID FETCH" comes back as "UID FETCH". Used before a whole command is here, e.g. to pick the
    literal limit for APPEND and to tag errors about a command that is never fully read.
    """
    match = TAG.match(line)
    if not match or line[match.end() : match.end() + 1] != b" ":
        return None, None
    tag = match.group(0).decode("ascii")
    name = _NAME.match(line, match.end() + 1)
    if not name:
        return tag, None
    upper = name.group(0).decode("ascii").upper()
    if upper == "UID":
        sub = _NAME.match(line, name.end() + 1)
        if sub and line[name.end() : name.end() + 1] == b" ":
            upper = f"UID {sub.group(0).decode('ascii').upper()}"
    return tag, upper


class _Utf8Reader(Reader):
    """The reader once UTF8=ACCEPT or IMAP4rev2 is enabled: an astring or a LIST pattern may
    also be an unquoted run of UTF-8 (`SELECT Café`).

    RFC 9051 9 and RFC 6855 3 keep atoms 7-bit and put UTF-8 in quoted strings, but clients
    such as Python's imaplib send a mailbox name as given, unquoted; the octets must still be
    valid UTF-8 (BAD otherwise). Tags, command names and keywords stay 7-bit atoms.
    """

    __slots__ = ()

    def astring(self) -> bytes:
        if self.peek() in (0x22, 0x7B):
            return self.string()
        raw = self._match(_ASTRING_UTF8, "an atom or string")
        self.text(raw)  # valid UTF-8, or BAD
        return raw

    def list_mailbox(self) -> str:
        if self.peek() in (0x22, 0x7B):
            return self.text(self.string())
        return self.text(self._match(_LIST_MAILBOX_UTF8, "a mailbox pattern"))


def parse_command(data: bytes, limits: ParserLimits | None = None, utf8: bool = False) -> Command:
    """Parse one assembled command (final CRLF included); `utf8` once UTF8=ACCEPT or IMAP4rev2
    is enabled (unquoted UTF-8 mailbox names are then accepted, see `_Utf8Reader`)."""
    limits = limits or ParserLimits()
    if not data.endswith(b"\r\n"):
        raise BadCommand("Command does not end with CRLF")
    return _parse(data, limits, utf8)


def _parse(data: bytes, limits: ParserLimits, utf8: bool) -> Command:
    reader_class = _Utf8Reader if utf8 else Reader
    reader = reader_class(data[:-2], limits.max_depth, limits.max_items)
    head = _head(reader)
    if head is not None:
        tag, name, by_uid, parse = head
    else:
        try:
            tag = reader.tag()
        except ImapError:
            raise BadCommand("Missing or invalid tag") from None
    try:
        if head is None:
            name, by_uid, parse = _command_name(reader)
        try:
            command = parse(reader, tag, by_uid)
            reader.end()
        except BadCommand as error:
            if name in _CREDENTIAL_COMMANDS and not isinstance(error, LiteralTooLarge):
                # The arguments are a user name and password (or a SASL response): a syntax
                # error must never echo them, to the client or into the log.
                raise BadCommand(f"Invalid {name} arguments") from None
            raise
        return command
    except ImapError as error:
        raise error.with_tag(tag) from None


def _command_name(reader: Reader) -> tuple[str, bool, _Parse]:
    """After the tag: the command's name, UID or not, and its grammar (the general way)."""
    reader.sp()
    name = reader.atom().upper()
    by_uid = False
    if name == "UID":
        reader.sp()
        name = reader.atom().upper()
        if name not in _UID_COMMANDS:
            raise UnknownCommand(f"Unknown UID command {name[:32]}")
        by_uid = True
    parse = _PARSERS.get(name)
    if parse is None:
        raise UnknownCommand(f"Unknown command {name[:32]}")
    return name, by_uid, parse


# tag SP ["UID" SP] name, the name a run of letters ending the line or before SP: one regex step
# for what `Reader.tag` and `_command_name` read in five. Anything else (a name with digits, UID
# before a command it does not go with, an unknown name) takes the general way, which gives the
# errors.
_HEAD = re.compile(rb"(" + TAG.pattern + rb") (?:([Uu][Ii][Dd]) )?([A-Za-z]+)(?= |\Z)")


def _head(reader: Reader) -> tuple[str, str, bool, _Parse] | None:
    """(tag, name, by UID, grammar) when the command starts the usual way, else None."""
    match = _HEAD.match(reader.data)
    if match is None:
        return None
    tag, uid, raw_name = match.groups()
    name = raw_name.decode("ascii").upper()
    by_uid = uid is not None
    parse = _PARSERS.get(name)
    if parse is None or (by_uid and name not in _UID_COMMANDS) or name == "UID":
        return None
    reader.pos = match.end()
    return tag.decode("ascii"), name, by_uid, parse


_CREDENTIAL_COMMANDS = frozenset({"LOGIN", "AUTHENTICATE"})


# -- per-command grammar --------------------------------------------------------------------------

_Parse = Callable[[Reader, str, bool], Command]


def _no_args(cls: type[Command]) -> _Parse:
    def parse(reader: Reader, tag: str, by_uid: bool) -> Command:
        return cls(tag)

    return parse


def _one_mailbox(cls: type[Delete | Subscribe | Unsubscribe | GetAcl | MyRights | GetQuotaRoot]
                 ) -> _Parse:
    def parse(reader: Reader, tag: str, by_uid: bool) -> Command:
        reader.sp()
        return cls(tag, reader.mailbox())

    return parse


def _atom_list(reader: Reader, allowed: frozenset[str] | None, what: str) -> tuple[str, ...]:
    def item(r: Reader) -> str:
        value = r.atom().upper()
        if allowed is not None and value not in allowed:
            raise BadCommand(f"Unknown {what} {value[:32]}")
        return value

    return tuple(reader.paren_list(item))




_SET_RUN = re.compile(rb"[^ )]*")  # a sequence set ends at SP, ")" or the end of the line


def _sequence_set(reader: Reader) -> SequenceSet:
    # One regex step, not a Python step per octet: imaptest's FETCH of 100 random messages
    # sends a set of ~300 octets, which took ~100 us octet by octet.
    start = reader.pos
    match = _SET_RUN.match(reader.data, start)
    assert match is not None  # the pattern matches the empty string
    reader.pos = match.end()
    if start == reader.pos:
        raise reader.fail("a sequence set")
    return SequenceSet.parse(reader.data[start : reader.pos].decode("ascii", "replace"))


# What follows the sequence set of a FETCH or STORE, parsed once: clients send the same few
# item lists again and again (imaptest's FETCH picks from 7 items and 7 header fields; a mail
# client's flag poll is always the same) with a different sequence set, and parsing them is about
# half of such a command's parse. The result is a function of the tail's octets alone (plus the
# reader's kind and limits and UID or not, in the key): the reader has counted no item and
# entered no list when the tail starts, and only a tail parsed to the end is kept, so a hit gives
# the same command and a tail that fails is parsed, and fails, the same way every time.
# Bounded: small tails, and `Memo`'s count.
REMEMBERED_MAX = 512  # distinct tails
REMEMBERED_TAIL = 512  # octets; a longer tail (a literal, a long header list) is parsed each time
_REMEMBERED: Memo[tuple[object, ...], object] = Memo(REMEMBERED_MAX)
_T = TypeVar("_T")


def _remembered(reader: Reader, by_uid: bool, parse: Callable[[Reader, bool], _T]) -> _T:
    """`parse(reader, by_uid)` of the rest of the command, from the memo when it is there."""
    start = reader.pos
    if len(reader.data) - start > REMEMBERED_TAIL or not reader.untouched():
        return parse(reader, by_uid)
    key = (parse, reader.data[start:], type(reader), reader.max_depth, reader.max_items, by_uid)
    seen = _REMEMBERED.get(key)
    if seen is not None:
        reader.pos = len(reader.data)
        return cast(_T, seen)
    value = parse(reader, by_uid)
    if reader.at_end() and _REMEMBERED.wanted(key):
        _REMEMBERED.keep(key, value)
    return value


def _id(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 2971 3.3: id-params-list = "(" *(string SP nstring) ")" / nil
    reader.sp()
    if reader.startswith_word(b"NIL"):
        reader.pos += 3
        return Id(tag, None)
    reader.expect(b"(", "'(' or NIL")
    reader.enter()
    pairs: list[tuple[str, str | None]] = []
    while reader.peek() != 0x29:
        if pairs:
            reader.sp()
        reader.count_item()
        key = reader.text(reader.string())
        reader.sp()
        value = reader.nstring()
        pairs.append((key, None if value is None else reader.text(value)))
    reader.expect(b")", "')'")
    reader.leave()
    return Id(tag, tuple(pairs))


def _authenticate(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    mechanism = reader.atom().upper()
    initial: bytes | None = None
    if reader.peek() == 0x20:
        # RFC 4959: initial-response = base64 / "=" (the empty response)
        reader.sp()
        start = reader.pos
        if reader.at_end():
            # A trailing space and no response (mutt 2.2 sends it): no initial response, as
            # Dovecot and Cyrus take it.
            return Authenticate(tag, mechanism, None)
        if reader.peek() == 0x3D:
            reader.pos += 1
            initial = b""
        else:
            match = _BASE64.match(reader.data, reader.pos)
            if not match or match.end() == start:
                raise reader.fail("a base64 initial response")
            reader.pos = match.end()
            initial = match.group(0)
            try:
                base64.b64decode(initial, validate=True)
            except binascii.Error:
                raise BadCommand("Invalid base64 initial response") from None
    return Authenticate(tag, mechanism, initial)


def _login(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    userid = reader.astring_text()
    reader.sp()
    return Login(tag, userid, reader.astring_text())


def _enable(reader: Reader, tag: str, by_uid: bool) -> Command:
    capabilities = []
    while reader.peek() == 0x20:
        reader.pos += 1
        reader.count_item()
        capabilities.append(reader.atom().upper())
    if not capabilities:
        raise reader.fail("a capability")
    return Enable(tag, tuple(capabilities))


def _select(cls: type[Select]) -> _Parse:
    def parse(reader: Reader, tag: str, by_uid: bool) -> Command:
        reader.sp()
        mailbox = reader.mailbox()
        condstore = False
        qresync: QresyncParameters | None = None
        if reader.peek() == 0x20:
            # select-params = SP "(" select-param *(SP select-param) ")"   (RFC 4466, RFC 7162)
            reader.sp()
            reader.expect(b"(", "'('")
            reader.enter()
            while True:
                reader.count_item()
                param = reader.atom().upper()
                if param == "CONDSTORE":
                    condstore = True
                elif param == "QRESYNC":
                    reader.sp()
                    qresync = _qresync(reader)
                else:
                    raise BadCommand(f"Unknown SELECT parameter {param[:32]}")
                if reader.peek() != 0x20:
                    break
                reader.pos += 1
            reader.expect(b")", "')'")
            reader.leave()
        return cls(tag, mailbox, condstore, qresync)

    return parse


def _qresync(reader: Reader) -> QresyncParameters:
    # RFC 7162 3.2.5: "(" uidvalidity SP mod-sequence-value [SP known-uids]
    #                     [SP seq-match-data] ")"
    reader.expect(b"(", "'('")
    reader.enter()
    uidvalidity = reader.nz_number()
    reader.sp()
    modseq = reader.nz_number(0x7FFFFFFFFFFFFFFF)
    known_uids = known_seqs = known_uid_set = None
    if reader.peek() == 0x20 and reader.data[reader.pos + 1 : reader.pos + 2] != b"(":
        reader.sp()
        known_uids = _sequence_set(reader)
    if reader.peek() == 0x20:
        reader.sp()
        reader.expect(b"(", "'('")
        known_seqs = _sequence_set(reader)
        reader.sp()
        known_uid_set = _sequence_set(reader)
        reader.expect(b")", "')'")
    reader.expect(b")", "')'")
    reader.leave()
    return QresyncParameters(uidvalidity, modseq, known_uids, known_seqs, known_uid_set)


def _create(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    mailbox = reader.mailbox()
    special_use: tuple[str, ...] = ()
    if reader.peek() == 0x20:
        # RFC 6154 5.2: create-param =/ "USE" SP "(" [use-attr *(SP use-attr)] ")"
        reader.sp()
        reader.expect(b"(", "'('")
        reader.expect_word(b"USE")
        reader.sp()
        special_use = reader.flag_list()
        reader.expect(b")", "')'")
    return Create(tag, mailbox, special_use)


def _rename(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    old = reader.mailbox()
    reader.sp()
    return Rename(tag, old, reader.mailbox())


def _list(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 5258 6: list = "LIST" [SP list-select-opts] SP mailbox SP mbox-or-pat
    #                    [SP list-return-opts]
    reader.sp()
    selection: tuple[str, ...] | None = None
    if reader.peek() == 0x28:
        selection = _atom_list(reader, LIST_SELECTION, "LIST selection option")
        if "RECURSIVEMATCH" in selection and not set(selection) - {"RECURSIVEMATCH", "REMOTE"}:
            # RFC 9051 6.3.9.1 (RFC 5258 3.1): "MUST return a BAD tagged response in such case".
            raise BadCommand("RECURSIVEMATCH needs another selection option")
        reader.sp()
    reference = reader.mailbox()
    reader.sp()
    multiple = reader.peek() == 0x28
    if multiple:
        patterns = tuple(reader.paren_list(lambda r: r.list_mailbox(), allow_empty=False))
    else:
        patterns = (reader.list_mailbox(),)
    return_options: tuple[str, ...] | None = None
    status_items: tuple[str, ...] | None = None
    if reader.peek() == 0x20:
        reader.sp()
        reader.expect_word(b"RETURN")
        reader.sp()
        options: list[str] = []

        def option(r: Reader) -> str:
            nonlocal status_items
            value = r.atom().upper()
            if value == "STATUS":  # RFC 5819
                r.sp()
                status_items = _atom_list(r, STATUS_ITEMS, "STATUS item")
                return value
            if value not in LIST_RETURN:
                raise BadCommand(f"Unknown LIST return option {value[:32]}")
            return value

        options = [o for o in reader.paren_list(option) if o != "STATUS"]
        return_options = tuple(options)
    return List(tag, reference, patterns, selection, multiple, return_options, status_items)


def _lsub(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    reference = reader.mailbox()
    reader.sp()
    return Lsub(tag, reference, reader.list_mailbox())


def _status(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    items = tuple(reader.paren_list(lambda r: _status_item(r), allow_empty=False))
    return Status(tag, mailbox, items)


def _status_item(reader: Reader) -> str:
    value = reader.atom().upper()
    if value not in STATUS_ITEMS:
        raise BadCommand(f"Unknown STATUS item {value[:32]}")
    return value


def _append(reader: Reader, tag: str, by_uid: bool) -> Command:
    # append = "APPEND" SP mailbox 1*append-message   (RFC 3502 6; RFC 4469 5; RFC 6855 4)
    reader.sp()
    mailbox = reader.mailbox()
    first, *more = parse_append_messages(reader)
    return Append(tag, mailbox, first.flags, first.flag_list, first.internaldate, first.message,
                  first.binary, first.utf8, first.catenate, tuple(more))


def _mailbox_identifier(cls: type[DeleteAcl | ListRights]) -> _Parse:
    def parse(reader: Reader, tag: str, by_uid: bool) -> Command:
        reader.sp()
        mailbox = reader.mailbox()
        reader.sp()
        return cls(tag, mailbox, reader.astring_text())

    return parse


def _setacl(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    mailbox = reader.mailbox()
    reader.sp()
    identifier = reader.astring_text()
    reader.sp()
    return SetAcl(tag, mailbox, identifier, reader.astring_text())


def _getquota(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    return GetQuota(tag, reader.astring_text())


def _setquota(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 9208 4.3.3: setquota-list = "(" [setquota-resource *(SP setquota-resource)] ")"
    reader.sp()
    root = reader.astring_text()
    reader.sp()

    def resource(r: Reader) -> tuple[str, int]:
        name = r.atom().upper()
        r.sp()
        return name, r.number64()

    return SetQuota(tag, root, tuple(reader.paren_list(resource)))


def _compress(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    return Compress(tag, reader.atom().upper())


def _expunge(reader: Reader, tag: str, by_uid: bool) -> Command:
    if not by_uid:
        return Expunge(tag)
    reader.sp()  # RFC 4315 2.1: uid-expunge = "UID" SP "EXPUNGE" SP sequence-set
    return Expunge(tag, _sequence_set(reader))


def _search(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    return_options: tuple[str, ...] | None = None
    if reader.startswith_word(b"RETURN"):
        # RFC 4731 3: search-return-opts = SP "RETURN" SP "(" [search-return-opt ...] ")"
        reader.pos += len(b"RETURN")
        reader.sp()
        return_options = parse_return_options(reader)
        reader.sp()
    charset, criteria = parse_search_program(reader)
    return Search(tag, criteria, charset, return_options, by_uid)


_FetchItems = tuple[tuple[FetchAttribute, ...], str | None, int | None, bool]


def _fetch(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    sequence_set = _sequence_set(reader)
    reader.sp()
    attributes, macro, changed_since, vanished = _remembered(reader, by_uid, _fetch_items)
    return Fetch(tag, sequence_set, attributes, macro, changed_since, vanished, by_uid)


def _fetch_items(reader: Reader, by_uid: bool) -> _FetchItems:
    """What follows FETCH's sequence set: the items and the modifiers."""
    macro: str | None = None
    if reader.peek() == 0x28:
        attributes = parse_fetch_attribute_list(reader) or tuple(
            reader.paren_list(parse_fetch_attribute, allow_empty=False))
    else:
        for name in MACROS:
            if reader.startswith_word(name.encode()):
                reader.pos += len(name)
                macro = name
                break
        attributes = MACROS[macro] if macro else (parse_fetch_attribute(reader),)
    changed_since: int | None = None
    vanished = False
    if reader.peek() == 0x20:
        # RFC 7162 3.1.4.1 and 3.2.6: fetch-modifier = CHANGEDSINCE mod-sequence-valzer / VANISHED
        reader.sp()

        def modifier(r: Reader) -> str:
            nonlocal changed_since, vanished
            name = r.atom().upper()
            if name == "CHANGEDSINCE":
                r.sp()
                changed_since = r.number(0x7FFFFFFFFFFFFFFF)
            elif name == "VANISHED":
                vanished = True
            else:
                raise BadCommand(f"Unknown FETCH modifier {name[:32]}")
            return name

        reader.paren_list(modifier, allow_empty=False)
        if vanished and (not by_uid or changed_since is None):
            # RFC 7162 3.2.6: VANISHED only with UID FETCH and CHANGEDSINCE.
            raise BadCommand("VANISHED needs UID FETCH with CHANGEDSINCE")
    return attributes, macro, changed_since, vanished


_StoreItems = tuple[str, bool, tuple[str, ...], int | None]


def _store(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    sequence_set = _sequence_set(reader)
    reader.sp()
    mode, silent, flags, unchanged_since = _remembered(reader, by_uid, _store_items)
    return Store(tag, sequence_set, mode, silent, flags, unchanged_since, by_uid)


def _store_items(reader: Reader, by_uid: bool) -> _StoreItems:
    """What follows STORE's sequence set: the modifier, the kind of change and the flags."""
    unchanged_since: int | None = None
    if reader.peek() == 0x28:
        # RFC 7162 3.1.3: store-modifier = "UNCHANGEDSINCE" SP mod-sequence-valzer
        reader.expect(b"(", "'('")
        reader.expect_word(b"UNCHANGEDSINCE")
        reader.sp()
        unchanged_since = reader.number(0x7FFFFFFFFFFFFFFF)
        reader.expect(b")", "')'")
        reader.sp()
    match = _STORE_ITEM.match(reader.data, reader.pos)
    if not match:
        raise reader.fail("FLAGS, +FLAGS or -FLAGS")
    reader.pos = match.end()
    mode = match.group(1).decode()
    silent = match.group(2) is not None
    reader.sp()
    if reader.peek() == 0x28:
        flags = reader.flag_list()
    else:
        items = [reader.flag()]
        while reader.peek() == 0x20:
            reader.pos += 1
            reader.count_item()
            items.append(reader.flag())
        flags = tuple(items)
    return mode, silent, flags, unchanged_since


def _copy(cls: type[Copy]) -> _Parse:
    def parse(reader: Reader, tag: str, by_uid: bool) -> Command:
        reader.sp()
        sequence_set = _sequence_set(reader)
        reader.sp()
        return cls(tag, sequence_set, reader.mailbox(), by_uid)

    return parse


def _sort(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 5256: sort = ["UID" SP] "SORT" [search-return-opts] SP sort-criteria SP
    # search-criteria (RFC 5267 3)
    reader.sp()
    return_options: tuple[str, ...] | None = None
    if reader.startswith_word(b"RETURN"):
        reader.pos += len(b"RETURN")
        reader.sp()
        return_options = parse_return_options(reader)
        if "SAVE" in return_options:
            raise BadCommand("SAVE is not a SORT return option")  # RFC 5267 3
        reader.sp()

    def criterion(r: Reader) -> SortCriterion:
        reverse = r.startswith_word(b"REVERSE")
        if reverse:
            r.pos += len(b"REVERSE")
            r.sp()
        key = r.atom().upper()
        if key not in SORT_KEYS:
            raise BadCommand(f"Unknown sort key {key[:32]}")
        return SortCriterion(key, reverse)

    criteria = tuple(reader.paren_list(criterion, allow_empty=False))
    reader.sp()
    charset = parse_charset(reader)
    reader.sp()
    _, keys = parse_search_program(reader, allow_charset=False)
    return Sort(tag, criteria, charset, keys, by_uid, return_options)


def _cancelupdate(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 5267 4.2: cancelupdate = "CANCELUPDATE" 1*(SP quoted)
    tags = []
    while not reader.at_end():
        reader.sp()
        reader.count_item()
        tags.append(reader.text(reader.quoted()))
    if not tags:
        raise reader.fail("a quoted tag")
    return CancelUpdate(tag, tuple(tags))


def _thread(reader: Reader, tag: str, by_uid: bool) -> Command:
    # RFC 5256: thread = ["UID" SP] "THREAD" SP thread-alg SP search-criteria
    reader.sp()
    algorithm = reader.atom().upper()
    if algorithm not in THREAD_ALGORITHMS:
        raise BadCommand(f"Unknown threading algorithm {algorithm[:32]}")
    reader.sp()
    charset = parse_charset(reader)
    reader.sp()
    _, keys = parse_search_program(reader, allow_charset=False)
    return Thread(tag, algorithm, charset, keys, by_uid)


_PARSERS: dict[str, _Parse] = {
    "CAPABILITY": _no_args(Capability),
    "NOOP": _no_args(Noop),
    "LOGOUT": _no_args(Logout),
    "ID": _id,
    "STARTTLS": _no_args(StartTLS),
    "AUTHENTICATE": _authenticate,
    "LOGIN": _login,
    "ENABLE": _enable,
    "SELECT": _select(Select),
    "EXAMINE": _select(Examine),
    "CREATE": _create,
    "DELETE": _one_mailbox(Delete),
    "SUBSCRIBE": _one_mailbox(Subscribe),
    "UNSUBSCRIBE": _one_mailbox(Unsubscribe),
    "GETACL": _one_mailbox(GetAcl),
    "MYRIGHTS": _one_mailbox(MyRights),
    "GETQUOTAROOT": _one_mailbox(GetQuotaRoot),
    "RENAME": _rename,
    "LIST": _list,
    "LSUB": _lsub,
    "NAMESPACE": _no_args(Namespace),
    "STATUS": _status,
    "APPEND": _append,
    "IDLE": _no_args(Idle),
    "DELETEACL": _mailbox_identifier(DeleteAcl),
    "LISTRIGHTS": _mailbox_identifier(ListRights),
    "SETACL": _setacl,
    "GETQUOTA": _getquota,
    "SETQUOTA": _setquota,
    "COMPRESS": _compress,
    "CHECK": _no_args(Check),
    "CLOSE": _no_args(Close),
    "UNSELECT": _no_args(Unselect),
    "EXPUNGE": _expunge,
    "SEARCH": _search,
    "FETCH": _fetch,
    "STORE": _store,
    "COPY": _copy(Copy),
    "MOVE": _copy(Move),
    "SORT": _sort,
    "THREAD": _thread,
    "CANCELUPDATE": _cancelupdate,
    **URLAUTH_PARSERS,
    **NOTIFY_PARSERS,
}
