"""smtpd: the MTA's SMTP server, an asyncio driver around the sans-I/O core in SMTP mode.

Bytes in -> `ServerConnection` events -> decisions -> replies out, as sealmail.server.lmtpd does
for LMTP. The decisions that are the MTA's own live here:

- access restrictions (sealmail.mta.restrictions): every smtpd_*_restrictions stage, evaluated
  by the engine as Postfix does; this module only tells it where the session is (connect, HELO,
  MAIL, RCPT, DATA, end of data) and sends the refusal it returns. With smtpd_delay_reject = no
  a client refused at connect gets the refusal as its greeting and 503 to every command but
  QUIT, as Postfix's smtpd. What access tables ask of the message (HOLD, DISCARD, PREPEND,
  REDIRECT) is done when it is queued.
- the message: cleanup (sealmail.mta.cleanup.prepare_message) in the event loop, then the
  process's CommitThread writes it; the 250 goes out only after the queue file and its
  directory are fsync'd.
- message_size_limit, smtpd_recipient_limit and smtpd_hard_error_limit are the core's limits;
  smtpd_timeout bounds every read.
- STARTTLS (smtpd_tls_security_level may/encrypt; the context is sealmail.mta.smtpd_tls's, from
  smtpd_tls_cert_file/key_file or smtpd_tls_chain_files and smtpd_tls_protocols): 220, then the
  handshake within smtpd_starttls_timeout on the session's `ClientSession.handshake`; a failed
  one ends the session. AUTH (smtpd_sasl_auth_enable; passwords through
  sealmail.auth.Authenticator, service "smtp", with the store's imapd.conf named by
  smtpd_sasl_imapd_conf).

DSN (RFC 3461): RET/ENVID on MAIL and NOTIFY/ORCPT on RCPT are checked by the SMTP core, kept in
the queue and honoured by the bounce. SMTPUTF8 (RFC 6531, smtputf8_enable): offered by the core,
which refuses an undeclared UTF-8 address; the declaration is kept in the queue file.

Logs are Postfix's lines: `connect from`, `NOQUEUE: reject: RCPT from ...`, `QUEUEID: client=`,
`SSL_accept error from`, `Anonymous TLS connection established from`, `disconnect from`. A
session with errors of a class notify_classes names ends with its transcript queued for the
postmaster (sealmail.mta.smtpd_notice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sealmail import metrics
from sealmail.auth.authenticator import Authenticator
from sealmail.config.imapd_conf import ConfigError
from sealmail.maillog import SERVICE_SYSLOG_NAME
from sealmail.mta import queue_space
from sealmail.mta.anvil import AnvilClient, AnvilTable, LocalAnvil, anvil_socket
from sealmail.mta.cleanup import Cleanup, CleanupError, log_queued, prepare_message
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.milter import MilterSettings
from sealmail.mta.milter.stages import SmtpdMilters
from sealmail.mta.notify import NotifySettings
from sealmail.mta.queue import Queue, QueueError, QueueName, RecipientRecord
from sealmail.mta.queue_commit import CommitThread
from sealmail.mta.restrictions import Engine, Facts
from sealmail.mta.restrictions import Session as Restrictions
from sealmail.mta.restrictions.policy_client import new_instance
from sealmail.mta.smtpd_limits import Anvil, ClientLimiter, ClientLimits
from sealmail.mta.smtpd_notice import SESSION_CLASSES, session_notice
from sealmail.mta.smtpd_tls import smtpd_context
from sealmail.proto.sasl import PLAINTEXT_MECHANISMS, Failure, FailureReason, Success
from sealmail.proto.smtp import (
    Address,
    AddressError,
    AuthResponse,
    AuthStart,
    DataCommand,
    Hello,
    Limits,
    MailFrom,
    MessageData,
    Mode,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    StartTLS,
    decode_xtext,
)
from sealmail.proto.smtp.auth_replies import (
    AUTH_ABORTED,
    AUTH_FAILURE_REPLIES,
    TOO_MANY_AUTH_FAILURES,
)
from sealmail.server import session as sessions
from sealmail.server.listeners import serve_on

log = logging.getLogger("sealmail.mta.smtpd")

SASL_SERVICE = "smtp"
MAX_AUTH_FAILURES = 3


@dataclass
class SmtpdSettings:
    hostname: str
    banner: str
    myorigin: str
    limits: Limits
    timeout: float
    starttls_timeout: float
    tls_level: str  # "", none, may, encrypt
    sasl_enabled: bool
    tls_auth_only: bool
    sasl_noplaintext: bool
    sasl_tls_noplaintext: bool
    helo_required: bool
    smtputf8: bool = True
    wrappermode: bool = False  # smtpd_tls_wrappermode: TLS before the greeting (port 465)
    syslog_name: str = ""  # the service's own (-o syslog_name=postfix/submission)

    @classmethod
    def from_config(cls, config: MainConfig) -> SmtpdSettings:
        return cls(
            hostname=config.get(MAIN.myhostname),
            banner=config.get(MAIN.smtpd_banner),
            myorigin=config.get(MAIN.myorigin),
            limits=Limits(
                max_message_size=config.get(MAIN.message_size_limit),
                max_recipients=config.get(MAIN.smtpd_recipient_limit),
                max_bad_commands=config.get(MAIN.smtpd_hard_error_limit),
            ),
            timeout=float(config.get(MAIN.smtpd_timeout)),
            starttls_timeout=float(config.get(MAIN.smtpd_starttls_timeout)),
            tls_level=config.get(MAIN.smtpd_tls_security_level).strip().lower(),
            sasl_enabled=config.get(MAIN.smtpd_sasl_auth_enable),
            tls_auth_only=config.get(MAIN.smtpd_tls_auth_only),
            sasl_noplaintext="noplaintext" in config.get(MAIN.smtpd_sasl_security_options),
            sasl_tls_noplaintext=(
                "noplaintext" in config.get(MAIN.smtpd_sasl_tls_security_options)
            ),
            helo_required=config.get(MAIN.smtpd_helo_required),
            smtputf8=config.get(MAIN.smtputf8_enable),
            wrappermode=config.get(MAIN.smtpd_tls_wrappermode),
            syslog_name=config.get(MAIN.syslog_name),
        )


def authenticator_from_config(config: MainConfig) -> Authenticator | None:
    if not config.get(MAIN.smtpd_sasl_auth_enable):
        return None
    from sealmail.config.imapd_conf import load_imapd_conf

    return Authenticator(load_imapd_conf(config.get(MAIN.smtpd_sasl_imapd_conf)))


class SmtpdService:
    """Serves SMTP sessions; one per master.cf smtpd entry (its -o overrides applied)."""

    def __init__(
        self,
        config: MainConfig,
        queue: Queue,
        cleanup: Cleanup,
        *,
        on_queued: Callable[[str], None] = lambda queue_id: None,
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        clock: Callable[[], float] = time.time,
        service_name: str = "smtpd",
        anvil: Anvil | None = None,
    ) -> None:
        self.config = config
        self.settings = SmtpdSettings.from_config(config)
        self.limits = ClientLimits.from_config(config)
        # The master's anvil (counts across smtpd processes), else this service's own.
        self.anvil: Anvil = anvil or LocalAnvil(AnvilTable(self.limits.time_unit))
        self.restrictions = Engine.from_config(config)
        self.queue = queue
        self.cleanup = cleanup
        self.on_queued = on_queued
        self.authenticator = authenticator
        self.tls_context = tls_context
        self.clock = clock
        self.service_name = service_name
        self.sessions: set[asyncio.Task[None]] = set()
        self.draining = sessions.Drain()
        self.commits = CommitThread(queue)
        self.queue_minfree = config.get(MAIN.queue_minfree)
        self.notify = NotifySettings.from_config(config)
        self.transcripts = bool(self.notify.classes & SESSION_CLASSES)
        self.milters = MilterSettings.from_config(config, MAIN.smtpd_milters)
        if self.settings.tls_level == "encrypt" and tls_context is None:
            raise config.error(MAIN.smtpd_tls_security_level, "encrypt needs a TLS certificate")
        if self.settings.wrappermode and tls_context is None:
            raise config.error(MAIN.smtpd_tls_wrappermode,
                               "yes needs a TLS certificate (smtpd_tls_cert_file or "
                               "smtpd_tls_chain_files)")

    @classmethod
    def from_config(
        cls, config: MainConfig, queue: Queue, cleanup: Cleanup, **kwargs: object
    ) -> SmtpdService:
        return cls(
            config,
            queue,
            cleanup,
            authenticator=authenticator_from_config(config),
            tls_context=smtpd_context(config),
            **kwargs,  # type: ignore[arg-type]
        )

    def drain(self) -> None:
        self.draining.set()

    async def notify_postmaster(self, conn: ServerConnection, client: str) -> None:
        """The session ended: its transcript to the postmaster if notify_classes wants it."""
        history = list(conn.history or ())
        ended_by_quit = bool(history) and history[-1].startswith("Out: 221")
        notice = session_notice(self.notify, conn.error_classes, history, client,
                                "" if ended_by_quit else "lost connection", self.clock())
        if notice is None:
            return
        try:
            queue_id = await asyncio.to_thread(notice.queue, self.queue)
        except (OSError, QueueError) as exc:
            log.warning("postmaster notify: %s", exc)
            return
        self.on_queued(queue_id)

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        """Serve a listening socket. With smtpd_tls_wrappermode (465) asyncio does the TLS
        handshake on the raw connection before the session starts: a handshake started from
        the session would miss the ClientHello its stream had already read (uvloop reads at
        once), and hang until smtpd_starttls_timeout."""
        if self.settings.wrappermode:
            return await serve_on(self.handle, sock, tls=self.tls_context,
                                  tls_handshake_timeout=self.settings.starttls_timeout)
        return await serve_on(self.handle, sock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.settings.syslog_name:  # this session's task only: postfix/submission/smtpd
            SERVICE_SYSLOG_NAME.set(self.settings.syslog_name)
        session = SmtpdSession(self, reader, writer)
        try:
            await sessions.serve_session(self.sessions, writer, session.run())
        finally:
            if session.milters is not None:
                await session.milters.close()


@dataclass
class _Transaction:
    sender: str = ""
    recipients: list[RecipientRecord] = field(default_factory=list)
    ret: str = ""  # RFC 3461 4.3 RET=FULL|HDRS
    envid: str = ""  # RFC 3461 4.4 ENVID, decoded from xtext
    smtputf8: bool = False  # RFC 6531 MAIL ... SMTPUTF8
    data_checked: bool = False  # smtpd_data_restrictions ran at DATA


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


class SmtpdSession(sessions.ClientSession):
    """One SMTP client: the shared session (streams, TLS, SASL host) with Postfix's names."""

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
        self.txn = _Transaction()
        self.limiter = ClientLimiter(service.limits, service.anvil, service.service_name,
                                     address, self.client, service.settings.hostname)
        self.milters: SmtpdMilters | None = None

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

    @property
    def protocol(self) -> str:
        if not self.ehlo:
            return "SMTP"
        return "ESMTP" + ("S" if self.secure else "") + ("A" if self.sasl_username else "")

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            await self.limiter.disconnect()

    async def _run(self) -> None:
        service = self.service
        settings = service.settings
        engine = service.restrictions
        if engine.needs_client_names:
            self.facts.names = await engine.client_names(self.client_address)
            self.client = self.facts.namaddr
        log.info("connect from %s", self.client)
        refusal = await self.limiter.connect()  # anvil: before the greeting, in clear
        if refusal is not None:
            self.writer.write(refusal.render())
            log.info("disconnect from %s", self.client)
            return
        if settings.wrappermode:
            # RFC 8314 3.3: implicit TLS, the handshake before any SMTP (submissions, 465),
            # done by the listener (SmtpdService.serve); handshake() only takes note of it.
            assert service.tls_context is not None
            refusal = await self.limiter.starttls(wrappermode=True)
            if refusal is not None:  # under TLS (Postfix answers in clear, before it)
                self.writer.write(refusal.render())
                log.info("disconnect from %s", self.client)
                return
            if not await self.handshake(service.tls_context, timeout=settings.starttls_timeout):
                log.info("disconnect from %s", self.client)
                return
            await self._count_tls_session()
        refusal = await self.checks.connect()
        if refusal is not None:
            await self._access_denied(refusal)
            log.info("disconnect from %s", self.client)
            return
        if service.milters is not None and not await self._milters_connect():
            return
        self.conn = conn = ServerConnection(
            mode=Mode.SMTP,
            hostname=settings.hostname,
            limits=settings.limits,
            auth_mechanisms=self._mechanisms(),
            starttls_available=service.tls_context is not None and not self.secure,
            greeting_text=settings.banner.removeprefix(settings.hostname).strip(),
            dsn=True,
            smtputf8=settings.smtputf8,
            strict_smtputf8=settings.smtputf8,
            record_history=service.transcripts,
            answer_hello=not engine.delay_reject,
            answer_data=bool(engine.lists["smtpd_data_restrictions"]),
        )
        await sessions.drive(conn, self.writer, self._read, self._on_event)
        log.info("disconnect from %s", self.client)
        await service.notify_postmaster(conn, self.client)

    async def _milters_connect(self) -> bool:
        """smtpd_milters at connect: False when the session ends at once (421)."""
        service = self.service
        assert service.milters is not None
        self.milters = SmtpdMilters.for_session(service.milters, self.writer, self.client,
                                                self.client_address, service.settings.hostname)
        refusal = await self.milters.connect(self._whatsup())
        if refusal is None:
            return True
        self.writer.write(refusal.render())
        log.info("disconnect from %s", self.client)
        return False

    def _whatsup(self, recipient: str = "") -> str:
        """Postfix's smtpd_whatsup: what the log line of a refusal adds."""
        sender = f" from=<{self.txn.sender}>" if self.txn.sender or recipient else ""
        to = f" to=<{recipient}>" if recipient else ""
        return f"{sender}{to} proto={self.protocol} helo=<{self.helo}>"

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
        errors = 0
        with contextlib.suppress(OSError, ValueError, TimeoutError, asyncio.IncompleteReadError):
            while True:
                line = await asyncio.wait_for(self.reader.readline(), settings.timeout)
                if not line:
                    return
                if line.strip().upper() == b"QUIT":
                    self.writer.write(Reply(221, "2.0.0", "Bye").render())
                    return
                errors += 1
                if settings.limits.max_bad_commands and errors > settings.limits.max_bad_commands:
                    self.writer.write(Reply(421, "4.7.0",
                                            f"{settings.hostname} Error: too many errors").render())
                    return
                self.writer.write(Reply(503, "5.7.0",
                                        f"Error: access denied for {self.client}").render())
                await self.writer.drain()

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

    def _note_refusal(self, refusal: Reply) -> None:
        # 451 4.3.x is our own trouble (configuration, a lookup), the rest is policy.
        self.conn.note_error("software" if refusal.enhanced in ("4.3.0", "4.3.5") else "policy")

    def _end_transaction(self) -> None:
        self.txn = _Transaction()
        self.checks.reset_transaction()
        facts = self.facts
        facts.sender = facts.recipient = None
        facts.recipient_count = facts.size = 0
        facts.queue_id = ""

    async def _data_command(self) -> None:
        self.facts.where = "DATA"
        self.txn.data_checked = True
        refusal = await self.checks.data()
        if refusal is not None:
            self._note_refusal(refusal)
        self.conn.answer(refusal or Reply(354, None, "End data with <CR><LF>.<CR><LF>"))

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
            refusal = self._limited(await self.limiter.auth())
            if refusal is not None:
                conn.answer(refusal)
                return True
            if self.auth is None or event.mechanism not in self._mechanisms():
                conn.answer(AUTH_FAILURE_REPLIES[FailureReason.UNKNOWN_MECHANISM])
                return True
            return await self.auth.start(event.mechanism, event.initial_response)
        elif isinstance(event, AuthResponse):
            assert self.auth is not None  # a challenge came first
            if event.data is None:  # RFC 4954 4: "*" cancels; we MUST answer 501
                self.auth.abort("cancelled by the client")
                conn.answer(AUTH_ABORTED)
                return True
            return await self.auth.step(event.data)
        elif isinstance(event, ProtocolError):
            log.info("%s: %s", self.client, event.reply.render().decode("utf-8", "replace").strip())
        return True

    def _limited(self, refusal: Reply | None) -> Reply | None:
        """An anvil limit's refusal (sealmail.mta.smtpd_limits), noted as a policy error."""
        if refusal is not None:
            self.conn.note_error("policy")
        return refusal

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

    def _qualify(self, address: Address | None, text: str) -> str:
        """A bare local part gets @$myorigin (RFC 5321 4.1.1.3's <postmaster>, Postfix's
        append_at_myorigin)."""
        if address is not None and address.domain is None:
            return f"{address}@{self.service.settings.myorigin}"
        return str(address) if address is not None else text

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
        self.txn = _Transaction(
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

    async def _count_tls_session(self) -> None:
        """A new (not resumed) TLS session counts against the new-session rate limit."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is None or not ssl_object.session_reused:
            await self.limiter.tls_started()

    async def _start_tls(self) -> bool:
        """RFC 3207: 220, then the handshake within smtpd_starttls_timeout, or the end."""
        service = self.service
        assert service.tls_context is not None
        refusal = self._limited(await self.limiter.starttls())
        if refusal is not None:
            self.conn.answer(refusal)
            return True
        self.conn.answer(Reply(220, "2.0.0", "Ready to start TLS"))
        started = await self.handshake(
            service.tls_context,
            self.conn.data_to_send(),
            timeout=service.settings.starttls_timeout,
        )
        if not started:
            log.info("lost connection after STARTTLS from %s", self.client)
            return False
        await self._count_tls_session()
        # Neither the cipher's strength nor a client certificate counts for SASL here.
        self.tls_bits = self.tls_peer = None
        # RFC 3207 4.2: forget what the client said in clear (its EHLO, a transaction).
        self.helo = ""
        self.facts.helo = None
        self._end_transaction()
        self.conn.tls_started(auth_mechanisms=self._mechanisms())
        return True

    def tls_failed(self, error: Exception) -> None:
        """Postfix's line: the OpenSSL error, the system error, or "lost connection"."""
        if isinstance(error, ssl.SSLError):
            log.info("SSL_accept error from %s: -1", self.client)
            log.warning("TLS library problem: %s", error)
        elif isinstance(error, ConnectionAbortedError):  # the loop's handshake timeout
            log.info("SSL_accept error from %s: Connection timed out", self.client)
        elif isinstance(error, OSError) and error.strerror:
            log.info("SSL_accept error from %s: %s", self.client, error.strerror)
        else:
            log.info("SSL_accept error from %s: lost connection", self.client)

    def tls_established(self, ssl_object: ssl.SSLObject) -> None:
        name, _, bits = ssl_object.cipher() or ("", "", 0)
        facts = self.facts
        facts.tls_protocol = ssl_object.version() or ""
        facts.tls_cipher, facts.tls_bits = name, bits
        if self.milters is not None:
            self.milters.set_macros(tls_version=ssl_object.version() or "", cipher=name,
                                    cipher_bits=str(bits))
        log.info(
            "Anonymous TLS connection established from %s: %s with cipher %s (%d/%d bits)",
            self.client,
            ssl_object.version(),
            name,
            bits,
            bits,
        )

    # -- authentication: the exchange is PostfixSaslExchange; these are SMTP's answers -------

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


def _verb(conn: ServerConnection) -> str:
    return conn.state.name


def _where(event: object) -> str:
    if isinstance(event, Hello):
        return event.command
    return {DataCommand: "DATA", MailFrom: "MAIL", RcptTo: "RCPT"}.get(type(event), "")


async def serve_sockets(service: SmtpdService, sockets: Sequence[object]) -> list[asyncio.Server]:
    """Start serving on already-bound listening sockets; returns the servers."""
    servers = []
    for sock in sockets:
        assert isinstance(sock, socket.socket)
        servers.append(await service.serve(sock))
    return servers


# --------------------------------------------------------------------------------------------
# smtpd as a worker process of the MTA master (one per CPU, sharing the listening sockets)


class QueueManagerNudge:
    """Tells the master's queue manager about new mail over the control socket, coalescing:
    while one `wake` is on its way, later ones fold into a single follow-up."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._busy = False
        self._again = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, queue_id: str) -> None:
        if self._busy:
            self._again = True
            return
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        try:
            while True:
                self._again = False
                with contextlib.suppress(OSError):
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                    writer.write(b"wake\n")
                    await writer.drain()
                    await reader.readline()
                    writer.close()
                if not self._again:
                    break
        finally:
            self._busy = False


async def serve_worker(
    config_directory: str,
    service_name: str,
    fds: Sequence[int],
    parent_fd: int,
    hostname: str | None = None,
) -> None:
    """Serve SMTP on inherited listening sockets until SIGTERM or the master's death (its end of
    the pipe `parent_fd` closes), then let sessions under way finish."""
    import signal

    from sealmail.mta.cleanup import cleanup_from_config
    from sealmail.mta.config import load_mta_config

    config = load_mta_config(config_directory, hostname=hostname)
    entry = config.master_cf.get(service_name, "inet")
    if entry is None:
        raise ConfigError(config.master_cf.path, 0, service_name, "no such inet service")
    settings = entry.effective(config.main)
    # Every line of this process under the service's syslog_name (postfix/submission/smtpd).
    SERVICE_SYSLOG_NAME.set(settings.get(MAIN.syslog_name))
    queue = Queue.from_config(config.main)
    anvil = AnvilClient(anvil_socket(queue.directory))
    service = SmtpdService.from_config(
        settings,
        queue,
        cleanup_from_config(config.main),
        on_queued=QueueManagerNudge(str(queue.control_socket)),
        service_name=service_name,
        anvil=anvil,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(parent_fd, stop.set)  # readable only at EOF: the master is gone
    servers = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        servers.append(await service.serve(sock))
    await stop.wait()
    loop.remove_reader(parent_fd)
    for server in servers:
        server.close()
    service.drain()
    if service.sessions:
        await asyncio.wait(set(service.sessions), timeout=30)
    service.commits.close()
    await anvil.close()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """`python -m sealmail.mta.smtpd --config DIR --service NAME --fds 3,4 --parent-fd 5`,
    started by sealmail.mta.master only."""
    import argparse

    from sealmail.maillog import lean_log_records
    from sealmail.mta.config import load_mta_config
    from sealmail.mta.master import open_maillog
    from sealmail.server import runtime

    parser = argparse.ArgumentParser(prog="sealmail-smtpd")
    parser.add_argument("--config", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--log-fd", type=int, default=None)
    args = parser.parse_args(argv)
    # The master's log file, open on --log-fd (we may run as mail_owner, and the file be
    # root's), else what main.cf says.
    handler = open_maillog(load_mta_config(args.config, hostname=args.hostname).main,
                           args.log_fd)
    lean_log_records()
    root = logging.getLogger("sealmail")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    fds = [int(fd) for fd in args.fds.split(",") if fd]
    metrics.enable()  # when the master serves metrics_listen (PROMETHEUS_MULTIPROC_DIR)
    runtime.run(serve_worker(args.config, args.service, fds, args.parent_fd, args.hostname))
    return 0


if __name__ == "__main__":
    raise SystemExit(worker_main())
