"""One SMTP client from connect to disconnect: the greeting, the command loop, dispatch."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sealmail.mta.milter.stages import SmtpdMilters
from sealmail.mta.restrictions import ClientNames
from sealmail.mta.smtpd.tls import TlsSession
from sealmail.mta.smtpd.transaction import TransactionSession
from sealmail.proto.smtp import (
    AuthResponse,
    AuthStart,
    DataCommand,
    Hello,
    MailFrom,
    MessageData,
    Mode,
    NonSmtpCommand,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    StartTLS,
)
from sealmail.server import session as sessions

log = logging.getLogger("sealmail.mta.smtpd")


class SmtpdSession(TlsSession, TransactionSession):
    """One SMTP client: the shared session (streams, TLS, SASL host) with Postfix's names."""

    async def run(self, announced: ClientNames | None = None) -> None:
        """The session to its end; `announced`: the client's names when its `connect from` was
        logged already (implicit TLS, sealmail.mta.smtpd.tls.open_implicit_tls)."""
        try:
            await self._run(announced)
        finally:
            await self.limiter.disconnect()

    async def _run(self, announced: ClientNames | None) -> None:
        service = self.service
        settings = service.settings
        engine = service.restrictions
        if announced is not None:
            self.facts.names = announced
        elif engine.needs_client_names:
            self.facts.names = await engine.client_names(self.client_address)
        self.client = self.limiter.client = self.facts.namaddr
        if announced is None:
            log.info("connect from %s", self.client)
        # anvil: before the greeting (with wrappermode after the handshake, as Postfix's smtpd)
        refusal = await self.limiter.connect()
        if refusal is not None:
            self.writer.write(refusal.render())
            log.info("disconnect from %s", self.client)
            return
        if settings.wrappermode:
            # RFC 8314 3.3: implicit TLS (submissions, 465), opened before the session started
            # (SmtpdService.handle_implicit_tls); handshake() only takes note of it.
            assert service.tls_context is not None
            if not await self.handshake(service.tls_context, timeout=settings.starttls_timeout):
                log.info("disconnect from %s", self.client)
                return
            if not await self._count_tls_session():
                log.info("disconnect from %s", self.client)
                return
        refusal = await self.checks.connect()
        if refusal is not None:
            await self._access_denied(refusal)
            log.info("disconnect from %s", self.client)
            return
        milter_refusal = None
        if service.milters is not None:
            milter_refusal = await self._milters_connect()
            if milter_refusal is not None and milter_refusal.code == 421:
                self.writer.write(Reply(421, None, f"{settings.hostname} Service unavailable - "
                                                   "try again later").render())
                log.info("disconnect from %s", self.client)
                return
        # A milter's 5xx at CONNECT: Postfix's smtpd greets with 554 and goes on (EHLO is
        # answered, MAIL FROM gets the milter's reply); a 4xx keeps the 220 (smtpd.c).
        refused = milter_refusal is not None and milter_refusal.code >= 500
        self.conn = conn = ServerConnection(
            mode=Mode.SMTP,
            hostname=settings.hostname,
            limits=settings.limits,
            auth_mechanisms=self._mechanisms(),
            starttls_available=service.tls_context is not None and not self.secure,
            greeting_text=("ESMTP not accepting connections" if refused
                           else settings.banner.removeprefix(settings.hostname).strip()),
            greeting_code=554 if refused else 220,
            dsn=True,
            smtputf8=settings.smtputf8,
            strict_smtputf8=settings.smtputf8,
            record_history=service.transcripts,
            answer_hello=not engine.delay_reject,
            answer_data=bool(engine.lists["smtpd_data_restrictions"]),
        )
        if milter_refusal is not None:
            conn.note_error("policy")
        await sessions.drive(conn, self.writer, self._read, self._on_event, pace=self._tarpit)
        log.info("disconnect from %s", self.client)
        await service.notify_postmaster(conn, self.client)

    def _tarpit(self, replies: bytes) -> float:
        """Postfix's smtpd_chat_reply: once the client has made smtpd_soft_error_limit errors,
        each reply waits smtpd_error_sleep_time (a batch of pipelined replies, each of them)."""
        settings = self.service.settings
        if settings.error_sleep <= 0 or self.conn.bad_commands < settings.soft_error_limit:
            return 0.0
        return settings.error_sleep * sum(
            1 for line in replies.split(b"\r\n") if line[3:4] == b" ")

    async def _milters_connect(self) -> Reply | None:
        """smtpd_milters at connect: their refusal, if any (the greeting is chosen from it)."""
        service = self.service
        assert service.milters is not None
        self.milters = SmtpdMilters.for_session(service.milters, self.writer, self.client,
                                                self.client_address, service.settings.hostname)
        return await self.milters.connect(self._whatsup())

    async def _read(self) -> bytes | None:
        settings = self.service.settings
        data = await sessions.read_client(
            self.reader, timeout=settings.timeout, draining=self.service.draining
        )
        if data is sessions.Interruption.SHUTDOWN:
            reply = Reply(421, "4.3.2", f"{settings.hostname} Service shutting down")
        elif data is sessions.Interruption.IDLE_TIMEOUT:
            log.info("timeout after %s from %s", _verb(self.conn), self.client)
            reply = Reply(421, "4.4.2", f"{settings.hostname} Error: timeout exceeded")
        else:
            return data
        self.writer.write(reply.render())
        return None

    async def _access_denied(self, refusal: Reply) -> None:
        """smtpd_delay_reject = no and the client refused: Postfix's smtpd sends the refusal
        instead of the greeting and answers every command but QUIT with 503."""
        settings = self.service.settings
        self.writer.write(refusal.render())
        errors = 1  # the refusal itself, toward smtpd_hard_error_limit (smtpd.c: error_count++)
        limit = settings.limits.max_bad_commands
        with contextlib.suppress(OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            while not (limit and errors >= limit):
                line = await asyncio.wait_for(self.reader.readline(), settings.timeout)
                if not line:
                    return
                if errors >= settings.soft_error_limit and settings.error_sleep > 0:
                    await asyncio.sleep(settings.error_sleep)
                if line.strip().upper() == b"QUIT":
                    self.writer.write(Reply(221, "2.0.0", "Bye").render())
                    return
                self.writer.write(Reply(503, "5.7.0",
                                        f"Error: access denied for {self.client}").render())
                await self.writer.drain()
                errors += 1
            self.writer.write(Reply(421, "4.7.0",
                                    f"{settings.hostname} Error: too many errors").render())

    def _note_pipelining(self, event: object) -> None:
        """RFC 2920 3.1: EHLO, DATA (and every command of a HELO client) end a group; a client
        that sent more before our reply pipelines where it may not (reject_unauth_pipelining)."""
        facts = self.facts
        if facts.ill_pipelining or not self.conn.buffered_input:
            return
        if isinstance(event, (Hello, DataCommand)) or (
                not self.ehlo and isinstance(event, (MailFrom, RcptTo))):
            facts.ill_pipelining = True
            sent = self.conn.peek_input(100)
            shown = "".join({13: "\\r", 10: "\\n"}.get(c, chr(c) if 32 <= c < 127 else f"\\{c:03o}")
                            for c in sent)
            log.info("improper command pipelining after %s from %s: %s", _where(event),
                     self.client, shown)

    async def _hello(self, event: Hello) -> None:
        facts = self.facts
        self.ehlo = event.command != "HELO"
        facts.protocol = self.protocol
        facts.where = event.command
        if self.conn.answer_hello:  # smtpd_delay_reject = no: the HELO list answers now
            previous, facts.helo = facts.helo, event.hostname
            refusal = await self.checks.helo()
            facts.helo = previous
            if refusal is not None:  # the name and the transaction stay as they were
                self._note_refusal(refusal)
                self.conn.answer(refusal)
                return
            self.conn.answer(Reply(250, None, "ok"))
        self._end_transaction()  # RFC 5321 4.1.4
        self.helo = facts.helo = event.hostname

    async def _on_event(self, event: object) -> bool:
        conn = self.conn
        self._note_pipelining(event)
        self.facts.protocol = self.protocol
        if isinstance(event, Hello):
            await self._hello(event)
            if self.milters is not None and self.helo == event.hostname:
                await self.milters.helo(event.hostname, self._whatsup())
        elif isinstance(event, MailFrom):
            refusal = await self.limiter.mail()
            reply = self._limited(refusal) or await self._mail_from(event)
            if self.milters is not None and reply.code == 250:
                reply = await self.milters.mail(self.txn.sender, event.params,
                                                self._whatsup()) or reply
            conn.answer(reply)
            return reply.code != 421  # a milter's SHUTDOWN ends the session
        elif isinstance(event, RcptTo):
            refusal = await self.limiter.rcpt()
            reply = self._limited(refusal) or await self._rcpt_to(event)
            if self.milters is not None and reply.code == 250:
                reply = await self._milter_rcpt(event, reply)
            conn.answer(reply)
            return reply.code != 421
        elif isinstance(event, DataCommand):
            await self._data_command()
        elif isinstance(event, MessageData):
            reply = await self._receive(event)
            conn.answer(reply)
            self._end_transaction()
            if self.milters is not None:
                self.milters.abort()  # unless the milters saw the end of the message
            return reply.code != 421
        elif isinstance(event, (Reset, Quit)):
            self._end_transaction()
            if self.milters is not None:
                self.milters.abort()
        elif isinstance(event, StartTLS):
            return await self._start_tls()
        elif isinstance(event, AuthStart):
            return await self._auth_start(event)
        elif isinstance(event, AuthResponse):
            return await self._auth_response(event)
        elif isinstance(event, NonSmtpCommand):
            log.warning("non-SMTP command from %s: %.100s", self.client,
                        event.line.decode("utf-8", "replace"))
        elif isinstance(event, ProtocolError):
            log.info("%s: %s", self.client, event.reply.render().decode("utf-8", "replace").strip())
        return True


def _verb(conn: ServerConnection) -> str:
    return conn.state.name


def _where(event: object) -> str:
    if isinstance(event, Hello):
        return event.command
    return {DataCommand: "DATA", MailFrom: "MAIL", RcptTo: "RCPT"}.get(type(event), "")

