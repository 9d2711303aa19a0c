"""FETCH (RFC 9051 6.4.5, 7.5.2; RFC 3516 BINARY; RFC 7162 CHANGEDSINCE / MODSEQ).

ENVELOPE and BODYSTRUCTURE come from the parse kept in the index (`ParsedMessage.to_bytes`),
made once per message by the first FETCH that needs it; body sections are cut from the stored
bytes by the part offsets of that parse, so no FETCH parses MIME again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.imap.selected import SelectedMailbox, flag_atoms
from sealmail.proto.imap import (
    Fetch,
    FetchAttribute,
    Literal,
    ParsedMessage,
    Response,
    Value,
    body_structure_value,
    decode_part,
    envelope_value,
    find_part,
    parse_message,
    section_bytes,
)
from sealmail.proto.imap import response as replies
from sealmail.store.api import MessageRecord, MessageStore
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["StructureCache", "fetch", "internaldate_text"]

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_NEEDS_BYTES = frozenset({"RFC822", "RFC822.HEADER", "RFC822.TEXT", "BINARY", "BINARY.SIZE"})


def internaldate_text(timestamp: float) -> str:
    """date-time of RFC 9051 9, in UTC: "17-Jul-1996 09:44:25 +0000"."""
    when = datetime.fromtimestamp(timestamp, UTC)
    return (f"{when.day:2d}-{MONTHS[when.month - 1]}-{when.year:04d} "
            f"{when.hour:02d}:{when.minute:02d}:{when.second:02d} +0000")


class StructureCache:
    """The kept parses of one mailbox's messages for one command: read in one query, new ones
    parsed once and written back in one transaction (`flush`)."""

    def __init__(self, store: MessageStore, name: str, uids: list[int]) -> None:
        self.store = store
        self.name = name
        self._uids = uids
        self._loaded: dict[int, bytes] | None = None
        self._new: dict[int, bytes] = {}

    def get(self, uid: int, raw: bytes | None) -> tuple[ParsedMessage, bytes | None]:
        """The parse of `uid` and the message bytes if they had to be read."""
        if self._loaded is None:
            self._loaded = self.store.message_structures(self.name, self._uids)
        blob = self._loaded.get(uid)
        if blob is not None:
            try:
                return ParsedMessage.from_bytes(blob), raw
            except ValueError:
                pass  # written by another version: parse again below
        if raw is None:
            raw = self.store.message_bytes(self.name, uid)
        parsed = parse_message(raw)
        blob = parsed.to_bytes()
        self._loaded[uid] = blob
        self._new[uid] = blob
        return parsed, raw

    def flush(self) -> None:
        if self._new:
            new, self._new = self._new, {}
            self.store.save_message_structures(self.name, new)


def _needs_bytes(attribute: FetchAttribute) -> bool:
    return attribute.name in _NEEDS_BYTES or (
        attribute.name == "BODY" and attribute.section is not None
    )


def _needs_structure(attribute: FetchAttribute) -> bool:
    return attribute.name in ("ENVELOPE", "BODYSTRUCTURE", "BINARY", "BINARY.SIZE") or (
        attribute.name == "BODY"
        and (attribute.section is None or bool(attribute.section.part)
             or attribute.section.text is not None)
    )


def _partial(data: bytes, attribute: FetchAttribute) -> bytes:
    if attribute.partial is None:
        return data
    origin, length = attribute.partial
    return data[origin : origin + length]


class _Message:
    """One message being fetched: its bytes and parse, loaded only when an item needs them."""

    def __init__(self, store: MessageStore, name: str, record: MessageRecord,
                 structures: StructureCache) -> None:
        self.store = store
        self.name = name
        self.record = record
        self.structures = structures
        self._raw: bytes | None = None
        self._parsed: ParsedMessage | None = None

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self.store.message_bytes(self.name, self.record.uid)
        return self._raw

    @property
    def parsed(self) -> ParsedMessage:
        if self._parsed is None:
            self._parsed, raw = self.structures.get(self.record.uid, self._raw)
            self._raw = raw or self._raw
        return self._parsed


def _item(message: _Message, attribute: FetchAttribute) -> Value:
    record = message.record
    name = attribute.name
    if name == "UID":
        return record.uid
    if name == "FLAGS":
        return flag_atoms(record.flags)
    if name == "INTERNALDATE":
        return internaldate_text(record.internaldate)
    if name == "RFC822.SIZE":
        return record.size
    if name == "MODSEQ":
        return [record.modseq]
    if name == "ENVELOPE":
        return envelope_value(message.parsed.envelope)
    if name == "BODYSTRUCTURE":
        return body_structure_value(message.parsed.body, extensible=True)
    if name == "BODY" and attribute.section is None:
        return body_structure_value(message.parsed.body, extensible=False)
    if name == "RFC822":
        return Literal(message.raw)
    if name in ("RFC822.HEADER", "RFC822.TEXT"):
        body = message.parsed.body
        text = "HEADER" if name == "RFC822.HEADER" else "TEXT"
        return Literal(section_bytes(message.raw, body, (), text) or b"")
    if name == "BODY":
        section = attribute.section
        assert section is not None
        if not section.part and section.text is None:
            data: bytes | None = message.raw
        else:
            data = section_bytes(message.raw, message.parsed.body, section.part, section.text,
                                 section.fields)
        return Literal(_partial(data or b"", attribute))
    if name in ("BINARY", "BINARY.SIZE"):
        section = attribute.section
        assert section is not None
        if not section.part:
            decoded: bytes | None = message.raw
        else:
            part = find_part(message.parsed.body, section.part)
            if part is None:
                raise CommandFailed(f"No part {'.'.join(map(str, section.part))}", "NONEXISTENT")
            # RFC 3516 4.2: BINARY of a multipart is an error.
            decoded = None if part.is_multipart else decode_part(message.raw, part)
        if decoded is None:
            # RFC 3516 4.3: the server cannot decode this part's encoding.
            raise CommandFailed("Cannot decode this part's Content-Transfer-Encoding",
                                "UNKNOWN-CTE")
        if name == "BINARY.SIZE":
            return len(decoded)
        data = _partial(decoded, attribute)
        return Literal(data, binary=b"\0" in data)
    return None  # EMAILID, THREADID, SAVEDATE: not kept


def fetch(session: ImapSession, command: Fetch) -> list[Response]:
    view: SelectedMailbox = session.require_selected()
    store = session.store
    attributes = list(command.attributes)
    if command.uid and not any(a.name == "UID" for a in attributes):
        attributes.insert(0, FetchAttribute("UID"))  # RFC 9051 6.4.9: UID FETCH always has UID
    if command.changed_since is not None:
        session.enable_condstore()
    if session.condstore and command.changed_since is not None and not any(
            a.name == "MODSEQ" for a in attributes):
        attributes.append(FetchAttribute("MODSEQ"))  # RFC 7162 3.1.4.1
    if any(a.name == "MODSEQ" for a in attributes):
        session.enable_condstore()
    pairs = session.resolve(command.sequence_set, command.uid)
    out: list[Response] = []
    if command.vanished and command.changed_since is not None:
        known = [uid for _, uid in pairs]
        gone = store.expunged_since(view.name, command.changed_since)
        if gone:
            wanted = set(command.sequence_set.iter_members(sorted(set(gone) | set(view.uids))))
            gone = [uid for uid in gone if uid in wanted and uid not in known]
        if gone:
            from sealmail.proto.imap import SequenceSet

            out.append(replies.vanished(SequenceSet.of(gone), earlier=True))
    sets_seen = not view.readonly and any(a.sets_seen for a in attributes)
    live = view.live(pairs)
    structures = StructureCache(store, view.name, [uid for _, uid in live])
    try:
        out.extend(_fetch_each(session, view, live, attributes, sets_seen, structures,
                               command.changed_since))
    finally:
        structures.flush()
    return out


def _fetch_each(session: ImapSession, view: SelectedMailbox, live: list[tuple[int, int]],
                attributes: list[FetchAttribute], sets_seen: bool, structures: StructureCache,
                changed_since: int | None) -> list[Response]:
    store = session.store
    out: list[Response] = []
    for seq, uid in live:
        record = view.records[uid]
        if changed_since is not None and record.modseq <= changed_since:
            continue
        items = list(attributes)
        if sets_seen and "\\Seen" not in record.flags:
            try:
                update = store.update_flags(view.name, [uid], ["\\Seen"], "add")
            except StoreError:
                update = None
            if update is not None and update.records:
                record = update.records[0]
                view.remember([record])
                if not any(a.name == "FLAGS" for a in items):
                    items.append(FetchAttribute("FLAGS"))  # RFC 9051 6.4.5: \Seen was set
                if session.condstore and not any(a.name == "MODSEQ" for a in items):
                    items.append(FetchAttribute("MODSEQ"))
        message = _Message(store, view.name, record, structures)
        values: list[tuple[str, Value]] = []
        for attribute in items:
            values.append((attribute.response_name().decode(), _item(message, attribute)))
        out.append(replies.fetch(seq, values))
    return out


