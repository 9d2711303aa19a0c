"""smtpd's AUTH: the shared SASL exchange, logging and answering as Postfix's smtpd."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from sealmail.mta.smtpd.state import SessionState
from sealmail.proto.sasl import PLAINTEXT_MECHANISMS, Failure, FailureReason, Success
from sealmail.proto.smtp import AuthResponse, AuthStart
from sealmail.proto.smtp.auth_replies import (
    AUTH_ABORTED,
    AUTH_FAILURE_REPLIES,
    TOO_MANY_AUTH_FAILURES,
)
from sealmail.server import session as sessions

if TYPE_CHECKING:
    from sealmail.mta.smtpd.service import SmtpdService

log = logging.getLogger("sealmail.mta.smtpd")

SASL_SERVICE = "smtp"
MAX_AUTH_FAILURES = 3


class PostfixSaslExchange(sessions.SaslExchange):
    """The shared SASL exchange, logging as Postfix's smtpd does (log watchers such as fail2ban
    match its failure line): nothing but the failure."""

    def _log_refused(self, reason: FailureReason) -> None:
        pass

    def _log_failed(self, failure: Failure, claimed: str | None) -> None:
        self.log.warning(
            "%s: SASL %s authentication failed: %s",
            self.host.client,
            self.mechanism_name,
            failure.detail,
        )

    def _log_aborted(self, reason: str) -> None:
        pass


class SaslSession(SessionState):
    """AUTH (RFC 4954): the mechanisms offered, and SMTP's answers to the shared exchange."""

    def __init__(
        self, service: SmtpdService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(service, reader, writer)
        self.auth = (
            PostfixSaslExchange(
                self,
                service.authenticator,
                SASL_SERVICE,
                log=log,
                max_failures=MAX_AUTH_FAILURES,
                temporary_counts=True,
            )
            if service.authenticator is not None
            else None
        )

    def _mechanisms(self) -> tuple[str, ...]:
        service = self.service
        settings = service.settings
        if self.auth is None or (settings.tls_auth_only and not self.secure):
            return ()
        offered = self.auth.offered()
        noplaintext = settings.sasl_tls_noplaintext if self.secure else settings.sasl_noplaintext
        if noplaintext:
            offered = tuple(m for m in offered if m not in PLAINTEXT_MECHANISMS)
        return offered

    async def _auth_start(self, event: AuthStart) -> bool:
        """AUTH: anvil's smtpd_client_auth_rate_limit, a mechanism we offer, then the exchange."""
        refusal = self._limited(await self.limiter.auth())
        if refusal is not None:
            self.conn.answer(refusal)
            return True
        if self.auth is None or event.mechanism not in self._mechanisms():
            self.conn.answer(AUTH_FAILURE_REPLIES[FailureReason.UNKNOWN_MECHANISM])
            return True
        return await self.auth.start(event.mechanism, event.initial_response)

    async def _auth_response(self, event: AuthResponse) -> bool:
        assert self.auth is not None  # a challenge came first
        if event.data is None:  # RFC 4954 4: "*" cancels; we MUST answer 501
            self.auth.abort("cancelled by the client")
            self.conn.answer(AUTH_ABORTED)
            return True
        return await self.auth.step(event.data)

    # -- the exchange is PostfixSaslExchange; these are SMTP's answers to it -----------------

    def sasl_challenge(self, data: bytes) -> None:
        self.conn.auth_challenge(data)

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.conn.answer(AUTH_FAILURE_REPLIES[reason])

    async def sasl_accept(self, result: Success) -> bool:
        assert self.auth is not None
        self.sasl_username = self.facts.sasl_username = result.authzid
        self.sasl_method = self.facts.sasl_method = self.auth.mechanism_name
        if self.milters is not None:
            self.milters.set_macros(auth_type=self.sasl_method, auth_authen=result.authzid)
        self.conn.auth_succeeded(result.authzid)
        return True

    def sasl_give_up(self) -> None:
        self.writer.write(self.conn.data_to_send() + TOO_MANY_AUTH_FAILURES.render())

