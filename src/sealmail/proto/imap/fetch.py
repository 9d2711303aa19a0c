"""FETCH data items (RFC 9051 6.4.5, fetch-att in 9; RFC 3516 BINARY; RFC 7162 MODSEQ).

    fetch-att  = "ENVELOPE" / "FLAGS" / "INTERNALDATE" / "RFC822.SIZE" / "RFC822" /
                 "RFC822.HEADER" / "RFC822.TEXT" / "BODY" ["STRUCTURE"] / "UID" /
                 "BODY" section [partial] / "BODY.PEEK" section [partial] /
                 "BINARY" [".PEEK"] section-binary [partial] / "BINARY.SIZE" section-binary /
                 "MODSEQ"
    section    = "[" [section-spec] "]"
    section-spec = section-msgtext / (section-part ["." section-text])
    section-msgtext = "HEADER" / "HEADER.FIELDS" [".NOT"] SP header-list / "TEXT"
    section-text = section-msgtext / "MIME"
    partial    = "<" number64 "." nz-number64 ">"

The macros ALL, FAST and FULL expand to their items (RFC 9051 6.4.5) but the command remembers
the macro, so it renders back as sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sealmail.proto.imap.errors import BadCommand, ImapError
from sealmail.proto.imap.syntax import NUMBER64_MAX, Memo, Reader, render_astring

__all__ = [
    "MACROS",
    "FetchAttribute",
    "Section",
    "parse_fetch_attribute",
    "parse_fetch_attribute_list",
    "render_fetch_attribute",
]

_SIMPLE = frozenset({
    "ENVELOPE", "FLAGS", "INTERNALDATE", "RFC822.SIZE", "RFC822", "RFC822.HEADER", "RFC822.TEXT",
    "BODYSTRUCTURE", "UID", "MODSEQ", "EMAILID", "THREADID", "SAVEDATE",
})
_NAME = re.compile(rb"[A-Za-z0-9.]+")
_PART = re.compile(rb"[1-9][0-9]*(?:\.[1-9][0-9]*)*")
_PARTIAL = re.compile(rb"<([0-9]+)\.([0-9]+)>")
_MSGTEXT = ("HEADER.FIELDS.NOT", "HEADER.FIELDS", "HEADER", "TEXT", "MIME")


@dataclass(frozen=True, slots=True)
class Section:
    """A body section: part numbers, then HEADER / HEADER.FIELDS[.NOT] / TEXT / MIME or nothing."""

    part: tuple[int, ...] = ()
    text: str | None = None
    fields: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.text == "MIME" and not self.part:
            raise ValueError("MIME needs a part number")
        if (self.text or "").startswith("HEADER.FIELDS") != bool(self.fields):
            raise ValueError("header fields go with HEADER.FIELDS[.NOT] only")

    def render(self) -> bytes:
        parts = [".".join(str(n) for n in self.part)] if self.part else []
        if self.text:
            parts.append(self.text)
        spec = ".".join(parts).encode()
        if self.fields:
            spec += b" (" + b" ".join(render_astring(f) for f in self.fields) + b")"
        return b"[" + spec + b"]"


@dataclass(frozen=True, slots=True)
class FetchAttribute:
    """One FETCH item. `name` is upper case: "BODY", "BINARY", "BINARY.SIZE", "FLAGS", ...

    `section` is None for items without brackets ("BODY" alone is the non-extensible
    BODYSTRUCTURE); `partial` is (origin, length); `peek` is BODY.PEEK / BINARY.PEEK.
    """

    name: str
    section: Section | None = None
    partial: tuple[int, int] | None = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """RFC 9051 6.4.5: BODY[...] (not .PEEK), BINARY[...], RFC822 and RFC822.TEXT set \\Seen."""
        if self.name in ("RFC822", "RFC822.TEXT"):
            return True
        return self.name in ("BODY", "BINARY") and self.section is not None and not self.peek

    def response_name(self) -> bytes:
        """The item's name in the FETCH response: no .PEEK, and only the origin of a partial
        (RFC 9051 7.5.2: "BODY[<section>]<<origin octet>>")."""
        if self.section is None:
            return self.name.encode()
        name = self.name.encode() + self.section.render()
        if self.partial is not None:
            name += b"<" + str(self.partial[0]).encode() + b">"
        return name


MACROS: dict[str, tuple[FetchAttribute, ...]] = {
    "FAST": tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE")),
    "ALL": tuple(FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE")),
    "FULL": tuple(
        FetchAttribute(n) for n in ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    ),
}


def _section(reader: Reader, binary: bool) -> Section:
    reader.expect(b"[", "'['")
    part: tuple[int, ...] = ()
    match = _PART.match(reader.data, reader.pos)
    if match:
        part = tuple(int(n) for n in match.group(0).split(b"."))
        if any(n > 0xFFFFFFFF for n in part):
            raise BadCommand("Section part number out of range")
        reader.pos = match.end()
        if reader.peek() == 0x2E and not binary:
            reader.pos += 1
        elif reader.peek() != 0x5D:
            raise reader.fail("']' or '.'")
    text: str | None = None
    fields: tuple[str, ...] = ()
    if reader.peek() != 0x5D:
        if binary:
            raise reader.fail("']' (BINARY takes part numbers only)")
        for candidate in _MSGTEXT:  # longest first: HEADER.FIELDS.NOT before HEADER
            if reader.data[reader.pos : reader.pos + len(candidate)].upper() == candidate.encode():
                text = candidate
                reader.pos += len(candidate)
                break
        else:
            raise reader.fail("HEADER, HEADER.FIELDS, TEXT or MIME")
        if text == "MIME" and not part:
            raise BadCommand("MIME needs a part number")
        if text.startswith("HEADER.FIELDS"):
            reader.sp()
            fields = tuple(reader.paren_list(lambda r: r.astring_text(), allow_empty=False))
    reader.expect(b"]", "']'")
    return Section(part, text, fields)


def _partial(reader: Reader) -> tuple[int, int] | None:
    if reader.peek() != 0x3C:
        return None
    match = _PARTIAL.match(reader.data, reader.pos)
    if not match:
        raise reader.fail("a partial <origin.length>")
    origin, length = int(match.group(1)), int(match.group(2))
    if origin > NUMBER64_MAX or not 0 < length <= NUMBER64_MAX:
        raise BadCommand("Partial range out of range")
    reader.pos = match.end()
    return origin, length


def parse_fetch_attribute(reader: Reader) -> FetchAttribute:
    reader.count_item()
    match = _NAME.match(reader.data, reader.pos)
    if not match:
        raise reader.fail("a FETCH item")
    name = match.group(0).decode().upper()
    reader.pos = match.end()
    if reader.peek() == 0x5B:  # "["
        if name in ("BODY", "BODY.PEEK"):
            section = _section(reader, binary=False)
            return FetchAttribute("BODY", section, _partial(reader), name == "BODY.PEEK")
        if name in ("BINARY", "BINARY.PEEK"):
            section = _section(reader, binary=True)
            return FetchAttribute("BINARY", section, _partial(reader), name == "BINARY.PEEK")
        if name == "BINARY.SIZE":
            return FetchAttribute(name, _section(reader, binary=True))
        raise BadCommand(f"FETCH item {name} takes no section")
    if name in _SIMPLE or name == "BODY":
        return FetchAttribute(name)
    raise BadCommand(f"Unknown FETCH item {name}")


# An item list that ends the command, read from its items each parsed once: imaptest's FETCH
# names 1-4 random items (more lists than the parser's cache of whole tails holds), and a mail
# client's lists are made of the same few items. The list is split where the items' grammar
# puts the spaces (a token that is not one item, or any other spacing, goes the general way);
# each item is parsed alone, with the reader's kind (an 8-bit header name is valid only in a
# UTF-8 session), and kept only when it is read whole; `Reader.read_to_end` then counts what
# the general way counts (each item twice, its header names once) under the same limit. One
# level of parentheses inside an item at most, so the list's nesting is within any limit.
_ITEM_TOKEN = re.compile(rb"[A-Za-z0-9.]+(?:\[[^\]]*\])?(?:<[^>]*>)?")
ITEMS_MAX = 256  # distinct items
_ITEMS: Memo[tuple[bytes, type[Reader]], tuple[FetchAttribute, int]] = Memo(ITEMS_MAX)


def parse_fetch_attribute_list(reader: Reader) -> tuple[FetchAttribute, ...] | None:
    """ "(" fetch-att *(SP fetch-att) ")" ending the command, from remembered items; None when
    the list is not of that shape or an item does not parse alone (read it the general way)."""
    data = reader.data
    if not reader.untouched() or data[reader.pos : reader.pos + 1] != b"(" or data[-1:] != b")":
        return None
    inside = data[reader.pos + 1 : -1]
    tokens = _ITEM_TOKEN.findall(inside)
    if not tokens or b" ".join(tokens) != inside:
        return None
    attributes = []
    items = len(tokens)  # the list's own count of each item
    for token in tokens:
        key = (token, type(reader))
        seen = _ITEMS.get(key)
        if seen is None:
            seen = _parse_alone(token, type(reader))
            if seen is None:
                return None
            _ITEMS.keep(key, seen)
        attributes.append(seen[0])
        items += seen[1]
    reader.read_to_end(items)
    return tuple(attributes)


def _parse_alone(token: bytes, kind: type[Reader]) -> tuple[FetchAttribute, int] | None:
    """One item and the items its parse counted, when `token` is exactly one valid item."""
    alone = kind(token, max_depth=1, max_items=len(token) + 1)
    try:
        attribute = parse_fetch_attribute(alone)
    except ImapError:
        return None
    return (attribute, alone.items) if alone.at_end() else None


def render_fetch_attribute(attribute: FetchAttribute) -> bytes:
    if attribute.section is None:
        return attribute.name.encode()
    name = attribute.name + (".PEEK" if attribute.peek else "")
    wire = name.encode() + attribute.section.render()
    if attribute.partial is not None:
        wire += f"<{attribute.partial[0]}.{attribute.partial[1]}>".encode()
    return wire
