"""What an IMAP URL names, read from the store: CATENATE's URL parts (RFC 4469 3) and
URLFETCH (RFC 4467 6).

A URL that names nothing readable (no such mailbox, a UIDVALIDITY that is not the mailbox's, a
UID not there, no right to read) is one failure, BADURL, whatever the reason, as RFC 4469 5
asks: the client learns nothing about mailboxes it may not read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.proto.imap import ParsedMessage, parse_message, section_bytes
from sealmail.proto.imap.errors import ImapError
from sealmail.proto.imap.fetch import Section, parse_fetch_attribute
from sealmail.proto.imap.syntax import Reader
from sealmail.proto.imap.url import ImapUrl, UrlError, parse_imap_url
from sealmail.store.api import MessageStore
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["BadUrl", "UrlPart", "parse_url", "read_url", "url_section"]


class BadUrl(CommandFailed):
    """RFC 4469 5: NO [BADURL url]; RFC 4467 uses the same code."""

    def __init__(self, url: str, text: str = "Bad URL") -> None:
        # url-resp-text (RFC 4469 6) cannot hold "]" or a line end.
        shown = url if url and not any(c in url for c in "]\r\n") else ""
        super().__init__(text, f"BADURL {shown}".rstrip())


class UrlPart:
    """The octets a URL names, with the parse of its message (URLFETCH's BODYPARTSTRUCTURE)."""

    __slots__ = ("data", "parsed", "raw", "section")

    def __init__(self, raw: bytes, parsed: ParsedMessage, section: Section | None,
                 data: bytes) -> None:
        self.raw = raw
        self.parsed = parsed
        self.section = section
        self.data = data


def parse_url(url: str) -> ImapUrl:
    try:
        return parse_imap_url(url)
    except UrlError:
        raise BadUrl(url) from None


def url_section(url: ImapUrl) -> Section | None:
    """The FETCH section a URL's ;SECTION= names (RFC 5092 6: the section-spec of RFC 3501)."""
    if url.section is None:
        return None
    reader = Reader(b"BODY.PEEK[" + url.section.encode() + b"]", 4, 100)
    try:
        attribute = parse_fetch_attribute(reader)
        reader.end()
    except ImapError:
        raise BadUrl(url.rump or url.section) from None
    return attribute.section


def read_url(store: MessageStore, internal: str, url: ImapUrl, original: str) -> UrlPart:
    """The part `url` names in the mailbox `internal` (whose rights the caller checked)."""
    try:
        info = store.mailbox(internal)
        if info is None or (url.uidvalidity is not None and url.uidvalidity != info.uidvalidity):
            raise BadUrl(original)
        raw = store.message_bytes(internal, url.uid)
    except StoreError:
        raise BadUrl(original) from None
    parsed = parse_message(raw)
    section = url_section(url)
    data: bytes | None = raw
    if section is not None and (section.part or section.text is not None):
        data = section_bytes(raw, parsed.body, section.part, section.text, section.fields)
    if data is None:
        raise BadUrl(original)
    if url.partial is not None:
        start, length = url.partial
        data = data[start:] if length is None else data[start : start + length]
    return UrlPart(raw, parsed, section, data)


def catenate_url(session: ImapSession, text: str) -> bytes:
    """A CATENATE URL part (RFC 4469 3): a URL to a message in one of this user's mailboxes
    (relative, or absolute naming this user), which the user may read."""
    url = parse_url(text)
    if url.absolute and url.user is not None and url.user != session.userid:
        raise BadUrl(text)
    try:
        internal = session.namespace.to_internal(url.mailbox, utf8=True)  # RFC 5092 6
    except StoreError:
        raise BadUrl(text) from None
    if not session.has_rights(internal, "r"):
        raise BadUrl(text)
    return read_url(session.store, internal, url, text).data
