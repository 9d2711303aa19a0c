"""NOTIFY (RFC 5465): what a session watches beyond its selected mailbox, and the unsolicited
responses that tell the client.

The session keeps the client's event groups (`NotifySpec`) and, per watched mailbox, the
counters the client last heard (MESSAGES, UIDNEXT, UIDVALIDITY, HIGHESTMODSEQ), the names in
scope and the subscriptions. `news` compares them with the store: a changed mailbox gets a
STATUS with the items its events ask for (RFC 5465 5.2-5.3: MessageNew -> MESSAGES UIDNEXT
UIDVALIDITY, MessageExpunge -> MESSAGES, FlagChange -> UIDVALIDITY HIGHESTMODSEQ), a mailbox
made or deleted a LIST (\\NonExistent when gone, 5.4), a subscription change a LIST with or
without \\Subscribed (5.5). The daemon asks for `news` between commands, whenever the client is
not in the middle of one (RFC 5465 3), as it polls an idling client; the selected mailbox keeps
its EXISTS / EXPUNGE / FETCH, sent then too when SELECTED is watched.

Served events: MessageNew (without fetch attributes), MessageExpunge, FlagChange, MailboxName,
SubscriptionChange; the others are refused with BADEVENT (RFC 5465 3.1). Comparing costs one
mailbox list (and the subscription list) per poll, so NOTIFY sessions poll no more than once
a second.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.proto.imap import Notify, NotifyGroup, Response
from sealmail.proto.imap import response as replies
from sealmail.store.api import MailboxInfo
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["SERVED_EVENTS", "NotifySpec", "news", "notify"]

SERVED_EVENTS = ("MessageNew", "MessageExpunge", "FlagChange", "MailboxName",
                 "SubscriptionChange")
_MESSAGE_EVENTS = frozenset({"MessageNew", "MessageExpunge", "FlagChange"})
_ITEMS = (("MESSAGES", {"MessageNew", "MessageExpunge"}), ("UIDNEXT", {"MessageNew"}),
          ("UIDVALIDITY", {"MessageNew", "FlagChange"}), ("HIGHESTMODSEQ", {"FlagChange"}))
MAX_WATCHED = 1000  # mailboxes one session may watch by name or subtree
POLL_INTERVAL = 1.0  # seconds: how often an idling NOTIFY session looks at them


@dataclass
class NotifySpec:
    groups: tuple[NotifyGroup, ...]
    counters: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    names: set[str] = field(default_factory=set)
    subscriptions: set[str] = field(default_factory=set)

    @property
    def selected(self) -> bool:
        return any(g.filter in ("SELECTED", "SELECTED-DELAYED") and g.events
                   for g in self.groups)


def notify(session: ImapSession, command: Notify) -> list[Response]:
    if command.groups is None:
        session.notify_spec = None
        return []
    unserved = sorted({e for g in command.groups for e in g.events} - set(SERVED_EVENTS))
    if unserved:
        raise CommandFailed(f"Event {unserved[0]} is not served", _bad_event())
    if any(g.fetch for g in command.groups):
        raise CommandFailed("MessageNew with fetch attributes is not served", _bad_event())
    spec = NotifySpec(command.groups)
    watched = _watched(session, spec)
    if len(watched) > MAX_WATCHED:
        raise CommandFailed(f"More than {MAX_WATCHED} mailboxes to watch", "LIMIT")
    spec.counters = {name: _counters(info) for name, (info, _) in watched.items()}
    spec.names = set(_in_scope(session, spec, "MailboxName"))
    spec.subscriptions = set(session.store.subscriptions(session.userid))
    session.notify_spec = spec
    out: list[Response] = []
    if command.status:
        # RFC 5465 3.1: STATUS for every mailbox of a message event group, now.
        for info, events in watched.values():
            out.append(_status(session, info, events))
    return out


def _bad_event() -> str:
    return "BADEVENT (" + " ".join(SERVED_EVENTS) + ")"


def news(session: ImapSession) -> list[Response]:
    """Untagged responses for what changed since the client last heard (see module doc)."""
    spec = session.notify_spec
    if spec is None:
        return []
    out: list[Response] = []
    try:
        watched = _watched(session, spec)
        for name, (info, events) in watched.items():
            now = _counters(info)
            if spec.counters.get(name) != now:
                spec.counters[name] = now
                out.append(_status(session, info, events))
        for name in set(spec.counters) - set(watched):
            del spec.counters[name]
        names = set(_in_scope(session, spec, "MailboxName"))
        separator = session.namespace.separator
        for name in sorted(names - spec.names):
            out.append(replies.list_response([], separator, session.external(name)))
        for name in sorted(spec.names - names):
            out.append(replies.list_response(["\\NonExistent"], separator,
                                             session.external(name)))
        spec.names = names
        if any("SubscriptionChange" in g.events for g in spec.groups):
            subscribed = set(session.store.subscriptions(session.userid))
            for name in sorted(subscribed ^ spec.subscriptions):
                flags = ["\\Subscribed"] if name in subscribed else []
                out.append(replies.list_response(flags, separator, session.external(name)))
            spec.subscriptions = subscribed
    except StoreError:
        return out
    return out


def _counters(info: MailboxInfo) -> tuple[int, int, int, int]:
    return (info.exists, info.uidnext, info.uidvalidity, info.highestmodseq)


def _status(session: ImapSession, info: MailboxInfo, events: set[str]) -> Response:
    values = {"MESSAGES": info.exists, "UIDNEXT": info.uidnext,
              "UIDVALIDITY": info.uidvalidity, "HIGHESTMODSEQ": info.highestmodseq}
    items = {item: values[item] for item, wanted in _ITEMS if wanted & events}
    return replies.status(session.external(info.name), items)


def _watched(session: ImapSession, spec: NotifySpec) -> dict[str, tuple[MailboxInfo, set[str]]]:
    """The mailboxes (not the selected one) a message event group names, with their events."""
    selected = session.selected.name if session.selected is not None else None
    out: dict[str, tuple[MailboxInfo, set[str]]] = {}
    infos = _listable(session, spec)
    for group in spec.groups:
        events = set(group.events) & _MESSAGE_EVENTS
        if not events or group.filter in ("SELECTED", "SELECTED-DELAYED"):
            continue
        for name in _group_names(session, group, infos):
            if name != selected and name in infos:
                info = infos[name]
                out[name] = (info, out.get(name, (info, set()))[1] | events)
    return out


def _in_scope(session: ImapSession, spec: NotifySpec, event: str) -> list[str]:
    infos = _listable(session, spec)
    names: list[str] = []
    for group in spec.groups:
        if event in group.events:
            names += [n for n in _group_names(session, group, infos) if n in infos]
    return names


def _group_names(session: ImapSession, group: NotifyGroup,
                 infos: dict[str, MailboxInfo]) -> list[str]:
    inbox = session.namespace.inbox
    if group.filter == "INBOXES":
        return [inbox]  # where mail is delivered: Sieve's fileinto targets are not known here
    if group.filter == "PERSONAL":
        return [n for n in infos if n == inbox or n.startswith(inbox + ".")]
    if group.filter == "SUBSCRIBED":
        return list(session.store.subscriptions(session.userid))
    roots = []
    for wire in group.mailboxes:
        try:
            roots.append(session.internal(wire))
        except StoreError:
            continue
    if group.filter == "MAILBOXES":
        return roots
    return [n for n in infos for root in roots if n == root or n.startswith(root + ".")]


def _listable(session: ImapSession, spec: NotifySpec) -> dict[str, MailboxInfo]:
    """The mailboxes the groups can name that the user may see (RFC 5465 5: no news of
    mailboxes they may not list), read by prefix so the cost follows what is watched, not
    the size of the server."""
    prefixes: set[str] = set()
    for group in spec.groups:
        if group.filter in ("INBOXES", "PERSONAL"):
            prefixes.add(session.namespace.inbox)
        elif group.filter == "SUBSCRIBED":
            prefixes.update(session.store.subscriptions(session.userid))
        elif group.filter in ("SUBTREE", "MAILBOXES"):
            for wire in group.mailboxes:
                try:
                    prefixes.add(session.internal(wire))
                except StoreError:
                    continue
    out: dict[str, MailboxInfo] = {}
    for prefix in sorted(prefixes):
        if any(prefix.startswith(p) for p in prefixes if p != prefix):
            continue  # covered by a shorter prefix
        for info in session.store.list_mailboxes(prefix):
            if session.rights_in(info, "l") or session.rights_in(info, "r"):
                out[info.name] = info
    return out
