"""URLAUTH (RFC 4467): GENURLAUTH, URLFETCH (with RFC 5524's BODYPARTSTRUCTURE / BODY /
BINARY) and RESETKEY, over the store's per-mailbox access keys (sealmail.store.api.AccessKeys).

A URL's verifier is HMAC-SHA1 of its rump (everything up to the access identifier) under the
mailbox's key, in hex: the "INTERNAL" mechanism (RFC 4467 7 leaves its form to the server).
RESETKEY replaces the key, so every URL made with the old one fetches NIL from then on.

Who may fetch (RFC 4467 3): `user+NAME` only NAME; `authuser` any user logged in here;
`anonymous` anyone; `submit+NAME` the submission server's accounts (imapd.conf
urlauth_submit_users) acting for NAME. The message is read with the authority of the URL's
owner, who must still be able to read the mailbox. Anything that does not hold is answered
with NIL, never with why (RFC 4467 6.3: the client learns nothing about other users).
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sealmail.config.options import IMAPD
from sealmail.imap.errors import CommandFailed
from sealmail.imap.namespace import UserNamespace
from sealmail.imap.urls import BadUrl, UrlPart, parse_url, read_url
from sealmail.proto.imap import (
    AString,
    Atom,
    DataResponse,
    GenUrlAuth,
    Literal,
    ResetKey,
    Response,
    UrlFetch,
    UrlFetchItem,
    Value,
    find_part,
)
from sealmail.proto.imap.binary import binary_entity, binary_form
from sealmail.proto.imap.response import body_structure_value
from sealmail.proto.imap.url import ImapUrl
from sealmail.store import acl as acls
from sealmail.store.api import AccessKeys
from sealmail.store.errors import StoreError
from sealmail.store.names import user_inbox

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["genurlauth", "resetkey", "urlfetch", "verifier"]

MECHANISM = "INTERNAL"


def verifier(key: bytes, rump: str) -> str:
    return hmac.new(key, rump.encode("utf-8"), hashlib.sha1).hexdigest()


def _keys(session: ImapSession) -> AccessKeys:
    store = session.store
    if not isinstance(store, AccessKeys):
        raise CommandFailed("URLAUTH is not available with this store", "CANNOT")
    return store


def _owner_mailbox(session: ImapSession, owner: str, mailbox: str) -> str:
    """The internal name of `mailbox` as `owner` names it (the URL's own namespace)."""
    user, _, domain = owner.partition("@")
    namespace = UserNamespace(user_inbox(user, domain.lower() or None),
                              session.namespace.separator, session.namespace.alternate)
    return namespace.to_internal(mailbox, utf8=True)  # RFC 5092 6: UTF-8 in URLs


def genurlauth(session: ImapSession, command: GenUrlAuth) -> list[Response]:
    """RFC 4467 6.1: a URL for each rump, of a mailbox this user may read."""
    keys = _keys(session)
    urls: list[Value] = []
    for rump, mechanism in command.requests:
        if mechanism != MECHANISM:
            raise CommandFailed(f"Unknown URLAUTH mechanism {mechanism[:32]}")
        url = parse_url(rump)
        if not url.absolute or url.access is None or url.token is not None \
                or url.rump != rump:
            raise BadUrl(rump, "Not a URLAUTH rump")
        if url.user != session.userid:
            raise BadUrl(rump, "A URLAUTH URL is made by the user it names")
        try:
            internal = _owner_mailbox(session, session.userid, url.mailbox)
            if not session.has_rights(internal, "r"):
                raise BadUrl(rump)
            key = keys.access_key(internal)
        except StoreError:
            raise BadUrl(rump) from None
        urls.append(AString(f"{rump}:{MECHANISM}:{verifier(key, rump)}"))
    return [DataResponse((Atom("GENURLAUTH"), *urls))]


def resetkey(session: ImapSession, command: ResetKey) -> list[Response]:
    """RFC 4467 6.2: a new key for one mailbox (its administrator's right, "a"), or for every
    mailbox of the user."""
    keys = _keys(session)
    unknown = [m for m in command.mechanisms if m != MECHANISM]
    if unknown:
        raise CommandFailed(f"Unknown URLAUTH mechanism {unknown[0][:32]}")
    if command.mailbox is not None:
        internal = session.internal(command.mailbox)
        session.require_rights(internal, "a")
        keys.reset_access_key(internal)
        return []
    inbox = session.namespace.inbox
    for info in session.store.list_mailboxes(inbox):
        if info.name == inbox or info.name.startswith(inbox + "."):
            keys.reset_access_key(info.name)
    return []


def urlfetch(session: ImapSession, command: UrlFetch) -> list[Response]:
    """RFC 4467 6.3: one URLFETCH response per URL; NIL for any that cannot be fetched."""
    keys = _keys(session)
    out: list[Response] = []
    for item in command.items:
        part = _authorized_part(session, keys, item.url)
        out.append(DataResponse((Atom("URLFETCH"), AString(item.url), _fetched(item, part))))
    return out


def _authorized_part(session: ImapSession, keys: AccessKeys, text: str) -> UrlPart | None:
    try:
        url = parse_url(text)
    except BadUrl:
        return None
    if not (url.absolute and url.user and url.access and url.token
            and url.mechanism == MECHANISM) or _expired(url) \
            or not _may_fetch(session, url.access):
        return None
    try:
        internal = _owner_mailbox(session, url.user, url.mailbox)
        info = session.store.mailbox(internal)
        if info is None:
            return None
        implicit = acls.owner_rights(internal, url.user, session.implicit_owner_rights)
        if "r" not in acls.rights_of(info.acl, url.user, False, implicit):
            return None  # the owner can no longer read it
        if not hmac.compare_digest(verifier(keys.access_key(internal), url.rump), url.token):
            return None
        return read_url(session.store, internal, url, text)
    except (StoreError, BadUrl):
        return None


def _may_fetch(session: ImapSession, access: str) -> bool:
    kind, _, user = access.partition("+")
    kind = kind.lower()
    if kind in ("authuser", "anonymous"):
        return True
    if kind == "user":
        return user == session.userid
    if kind == "submit":
        return session.userid in (session.config.get(IMAPD.urlauth_submit_users) or ())
    return False


def _expired(url: ImapUrl) -> bool:
    """RFC 4467 3: ";EXPIRE=" takes an RFC 3339 date-time; one that does not parse is no URL."""
    if url.expire is None:
        return False
    try:
        expire = datetime.fromisoformat(url.expire.replace("Z", "+00:00"))
    except ValueError:
        return True
    if expire.tzinfo is None:
        expire = expire.replace(tzinfo=UTC)
    return expire <= datetime.now(UTC)


def _fetched(item: UrlFetchItem, part: UrlPart | None) -> Value:
    """The data of one URLFETCH response: nstring, or RFC 5524's parenthesized form, where
    BODYPARTSTRUCTURE describes what BINARY returns when both are asked for."""
    if item.parameters is None:
        return None if part is None else Literal(part.data, binary=b"\0" in part.data)
    if part is None:
        return None
    section = part.section
    whole = section is None or (not section.part and section.text is None)
    target = part.parsed.body
    if section is not None and section.part:
        target = find_part(part.parsed.body, section.part) or target
    data, shown = part.data, target
    binary = "BINARY" in item.parameters
    if binary and whole:
        data, shown = binary_entity(part.raw, target)
    elif binary and section is not None and section.text is None:
        data, shown = binary_form(part.raw, target)
    values: list[Value] = []
    if "BODYPARTSTRUCTURE" in item.parameters:
        values += [Atom("BODYPARTSTRUCTURE"), body_structure_value(shown, extensible=True)]
    if "BODY" in item.parameters or binary:
        values += [Atom("BINARY" if binary else "BODY"), Literal(data, binary=b"\0" in data)]
    return values
