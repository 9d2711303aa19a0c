"""Running a user's active Sieve script at delivery, and turning its actions into copies,
replies and outgoing mail.

The Sieve library decides; this module maps its decisions onto the store the way Cyrus's
lmtp_sieve does: `keep` goes to the mailbox the address resolved to (INBOX, or the +detail
folder), `fileinto` to a folder of the user's that the user may post to (else INBOX), `reject`
and `ereject` become the recipient's LMTP reply (RFC 5429 2.1 allows the protocol-level refusal
for both), `redirect` and `vacation` leave through the MTA after the copies are stored. A script
that fails to compile or run never loses mail: the implicit keep applies and the error is logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, make_msgid

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.delivery import message as msg
from sealmail.delivery.outbound import Outbound, OutboundError
from sealmail.delivery.recipient import Recipient
from sealmail.proto.imap.syntax import canonical_flag
from sealmail.proto.smtp import Reply
from sealmail.sieve import (
    DEFAULT_CACHE,
    Discard,
    Ereject,
    FileInto,
    IncludeLocation,
    Keep,
    Redirect,
    Reject,
    SieveCompileError,
    SieveContext,
    SieveResult,
    Vacation,
    compose_vacation_reply,
    run,
)
from sealmail.sieve import Envelope as SieveEnvelope
from sealmail.store import names
from sealmail.store.acl import rights_of
from sealmail.store.api import DeliveryStore, MailboxInfo
from sealmail.store.auditlog import AuditLog
from sealmail.store.errors import InvalidMailboxName, StoreError
from sealmail.store.sieve_scripts import SieveScriptStore
from sealmail.store.sieve_tracking import SieveTracking

log = logging.getLogger("sealmail.sieve")

REDIRECTED_FROM = b"X-Sieve-Redirected-From"
REDIRECT_MEMORY = 7 * 86400  # a retried delivery does not redirect the same message twice


@dataclass(frozen=True, slots=True)
class Copy:
    """One message to store: in `mailbox`, with `flags`, as `content` (editheader may differ)."""

    mailbox: str
    flags: tuple[str, ...]
    content: bytes


@dataclass(frozen=True, slots=True)
class Outgoing:
    sender: str
    recipients: tuple[str, ...]
    content: bytes
    what: str  # "redirect to x@y", "vacation reply to x@y" (for logs)
    scope: str  # tracking scope/key recorded once it is sent
    key: str
    seconds: float


# User -> their active script (name, text) or None, as one batch of deliveries found it: the
# batch's messages are stored at once, so each user's script is looked up once for all of them
# (a link and a file per recipient, ~4 us, issue 18). A ManageSieve change landing during the
# batch is the race it always was: the batch runs the script before it or after it, whole.
ActiveScripts = dict[str, tuple[str, bytes] | None]


@dataclass
class SievePlan:
    """What one recipient's script decided, ready for the delivery engine."""

    copies: list[Copy] = field(default_factory=list)
    reply: Reply | None = None  # set by reject/ereject: answers this recipient instead of 250
    outgoing: list[Outgoing] = field(default_factory=list)
    result: SieveResult | None = None
    script: str = ""
    created: list[MailboxInfo] = field(default_factory=list)  # by fileinto :create (auditlog)
    discarded: bool = False  # by discard (auditlog)


@dataclass(frozen=True, slots=True)
class _FileintoTarget:
    """A fileinto folder resolved: the mailbox to post to, or None and why not."""

    meant: str  # the internal name the folder means (as written when it has none)
    mailbox: str | None = None
    why_not: str = ""
    created: MailboxInfo | None = None  # made just now by :create


class SieveFilter:
    """Per-recipient Sieve for the delivery engine; thread-safe (called from executor threads)."""

    def __init__(
        self,
        config: ImapdConfig,
        store: DeliveryStore,
        scripts: SieveScriptStore,
        tracking: SieveTracking,
        outbound: Outbound,
    ) -> None:
        self.config = config
        self.store = store
        self.scripts = scripts
        self.tracking = tracking
        self.outbound = outbound
        self.namespace = names.Namespace(config.hierarchy_separator)
        self.delimiter = (config.get(IMAPD.recipient_delimiter) or "+")[:1]
        self.min_vacation = config.get(IMAPD.sieve_vacation_min_response)
        self.max_vacation = config.get(IMAPD.sieve_vacation_max_response)

    # ---------------------------------------------------------------- evaluate

    def plan(
        self,
        recipient: Recipient,
        sender: str,
        content: bytes,
        message_id: str | None,
        active_scripts: ActiveScripts | None = None,
    ) -> SievePlan | None:
        """None when the recipient has no active script (plain delivery). `active_scripts`:
        what this batch found already (`ActiveScripts`)."""
        if recipient.user is None:
            return None  # shared folders have no script
        if active_scripts is None:
            active = self.scripts.active_script(recipient.user)
        elif recipient.user in active_scripts:
            active = active_scripts[recipient.user]
        else:
            active = active_scripts[recipient.user] = self.scripts.active_script(recipient.user)
        if active is None:
            return None
        name, text = active
        plan = SievePlan(script=name)
        try:
            script = DEFAULT_CACHE.compile(text.decode("utf-8", "replace"))
        except SieveCompileError as exc:
            log.warning(
                "%s: sieve script %r does not compile, keeping: %s", recipient.user, name, exc
            )
            plan.copies.append(Copy(recipient.mailbox, (), content))
            return plan
        user = recipient.user
        context = SieveContext(
            now=datetime.now(UTC),
            mailbox_exists=lambda folder: self._folder(user, folder).mailbox is not None,
            include_loader=lambda location, included: self._include(user, location, included),
            duplicates=_Tracker(self.tracking, f"duplicate:{user}"),
            vacation=_Tracker(self.tracking, f"vacation:{user}"),
            user_addresses=(recipient.address,),
            subaddress_delimiter=self.delimiter,
            vacation_min_seconds=self.min_vacation,
            vacation_max_seconds=self.max_vacation,
        )
        envelope = SieveEnvelope(sender=sender, recipient=recipient.address)
        result = run(script, content, envelope, context)
        plan.result = result
        if result.error is not None:
            log.warning("%s: sieve script %r failed, implicit keep: %s", user, name, result.error)
        for action in result.actions:
            self._add(plan, action, recipient, sender, content, message_id)
        return plan

    def _add(
        self,
        plan: SievePlan,
        action: object,
        recipient: Recipient,
        sender: str,
        content: bytes,
        message_id: str | None,
    ) -> None:
        user = recipient.user
        assert user is not None
        if isinstance(action, Keep):
            if action.fallback_from is not None:  # the library kept for a folder it was denied
                self._log_fallback(recipient, action.fallback_from,
                                   self._folder(user, action.fallback_from))
            plan.copies.append(
                Copy(recipient.mailbox, _store_flags(action.flags), action.message or content)
            )
        elif isinstance(action, FileInto):
            target = self._folder(user, action.mailbox, create=action.create)
            folder = target.mailbox
            if target.created is not None:
                plan.created.append(target.created)
            if folder is None:
                self._log_fallback(recipient, action.mailbox, target)
                folder = recipient.mailbox
            plan.copies.append(Copy(folder, _store_flags(action.flags), action.message or content))
        elif isinstance(action, (Reject, Ereject)):
            reason = " ".join(action.reason.split()) or "Message rejected"
            plan.reply = Reply(550, "5.7.1", reason[:400])
        elif isinstance(action, Redirect):
            self._redirect(plan, action, recipient, sender, content, message_id)
        elif isinstance(action, Vacation):
            self._vacation(plan, action, recipient)
        elif isinstance(action, Discard):
            plan.discarded = True
            log.info("%s: sieve discarded the message", user)
        else:
            log.info("%s: sieve action %s not carried out here", user, type(action).__name__)

    def _log_fallback(self, recipient: Recipient, folder: str, target: _FileintoTarget) -> None:
        """One line saying why a fileinto went to the recipient's mailbox (as Cyrus logs
        "could not deliver to user.x.folder, delivering to INBOX")."""
        log.info(
            "%s: to=<%s>: sieve fileinto %r: could not deliver to %s (%s), delivering to %s",
            recipient.user,
            recipient.address,
            folder,
            target.meant,
            target.why_not or "no such mailbox",
            recipient.mailbox,
        )

    def _redirect(
        self,
        plan: SievePlan,
        action: Redirect,
        recipient: Recipient,
        sender: str,
        content: bytes,
        message_id: str | None,
    ) -> None:
        body = action.message or content
        marker = REDIRECTED_FROM + b": " + recipient.address.encode()
        if marker.lower() in msg.header_block(body).lower():
            log.warning("%s: redirect loop to %s detected, keeping", recipient.user, action.address)
            plan.copies.append(Copy(recipient.mailbox, (), content))
            return
        key = f"{message_id or len(body)}:{action.address}"
        plan.outgoing.append(
            Outgoing(
                sender=sender,
                recipients=(action.address,),
                content=marker + b"\r\n" + msg.without_return_path(body),
                what=f"redirect to {action.address}",
                scope=f"redirect:{recipient.user}",
                key=key,
                seconds=REDIRECT_MEMORY,
            )
        )

    def _vacation(self, plan: SievePlan, action: Vacation, recipient: Recipient) -> None:
        if not action.sent or action.to is None:
            log.info("%s: vacation not sent: %s", recipient.user, action.why_not_sent)
            return
        reply = compose_vacation_reply(
            action,
            from_address=action.from_address or recipient.address,
            date=formatdate(localtime=True),
            message_id=make_msgid(domain=self.config.servername),
        )
        plan.outgoing.append(
            Outgoing(
                sender="",  # RFC 5230 5.1: the reply's envelope sender is the null path
                recipients=(action.to,),
                content=reply,
                what=f"vacation reply to {action.to}",
                scope=f"vacation:{recipient.user}",
                key=f"{action.tracking_key}\0{action.to}",
                seconds=action.seconds,
            )
        )

    # ---------------------------------------------------------------- after the copies

    def finish(
        self, user: str, plan: SievePlan, audit: AuditLog | None = None, message_id: str = ""
    ) -> bool:
        """Send what the script sends and record its marks; only after the copies are stored.

        True when a redirect could not be handed to the MTA: the caller then keeps the message
        in the recipient's mailbox, as Cyrus does, so it is never lost. `audit`: the auditlog's
        redirect line for each redirect handed over (`message_id` as it shows it).
        """
        keep_instead = False
        for outgoing in plan.outgoing:
            if self.tracking.seen(outgoing.scope, outgoing.key):
                continue
            try:
                self.outbound.send(outgoing.sender, outgoing.recipients, outgoing.content)
            except OutboundError as exc:
                log.error("%s: sieve %s failed: %s", user, outgoing.what, exc)
                keep_instead = keep_instead or outgoing.scope.startswith("redirect:")
                continue
            self.tracking.mark(outgoing.scope, outgoing.key, outgoing.seconds)
            log.info("%s: sieve %s sent", user, outgoing.what)
            if audit is not None and outgoing.scope.startswith("redirect:"):
                for target in outgoing.recipients:
                    audit.redirected(message_id, target, user)
        if plan.result is not None:
            for mark in plan.result.duplicate_marks:
                self.tracking.mark(f"duplicate:{user}", mark.key, mark.seconds)
        return keep_instead

    # ---------------------------------------------------------------- mailboxes and includes

    def _folder(self, user: str, folder: str, create: bool = False) -> _FileintoTarget:
        """The internal name a fileinto folder means for `user`, if it may be posted to; else
        the mailbox meant and why not (for the log line of the INBOX fallback).

        `INBOX` and `INBOX.x` (or `INBOX/x`) are the user's; another name is first the user's
        own folder of that name, then a shared folder (the post right decides), as Cyrus reads
        it in the standard namespace.
        """
        owner = names.Owner(user.partition("@")[0], user.partition("@")[2] or None)
        inbox = names.user_inbox(owner.user, owner.domain)
        separator = self.namespace.separator
        if folder.upper() == "INBOX":
            return _FileintoTarget(inbox, inbox)
        rest = folder[6:] if folder[:6].upper() == f"INBOX{separator}" else folder
        try:
            personal = f"{inbox}.{self.namespace.to_internal(rest)}"
            shared = self.namespace.to_internal(folder, owner.domain)
        except InvalidMailboxName as exc:
            return _FileintoTarget(folder, why_not=f"not a valid mailbox name: {exc}")
        for candidate in (personal, shared):
            info = self.store.mailbox(candidate)
            if info is not None:
                mine = names.owner_of(candidate) == owner
                if mine or "p" in rights_of(info.acl, user, is_admin=False):
                    return _FileintoTarget(candidate, candidate)
                return _FileintoTarget(candidate, why_not=f"no p right for {user}")
        if create:
            try:
                created = self.store.create_mailbox(personal)
            except StoreError as exc:
                return _FileintoTarget(personal, why_not=f"cannot create it: {exc}")
            return _FileintoTarget(personal, personal, created=created)
        return _FileintoTarget(personal, why_not="no such mailbox")

    def _include(self, user: str, location: IncludeLocation, name: str) -> str | None:
        owner = user if location == "personal" else "global"  # global scripts: user "global"
        try:
            return self.scripts.read(owner, name).decode("utf-8", "replace")
        except StoreError:
            return None


class _Tracker:
    """The library's DuplicateTracker and VacationTracker over SieveTracking."""

    def __init__(self, tracking: SieveTracking, scope: str) -> None:
        self.tracking = tracking
        self.scope = scope

    def seen(self, key: str) -> bool:
        return self.tracking.seen(self.scope, key)

    def responded(self, key: str, sender: str) -> bool:
        return self.tracking.seen(self.scope, f"{key}\0{sender}")


def _store_flags(flags: tuple[str, ...]) -> tuple[str, ...]:
    """imap4flags' lower-cased flags as the index keeps them: system flags in their RFC
    spelling (the store and IMAP compare `\\Seen` exactly); \\Recent is no flag one sets."""
    return tuple(flag for flag in map(canonical_flag, flags) if flag != "\\Recent")
