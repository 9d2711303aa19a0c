"""The evaluator: one SMTP session's restriction state and Postfix's order of evaluation.

Theory of operation (Postfix's smtpd_check.c, whose behaviour this follows):

- A list is read left to right; each check answers DUNNO (go on), OK (this list permits: go to
  the next stage) or REJECT (refuse now). A check that needs an argument (a table, a DNS zone,
  a policy server) takes the next word. A bare `type:table` is the list's own access check
  (check_client_access in smtpd_client_restrictions, ...). A name listed in
  smtpd_restriction_classes is evaluated in place, as is a restriction list an access table
  answers with.
- `warn_if_reject` turns the next check's refusal into a `reject_warning` log line.
- `defer_if_permit` remembers a 450 that replaces a later permit (e.g. the DNS failed while a
  sender domain was checked: accepting would be wrong, refusing too); `defer_if_reject` turns a
  later 5xx into that 450. The first reason of each kind is kept.
- A configuration or lookup error refuses with 451 (4.3.5 / 4.3.0), never permits.
- Stages: with smtpd_delay_reject (the default) the client, HELO and sender lists are evaluated
  again at each RCPT, before smtpd_relay_restrictions and smtpd_recipient_restrictions, so a
  refusal names the recipient in the log. A defer_if_permit raised in an earlier stage carries
  into the later ones.

`Session` has one method per protocol stage; each returns the Reply to send, or None.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from sealmail.mta.restrictions.model import (
    CLIENT,
    DATA,
    END_OF_DATA,
    HELO,
    RECIPIENT,
    RELAY,
    SENDER,
    Deferral,
    Facts,
    MessageActions,
    Stage,
    Status,
)
from sealmail.proto.smtp import Reply

if TYPE_CHECKING:
    from sealmail.mta.restrictions.engine import Engine

log = logging.getLogger("sealmail.mta.smtpd")

__all__ = ["Scope", "Session"]

MAX_RECURSION = 100
_UNCONVERTIBLE = ("software", "resource", "data")  # never a mere warning (Postfix's rule)


class Scope:
    """Whom a refusal names: `<reply_name>: <reply_class> rejected: ...`."""

    __slots__ = ("default_access", "reply_class", "reply_name")

    def __init__(self, reply_name: str, stage: Stage) -> None:
        self.reply_name = reply_name
        self.reply_class = stage.reply_class
        self.default_access = stage.default_access


class Session:
    """One SMTP session's restriction state (Postfix's SMTPD_STATE, the part checks use)."""

    def __init__(self, engine: Engine, facts: Facts) -> None:
        self.engine = engine
        self.facts = facts
        self.actions = MessageActions()
        self.error_classes: set[str] = set()
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_permit: Deferral | None = None
        self.defer_if_reject: Deferral | None = None
        self._permit_after: dict[str, Deferral | None] = {}  # per stage, for later stages
        self._refusal: Reply | None = None
        self.local_recipient_checked = False

    # -- the protocol stages ------------------------------------------------------------------

    async def connect(self) -> Reply | None:
        """smtpd_client_restrictions at connection time (only with smtpd_delay_reject = no)."""
        if self.engine.delay_reject:
            return None
        return await self.check_client()

    async def helo(self) -> Reply | None:
        if self.engine.delay_reject:
            return None
        return await self.check_helo()

    async def mail(self) -> Reply | None:
        if self.engine.delay_reject:
            return None
        return await self.check_mail()

    async def check_client(self) -> Reply | None:
        self.defer_if_permit = None
        reply = await self._run(CLIENT, self.facts.namaddr)
        self._permit_after["client"] = self.defer_if_permit
        return reply

    async def check_helo(self) -> Reply | None:
        if self.facts.helo is None:
            return None
        self.defer_if_permit = self._permit_after.get("client")
        reply = await self._run(HELO, self.facts.helo)
        self._permit_after["helo"] = self.defer_if_permit
        return reply

    async def check_mail(self) -> Reply | None:
        if self.facts.sender is None:
            return None
        self.defer_if_permit = (self._permit_after.get("client")
                                or self._permit_after.get("helo"))
        reply = await self._run(SENDER, self.facts.sender)
        self._permit_after["sender"] = self.defer_if_permit
        if (reply is None and self.engine.reject_unlisted_sender and self.facts.sender
                and await self.engine.unlisted(self, self.facts.sender, SENDER) is Status.REJECT):
            return self._take_refusal()
        return reply

    async def rcpt(self, recipient: str) -> Reply | None:
        """RCPT TO: the delayed stages, then relay and recipient restrictions, then the
        remembered defer_if_permit, then smtpd_reject_unlisted_recipient."""
        facts = self.facts
        if recipient.lower() == "postmaster":  # RFC 5321 4.5.1: always accepted
            return None
        facts.recipient = recipient
        try:
            self.local_recipient_checked = False
            if self.engine.delay_reject:
                for delayed in (self.check_client, self.check_helo, self.check_mail):
                    reply = await delayed()
                    if reply is not None:
                        return reply
            self.defer_if_permit = self._permit_after.get("sender")
            self._reset()
            status = Status.DUNNO
            for stage in (RELAY, RECIPIENT):
                status = await self._evaluate(self.engine.lists[stage.parameter],
                                              Scope(recipient, stage))
                if status is Status.REJECT:
                    break
            if status is not Status.REJECT and self.defer_if_permit is not None:
                status = self._apply_deferral(self.defer_if_permit)
            if (status is not Status.REJECT and self.engine.reject_unlisted_recipient
                    and not self.local_recipient_checked and not self.actions.discard):
                status = await self.engine.unlisted(self, recipient, RECIPIENT)
            return self._take_refusal() if status is Status.REJECT else None
        finally:
            facts.recipient = None

    async def data(self) -> Reply | None:
        """smtpd_data_restrictions at DATA (BDAT: its first chunk). With more than one
        recipient, no recipient is named (Postfix's rule)."""
        return await self._message_stage(DATA, "DATA")

    async def end_of_data(self) -> Reply | None:
        return await self._message_stage(END_OF_DATA, "END-OF-MESSAGE")

    def reset_transaction(self) -> None:
        """RSET, a new HELO, a finished message: what the transaction's checks asked for goes."""
        self.actions = MessageActions()
        self._permit_after.pop("sender", None)

    # -- what checks call ---------------------------------------------------------------------

    def reject(self, error_class: str, code: int, dsn: str, text: str) -> Status:
        """Postfix's smtpd_check_reject: refuse (or only warn, under warn_if_reject), with a
        5xx turned into the remembered defer_if_reject."""
        warn = bool(self.warn_if_reject) and error_class not in _UNCONVERTIBLE
        if not 400 <= code <= 599 or not _valid_dsn(dsn):
            log.warning("SMTP reply code configuration error: %d %s %s", code, dsn, text)
            code, dsn, text = 450, "4.7.1", "Service unavailable"
        text = "".join(ch if ch.isprintable() else " " for ch in text)[:500]
        if not warn and self.defer_if_reject is not None and code >= 500:
            deferral, self.defer_if_reject = self.defer_if_reject, None
            self.warn_if_reject = 0
            return self.reject(deferral.error_class, deferral.code, deferral.dsn, deferral.text)
        if self.engine.soft_bounce and code >= 500:
            code -= 100
        dsn = f"{str(code)[0]}{dsn[1:]}"
        self.log_whatsup("reject_warning" if warn else "reject", f"{code} {dsn} {text}")
        if warn:
            return Status.DUNNO
        self.error_classes.add(error_class)
        self._refusal = Reply(code, dsn, text)
        return Status.REJECT

    def refuse(self, scope: Scope, code: int, dsn: str, reason: str,
               error_class: str = "policy") -> Status:
        """The usual shape: `<name>: Class rejected: reason`."""
        return self.reject(error_class, code, dsn,
                           f"<{scope.reply_name}>: {scope.reply_class} rejected: {reason}")

    def server_error(self) -> Status:
        return self.reject("software", 451, "4.3.5", "Server configuration error")

    def lookup_failed(self, scope: Scope) -> Status:
        return self.reject("data", 451, "4.3.0", f"<{scope.reply_name}>: Temporary lookup failure")

    def defer_permit(self, code: int, dsn: str, text: str) -> Status:
        """defer_if_permit: a later permit becomes this deferral (the first reason stays).
        Under warn_if_reject only the warning is logged (Postfix's rule)."""
        if self.warn_if_reject:
            return self.reject("policy", code, dsn, text)
        if self.defer_if_permit is None:
            self.defer_if_permit = Deferral("policy", code, dsn, text)
        return Status.DUNNO

    def defer_reject(self, code: int, dsn: str, text: str) -> Status:
        if self.defer_if_reject is None:
            self.defer_if_reject = Deferral("policy", code, dsn, text)
        return Status.DUNNO

    def log_whatsup(self, whatsup: str, text: str) -> None:
        """Postfix's log_whatsup line: `NOQUEUE: reject: RCPT from host[addr]: TEXT; from=<>
        to=<> proto=ESMTP helo=<>`."""
        facts = self.facts
        tail = ""
        if facts.sender is not None:
            tail += f" from=<{facts.sender}>"
        if facts.recipient is not None:
            tail += f" to=<{facts.recipient}>"
        tail += f" proto={facts.protocol}"
        if facts.helo is not None:
            tail += f" helo=<{facts.helo}>"
        log.info("%s: %s: %s from %s: %s;%s", facts.queue_id or "NOQUEUE", whatsup, facts.where,
                 facts.namaddr, text, tail)

    async def evaluate_words(self, words: Sequence[str], scope: Scope) -> Status:
        """A restriction list an access table or policy server answered with."""
        if self.recursion > MAX_RECURSION:
            log.warning("access table entry %s causes unreasonable recursion", " ".join(words))
            return self.server_error()
        return await self._evaluate(words, scope)

    # -- the engine ---------------------------------------------------------------------------

    def _reset(self) -> None:
        self.recursion = 0
        self.warn_if_reject = 0
        self.defer_if_reject = None

    def _take_refusal(self) -> Reply | None:
        reply, self._refusal = self._refusal, None
        return reply

    def _apply_deferral(self, deferral: Deferral) -> Status:
        return self.reject(deferral.error_class, deferral.code, deferral.dsn, deferral.text)

    async def _run(self, stage: Stage, reply_name: str) -> Reply | None:
        self._reset()
        words = self.engine.lists[stage.parameter]
        if not words:
            return None
        status = await self._evaluate(words, Scope(reply_name, stage))
        return self._take_refusal() if status is Status.REJECT else None

    async def _message_stage(self, stage: Stage, where: str) -> Reply | None:
        facts = self.facts
        if not self.engine.lists[stage.parameter]:
            return None
        self._reset()
        status = await self._evaluate(self.engine.lists[stage.parameter], Scope(where, stage))
        if status is not Status.REJECT and self.defer_if_permit is not None:
            status = self._apply_deferral(self.defer_if_permit)
        facts.recipient = None
        return self._take_refusal() if status is Status.REJECT else None

    async def _evaluate(self, words: Sequence[str], scope: Scope) -> Status:
        """Postfix's generic_checks."""
        from sealmail.mta.restrictions.checks import CHECKS

        saved = self.recursion
        self.recursion += 1
        status = Status.DUNNO
        index = 0
        try:
            while index < len(words):
                if self.actions.discard:
                    break
                name = words[index]
                lower = name.lower()
                index += 1
                if lower == "warn_if_reject":
                    if not self.warn_if_reject:
                        self.warn_if_reject = self.recursion
                    continue
                argument: str | None = None
                if ":" in name:  # a bare table: this list's own access check
                    if scope.default_access is None:
                        log.warning("specify one of (check_client_access, check_helo_access, "
                                    "check_sender_access, check_recipient_access) before %s "
                                    "restriction \"%s\"", scope.reply_class, name)
                        return self.server_error()
                    lower, argument = scope.default_access, name
                check = CHECKS.get(lower)
                if check is None:
                    classes = self.engine.classes
                    if lower in classes:
                        status = await self.evaluate_words(classes[lower], scope)
                    else:
                        log.warning("unknown smtpd restriction: \"%s\"", name)
                        return self.server_error()
                else:
                    if check.argument and argument is None:
                        if index >= len(words) or (check.argument == "table"
                                                   and ":" not in words[index]):
                            log.warning("restriction %s requires %s argument", name,
                                        check.argument)
                            return self.server_error()
                        argument = words[index]
                        index += 1
                    status = await check.run(self, scope, argument)
                if self.warn_if_reject >= self.recursion:
                    self.warn_if_reject = 0
                if status is not Status.DUNNO:
                    break
                if self.defer_if_permit is not None and self.defer_if_reject is not None:
                    break
        finally:
            self.recursion = saved
            if self.warn_if_reject > self.recursion:
                self.warn_if_reject = 0
        return status


def _valid_dsn(dsn: str) -> bool:
    parts = dsn.split(".")
    return (len(parts) == 3 and parts[0] in ("4", "5", "2") and all(
        p.isdigit() and 1 <= len(p) <= 3 for p in parts[1:]))
