"""Recipient -> store: the delivery path shared by lmtpd and deliver.

The protocol side (lmtpd's asyncio driver, deliver's command line) collects an envelope and the
message; this module decides per recipient, writes through the store's single `deliver` call (one
file, many links, one commit) and returns one LMTP reply per recipient, in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.delivery import message as msg
from sealmail.delivery.quota_warning import send_warning
from sealmail.delivery.recipient import Recipient, RecipientResolver, StableLookups
from sealmail.delivery.replies import INTERNAL_ERROR, delivered, reply_for
from sealmail.delivery.sieve import ActiveScripts, Copy, SieveFilter, SievePlan
from sealmail.maillog import line_writer, log_line
from sealmail.proto.smtp import Reply
from sealmail.store import auditlog
from sealmail.store.api import (
    AppendedMessage,
    BatchDelivery,
    DeliveryStore,
    DeliveryTarget,
    DuplicateSuppression,
    NamespaceStamp,
    QuotaUsage,
    QuotaWarn,
)
from sealmail.store.duplicates import lock_stripe
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


@dataclass(eq=False, slots=True)
class _Job:
    """One envelope on its way through the engine: planned (Sieve, duplicates, delivery
    slots), stored (with the other envelopes of its batch), finished (marks, replies)."""

    envelope: Envelope
    content: bytes  # with the trace fields
    message_id: str | None
    replies: list[Reply | None]  # per recipient
    plans: list[SievePlan | None]  # per recipient
    audit: auditlog.AuditLog | None = None
    copies: dict[int, list[Copy]] = field(default_factory=dict)  # recipient -> what to store
    stored: dict[int, list[AppendedMessage]] = field(default_factory=dict)
    failed: dict[int, StoreError] = field(default_factory=dict)
    error: Exception | None = None  # what failed the whole envelope

    def outcome(self) -> list[Reply]:
        assert all(reply is not None for reply in self.replies)
        return [reply for reply in self.replies if reply is not None]


_OWN_CONTENT = object()  # the key of the copies that store their job's own content


def _content_key(job: _Job, content: bytes) -> object:
    """What groups a job's copies by content: its own content (nearly every copy) by a marker,
    since hashing a bytes key reads all of it (~21 us a 100 KiB message, issue 18); only a
    copy editheader changed is keyed by its octets, and one equal to the job's goes with it."""
    if content is job.content or content == job.content:  # == compares lengths first
        return _OWN_CONTENT
    return content


class DeliveryEngine:
    """Thread-safe: lmtpd's delivery thread calls `deliver_batch`; `deliver` may be called
    from many threads at once."""

    def __init__(
        self,
        config: ImapdConfig,
        store: DeliveryStore,
        duplicates: DuplicateSuppression | None,
        sieve: SieveFilter | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.duplicates = duplicates if config.get(IMAPD.duplicatesuppression) else None
        self.sieve = sieve
        # What RCPT looks up, kept while the namespace holds (sealmail.delivery.recipient).
        self.lookups = (
            StableLookups(store, store) if isinstance(store, NamespaceStamp) else None
        )
        self.resolver = RecipientResolver(config, self.lookups or store)
        self.strict_quota = config.get(IMAPD.lmtp_strict_quota)
        self.quota_permanent = config.get(IMAPD.lmtp_over_quota_perm_failure)
        self.servername = config.servername
        self.quota_warn = QuotaWarn(
            config.get(IMAPD.quotawarn), config.get(IMAPD.quotawarnkb),
            config.get(IMAPD.quotawarnmsg),
        )
        self.postmaster = config.get(IMAPD.postmaster)
        self.auditlog = config.get(IMAPD.auditlog)
        # Asked once: isinstance against a runtime-checkable Protocol costs ~30 us a call.
        self.batch_store = store if isinstance(store, BatchDelivery) else None

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
        fresh: bool = True,
    ) -> Recipient:
        """RCPT-time check: the mailbox exists, may be posted to, and is not over quota.

        `fresh` False (lmtpd, after the first RCPT of a transaction): what the transaction's
        first RCPT looked up still holds unless the namespace stamp moved, which is not asked
        again (StableLookups: one query per transaction instead of three per recipient)."""
        lookups = self.lookups
        if lookups is None:
            recipient = self.resolver.resolve(local_part, domain, ignore_quota, poster)
        else:
            if fresh:
                lookups.refresh()
            recipient = lookups.resolved(self.resolver, local_part, domain, ignore_quota, poster)
        if not ignore_quota:
            quota = lookups or self.store
            quota.check_quota(recipient.mailbox, size_hint if self.strict_quota else 0)
        return recipient

    def deliver(self, envelope: Envelope, content: bytes) -> list[Reply]:
        """One reply per recipient of the envelope, in order; blocks until durable."""
        [replies] = self._deliver_all([(envelope, content)], batched=False)
        return replies

    def deliver_batch(self, items: Sequence[tuple[Envelope, bytes]]) -> list[list[Reply]]:
        """`deliver` of several envelopes by one thread (lmtpd's delivery thread): each is
        planned as it would be alone, the copies of all go to the store in one call (one group
        commit), each is finished on its own; one list of replies per envelope, in order.

        A failure is its envelope's alone. Two envelopes whose Message-IDs share a lock stripe
        go in separate rounds: the second's duplicate check must see the first's marks, and one
        thread must not wait for a lock it holds itself."""
        return self._deliver_all(items, batched=True)

    def _deliver_all(
        self, items: Sequence[tuple[Envelope, bytes]], *, batched: bool
    ) -> list[list[Reply]]:
        out: list[list[Reply] | None] = [None] * len(items)
        pending: list[tuple[int, _Job]] = []
        active_scripts: ActiveScripts = {}  # Sieve's lookups, once per user for the batch
        for position, (envelope, content) in enumerate(items):
            begun = self._begin(envelope, content)
            if isinstance(begun, _Job):
                pending.append((position, begun))
            else:
                out[position] = begun
        while pending:
            this_round: list[tuple[int, _Job]] = []
            later: list[tuple[int, _Job]] = []
            stripes: set[int] = set()
            for position, job in pending:
                stripe = self._stripe(job)
                if stripe is not None and stripe in stripes:
                    later.append((position, job))
                    continue
                if stripe is not None:
                    stripes.add(stripe)
                this_round.append((position, job))
            self._run_round([job for _, job in this_round], batched, active_scripts)
            for position, job in this_round:
                out[position] = job.outcome()
            pending = later
        return [replies for replies in out if replies is not None]

    def _begin(self, envelope: Envelope, content: bytes) -> _Job | list[Reply]:
        """The message checked and given its trace fields; the replies if it is refused."""
        try:
            msg.validate(content)
        except InvalidMessage as exc:
            reply = self.reply_for(exc)
            for recipient in envelope.recipients:
                self._log(envelope, recipient, len(content), reply, "rejected")
            return [reply] * len(envelope.recipients)
        self._log_queue_id(envelope, content)
        content = msg.trace_headers(
            return_path=envelope.sender,
            helo=envelope.helo,
            client=envelope.client,
            servername=self.servername,
            protocol=envelope.protocol,
            session_id=envelope.session_id,
        ) + msg.without_return_path(content)
        count = len(envelope.recipients)
        return _Job(envelope, content, msg.message_id(content), [None] * count, [None] * count)

    def _stripe(self, job: _Job) -> int | None:
        if job.message_id is None or self.duplicates is None:
            return None
        return lock_stripe(job.message_id)

    def _run_round(
        self, jobs: Sequence[_Job], batched: bool, active_scripts: ActiveScripts
    ) -> None:
        """Plan, store and finish `jobs` (no two on one Message-ID lock stripe).

        One delivery of a Message-ID at a time (DuplicateSuppression.exclusive): two sessions
        carrying the same message would otherwise both pass the duplicate check. The locks are
        taken in stripe order, as every batch takes them, so two batches never wait in a cycle."""
        with ExitStack() as exclusive:
            for job in sorted(jobs, key=lambda job: self._stripe(job) or 0):
                if job.message_id is not None and self.duplicates is not None:
                    try:
                        exclusive.enter_context(self.duplicates.exclusive(job.message_id))
                    except Exception as exc:
                        self._fail(job, exc)
            with ExitStack() as slots:
                for job in jobs:
                    if job.error is None:
                        self._attempt(job, self._plan, job, slots, active_scripts)
                self._store([job for job in jobs if job.error is None], batched)
            if batched:
                self._mark([job for job in jobs if job.error is None])
            for job in jobs:
                if job.error is None:
                    self._attempt(job, self._finish, job, not batched)

    def _mark(self, jobs: Sequence[_Job]) -> None:
        """Every stored copy's duplicate mark, of every job, in one write (before any Sieve
        bookkeeping, as one job's own); a failure fails the jobs that had marks to make."""
        if self.duplicates is None:
            return
        pairs = [
            (job.message_id, appended.mailbox)
            for job in jobs
            if job.message_id is not None
            for index, kept in job.stored.items()
            if index not in job.failed
            for appended in kept
        ]
        if not pairs:
            return
        try:
            self.duplicates.mark_pairs(pairs)
        except Exception as exc:
            for job in jobs:
                if job.message_id is not None and any(job.stored.values()):
                    self._fail(job, exc)

    def _attempt(self, job: _Job, step: Callable[..., None], *args: object) -> None:
        try:
            step(*args)
        except Exception as exc:
            self._fail(job, exc)

    def _fail(self, job: _Job, exc: Exception) -> None:
        """Every recipient of `job` deferred: MailboxBusy (another node delivers the same
        Message-ID, PostgreSQL) as such, anything else as an internal error, logged."""
        envelope, size = job.envelope, len(job.content)
        if isinstance(exc, MailboxBusy):
            reply = self.reply_for(exc)
            for recipient in envelope.recipients:
                self._log(envelope, recipient, size, reply, "deferred", cause=exc)
        else:
            log.error("%s: delivery failed", envelope.session_id, exc_info=exc)
            reply = INTERNAL_ERROR
            for recipient in envelope.recipients:
                self._log(envelope, recipient, size, reply, "deferred")
        job.error = exc
        job.replies = [reply] * len(envelope.recipients)

    def _plan(self, job: _Job, slots: ExitStack, active_scripts: ActiveScripts) -> None:
        """Sieve and duplicate suppression per recipient; what is left to store is
        `job.copies`, with a delivery slot of each user held in `slots`."""
        envelope, content, message_id = job.envelope, job.content, job.message_id
        recipients = envelope.recipients
        job.audit = audit = auditlog.audit_for(self.auditlog, envelope.session_id)
        replies, plans, copies = job.replies, job.plans, job.copies
        seen_here: set[str] = set()
        asked: set[str] = set()
        if message_id is not None and self.duplicates is not None and len(recipients) > 1:
            # The recipients' own mailboxes asked at once; Sieve's other folders one by one.
            asked = {r.mailbox for r in recipients}
            seen_here.update(self.duplicates.seen_among(message_id, list(asked)))
        for index, recipient in enumerate(recipients):
            plan = (
                self.sieve.plan(recipient, envelope.sender, content, message_id, active_scripts)
                if self.sieve is not None
                else None
            )
            plans[index] = plan
            if audit is not None and plan is not None:
                for info in plan.created:
                    audit.created(info)
            if plan is not None and plan.reply is not None:
                replies[index] = plan.reply
                self._log(envelope, recipient, len(content), plan.reply, "rejected by sieve")
                if audit is not None and recipient.user is not None:
                    audit.lmtp_rejected(message_id or "<nomsgid>", recipient.user)
                continue
            wanted = plan.copies if plan is not None else [Copy(recipient.mailbox, (), content)]
            kept = [
                c for c in wanted if not self._duplicate(message_id, c.mailbox, seen_here, asked)
            ]
            seen_here.update(c.mailbox for c in kept)
            if audit is not None and len(kept) < len(wanted):
                self._audit_duplicates(audit, [c for c in wanted if c not in kept], message_id,
                                       content)
            if wanted and not kept:
                reply = delivered(envelope.session_id, duplicate=True)
                replies[index] = reply
                self._log(envelope, recipient, len(content), reply, "eliminated duplicate")
                continue
            copies[index] = kept
        job.stored = {index: [] for index in copies}
        busy = self._take_slots(slots, [recipients[i] for i in copies if copies[i]])
        for index in list(copies):
            if recipients[index].user in busy and copies[index]:
                job.failed[index] = MailboxBusy()

    def _store(self, jobs: Sequence[_Job], batched: bool) -> None:
        """Every job's copies to the store: one `deliver` per distinct content of a job (one
        file, many links, one commit), or, `batched` (one thread runs whole batches), all in
        one call when the store takes batches (sealmail.store.api.BatchDelivery)."""
        calls: list[tuple[_Job, bytes, list[tuple[int, Copy]]]] = []
        for job in jobs:
            groups: dict[bytes | object, list[tuple[int, Copy]]] = {}
            for index, kept in job.copies.items():
                if index not in job.failed:
                    for copy in kept:
                        groups.setdefault(_content_key(job, copy.content), []).append(
                            (index, copy)
                        )
            for key, group in groups.items():
                calls.append((job, key if isinstance(key, bytes) else job.content, group))
        if batched and calls and self.batch_store is not None:
            messages = [(data, self._targets(job, group)) for job, data, group in calls]
            try:
                results = self.batch_store.deliver_batch(messages)
            except Exception as exc:
                for job in dict.fromkeys(job for job, _, _ in calls):
                    self._fail(job, exc)
                return
            for (job, _, group), found in zip(calls, results, strict=True):
                self._keep(job, group, found)
            return
        for job, data, group in calls:
            if job.error is None:
                self._attempt(job, self._store_one, job, data, group)

    def _store_one(self, job: _Job, data: bytes, group: list[tuple[int, Copy]]) -> None:
        self._keep(job, group, self.store.deliver(data, self._targets(job, group)))

    def _targets(self, job: _Job, group: list[tuple[int, Copy]]) -> list[DeliveryTarget]:
        recipients = job.envelope.recipients
        return [
            DeliveryTarget(
                copy.mailbox,
                flags=copy.flags,
                ignore_quota=recipients[index].ignore_quota,
                strict_quota=self.strict_quota,
                # A \Seen Sieve sets on a folder the recipient does not own is the
                # recipient's own (as Cyrus files with their identity).
                reader=recipients[index].user,
                quota_warn=self.quota_warn,
            )
            for index, copy in group
        ]

    @staticmethod
    def _keep(
        job: _Job, group: list[tuple[int, Copy]], results: Sequence[AppendedMessage | StoreError]
    ) -> None:
        for (index, _), result in zip(group, results, strict=True):
            if isinstance(result, AppendedMessage):
                job.stored[index].append(result)
            else:
                job.failed.setdefault(index, result)

    def _finish(self, job: _Job, marks: bool) -> None:
        """After the store: quota warnings, duplicate marks (unless `_mark` made them), Sieve's
        bookkeeping and one reply and log line per recipient."""
        envelope, content, message_id, audit = (
            job.envelope, job.content, job.message_id, job.audit
        )
        recipients, replies, stored, failed = (
            envelope.recipients, job.replies, job.stored, job.failed
        )
        info = line_writer(log, logging.INFO)  # two lines a stored copy: handlers found once
        self._warn_about_quotas([a for kept in stored.values() for a in kept], audit)
        if marks and message_id is not None and self.duplicates is not None:
            # Every stored copy's mark in one write (before any Sieve bookkeeping, as before).
            self.duplicates.mark_all(message_id, [
                a.mailbox for index, kept in stored.items() if index not in failed for a in kept
            ])

        for index in job.copies:
            recipient = recipients[index]
            if index in failed:
                reply = self.reply_for(failed[index])
                replies[index] = reply
                status = "deferred" if reply.code < 500 else "bounced"
                self._log(envelope, recipient, len(content), reply, status, cause=failed[index])
                continue
            plan = job.plans[index]
            if plan is not None and recipient.user is not None:
                assert self.sieve is not None  # only it makes plans
                if self.sieve.finish(
                    recipient.user, plan, audit, message_id or "<nomsgid>"
                ) and not any(
                    a.mailbox == recipient.mailbox for a in stored[index]
                ):
                    [fallback] = self.store.deliver(content, [DeliveryTarget(recipient.mailbox)])
                    if not isinstance(fallback, AppendedMessage):
                        reply = self.reply_for(fallback)
                        replies[index] = reply
                        self._log(
                            envelope, recipient, len(content), reply, "deferred", cause=fallback
                        )
                        continue
                    stored[index].append(fallback)
            replies[index] = delivered(envelope.session_id)
            self._log_detail_fallback(envelope, recipient, stored[index])
            where = ", ".join(f"{a.mailbox} uid={a.uid}" for a in stored[index]) or "none"
            self._log(
                envelope,
                recipient,
                len(content),
                replies[index],
                "sent" if stored[index] else "sent (sieve kept no copy)",
                where=where,
                write=info,
            )
            for appended in stored[index]:
                # Cyrus lmtpd's own line, which operators' tools look for.
                info("Delivered: %s to mailbox: %s", message_id or "<nomsgid>", appended.mailbox)
            if audit is not None:
                audit.appended(stored[index], auditlog.message_id_of(content))
                if plan is not None and plan.discarded:
                    audit.discarded(message_id or "<nomsgid>")

    def _audit_duplicates(
        self, audit: auditlog.AuditLog, dropped: Sequence[Copy], message_id: str | None,
        content: bytes,
    ) -> None:
        """Cyrus's duplicate line for each copy duplicate suppression left out: by the
        mailbox's uniqueid, with the message's Date field."""
        date = auditlog.field_value(content, "date")
        for copy in dropped:
            info = self.store.mailbox(copy.mailbox)
            audit.duplicate("delivery", message_id or "<nomsgid>",
                            copy.mailbox if info is None else info.uniqueid, date)

    def _warn_about_quotas(
        self, appended: Sequence[AppendedMessage], audit: auditlog.AuditLog | None
    ) -> None:
        """Send the warnings the store found due (one per crossing); never fails a delivery."""
        due: dict[str, QuotaUsage] = {}
        for message in appended:
            if message.quota_warning is not None:
                due[message.quota_warning.root] = message.quota_warning
        for usage in due.values():
            try:
                send_warning(
                    self.store, usage, postmaster=self.postmaster, servername=self.servername,
                    audit=audit,
                )
            except Exception:
                log.exception("quota warning for %s failed", usage.root)

    def _duplicate(
        self, message_id: str | None, mailbox: str, seen_here: set[str], asked: set[str]
    ) -> bool:
        """Cyrus's duplicate suppression: (Message-ID, mailbox) delivered before, or just now.
        `seen_here` holds those of `asked` delivered before (sealmail.store seen_among)."""
        if message_id is None or self.duplicates is None:
            return False
        if mailbox in seen_here:
            return True
        return mailbox not in asked and self.duplicates.seen(message_id, mailbox)

    def _take_slots(self, slots: ExitStack, recipients: Sequence[Recipient]) -> set[str | None]:
        """Users whose concurrent-delivery limit is reached (451 4.4.5 rather than waiting)."""
        busy: set[str | None] = set()
        for user in dict.fromkeys(r.user for r in recipients if r.user is not None):
            try:
                slots.enter_context(self.store.delivery_slot(user))
            except MailboxBusy:
                busy.add(user)
        return busy

    def _log_queue_id(self, envelope: Envelope, content: bytes) -> None:
        """The MTA's queue ID (from its Received: field) and the Message-ID, once per message:
        with the SESSIONID in each 250, the line an operator joins the two halves' logs by."""
        queue_id = msg.mta_queue_id(content)
        if queue_id is not None:
            log.info(
                "%s: queue_id=%s, message-id=<%s>",
                envelope.session_id, queue_id, (msg.message_id(content) or "").strip("<>"),
            )

    def _log_detail_fallback(
        self, envelope: Envelope, recipient: Recipient, stored: Sequence[AppendedMessage]
    ) -> None:
        """Say why mail for user+folder went to the INBOX, once a copy really landed there."""
        if recipient.detail_fallback is None:
            return
        if not any(a.mailbox == recipient.mailbox for a in stored):
            return  # Sieve filed it elsewhere: the folder's absence changed nothing
        folder, why = recipient.detail_fallback
        log.info(
            "%s: to=<%s>: could not deliver to %s (%s), delivering to %s",
            envelope.session_id,
            recipient.address,
            folder,
            why,
            recipient.mailbox,
        )

    def _log(
        self,
        envelope: Envelope,
        recipient: Recipient,
        size: int,
        reply: Reply | None,
        status: str,
        where: str | None = None,
        cause: BaseException | None = None,
        write: Callable[..., None] | None = None,
    ) -> None:
        """One line per recipient; a failure from the store carries its cause (the error and
        what raised it, with the path), which the client's reply does not show. `write`: a
        `line_writer` of `log` at INFO, for a line without a cause."""
        assert reply is not None
        where = where or recipient.mailbox
        if write is None or cause is not None:
            write = partial(log_line, log, logging.INFO if cause is None else logging.WARNING)
        write(
            "%s: from=<%s>, to=<%s>, mailbox=%s, size=%d, dsn=%s, status=%s (%d %s)%s",
            envelope.session_id,
            envelope.sender,
            recipient.address,
            where,
            size,
            reply.enhanced or "",
            status,
            reply.code,
            reply.text if isinstance(reply.text, str) else " ".join(reply.text),
            "" if cause is None else f", cause: {describe_failure(cause)}",
        )


def describe_failure(error: BaseException) -> str:
    """An error and the chain of errors behind it, for the log: `StoreError: delivery:
    Permission denied <- PermissionError: [Errno 13] Permission denied: '/path'`."""
    parts = []
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        name = type(current).__name__
        parts.append(f"{name}: {current}" if str(current) else name)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)
