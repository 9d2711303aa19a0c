"""From an LMTP recipient address to the mailbox it delivers into, by Cyrus's rules.

- The address is normalised first: with `lmtp_downcase_rcpt` the local part up to the delimiter and
  the domain are folded to lower case; the detail keeps its case, since mailbox names are case
  sensitive (the seed's section 8.3).
- `user@domain` is the INBOX `user.user` (with virtdomains: `domain!user.user`, the defaultdomain
  counting as none).
- `user+detail` is `user.user.detail` when that folder exists and grants the post right to anyone
  (Cyrus's rule); otherwise the INBOX (section 8.1), and the Recipient carries why, so that the
  delivery logs it (Cyrus: "could not deliver to user.x.folder, delivering to INBOX").
- `postuser+folder` and `+folder` post to the shared folder `folder` (section 8.2); there the
  folder must exist and grant the post right.

What a RCPT looks up (does the mailbox exist, its ACL, is it under a quota root) changes only
with the namespace, never with a delivery: `StableLookups` keeps it while the store's namespace
stamp holds, and lmtpd reads the stamp once per transaction, so 50 RCPTs cost one query, not
150 (issue 18).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.store import names
from sealmail.store.acl import rights_of
from sealmail.store.api import (
    DeliveryStore,
    MailboxInfo,
    MailboxLookup,
    NamespaceStamp,
    QuotaUsage,
)
from sealmail.store.errors import InvalidMailboxName, MailboxNotFound, PermissionDenied
from sealmail.store.quota import enforce_at_rcpt

# Who posts when mail arrives by LMTP without an AUTH= identity: Cyrus checks the 'p' right of
# anonymous (which `anyone` entries cover).
ANONYMOUS_POSTER = "anonymous"


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient accepted at RCPT time, with the mailbox its copy goes to."""

    address: str  # as normalised, for logs and replies
    mailbox: str  # internal name
    user: str | None  # owner's userid (for the per-user delivery limit); None for shared folders
    ignore_quota: bool = False
    # A +detail folder not used, and why ("no such mailbox", "no p right for anyone"): the
    # copy goes to the INBOX instead, and the delivery says so in the log.
    detail_fallback: tuple[str, str] | None = None


def split_local_part(local_part: str, delimiter: str) -> tuple[str, str | None]:
    """('user', 'detail') for 'user+detail'; ('user', None) without a delimiter."""
    if delimiter:
        for char in delimiter:  # Postfix allows several delimiter characters
            user, sep, detail = local_part.partition(char)
            if sep:
                return user, detail
    return local_part, None


class RecipientResolver:
    """Maps addresses to mailboxes; reads the store, never writes it."""

    def __init__(self, config: ImapdConfig, store: MailboxLookup) -> None:
        self.config = config
        self.store = store
        self.namespace = names.Namespace(config.hierarchy_separator)
        self.delimiter = config.get(IMAPD.recipient_delimiter) or ""
        self.downcase = config.get(IMAPD.lmtp_downcase_rcpt)
        self.postuser = config.get(IMAPD.postuser) or ""
        self.virtdomains = config.get(IMAPD.virtdomains) != "off"
        default_domain = config.get(IMAPD.defaultdomain)
        self.defaultdomain = default_domain.lower() if default_domain else None

    def normalise(self, local_part: str, domain: str | None) -> tuple[str, str | None, str | None]:
        """(user, detail, domain) after lmtp_downcase_rcpt."""
        user, detail = split_local_part(local_part, self.delimiter)
        if self.downcase:
            user = user.lower()
            domain = domain.lower() if domain else domain
        return user, detail, domain

    def resolve(
        self,
        local_part: str,
        domain: str | None,
        ignore_quota: bool = False,
        poster: str | None = None,
    ) -> Recipient:
        """The Recipient for an address, or MailboxNotFound / PermissionDenied.

        `poster` is the identity whose post right opens folders (deliver -a, MAIL's AUTH= from a
        trusted client); a user's INBOX takes mail from anyone.
        """
        poster = poster or ANONYMOUS_POSTER
        user, detail, domain = self.normalise(local_part, domain)
        shown = f"{user}+{detail}" if detail is not None else user
        address = f"{shown}@{domain}" if domain else shown
        mailbox_domain = domain if self.virtdomains and domain != self.defaultdomain else None

        if detail is not None and (not user or (self.postuser and user == self.postuser)):
            prefix = f"{mailbox_domain}!" if mailbox_domain else ""
            shared = self._existing(prefix, detail)
            if shared is None:
                raise MailboxNotFound(f"no shared folder {detail!r}")
            if not self._may_post(shared, poster):
                raise PermissionDenied(f"{shared.name} does not grant the post right")
            return Recipient(address, shared.name, None, ignore_quota)

        if not user:
            raise MailboxNotFound("empty local part")
        try:
            inbox = names.user_inbox(user, mailbox_domain)
            names.validate_internal(inbox)
        except InvalidMailboxName:
            raise MailboxNotFound(f"no user {user!r}") from None
        if self.store.mailbox(inbox) is None:
            raise MailboxNotFound(f"no mailbox {inbox}")
        userid = f"{user}@{mailbox_domain}" if mailbox_domain else user
        if not detail:
            return Recipient(address, inbox, userid, ignore_quota)
        folder = self._existing(f"{inbox}.", detail)
        if folder is not None and self._may_post(folder, poster):
            return Recipient(address, folder.name, userid, ignore_quota)
        if folder is not None:
            who = "anyone" if poster == ANONYMOUS_POSTER else poster
            fallback = (folder.name, f"no p right for {who}")
        else:
            candidates = self._candidates(detail)
            fallback = (
                (f"{inbox}.{candidates[0]}", "no such mailbox")
                if candidates
                else (detail, "not a valid mailbox name")
            )
        return Recipient(address, inbox, userid, ignore_quota, fallback)

    def _may_post(self, mailbox: MailboxInfo, poster: str) -> bool:
        return "p" in rights_of(mailbox.acl, poster, is_admin=self.config.is_admin(poster))

    def _candidates(self, detail: str) -> list[str]:
        """Internal names a detail may mean: already modified UTF-7, or as typed (UTF-8, spaces)."""
        found: list[str] = []
        if self.namespace.separator == ".":
            raw = [detail]
        else:
            raw = [] if "." in detail else [detail.replace("/", ".")]
        for candidate in raw:
            with contextlib.suppress(InvalidMailboxName):
                names.validate_internal(candidate)
                found.append(candidate)
        with contextlib.suppress(InvalidMailboxName):
            found.append(self.namespace.to_internal(detail))
        return list(dict.fromkeys(found))

    def _existing(self, prefix: str, detail: str) -> MailboxInfo | None:
        """The first mailbox `prefix + candidate` that exists, for the detail's candidates."""
        for candidate in self._candidates(detail):
            info = self.store.mailbox(prefix + candidate)
            if info is not None:
                return info
        return None


class StableLookups:
    """A MailboxLookup that keeps its answers while the store's namespace stamp holds
    (sealmail.store.api.NamespaceStamp), and each mailbox's quota root and its limits (whose
    usage, which moves with deliveries, is read at every check).

    Its MailboxInfo's name, partition and ACL are current as of the last `refresh`; its
    counters (uidnext, exists) are not, and nothing here reads them. The stamp is read before
    any lookup it covers, so a change committed in between makes a kept answer newer than the
    stamp, never older: the next refresh drops it. A recipient accepted on an answer a
    concurrent DELETE made stale fails at delivery (MailboxNotFound), as it did when the
    mailbox went between RCPT and DATA.

    `resolved` keeps what a RecipientResolver reading these lookups made of an address: that
    is the config's rules over these same answers, so it holds exactly as long as they do (and
    is dropped with them). A RCPT then costs a dict lookup instead of the resolver's ~4 us of
    name building and checks (issue 18: 50 per 50-recipient message, on the event loop)."""

    MAX_KEPT = 50_000  # mailboxes (or resolved addresses) kept before starting over

    def __init__(self, store: NamespaceStamp, lookup: DeliveryStore) -> None:
        self._stamp_of = store.namespace_stamp
        self._used_under = store.used_under
        self._store = lookup
        self._stamp: int | None = None
        self._mailboxes: dict[str, MailboxInfo | None] = {}
        # mailbox -> its root and the root's limits (a QuotaUsage, as quota_for gave it first);
        # None: no root governs it
        self._governed: dict[str, QuotaUsage | None] = {}
        # (local part, domain, ignore_quota, poster) -> the Recipient resolved from them
        self.recipients: dict[tuple[str, str | None, bool, str | None], Recipient] = {}

    def refresh(self) -> None:
        """Read the stamp; forget everything when it moved (or too much is kept)."""
        stamp = self._stamp_of()
        if (
            stamp != self._stamp
            or len(self._mailboxes) > self.MAX_KEPT
            or len(self.recipients) > self.MAX_KEPT
        ):
            self._mailboxes, self._governed, self.recipients = {}, {}, {}
            self._stamp = stamp

    def resolved(
        self,
        resolver: RecipientResolver,
        local_part: str,
        domain: str | None,
        ignore_quota: bool,
        poster: str | None,
    ) -> Recipient:
        """`resolver.resolve` of these arguments, kept in `recipients` (a refusal is not)."""
        key = (local_part, domain, ignore_quota, poster)
        kept = self.recipients.get(key)
        if kept is None:
            kept = self.recipients[key] = resolver.resolve(*key)
        return kept

    def mailbox(self, name: str) -> MailboxInfo | None:
        kept = self._mailboxes
        if name in kept:
            return kept[name]
        info = kept[name] = self._store.mailbox(name)
        return info

    def check_quota(self, name: str, incoming_size: int) -> None:
        """The store's check_quota: skipped for a mailbox no quota root governs; else the root
        and its limits kept, and only its usage read again (one query, not the root's search
        too: ~10 us of every RCPT under a root, on lmtpd's event loop; issue 18)."""
        if name in self._governed:
            kept = self._governed[name]
            if kept is None:
                return
            used_bytes, used_messages = self._used_under(kept.root)
            usage = QuotaUsage(kept.root, used_bytes, kept.storage_limit, used_messages,
                               kept.messages_limit)
        else:
            quota_for = getattr(self._store, "quota_for", None)
            if quota_for is None:
                self._store.check_quota(name, incoming_size)
                return
            found = self._governed[name] = quota_for(name)
            if found is None:
                return
            usage = found
        enforce_at_rcpt(usage, incoming_size)
