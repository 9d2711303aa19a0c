"""smtpd's mail transaction: MAIL, RCPT, DATA and the handoff to cleanup and the queue."""

from __future__ import annotations

import logging
import time

from sealmail import metrics
from sealmail.mta import queue_space
from sealmail.mta.cleanup import CleanupError, log_queued, prepare_message
from sealmail.mta.queue import QueueError, QueueName, RecipientRecord
from sealmail.mta.restrictions.policy_client import new_instance
from sealmail.mta.smtpd.state import SessionState, Transaction
from sealmail.proto.smtp import AddressError, MailFrom, MessageData, RcptTo, Reply, decode_xtext

log = logging.getLogger("sealmail.mta.smtpd")


def _xtext(value: str | None) -> str:
    if not value:
        return ""
    try:
        return decode_xtext(value)
    except AddressError:
        return ""


def dsn_notify(value: str | None) -> tuple[str, ...]:
    """RFC 3461 4.1: NOTIFY=NEVER or a comma list of SUCCESS, FAILURE, DELAY."""
    if not value:
        return ()
    return tuple(word.strip().upper() for word in value.split(",") if word.strip())


class TransactionSession(SessionState):
    """MAIL, RCPT, DATA: the checks, the milters' say, then the queue file, fsync'd before
    the 250."""

    async def _data_command(self) -> None:
        self.facts.where = "DATA"
        self.txn.data_checked = True
        refusal = await self.checks.data()
        if refusal is not None:
            self._note_refusal(refusal)
        self.conn.answer(refusal or Reply(354, None, "End data with <CR><LF>.<CR><LF>"))

    async def _milter_rcpt(self, event: RcptTo, accepted: Reply) -> Reply:
        """smtpd_milters at RCPT: a refusal takes back the recipient we had accepted."""
        assert self.milters is not None
        record = self.txn.recipients[-1]
        refusal = await self.milters.rcpt(record.address, event.params,
                                          self._whatsup(record.address))
        if refusal is None:
            return accepted
        self.txn.recipients.pop()
        self.conn.note_error("policy")
        return refusal

    async def _mail_from(self, event: MailFrom) -> Reply:
        settings = self.service.settings
        if settings.tls_level == "encrypt" and not self.secure:
            self.conn.note_error("policy")
            return Reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if settings.helo_required and not self.helo:
            self.conn.note_error("protocol")
            return Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        sender = "" if not event.reverse_path else self._qualify(event.address, event.reverse_path)
        size = event.params.get("SIZE") or ""
        short = queue_space.shortfall(self.service.queue.directory,
                                      int(size) if size.isdigit() else 0,
                                      self.service.queue_minfree)
        if short is not None:
            self.conn.note_error("resource")
            log.warning("not enough free space in mail queue: %s", short)
            log.info("NOQUEUE: reject: MAIL from %s: 452 4.3.1 Insufficient system storage; "
                     "from=<%s> proto=%s helo=<%s>", self.client, sender, self.protocol,
                     self.helo)
            return queue_space.INSUFFICIENT_STORAGE
        self.txn = Transaction(
            sender=sender,
            ret=(event.params.get("RET") or "").upper(),
            envid=_xtext(event.params.get("ENVID")),
            smtputf8="SMTPUTF8" in event.params,
        )
        facts = self.facts
        facts.where = "MAIL"
        facts.sender = sender
        facts.instance = new_instance()
        facts.smtputf8 = self.txn.smtputf8
        size = event.params.get("SIZE") or ""
        facts.size = int(size) if size.isdigit() else 0
        refusal = await self.checks.mail()
        if refusal is not None:
            self._note_refusal(refusal)
            self._end_transaction()
            return refusal
        return Reply(250, "2.1.0", "Ok")

    async def _rcpt_to(self, event: RcptTo) -> Reply:
        recipient = self._qualify(event.address, event.forward_path)
        self.facts.where = "RCPT"
        # RFC 5321 4.5.1: <postmaster> without a domain is always accepted (Postfix's rule).
        bare_postmaster = event.forward_path.lower() == "postmaster"
        refusal = None if bare_postmaster else await self.checks.rcpt(recipient)
        if refusal is not None:
            self._note_refusal(refusal)
            return refusal
        self.facts.recipient_count += 1
        self.txn.recipients.append(
            RecipientRecord(
                recipient,
                recipient,
                dsn_notify(event.params.get("NOTIFY")),
                event.params.get("ORCPT") or "",
            )
        )
        return Reply(250, "2.1.5", "Ok")

    async def _message_checks(self, event: MessageData) -> Reply | None:
        """smtpd_data_restrictions (for BDAT, which has no DATA command: here), then
        smtpd_end_of_data_restrictions."""
        facts = self.facts
        if not self.txn.data_checked and self.service.restrictions.lists[
                "smtpd_data_restrictions"]:
            facts.where = "DATA"
            refusal = await self.checks.data()
            if refusal is not None:
                return refusal
        facts.where = "END-OF-MESSAGE"
        facts.size = len(event.content)
        return await self.checks.end_of_data()

    async def _receive(self, event: MessageData) -> Reply:
        pending = self.conn.data_to_send()
        if pending:
            self.writer.write(pending)
        refusal = await self._message_checks(event)
        if refusal is not None:
            self._note_refusal(refusal)
            return refusal
        service = self.service
        txn = self.txn
        started = time.monotonic()
        actions = self.checks.actions
        if actions.discard:
            log.info("NOQUEUE: discard: %s from %s: %s", self.facts.where, self.client,
                     actions.discard)
            return Reply(250, "2.0.0", "Ok: discarded")
        content = b"".join(line.encode("utf-8", "replace") + b"\r\n"
                           for line in actions.prepend) + event.content
        recipients = txn.recipients
        if actions.redirect:
            recipients = [RecipientRecord(actions.redirect, actions.redirect, (), "")]
        try:
            writer, envelope, cleaned = prepare_message(
                service.commits.reserve(),
                service.cleanup,
                sender=txn.sender,
                recipients=recipients,
                content=content,
                arrival=service.clock(),
                protocol=self.protocol,
                helo=self.helo,
                client_name=self.facts.names.name if self.client_address else "localhost",
                client_address=self.client_address or "127.0.0.1",
                sasl_username=self.sasl_username,
                ret=txn.ret,
                envid=txn.envid,
                smtputf8=txn.smtputf8,
            )
            target = QueueName.HOLD if actions.hold else QueueName.INCOMING
            if self.milters is not None:  # smtpd_milters: edits are in before the commit
                refusal, envelope, milter_target = await self.milters.end_of_data(
                    writer, envelope, cleaned.content,
                    self._whatsup(txn.recipients[0].address if txn.recipients else ""))
                if refusal is not None:
                    if refusal.code >= 400:
                        self.conn.note_error("policy")
                    return refusal
                if milter_target is QueueName.HOLD:
                    target = milter_target  # quarantined
            queue_id = await service.commits.commit(writer, envelope, target)
        except CleanupError as exc:
            self.conn.note_error("bounce" if exc.dsn == "5.4.6" else "software")
            log.info(
                "NOQUEUE: reject: DATA from %s: %d %s %s; from=<%s> proto=%s helo=<%s>",
                self.client,
                exc.code,
                exc.dsn,
                exc.text,
                txn.sender,
                self.protocol,
                self.helo,
            )
            return Reply(exc.code, exc.dsn, exc.text)
        except (OSError, QueueError) as exc:
            self.conn.note_error("resource")
            log.error("cannot queue mail from %s: %s", self.client, exc)
            if queue_space.is_disk_full(exc):
                return queue_space.INSUFFICIENT_STORAGE
            return Reply(451, "4.3.0", "Error: queue file write error")
        log_queued(queue_id, cleaned)
        sasl = (
            f", sasl_method={self.sasl_method}, sasl_username={self.sasl_username}"
            if self.sasl_username
            else ""
        )
        log.info("%s: client=%s%s", queue_id, self.client, sasl)
        service.on_queued(queue_id)
        metrics.observe_end_of_data("smtpd", time.monotonic() - started)
        return Reply(250, "2.0.0", f"Ok: queued as {queue_id}")
