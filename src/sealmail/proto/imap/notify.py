"""The NOTIFY command (RFC 5465 8).

    notify          = "NOTIFY" SP (notify-set / notify-none)
    notify-none     = "NONE"
    notify-set      = "SET" [status-indicator] SP event-groups
    status-indicator = SP "STATUS"
    event-groups    = event-group *(SP event-group)
    event-group     = "(" filter-mailboxes SP events ")"
    filter-mailboxes = "SELECTED" / "SELECTED-DELAYED" / "INBOXES" / "PERSONAL" /
                       "SUBSCRIBED" / ("SUBTREE" SP one-or-more-mailbox) /
                       ("MAILBOXES" SP one-or-more-mailbox)
    one-or-more-mailbox = mailbox / "(" mailbox *(SP mailbox) ")"
    events          = ("(" event *(SP event) ")") / "NONE"
    event           = message-event / mailbox-event / user-event / event-ext
    message-event   = ("MessageNew" [SP "(" fetch-att *(SP fetch-att) ")"]) /
                      "MessageExpunge" / "FlagChange" / "AnnotationChange"

Event names are kept as written in RFC 5465 ("MessageNew"), matched without regard to case;
which of them the server serves is the session's question (BADEVENT).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from sealmail.proto.imap.commands import COMMANDS, Command
from sealmail.proto.imap.errors import BadCommand
from sealmail.proto.imap.fetch import parse_fetch_attribute, render_fetch_attribute
from sealmail.proto.imap.state import AUTHENTICATED_OR_SELECTED, ConnectionState
from sealmail.proto.imap.syntax import Reader, render_astring

__all__ = ["EVENTS", "FILTERS", "PARSERS", "Notify", "NotifyGroup"]

FILTERS = ("SELECTED", "SELECTED-DELAYED", "INBOXES", "PERSONAL", "SUBSCRIBED", "SUBTREE",
           "MAILBOXES")
EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "AnnotationChange", "MailboxName",
          "SubscriptionChange", "MailboxMetadataChange", "ServerMetadataChange")
_CANONICAL = {name.upper(): name for name in EVENTS}
MAX_GROUPS = 50


@dataclass(frozen=True, slots=True)
class NotifyGroup:
    filter: str  # one of FILTERS
    mailboxes: tuple[str, ...] = ()  # SUBTREE / MAILBOXES
    events: tuple[str, ...] = ()  # () is NONE
    fetch: tuple[bytes, ...] = ()  # MessageNew's fetch-atts, rendered

    def render(self) -> bytes:
        wire = b"(" + self.filter.encode()
        if self.mailboxes:
            wire += b" (" + b" ".join(render_astring(m, utf8=True) for m in self.mailboxes) + b")"
        if not self.events:
            return wire + b" NONE)"
        events = []
        for event in self.events:
            if event == "MessageNew" and self.fetch:
                events.append(b"MessageNew (" + b" ".join(self.fetch) + b")")
            else:
                events.append(event.encode())
        return wire + b" (" + b" ".join(events) + b"))"


@dataclass(frozen=True, slots=True)
class Notify(Command):
    name: ClassVar[str] = "NOTIFY"
    states: ClassVar[frozenset[ConnectionState]] = AUTHENTICATED_OR_SELECTED
    groups: tuple[NotifyGroup, ...] | None = None  # None: NOTIFY NONE
    status: bool = False

    def arguments(self) -> bytes:
        if self.groups is None:
            return b" NONE"
        return (b" SET" + (b" STATUS" if self.status else b"")
                + b"".join(b" " + g.render() for g in self.groups))


def _event(reader: Reader, fetch: list[bytes]) -> str:
    word = reader.atom().upper()
    event = _CANONICAL.get(word, word)
    if event == "MessageNew" and reader.startswith(b" ("):
        reader.sp()
        fetch.extend(render_fetch_attribute(a) for a in reader.paren_list(parse_fetch_attribute))
    return event


def _group(reader: Reader) -> NotifyGroup:
    reader.expect(b"(", "'('")
    reader.enter()
    kind = reader.atom().upper()
    if kind not in FILTERS:
        raise BadCommand(f"Unknown NOTIFY filter {kind[:32]}")
    mailboxes: tuple[str, ...] = ()
    if kind in ("SUBTREE", "MAILBOXES"):
        reader.sp()
        if reader.peek() == 0x28:
            mailboxes = tuple(reader.paren_list(lambda r: r.mailbox(), allow_empty=False))
        else:
            mailboxes = (reader.mailbox(),)
    events: list[str] = []
    fetch: list[bytes] = []
    if reader.peek() == 0x20:  # RFC 5465 8 requires events; Dovecot and imaptest agree
        reader.sp()
        if reader.startswith_word(b"NONE"):
            reader.pos += len(b"NONE")
        else:
            events = reader.paren_list(lambda r: _event(r, fetch), allow_empty=False)
    reader.expect(b")", "')'")
    reader.leave()
    return NotifyGroup(kind, mailboxes, tuple(events), tuple(fetch))


def _notify(reader: Reader, tag: str, by_uid: bool) -> Command:
    reader.sp()
    word = reader.atom().upper()
    if word == "NONE":
        return Notify(tag)
    if word != "SET":
        raise BadCommand("NOTIFY takes SET or NONE")
    reader.sp()
    status = reader.startswith_word(b"STATUS")
    if status:
        reader.pos += len(b"STATUS")
        reader.sp()
    groups = [_group(reader)]
    while not reader.at_end():
        if len(groups) >= MAX_GROUPS:
            raise BadCommand(f"More than {MAX_GROUPS} NOTIFY event groups")
        reader.sp()
        reader.count_item()
        groups.append(_group(reader))
    return Notify(tag, tuple(groups), status)


PARSERS = {"NOTIFY": _notify}
COMMANDS[Notify.name] = Notify
