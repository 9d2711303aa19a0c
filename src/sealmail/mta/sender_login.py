"""smtpd_sender_login_maps and the four reject_*_sender_login_mismatch restrictions, as Postfix's
smtpd_check.c has them. Pure: the tables are read through `LookupTable.lookup`, and nothing else.

The map says which SASL logins own an envelope sender: `alice@example.com  alice, alice2`. The
lookup keys are Postfix's (mail_addr_find): the full address, then without its +extension, then
(for a local domain only) the local part with and without the extension, then `@domain`.

Two tests make up the four restrictions (`verdict`):

- authenticated mismatch: the client is logged in, and the sender's owners do not name its login
  (an unlisted sender counts as a mismatch, except for reject_known_sender_login_mismatch);
  553 5.7.1 <addr>: Sender address rejected: not owned by user LOGIN
- unauthenticated mismatch: the client is not logged in and the sender has an owner;
  553 5.7.1 <addr>: Sender address rejected: not logged in

reject_sender_login_mismatch and reject_known_sender_login_mismatch apply both;
reject_authenticated_... and reject_unauthenticated_... one each. The null sender is never
checked. A table that fails answers 451 4.3.0 (Postfix's "Temporary lookup failure").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import LookupTable
from sealmail.proto.smtp import Reply

REJECT_SENDER_LOGIN_MISMATCH = "reject_sender_login_mismatch"
REJECT_AUTHENTICATED = "reject_authenticated_sender_login_mismatch"
REJECT_KNOWN = "reject_known_sender_login_mismatch"
REJECT_UNAUTHENTICATED = "reject_unauthenticated_sender_login_mismatch"
RESTRICTIONS = frozenset(
    {REJECT_SENDER_LOGIN_MISMATCH, REJECT_AUTHENTICATED, REJECT_KNOWN, REJECT_UNAUTHENTICATED})


class LookupFailure(Exception):
    """A table could not answer: the restriction defers (451 4.3.0)."""


def lookup_keys(sender: str, delimiter: str, is_local_domain: Callable[[str], bool]) -> list[str]:
    """Postfix's mail_addr_find keys for `sender`, most specific first, without repeats."""
    local, at, domain = sender.rpartition("@")
    if not at:
        local, domain = sender, ""
    base = local
    for char in delimiter:
        if char in base[1:]:
            base = base[: base.index(char, 1)]
    keys = [sender, f"{base}@{domain}" if domain else base]
    if not domain or is_local_domain(domain):
        keys += [local, base]
    if domain:
        keys.append(f"@{domain}")
    return list(dict.fromkeys(keys))


def split_owners(value: str) -> tuple[str, ...]:
    """`alice, bob` -> ("alice", "bob"): Postfix splits the result on commas and spaces."""
    return tuple(word for word in value.replace(",", " ").split() if word)


@dataclass(frozen=True)
class SenderLoginMaps:
    """smtpd_sender_login_maps: the owners (SASL logins) of an envelope sender."""

    tables: tuple[LookupTable, ...]
    delimiter: str = ""
    is_local_domain: Callable[[str], bool] = lambda domain: False

    def owners(self, sender: str) -> tuple[str, ...] | None:
        """The logins that own `sender`, or None when no table lists it. LookupFailure when a
        table fails (the first table with an answer decides, as Postfix's maps do)."""
        for key in lookup_keys(sender, self.delimiter, self.is_local_domain):
            for table in self.tables:
                try:
                    value = table.lookup(key)
                except ConfigError as exc:
                    raise LookupFailure(f"{table.spec}: {exc}") from None
                if value is not None:
                    return split_owners(value)
        return None


def _not_owned(sender: str, login: str) -> Reply:
    return Reply(553, "5.7.1", f"<{sender}>: Sender address rejected: not owned by user {login}")


def _not_logged_in(sender: str) -> Reply:
    return Reply(553, "5.7.1", f"<{sender}>: Sender address rejected: not logged in")


def verdict(
    restriction: str,
    sender: str,
    sasl_username: str,
    owners: Sequence[str] | None,
) -> Reply | None:
    """The refusal of one of RESTRICTIONS for this sender and login (None: no decision, the
    next restriction is evaluated). `owners` is SenderLoginMaps.owners(sender)."""
    if not sender:  # the null sender: nothing to own
        return None
    authenticated = restriction in (REJECT_SENDER_LOGIN_MISMATCH, REJECT_AUTHENTICATED,
                                    REJECT_KNOWN)
    unauthenticated = restriction in (REJECT_SENDER_LOGIN_MISMATCH, REJECT_KNOWN,
                                      REJECT_UNAUTHENTICATED)
    if sasl_username:
        if not authenticated:
            return None
        if owners is None:
            return None if restriction == REJECT_KNOWN else _not_owned(sender, sasl_username)
        folded = sasl_username.casefold()
        if any(owner.casefold() == folded for owner in owners):
            return None
        return _not_owned(sender, sasl_username)
    if unauthenticated and owners is not None:
        return _not_logged_in(sender)
    return None


def temporary_failure(sender: str) -> Reply:
    """A table failed: Postfix's reject_dict_retry reply."""
    return Reply(451, "4.3.0", f"<{sender}>: Sender address rejected: Temporary lookup failure")
