"""ENVELOPE and BODYSTRUCTURE from message octets (RFC 9051 7.5.2; RFC 2045, 2046, 5322), parsed
once at delivery and kept per message.

`parse_message(raw)` never raises: malformed MIME gives a best-effort structure (a missing or bad
Content-Type is text/plain; a multipart without a boundary or without parts still gets a body the
grammar allows; nesting and the number of parts are bounded). Every part remembers where its
header and body lie in the message (`header_offset`, `body_offset`, `end_offset`), so FETCH
BODY[section] and BINARY[section] are slices (`section_bytes`, `decode_part`) with no re-parse.

`ParsedMessage.to_bytes()` / `ParsedMessage.from_bytes()` give a compact JSON form for the index.
Header strings are kept as sent (encoded-words are not decoded: RFC 9051 7.5.2 passes them as
they are); raw 8-bit octets survive as surrogate escapes and go back on the wire unchanged.
"""

from __future__ import annotations

import binascii
import json
import re
from dataclasses import dataclass
from typing import Any

from sealmail.rfc5322 import Address, address_list, header_fields, parse_address_list

__all__ = [
    "Address",
    "BodyStructure",
    "EmbeddedMessage",
    "Envelope",
    "ParsedMessage",
    "decode_part",
    "find_part",
    "header_fields",
    "parse_address_list",
    "parse_message",
    "section_bytes",
]

MAX_DEPTH = 64  # nested multiparts / messages kept as structure; deeper parts become leaves
MAX_PARTS = 10000  # parts per message; the rest of a multipart is left out of the structure
_HEADER_NAME = re.compile(rb"([!-9;-~]+)[ \t]*:")
_LINE = re.compile(rb"\r?\n")
_TOKEN = re.compile(r'[^\s()<>@,;:\\"/\[\]?=]+')
_SPECIALS = "()<>@,;:\\\".[]"


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")


# -- data model ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Envelope:
    date: str | None = None
    subject: str | None = None
    from_: tuple[Address, ...] = ()
    sender: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class EmbeddedMessage:
    """The message inside a MESSAGE/RFC822 (or MESSAGE/GLOBAL) part."""

    envelope: Envelope
    body: BodyStructure


@dataclass(frozen=True, slots=True)
class BodyStructure:
    """One MIME part. Types are upper case; `children` is set for multiparts only."""

    type: str = "TEXT"
    subtype: str = "PLAIN"
    params: tuple[tuple[str, str], ...] = ()
    content_id: str | None = None
    description: str | None = None
    encoding: str = "7BIT"
    size: int = 0
    lines: int = 0
    md5: str | None = None
    disposition: str | None = None
    disposition_params: tuple[tuple[str, str], ...] = ()
    language: tuple[str, ...] = ()
    location: str | None = None
    children: tuple[BodyStructure, ...] = ()
    message: EmbeddedMessage | None = None
    header_offset: int = 0
    body_offset: int = 0
    end_offset: int = 0

    @property
    def is_multipart(self) -> bool:
        return bool(self.children)

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.upper():
                return value
        return None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    envelope: Envelope
    body: BodyStructure
    size: int = 0

    def to_bytes(self) -> bytes:
        return json.dumps([_envelope_out(self.envelope), _body_out(self.body), self.size],
                          separators=(",", ":")).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> ParsedMessage:
        """Inverse of `to_bytes`; raises ValueError on data it did not write."""
        try:
            envelope, body, size = json.loads(data)
            return cls(_envelope_in(envelope), _body_in(body), int(size))
        except (TypeError, KeyError, IndexError, json.JSONDecodeError) as error:
            raise ValueError(f"not a stored message structure: {error}") from None


# -- headers -------------------------------------------------------------------------------------


_Field = tuple[str, bytes, int, int]


def _split_header(raw: bytes, start: int, end: int) -> tuple[list[_Field], int]:
    """Header fields of raw[start:end] as (lower name, unfolded value, field start, field end)
    and the offset where the body starts (after the empty line; `end` when there is none)."""
    fields: list[tuple[str, bytes, int, int]] = []
    pos = start
    current: list[Any] | None = None
    while pos < end:
        nl = raw.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = raw[pos:line_end].rstrip(b"\r\n")
        if not line:
            if current is not None:
                fields.append(tuple(current))
            return fields, line_end
        if line[:1] in (b" ", b"\t") and current is not None:
            current[1] += b" " + line.strip() if current[1] else line.strip()
            current[3] = line_end
        else:
            if current is not None:
                fields.append(tuple(current))
                current = None
            match = _HEADER_NAME.match(line)
            if match:
                value = line[match.end():].strip()
                current = [match.group(1).decode("ascii").lower(), value, pos, line_end]
            # a line that is not a field is skipped (best effort), as most servers do
        pos = line_end
    if current is not None:
        fields.append(tuple(current))
    return fields, end


def _firsts(fields: list[_Field]) -> dict[str, bytes]:
    """Each field name's first value: a part's dozen and a half lookups read this once
    instead of walking its fields each time."""
    first: dict[str, bytes] = {}
    for name, value, _, _ in fields:
        first.setdefault(name, value)
    return first


def _first(first: dict[str, bytes], name: str) -> str | None:
    value = first.get(name)
    return None if value is None else _text(value)


# -- parameters (RFC 2045 5.1) --------------------------------------------------------------------


def _skip_cfws(text: str, pos: int) -> int:
    depth = 0
    while pos < len(text):
        char = text[pos]
        if depth:
            if char == "\\":
                pos += 1
            elif char == "(":
                depth += 1
            elif char == ")":
                depth -= 1
        elif char == "(":
            depth = 1
        elif not char.isspace():
            break
        pos += 1
    return pos


def _value(text: str, pos: int) -> tuple[str, int]:
    pos = _skip_cfws(text, pos)
    if pos < len(text) and text[pos] == '"':
        out: list[str] = []
        pos += 1
        while pos < len(text) and text[pos] != '"':
            if text[pos] == "\\" and pos + 1 < len(text):
                pos += 1
            out.append(text[pos])
            pos += 1
        return "".join(out), pos + 1
    end = pos
    while end < len(text) and text[end] not in ";" and not text[end].isspace():
        end += 1
    return text[pos:end], end


def _parameters(text: str, pos: int) -> tuple[tuple[str, str], ...]:
    params: list[tuple[str, str]] = []
    while pos < len(text):
        semi = text.find(";", pos)
        if semi < 0:
            break
        pos = _skip_cfws(text, semi + 1)
        match = _TOKEN.match(text, pos)
        if not match:
            continue
        name = match.group(0).upper()
        pos = _skip_cfws(text, match.end())
        if pos >= len(text) or text[pos] != "=":
            continue
        value, pos = _value(text, pos + 1)
        params.append((name, value))
    return tuple(params)


def _content_type(value: str | None) -> tuple[str, str, tuple[tuple[str, str], ...]] | None:
    if value is None:
        return None
    pos = _skip_cfws(value, 0)
    kind = _TOKEN.match(value, pos)
    if not kind:
        return None
    pos = _skip_cfws(value, kind.end())
    if pos >= len(value) or value[pos] != "/":
        return None
    sub = _TOKEN.match(value, _skip_cfws(value, pos + 1))
    if not sub:
        return None
    return kind.group(0).upper(), sub.group(0).upper(), _parameters(value, sub.end())


def _address_field(fields: dict[str, bytes], name: str) -> tuple[Address, ...]:
    value = _first(fields, name)
    return address_list(value) if value else ()


def _envelope(fields: dict[str, bytes]) -> Envelope:
    return Envelope(
        date=_first(fields, "date"),
        subject=_first(fields, "subject"),
        from_=_address_field(fields, "from"),
        sender=_address_field(fields, "sender"),
        reply_to=_address_field(fields, "reply-to"),
        to=_address_field(fields, "to"),
        cc=_address_field(fields, "cc"),
        bcc=_address_field(fields, "bcc"),
        in_reply_to=_first(fields, "in-reply-to"),
        message_id=_first(fields, "message-id"),
    )


# -- structure -----------------------------------------------------------------------------------


class _Budget:
    __slots__ = ("parts",)

    def __init__(self) -> None:
        self.parts = 0


def _lines(raw: bytes, start: int, end: int) -> int:
    count = raw.count(b"\n", start, end)
    if end > start and raw[end - 1] != 0x0A:
        count += 1  # a last line without its line end still counts
    return count


def _boundaries(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """(body start, body end) of each part between `--boundary` delimiter lines (RFC 2046 5.1.1):
    the line end before a delimiter belongs to the delimiter."""
    delimiter = b"--" + boundary
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    pos = start
    while pos <= end:
        found = raw.find(delimiter, pos, end)
        if found < 0:
            break
        at_line_start = found == start or raw[found - 1] == 0x0A
        if not at_line_start:
            pos = found + len(delimiter)
            continue
        after = found + len(delimiter)
        closing = raw.startswith(b"--", after) and after + 2 <= end
        nl = raw.find(b"\n", after, end)
        line_end = end if nl < 0 else nl + 1
        tail = raw[after + (2 if closing else 0) : line_end].strip()
        if tail:
            pos = after  # "--boundaryX" is another boundary, not ours
            continue
        before = found
        if before > start and raw[before - 1] == 0x0A:
            before -= 1
            if before > start and raw[before - 1] == 0x0D:
                before -= 1
        if part_start is not None:
            parts.append((part_start, max(part_start, before)))
        if closing:
            return parts
        part_start = line_end
        pos = line_end
    if part_start is not None:
        parts.append((part_start, end))  # no closing delimiter: best effort
    return parts


def _part(raw: bytes, start: int, end: int, depth: int, budget: _Budget,
          default_type: tuple[str, str] = ("TEXT", "PLAIN")) -> tuple[Envelope, BodyStructure]:
    budget.parts += 1
    split, body_start = _split_header(raw, start, end)
    fields = _firsts(split)
    parsed = _content_type(_first(fields, "content-type"))
    if parsed is None:
        kind, subtype = default_type
        params: tuple[tuple[str, str], ...] = (
            (("CHARSET", "US-ASCII"),) if default_type == ("TEXT", "PLAIN") else ()
        )
    else:
        kind, subtype, params = parsed
    encoding = (_first(fields, "content-transfer-encoding") or "7BIT").strip().upper() or "7BIT"
    disposition = None
    disposition_params: tuple[tuple[str, str], ...] = ()
    raw_disposition = _first(fields, "content-disposition")
    if raw_disposition:
        match = _TOKEN.match(raw_disposition, _skip_cfws(raw_disposition, 0))
        if match:
            disposition = match.group(0).upper()
            disposition_params = _parameters(raw_disposition, match.end())
    language = tuple(
        item.strip() for item in (_first(fields, "content-language") or "").split(",")
        if item.strip()
    )
    common: dict[str, Any] = {
        "params": params,
        "content_id": _first(fields, "content-id"),
        "description": _first(fields, "content-description"),
        "encoding": encoding,
        "size": end - body_start,
        "md5": _first(fields, "content-md5"),
        "disposition": disposition,
        "disposition_params": disposition_params,
        "language": language,
        "location": _first(fields, "content-location"),
        "header_offset": start,
        "body_offset": body_start,
        "end_offset": end,
    }
    envelope = _envelope(fields)
    boundary = dict(params).get("BOUNDARY")
    if kind == "MULTIPART" and depth < MAX_DEPTH:
        children: list[BodyStructure] = []
        spans = _boundaries(raw, body_start, end, boundary.encode("utf-8", "surrogateescape")) \
            if boundary else []
        child_default = ("MESSAGE", "RFC822") if subtype == "DIGEST" else ("TEXT", "PLAIN")
        for child_start, child_end in spans:
            if budget.parts >= MAX_PARTS:
                break
            children.append(_part(raw, child_start, child_end, depth + 1, budget,
                                  child_default)[1])
        if not children:
            # RFC 9051 body-type-mpart needs at least one body: give an empty text part.
            children.append(BodyStructure(params=(("CHARSET", "US-ASCII"),),
                                          header_offset=end, body_offset=end, end_offset=end))
        return envelope, BodyStructure(kind, subtype, children=tuple(children), **common)
    if kind == "MULTIPART":
        kind, subtype = "TEXT", "PLAIN"  # too deep: kept as an opaque leaf
    lines = _lines(raw, body_start, end)
    if kind == "MESSAGE" and subtype in ("RFC822", "GLOBAL") and depth < MAX_DEPTH:
        inner_envelope, inner_body = _part(raw, body_start, end, depth + 1, budget)
        return envelope, BodyStructure(
            kind, subtype, lines=lines,
            message=EmbeddedMessage(inner_envelope, inner_body), **common,
        )
    if kind == "MESSAGE" and subtype in ("RFC822", "GLOBAL"):
        kind, subtype = "APPLICATION", "OCTET-STREAM"
    return envelope, BodyStructure(kind, subtype, lines=lines, **common)


def parse_message(raw: bytes) -> ParsedMessage:
    """ENVELOPE and BODYSTRUCTURE of a whole message. Never raises on any input."""
    envelope, body = _part(raw, 0, len(raw), 0, _Budget())
    return ParsedMessage(envelope, body, len(raw))


# -- sections (RFC 9051 6.4.5) --------------------------------------------------------------------


def find_part(body: BodyStructure, part: tuple[int, ...]) -> BodyStructure | None:
    """The part a section's part numbers name, or None when there is none.

    RFC 9051 6.4.5: a non-multipart message has part 1 only; the parts of a MESSAGE/RFC822 part
    are those of the message inside it.
    """
    current = body
    for depth, number in enumerate(part):
        if depth > 0 and current.message is not None:
            current = current.message.body
        if current.children:
            if not 1 <= number <= len(current.children):
                return None
            current = current.children[number - 1]
        elif number != 1:
            return None
    return current


def section_bytes(raw: bytes, body: BodyStructure, part: tuple[int, ...], text: str | None,
                  fields: tuple[str, ...] = ()) -> bytes | None:
    """The octets of BODY[part.text (fields)] (no partial applied), or None when the section
    does not exist (the server then returns an empty string or NIL, RFC 9051 6.4.5)."""
    if not part:
        target = body
        if text is None:
            return raw
    else:
        found = find_part(body, part)
        if found is None:
            return None
        if text is None:
            return raw[found.body_offset : found.end_offset]
        if text == "MIME":
            return raw[found.header_offset : found.body_offset]
        if found.message is None:
            return None  # HEADER / TEXT of a part need a MESSAGE/RFC822 part
        target = found.message.body
    header = raw[target.header_offset : target.body_offset]
    if text == "HEADER":
        return header
    if text == "TEXT":
        return raw[target.body_offset : target.end_offset]
    return header_fields(header, fields, exclude=text == "HEADER.FIELDS.NOT")


def decode_part(raw: bytes, part: BodyStructure) -> bytes | None:
    """A part's body with its Content-Transfer-Encoding undone (RFC 3516 BINARY), or None for an
    encoding the server does not know (the reply is then NO [UNKNOWN-CTE])."""
    content = raw[part.body_offset : part.end_offset]
    if part.encoding in ("7BIT", "8BIT", "BINARY"):
        return content
    if part.encoding == "BASE64":
        try:
            return binascii.a2b_base64(content)
        except binascii.Error:
            return binascii.a2b_base64(re.sub(rb"[^A-Za-z0-9+/]", b"", content) + b"===")
    if part.encoding == "QUOTED-PRINTABLE":
        return decode_quoted_printable(content)
    return None


# Whitespace at the end of a line, which RFC 2045 6.7 rule 3 calls transport padding.
_TRAILING_WHITESPACE = re.compile(rb"[ \t]+(?=\r?\n|\Z)")


def decode_quoted_printable(content: bytes) -> bytes:
    """RFC 2045 6.7: "=XX" octets and "=" soft line breaks undone. Rule 3: "any trailing white
    space on a line must be deleted, as it will necessarily have been added by intermediate
    transport agents", which also makes "= " at a line's end a soft line break (rule 5);
    binascii's decoder keeps that whitespace (imaptest's fetch-binary-mime-qp)."""
    return binascii.a2b_qp(_TRAILING_WHITESPACE.sub(b"", content))


# -- compact form ----------------------------------------------------------------------------------


def _addresses_out(addresses: tuple[Address, ...]) -> list[list[str | None]]:
    return [[a.name, a.adl, a.mailbox, a.host] for a in addresses]


def _addresses_in(data: list[list[str | None]]) -> tuple[Address, ...]:
    return tuple(Address(*item) for item in data)


def _envelope_out(envelope: Envelope) -> list[Any]:
    return [envelope.date, envelope.subject, _addresses_out(envelope.from_),
            _addresses_out(envelope.sender), _addresses_out(envelope.reply_to),
            _addresses_out(envelope.to), _addresses_out(envelope.cc),
            _addresses_out(envelope.bcc), envelope.in_reply_to, envelope.message_id]


def _envelope_in(data: list[Any]) -> Envelope:
    return Envelope(data[0], data[1], _addresses_in(data[2]), _addresses_in(data[3]),
                    _addresses_in(data[4]), _addresses_in(data[5]), _addresses_in(data[6]),
                    _addresses_in(data[7]), data[8], data[9])


def _body_out(body: BodyStructure) -> list[Any]:
    message = None
    if body.message is not None:
        message = [_envelope_out(body.message.envelope), _body_out(body.message.body)]
    return [body.type, body.subtype, [list(p) for p in body.params], body.content_id,
            body.description, body.encoding, body.size, body.lines, body.md5, body.disposition,
            [list(p) for p in body.disposition_params], list(body.language), body.location,
            [_body_out(c) for c in body.children], message, body.header_offset, body.body_offset,
            body.end_offset]


def _body_in(data: list[Any]) -> BodyStructure:
    message = None
    if data[14] is not None:
        message = EmbeddedMessage(_envelope_in(data[14][0]), _body_in(data[14][1]))
    return BodyStructure(
        data[0], data[1], tuple((str(k), str(v)) for k, v in data[2]), data[3], data[4], data[5],
        int(data[6]), int(data[7]), data[8], data[9],
        tuple((str(k), str(v)) for k, v in data[10]), tuple(data[11]), data[12],
        tuple(_body_in(c) for c in data[13]), message, int(data[15]), int(data[16]),
        int(data[17]),
    )

