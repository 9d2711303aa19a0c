"""Recipient -> store: the delivery path shared by lmtpd and deliver.

The protocol side (lmtpd's asyncio driver, deliver's command line) collects an envelope and the
message; this module decides per recipient, writes through the store's single `deliver` call (one
file, many links, one commit) and returns one LMTP reply per recipient, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.delivery import message as msg
from sealmail.delivery.recipient import Recipient, RecipientResolver
from sealmail.delivery.replies import DELIVERED, DUPLICATE, INTERNAL_ERROR, reply_for
from sealmail.proto.smtp import Reply
from sealmail.store.api import AppendedMessage, DeliveryTarget, MessageStore
from sealmail.store.duplicates import DuplicateDatabase
from sealmail.store.errors import InvalidMessage, MailboxBusy, StoreError

log = logging.getLogger("sealmail.delivery")


@dataclass(frozen=True, slots=True)
class Envelope:
    sender: str  # reverse path without brackets; "" for the null sender
    recipients: tuple[Recipient, ...]
    session_id: str
    helo: str | None = None
    client: str = "local"
    protocol: str = "LMTP"  # LMTP, LMTPA, LMTPS, LMTPSA (RFC 3848)


class DeliveryEngine:
    """Thread-safe: lmtpd calls `deliver` from executor threads, many sessions at once."""

    def __init__(
        self, config: ImapdConfig, store: MessageStore, duplicates: DuplicateDatabase | None
    ) -> None:
        self.config = config
        self.store = store
        self.duplicates = duplicates if config.switch("duplicatesuppression") else None
        self.resolver = RecipientResolver(config, store)
        self.strict_quota = config.switch("lmtp_strict_quota")
        self.quota_permanent = config.switch("lmtp_over_quota_perm_failure")
        self.servername = config.servername

    def reply_for(self, error: BaseException) -> Reply:
        return reply_for(error, over_quota_permanent=self.quota_permanent)

    def check_recipient(
        self,
        local_part: str,
        domain: str | None,
        *,
        ignore_quota: bool,
        size_hint: int = 0,
        poster: str | None = None,
    ) -> Recipient:
        """RCPT-time check: the mailbox exists, may be posted to, and is not over quota."""
        recipient = self.resolver.resolve(local_part, domain, ignore_quota, poster)
        if not ignore_quota:
            self.store.check_quota(recipient.mailbox, size_hint if self.strict_quota else 0)
        return recipient

    def deliver(self, envelope: Envelope, content: bytes) -> list[Reply]:
        """One reply per recipient of the envelope, in order; blocks until durable."""
        recipients = envelope.recipients
        try:
            msg.validate(content)
        except InvalidMessage as exc:
            reply = self.reply_for(exc)
            for recipient in recipients:
                self._log(envelope, recipient, len(content), reply, "rejected")
            return [reply] * len(recipients)
        content = msg.trace_headers(
            return_path=envelope.sender,
            helo=envelope.helo,
            client=envelope.client,
            servername=self.servername,
            protocol=envelope.protocol,
            session_id=envelope.session_id,
        ) + msg.without_return_path(content)
        try:
            return self._deliver(envelope, content)
        except Exception:
            log.exception("%s: delivery failed", envelope.session_id)
            for recipient in recipients:
                self._log(envelope, recipient, len(content), INTERNAL_ERROR, "deferred")
            return [INTERNAL_ERROR] * len(recipients)

    def _deliver(self, envelope: Envelope, content: bytes) -> list[Reply]:
        recipients = envelope.recipients
        replies: list[Reply | None] = [None] * len(recipients)
        message_id = msg.message_id(content) if self.duplicates is not None else None
        pending: list[int] = []
        seen_here: set[str] = set()
        for index, recipient in enumerate(recipients):
            if (
                message_id is not None
                and self.duplicates is not None
                and (
                    recipient.mailbox in seen_here
                    or self.duplicates.seen(message_id, recipient.mailbox)
                )
            ):
                replies[index] = DUPLICATE
                self._log(envelope, recipient, len(content), DUPLICATE, "eliminated duplicate")
                continue
            seen_here.add(recipient.mailbox)
            pending.append(index)

        with ExitStack() as slots:
            busy = self._take_slots(slots, [recipients[i] for i in pending])
            targets: list[int] = []
            for index in pending:
                if recipients[index].user in busy:
                    replies[index] = self.reply_for(MailboxBusy())
                    self._log(envelope, recipients[index], len(content), replies[index], "deferred")
                else:
                    targets.append(index)
            results: Sequence[AppendedMessage | StoreError] = (
                self.store.deliver(
                    content,
                    [
                        DeliveryTarget(
                            recipients[i].mailbox,
                            ignore_quota=recipients[i].ignore_quota,
                            strict_quota=self.strict_quota,
                        )
                        for i in targets
                    ],
                )
                if targets
                else []
            )
        for index, result in zip(targets, results, strict=True):
            recipient = recipients[index]
            if isinstance(result, AppendedMessage):
                if message_id is not None and self.duplicates is not None:
                    self.duplicates.mark(message_id, recipient.mailbox)
                replies[index] = DELIVERED
                self._log(envelope, recipient, len(content), DELIVERED, "sent", uid=result.uid)
            else:
                reply = self.reply_for(result)
                replies[index] = reply
                status = "deferred" if reply.code < 500 else "bounced"
                self._log(envelope, recipient, len(content), reply, status)
        assert all(reply is not None for reply in replies)
        return [reply for reply in replies if reply is not None]

    def _take_slots(self, slots: ExitStack, recipients: Sequence[Recipient]) -> set[str | None]:
        """Users whose concurrent-delivery limit is reached (451 4.4.5 rather than waiting)."""
        busy: set[str | None] = set()
        for user in dict.fromkeys(r.user for r in recipients if r.user is not None):
            try:
                slots.enter_context(self.store.delivery_slot(user))
            except MailboxBusy:
                busy.add(user)
        return busy

    def _log(
        self,
        envelope: Envelope,
        recipient: Recipient,
        size: int,
        reply: Reply | None,
        status: str,
        uid: int | None = None,
    ) -> None:
        assert reply is not None
        where = f"{recipient.mailbox}" + (f" uid={uid}" if uid is not None else "")
        log.info(
            "%s: from=<%s>, to=<%s>, mailbox=%s, size=%d, dsn=%s, status=%s (%d %s)",
            envelope.session_id,
            envelope.sender,
            recipient.address,
            where,
            size,
            reply.enhanced or "",
            status,
            reply.code,
            reply.text if isinstance(reply.text, str) else " ".join(reply.text),
        )
