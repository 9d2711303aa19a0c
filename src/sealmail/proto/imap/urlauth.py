"""URLAUTH commands (RFC 4467) with RFC 5524's URLFETCH parameters.

    genurlauth = "GENURLAUTH" 1*(SP url-rump SP mechanism)          ; RFC 4467 9
    resetkey   = "RESETKEY" [SP mailbox *(SP mechanism)]
    urlfetch   = "URLFETCH" 1*(SP url-fetch-param)
    url-fetch-param = url / "(" url *(SP ("BODYPARTSTRUCTURE" / "BINARY" / "BODY")) ")"
                                                                    ; RFC 5524 3
URLs are astrings; the verifier (":INTERNAL:hex") is part of the URL. Counts are bounded like
every list (the parser's max_items).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sealmail.proto.imap.commands import COMMANDS, Command
from sealmail.proto.imap.errors import BadCommand
from sealmail.proto.imap.state import AUTHENTICATED_OR_SELECTED, ConnectionState
from sealmail.proto.imap.syntax import Reader, render_astring

__all__ = ["FETCH_PARAMETERS", "PARSERS", "GenUrlAuth", "ResetKey", "UrlFetch", "UrlFetchItem"]

FETCH_PARAMETERS = frozenset({"BODYPARTSTRUCTURE", "BINARY", "BODY"})


@dataclass(frozen=True, slots=True)
class GenUrlAuth(Command):
    name: ClassVar[str] = "GENURLAUTH"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    requests: tuple[tuple[str, str], ...] = ()  # (url-rump, mechanism upper case)

    def arguments(self) -> bytes:
        return b"".join(b" " + render_astring(url) + b" " + mech.encode()
                        for url, mech in self.requests)


@dataclass(frozen=True, slots=True)
class ResetKey(Command):
    name: ClassVar[str] = "RESETKEY"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    mailbox: str | None = None  # None: every mailbox of the user
    mechanisms: tuple[str, ...] = ()

    def arguments(self) -> bytes:
        if self.mailbox is None:
            return b""
        return (b" " + render_astring(self.mailbox, utf8=True)
                + b"".join(b" " + m.encode() for m in self.mechanisms))


@dataclass(frozen=True, slots=True)
class UrlFetchItem:
    url: str
    parameters: tuple[str, ...] | None = None  # None: the plain form, no parentheses

    def render(self) -> bytes:
        if self.parameters is None:
            return render_astring(self.url)
        return (b"(" + render_astring(self.url)
                + b"".join(b" " + p.encode() for p in self.parameters) + b")")


@dataclass(frozen=True, slots=True)
class UrlFetch(Command):
    name: ClassVar[str] = "URLFETCH"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    items: tuple[UrlFetchItem, ...] = ()

    def arguments(self) -> bytes:
        return b"".join(b" " + item.render() for item in self.items)


def _url(reader: Reader) -> str:
    url = reader.astring_text()
    if not url:
        raise BadCommand("Empty URL")
    return url


def _genurlauth(reader: Reader, tag: str, by_uid: bool) -> Command:
    requests: list[tuple[str, str]] = []
    while not reader.at_end() or not requests:
        reader.sp()
        reader.count_item()
        url = _url(reader)
        reader.sp()
        requests.append((url, reader.atom().upper()))
    return GenUrlAuth(tag, tuple(requests))


def _resetkey(reader: Reader, tag: str, by_uid: bool) -> Command:
    if reader.at_end():
        return ResetKey(tag)
    reader.sp()
    mailbox = reader.mailbox()
    mechanisms = []
    while not reader.at_end():
        reader.sp()
        reader.count_item()
        mechanisms.append(reader.atom().upper())
    return ResetKey(tag, mailbox, tuple(mechanisms))


def _fetch_item(reader: Reader) -> UrlFetchItem:
    if reader.peek() != 0x28:
        return UrlFetchItem(_url(reader))
    reader.expect(b"(", "'('")
    reader.enter()
    url = _url(reader)
    parameters = []
    while reader.peek() == 0x20:
        reader.sp()
        reader.count_item()
        parameter = reader.atom().upper()
        if parameter not in FETCH_PARAMETERS:
            raise BadCommand(f"Unknown URLFETCH parameter {parameter[:32]}")
        parameters.append(parameter)
    reader.expect(b")", "')'")
    reader.leave()
    if "BODY" in parameters and "BINARY" in parameters:
        raise BadCommand("URLFETCH takes BODY or BINARY, not both")  # RFC 5524 3
    return UrlFetchItem(url, tuple(parameters))


def _urlfetch(reader: Reader, tag: str, by_uid: bool) -> Command:
    items: list[UrlFetchItem] = []
    while not reader.at_end() or not items:
        reader.sp()
        reader.count_item()
        items.append(_fetch_item(reader))
    return UrlFetch(tag, tuple(items))


PARSERS = {"GENURLAUTH": _genurlauth, "RESETKEY": _resetkey, "URLFETCH": _urlfetch}
COMMANDS.update({cls.name: cls for cls in (GenUrlAuth, ResetKey, UrlFetch)})
