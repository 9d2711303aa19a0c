"""APPEND's message data: RFC 3502 MULTIAPPEND (several messages, one command) and RFC 4469
CATENATE (a message assembled from literals and IMAP URLs).

    append          = "APPEND" SP mailbox 1*append-message          ; RFC 3502 6
    append-message  = append-opts SP append-data
    append-opts     = [SP flag-list] [SP date-time]
    append-data     = literal / literal8 / "UTF8" SP "(" literal8 ")" / append-data-ext
    append-data-ext = "CATENATE" SP "(" cat-part *(SP cat-part) ")" ; RFC 4469 5
    cat-part        = text-literal / url
    text-literal    = "TEXT" SP (literal / literal8)
    url             = "URL" SP astring

The whole command comes in one piece (the connection frames its literals and bounds their total
size), so the bounds left here are counts: messages per command and parts per CATENATE.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sealmail.proto.imap.errors import BadCommand
from sealmail.proto.imap.syntax import Reader, render_astring, render_datetime

__all__ = [
    "MAX_APPEND_MESSAGES",
    "MAX_CATENATE_PARTS",
    "AppendMessage",
    "CatenatePart",
    "parse_append_messages",
]

# Counts the grammar leaves open. Dovecot takes any number; a client appends a few messages per
# command (imaptest: 2) and builds a message from a few parts, so these bound only abuse.
MAX_APPEND_MESSAGES = 100
MAX_CATENATE_PARTS = 50


@dataclass(frozen=True, slots=True)
class CatenatePart:
    """One CATENATE part: a TEXT literal (`text`), or a URL (`url`) the server resolves."""

    url: str | None = None
    text: bytes = b""
    binary: bool = False  # the literal was literal8 (~{n})

    def render(self) -> bytes:
        if self.url is not None:
            return b"URL " + render_astring(self.url)
        prefix = b"~{" if self.binary else b"{"
        return b"TEXT " + prefix + str(len(self.text)).encode() + b"}\r\n" + self.text


@dataclass(frozen=True, slots=True)
class AppendMessage:
    """One message of an APPEND: its options and either its octets or its CATENATE parts."""

    flags: tuple[str, ...] = ()
    flag_list: bool = False  # a (possibly empty) flag list was given
    internaldate: datetime | None = None
    message: bytes = b""
    binary: bool = False
    utf8: bool = False
    catenate: tuple[CatenatePart, ...] | None = None

    def render(self) -> bytes:
        wire = b""
        if self.flags or self.flag_list:
            wire += b" (" + " ".join(self.flags).encode() + b")"
        if self.internaldate is not None:
            wire += b" " + render_datetime(self.internaldate)
        if self.catenate is not None:
            return wire + b" CATENATE (" + b" ".join(p.render() for p in self.catenate) + b")"
        prefix = b"~{" if self.binary else b"{"
        literal = prefix + str(len(self.message)).encode() + b"}\r\n" + self.message
        if self.utf8:
            return wire + b" UTF8 (" + literal + b")"
        return wire + b" " + literal


def parse_append_messages(reader: Reader) -> list[AppendMessage]:
    """Every append-message after the mailbox (the reader stands just after it)."""
    messages: list[AppendMessage] = []
    while not reader.at_end():
        if len(messages) >= MAX_APPEND_MESSAGES:
            raise BadCommand(f"More than {MAX_APPEND_MESSAGES} messages in one APPEND")
        reader.sp()
        messages.append(_append_message(reader))
    if not messages:
        raise reader.fail("a message")
    return messages


def _append_message(reader: Reader) -> AppendMessage:
    flags: tuple[str, ...] = ()
    flag_list = False
    if reader.peek() == 0x28:
        flags = reader.flag_list()
        flag_list = True
        reader.sp()
    internaldate = None
    if reader.peek() == 0x22:
        internaldate = reader.date_time()
        reader.sp()
    if reader.startswith_word(b"CATENATE"):
        reader.pos += len(b"CATENATE")
        reader.sp()
        parts = reader.paren_list(_cat_part, allow_empty=False)
        if len(parts) > MAX_CATENATE_PARTS:
            raise BadCommand(f"More than {MAX_CATENATE_PARTS} CATENATE parts")
        return AppendMessage(flags, flag_list, internaldate, catenate=tuple(parts))
    # RFC 6855 4: append-data =/ "UTF8" SP "(" literal8 ")"; a plain literal inside is
    # accepted as well. Whether UTF-8 was enabled is the session's question.
    utf8 = reader.startswith_word(b"UTF8")
    if utf8:
        reader.pos += len(b"UTF8")
        reader.sp()
        reader.expect(b"(", "'('")
    binary = reader.is_binary_literal()
    message = reader.literal(allow_binary=True)
    if utf8:
        reader.expect(b")", "')'")
    return AppendMessage(flags, flag_list, internaldate, message, binary, utf8)


def _cat_part(reader: Reader) -> CatenatePart:
    if reader.startswith_word(b"URL"):
        reader.pos += len(b"URL")
        reader.sp()
        url = reader.astring_text()
        if not url:
            raise BadCommand("Empty CATENATE URL")
        return CatenatePart(url=url)
    if reader.startswith_word(b"TEXT"):
        reader.pos += len(b"TEXT")
        reader.sp()
        binary = reader.is_binary_literal()
        return CatenatePart(text=reader.literal(allow_binary=True), binary=binary)
    raise reader.fail("TEXT or URL")
