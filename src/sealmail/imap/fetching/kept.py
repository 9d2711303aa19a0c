"""The parses of messages kept in the index, and ENVELOPE, BODYSTRUCTURE and BODY kept rendered
beside each, so that a FETCH of them is a lookup and a join instead of walking a value tree per
message (`render_value` was most of FETCH's CPU under imaptest's stress profile).

A kept structure (the index's `structure` blob of a message) is

    K<version>;<len envelope>,<len bodystructure>,<len body>:<the forms><ParsedMessage.to_bytes>

with the forms rendered as IMAP4rev1 writes them (no UTF-8 in quoted strings); a change to how
they are rendered raises FORMS_VERSION, and forms of another version are rendered again. Blobs
of older versions, `E<len>:<envelope><parse>` or the parse alone, are read and written again in
this form by the first FETCH that needs the missing forms.

UTF-8 sessions (RFC 6855 / IMAP4rev2) write 8-bit text as quoted strings where IMAP4rev1 needs a
literal; every other string is written the same either way. A kept form with no literal (no CRLF:
a quoted string cannot hold one) is therefore also the UTF-8 form, and only messages with 8-bit
header text are rendered again, from the kept parse, for a UTF-8 session.
"""

from __future__ import annotations

from dataclasses import dataclass

from sealmail.proto.imap import (
    ParsedMessage,
    body_structure_value,
    parse_message,
    render_envelope,
    render_value,
)
from sealmail.store.api import MailboxView, MessageRecord
from sealmail.store.errors import NoSuchMessage

__all__ = ["RENDERED", "KeptForms", "StructureCache", "kept_for_append", "render_form"]

FORMS_VERSION = 1
RENDERED = ("ENVELOPE", "BODYSTRUCTURE", "BODY")  # the items kept rendered


@dataclass(frozen=True, slots=True)
class KeptForms:
    """ENVELOPE, BODYSTRUCTURE and BODY of one message as IMAP4rev1 writes them."""

    envelope: bytes
    bodystructure: bytes
    body: bytes

    def form(self, name: str) -> bytes:
        """The form of item `name` (one of RENDERED)."""
        if name == "ENVELOPE":
            return self.envelope
        return self.bodystructure if name == "BODYSTRUCTURE" else self.body

    def pack(self, parse: bytes) -> bytes:
        return (b"K%d;%d,%d,%d:" % (FORMS_VERSION, len(self.envelope), len(self.bodystructure),
                                    len(self.body))
                + self.envelope + self.bodystructure + self.body + parse)


def render_form(parsed: ParsedMessage, name: str, utf8: bool) -> bytes:
    """Item `name` (one of RENDERED) of a parse, rendered as FETCH's generic way writes it."""
    if name == "ENVELOPE":
        return render_envelope(parsed.envelope, utf8)
    return render_value(body_structure_value(parsed.body, extensible=name == "BODYSTRUCTURE"),
                        utf8)


def _forms_of(parsed: ParsedMessage) -> KeptForms:
    return KeptForms(*(render_form(parsed, name, False) for name in RENDERED))


def _blob_of(parsed: ParsedMessage) -> bytes:
    """The kept structure of a parse: its forms and the parse itself."""
    return _forms_of(parsed).pack(parsed.to_bytes())


# Appended messages larger than this are left to the first FETCH that needs their parse.
KEEP_APPENDED_UP_TO = 1 << 20


def kept_for_append(content: bytes) -> tuple[ParsedMessage, KeptForms, bytes] | None:
    """The parse, forms and blob of a message this session is about to append, made from the
    octets it holds: the blob is stored with the message, by the delivery's own commit
    (DeliveryTarget.kept), and the parse and forms go to the process's memos. Otherwise the
    first FETCH of their ENVELOPE, BODYSTRUCTURE or BODY (imaptest's stress profile, a client
    showing a new message) reads each file again, parses it and saves the blob, and under
    `sealmail master` each imapd worker whose FETCH came before that save reached the index
    did it too. None above KEEP_APPENDED_UP_TO: such a message waits for a FETCH, its parse
    costing more than the one file read it saves."""
    if len(content) > KEEP_APPENDED_UP_TO:
        return None
    parsed = parse_message(content)
    forms = _forms_of(parsed)
    return parsed, forms, forms.pack(parsed.to_bytes())


class LoadedMessage:
    """One message a command works on (FETCH's generic way, SEARCH's candidates): its bytes
    and parse read only when something needs them, the parse from `structures` unless the
    caller has it (`parsed`)."""

    def __init__(self, record: MessageRecord, structures: StructureCache,
                 parsed: ParsedMessage | None = None) -> None:
        self.record = record
        self.structures = structures
        self._raw: bytes | None = None
        self._parsed = parsed

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.structures.store.message_bytes(self.structures.name, self.record.uid)
        return self._raw

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed, raw = self.structures.get(self.record.uid, self._raw)
            self._raw = raw or self._raw
        return self._parsed

    @property
    def parsed_if_read(self) -> ParsedMessage | None:
        """The parse if something needed it (or the caller gave it), else None."""
        return self._parsed


class StructureCache:
    """The kept parses of one mailbox's messages for one command: read in one query, new ones
    parsed once and written back in one transaction (`flush`)."""

    def __init__(self, store: MailboxView, name: str, uids: list[int]) -> None:
        self.store = store
        self.name = name
        self._uids = uids
        self._loaded: dict[int, bytes] | None = None
        self._new: dict[int, bytes] = {}

    def _blob(self, uid: int) -> bytes | None:
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        return self._loaded.get(uid)

    def get(self, uid: int, raw: bytes | None) -> tuple[ParsedMessage, bytes | None]:
        """The parse of `uid` and the message bytes if they had to be read."""
        blob = self._blob(uid)
        if blob is not None:
            try:
                return ParsedMessage.from_bytes(_unpack(blob)[1]), raw
            except ValueError:
                pass  # written by another version: parse again below
        if raw is None:
            raw = self.store.message_bytes(self.name, uid)
        parsed = parse_message(raw)
        self._keep(uid, parsed)
        return parsed, raw

    def forms(self, uid: int) -> KeptForms | None:
        """The kept forms of `uid` (made from its parse and kept if it had none); None if the
        message is gone."""
        blob = self._blob(uid)
        if blob is not None:
            forms, _ = _unpack(blob)
            if forms is not None:
                return forms
        try:
            parsed, _ = self.get(uid, None)
        except NoSuchMessage:
            return None
        forms, parse = _unpack(self._blob(uid) or b"")  # parsed just now, or kept without them
        if forms is None:
            forms = _forms_of(parsed)
            assert self._loaded is not None  # loaded by _blob
            self._loaded[uid] = self._new[uid] = forms.pack(parse)
        return forms

    def envelope(self, uid: int) -> bytes | None:
        """ENVELOPE of `uid` as IMAP4rev1 writes it; None if the message is gone."""
        forms = self.forms(uid)
        return None if forms is None else forms.envelope

    def rendered(self, uid: int, name: str, forms: KeptForms, utf8: bool) -> bytes | None:
        """Item `name` of `uid` for the session: the kept form, or for a UTF-8 session one
        with a literal rendered again from the parse (see above); None if the message is gone."""
        form = forms.form(name)
        if not utf8 or b"\r\n" not in form:
            return form
        try:
            parsed, _ = self.get(uid, None)
        except NoSuchMessage:
            return None
        return render_form(parsed, name, True)

    def _keep(self, uid: int, parsed: ParsedMessage) -> bytes:
        if self._loaded is None:
            self._loaded = {}
        blob = _blob_of(parsed)
        self._loaded[uid] = self._new[uid] = blob
        return blob

    def flush(self) -> None:
        if self._new:
            new, self._new = self._new, {}
            self.store.save_message_structures(self.name, new)


def _unpack(blob: bytes) -> tuple[KeptForms | None, bytes]:
    """A kept structure's forms (None in a blob of an older version) and its parse."""
    if blob[:1] == b"K":
        head, _, rest = blob[1:].partition(b":")
        version, _, lengths = head.partition(b";")
        try:
            e, s, b = map(int, lengths.split(b","))
        except ValueError:
            return None, blob
        if version != b"%d" % FORMS_VERSION:
            return None, rest[e + s + b :]
        return KeptForms(rest[:e], rest[e : e + s], rest[e + s : e + s + b]), rest[e + s + b :]
    if blob[:1] == b"E":  # the envelope alone: rendered again with the others
        length, _, rest = blob[1:].partition(b":")
        try:
            return None, rest[int(length):]
        except ValueError:
            return None, blob
    return None, blob
