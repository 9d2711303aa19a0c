"""An SMTP session's state, shared by its parts (dispatch, AUTH, TLS, the transaction)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sealmail.mta.milter.stages import SmtpdMilters
from sealmail.mta.queue import RecipientRecord
from sealmail.mta.restrictions import Facts
from sealmail.mta.restrictions import Session as Restrictions
from sealmail.mta.smtpd_limits import ClientLimiter
from sealmail.proto.smtp import Address, Reply, ServerConnection
from sealmail.server import session as sessions

if TYPE_CHECKING:
    from sealmail.mta.smtpd.auth import PostfixSaslExchange
    from sealmail.mta.smtpd.service import SmtpdService

log = logging.getLogger("sealmail.mta.smtpd")


@dataclass
class Transaction:
    """One mail transaction's envelope, as smtpd keeps it from MAIL FROM to the queue file."""

    sender: str = ""
    recipients: list[RecipientRecord] = field(default_factory=list)
    ret: str = ""  # RFC 3461 4.3 RET=FULL|HDRS
    envid: str = ""  # RFC 3461 4.4 ENVID, decoded from xtext
    smtputf8: bool = False  # RFC 6531 MAIL ... SMTPUTF8
    data_checked: bool = False  # smtpd_data_restrictions ran at DATA


class SessionState(sessions.ClientSession):
    """What every part of an SMTP session reads and writes: the client, the restriction
    facts, the transaction, the limits; the small helpers they all use."""

    conn: ServerConnection  # the SMTP core, once the client is past the connect checks

    def __init__(
        self, service: SmtpdService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        address = self.endpoint.client_ip or ""
        self.client_address = address
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        self.facts = Facts(
            client_address=address,
            client_port=str(peer[1]) if address and isinstance(peer, tuple) else "",
            server_address=self.endpoint.server_ip or "",
            server_port=str(local[1]) if address and isinstance(local, tuple) else "",
        )
        self.checks: Restrictions = service.restrictions.session(self.facts)
        # Postfix's smtpd log lines name the client (looked up when a check needs the name).
        self.client = self.facts.namaddr
        self.session_id = ""
        self.helo = ""
        self.ehlo = True
        self.sasl_username = ""
        self.sasl_method = ""
        self.auth: PostfixSaslExchange | None = None  # smtpd_sasl_auth_enable
        self.txn = Transaction()
        self.limiter = ClientLimiter(service.limits, service.anvil, service.service_name,
                                     address, self.client, service.settings.hostname)
        self.milters: SmtpdMilters | None = None

    @property
    def protocol(self) -> str:
        if not self.ehlo:
            return "SMTP"
        return "ESMTP" + ("S" if self.secure else "") + ("A" if self.sasl_username else "")

    def _whatsup(self, recipient: str = "") -> str:
        """Postfix's smtpd_whatsup: what the log line of a refusal adds."""
        sender = f" from=<{self.txn.sender}>" if self.txn.sender or recipient else ""
        to = f" to=<{recipient}>" if recipient else ""
        return f"{sender}{to} proto={self.protocol} helo=<{self.helo}>"

    def _note_refusal(self, refusal: Reply) -> None:
        # 451 4.3.x is our own trouble (configuration, a lookup), the rest is policy.
        self.conn.note_error("software" if refusal.enhanced in ("4.3.0", "4.3.5") else "policy")

    def _end_transaction(self) -> None:
        self.txn = Transaction()
        self.checks.reset_transaction()
        facts = self.facts
        facts.sender = facts.recipient = None
        facts.recipient_count = facts.size = 0
        facts.queue_id = ""

    def _limited(self, refusal: Reply | None) -> Reply | None:
        """An anvil limit's refusal (sealmail.mta.smtpd_limits), noted as a policy error."""
        if refusal is not None:
            self.conn.note_error("policy")
        return refusal

    def _qualify(self, address: Address | None, text: str) -> str:
        """A bare local part gets @$myorigin (RFC 5321 4.1.1.3's <postmaster>, Postfix's
        append_at_myorigin)."""
        if address is not None and address.domain is None:
            return f"{address}@{self.service.settings.myorigin}"
        return str(address) if address is not None else text
