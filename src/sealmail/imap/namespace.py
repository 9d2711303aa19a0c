"""Mailbox names as an IMAP user sees them, in Cyrus's namespaces (RFC 2342).

Internal names are the store's (`user.alice.Sent`, shared `Projects`; see
sealmail.store.names). A user sees, with the standard namespace:

    INBOX, INBOX.Sent          personal    (user.alice, user.alice.Sent)
    user.bob, user.bob.Lists   other users (user.bob, ...)
    Projects                   shared      (Projects)

and with `altnamespace: yes`, personal folders beside INBOX (`Sent`), other users under
`Other Users.`, shared folders under `Shared Folders.`. `unixhierarchysep: yes` shows '/' instead
of '.'; a '.' inside a level is then kept as '^' internally. On the wire, names are modified
UTF-7 (RFC 3501 5.1.3) unless UTF8=ACCEPT is enabled (RFC 6855 3).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sealmail.store.errors import InvalidMailboxName
from sealmail.store.names import (
    USER_PREFIX,
    decode_mutf7,
    encode_mutf7,
    validate_internal,
)

__all__ = ["OTHER_USERS", "SHARED_FOLDERS", "UserNamespace", "net_unicode"]

OTHER_USERS = "Other Users"  # Cyrus's userprefix
SHARED_FOLDERS = "Shared Folders"  # Cyrus's sharedprefix


def net_unicode(name: str) -> str:
    """A UTF-8 mailbox name as RFC 9051 5.1 wants it: Net-Unicode (RFC 5198), i.e. NFC and no
    control characters.

    "Server implementations MUST prohibit the creation of 8-bit mailbox names that do not
    comply with Net-Unicode"; a de-normalized name is accepted and normalized (the server "MAY
    accept a de-normalized UTF-8 mailbox name and convert it to ... NFC"), and then "MUST
    accept them in all IMAP commands that have a mailbox name parameter", which normalizing
    every name on the way in gives.
    """
    if any(unicodedata.category(char) == "Cc" for char in name):
        raise InvalidMailboxName(f"control character in mailbox name {name!r}")
    return unicodedata.normalize("NFC", name)


@dataclass(frozen=True, slots=True)
class UserNamespace:
    """Name conversions for one authenticated user whose INBOX is `inbox` (internal)."""

    inbox: str
    separator: str = "."
    alternate: bool = False

    @property
    def domain(self) -> str | None:
        domain, _, _ = self.inbox.rpartition("!")
        return domain or None

    @property
    def _inbox_levels(self) -> list[str]:
        return self.inbox.rpartition("!")[2].split(".")

    def namespaces(self) -> tuple[list[tuple[str, str | None]], list[tuple[str, str | None]],
                                  list[tuple[str, str | None]]]:
        """(personal, other users, shared) as NAMESPACE reports them."""
        sep = self.separator
        if self.alternate:
            return [("", sep)], [(OTHER_USERS + sep, sep)], [(SHARED_FOLDERS + sep, sep)]
        return [("INBOX" + sep, sep)], [(USER_PREFIX + sep, sep)], [("", sep)]

    # -- external -> internal -------------------------------------------------------------------

    def to_internal(self, wire: str, utf8: bool = False) -> str:
        """The internal name of a name as the client sent it; InvalidMailboxName if none.

        With `utf8` (UTF8=ACCEPT or IMAP4rev2 enabled) the name is UTF-8 as is, normalized to
        Net-Unicode (`net_unicode`); a '&' is then an ordinary character (RFC 6855 3).
        """
        text = net_unicode(wire) if utf8 else decode_mutf7(wire)
        if not text or (text.endswith(self.separator) and text != self.separator):
            text = text.rstrip(self.separator)  # RFC 9051 6.3.4: a trailing separator is ignored
        levels = text.split(self.separator)
        if any(not level for level in levels):
            raise InvalidMailboxName(f"empty level in {wire!r}")
        if "!" in text or "^" in text:
            # Internally '!' separates a virtual domain and '^' stands for a '.' inside a
            # level (as in Cyrus), so neither may be typed.
            raise InvalidMailboxName(f"'!' and '^' are not allowed in mailbox names: {wire!r}")
        head = levels[0]
        if head.upper() == "INBOX":
            internal_levels = self._inbox_levels + levels[1:]
        elif self.alternate:
            if head == OTHER_USERS:
                if len(levels) < 2:
                    raise InvalidMailboxName(f"{wire!r} is a namespace prefix, not a mailbox")
                internal_levels = [USER_PREFIX, *levels[1:]]
            elif head == SHARED_FOLDERS:
                if len(levels) < 2:
                    raise InvalidMailboxName(f"{wire!r} is a namespace prefix, not a mailbox")
                internal_levels = levels[1:]
            else:
                internal_levels = self._inbox_levels + levels
        else:
            internal_levels = levels
        encoded = [encode_mutf7(level).replace(".", "^") for level in internal_levels]
        local = ".".join(encoded)
        name = f"{self.domain}!{local}" if self.domain else local
        validate_internal(name)
        return name

    # -- internal -> external -------------------------------------------------------------------

    def to_external(self, internal: str, utf8: bool = False) -> str:
        """The name the client sees (modified UTF-7 unless `utf8`)."""
        local = internal.rpartition("!")[2]
        encoded = local.split(".")
        own = self._inbox_levels
        if encoded[: len(own)] == own:
            rest = encoded[len(own):]
            levels = (rest or ["INBOX"]) if self.alternate else ["INBOX", *rest]
        elif encoded[0] == USER_PREFIX:
            levels = [OTHER_USERS, *encoded[1:]] if self.alternate else encoded
        else:
            levels = [SHARED_FOLDERS, *encoded] if self.alternate else encoded
        text = self.separator.join(decode_mutf7(level.replace("^", ".")) for level in levels)
        return text if utf8 else encode_mutf7(text)

    def is_visible(self, internal: str) -> bool:
        """Only mailboxes of the user's own domain exist for a user (Cyrus virtdomains)."""
        domain = internal.rpartition("!")[0] or None
        return domain == self.domain
