"""smtpd: the MTA's SMTP server, an asyncio driver around the sans-I/O core in SMTP mode.

Bytes in -> `ServerConnection` events -> decisions -> replies out, as sealmail.server.lmtpd does
for LMTP. The decisions that are the MTA's own live here:

- relay control (`RecipientPolicy`): smtpd_relay_restrictions, then smtpd_recipient_restrictions,
  each evaluated left to right until a restriction permits or refuses, as Postfix does. Supported:
  permit_mynetworks, permit_sasl_authenticated, permit_auth_destination,
  reject_unauth_destination, defer_unauth_destination, reject_non_fqdn_recipient, permit,
  reject, defer, dunno. An unknown restriction refuses with 451 4.3.5 (Postfix's "server
  configuration error"), never permits. A configuration in which no list can refuse an
  unauthorized destination is refused at start: the server is never an open relay.
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
import ipaddress
import logging
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sealmail import metrics
from sealmail.auth.authenticator import Authenticator
from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.cleanup import Cleanup, CleanupError, log_queued, prepare_message
from sealmail.mta.config import LookupTable, MainConfig, open_table
from sealmail.mta.config.parameters import IMPLEMENTED_RESTRICTIONS, MAIN
from sealmail.mta.notify import NotifySettings
from sealmail.mta.queue import Queue, QueueError, RecipientRecord
from sealmail.mta.queue_commit import CommitThread
from sealmail.mta.routing import RoutingPolicy
from sealmail.mta.smtpd_notice import SESSION_CLASSES, session_notice
from sealmail.mta.smtpd_tls import smtpd_context
from sealmail.proto.sasl import PLAINTEXT_MECHANISMS, Failure, FailureReason, Success
from sealmail.proto.smtp import (
    Address,
    AddressError,
    AuthResponse,
    AuthStart,
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
_REFUSING = frozenset({"reject", "defer", "reject_unauth_destination", "defer_unauth_destination"})
_KNOWN = IMPLEMENTED_RESTRICTIONS  # declared with the parameters, which refuse the others
MAX_AUTH_FAILURES = 3


def parse_networks(
    words: Sequence[str],
) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    """mynetworks: `127.0.0.0/8`, `[::1]/128`, `[::1]`, `10.1.2.3` (tables are not supported).
    ValueError names a word that is none of these."""
    networks = []
    for word in words:
        text = word.replace("[", "").replace("]", "")
        try:
            networks.append(ipaddress.ip_network(text, strict=False))
        except ValueError:
            raise ValueError(f"{word!r} is not a network address (CIDR)") from None
    return tuple(networks)


def _mynetworks(config: MainConfig) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    try:
        return parse_networks(config.get(MAIN.mynetworks))
    except ValueError as exc:
        raise config.error(MAIN.mynetworks, str(exc)) from None


@dataclass(frozen=True)
class Client:
    address: str  # "" when unknown (a UNIX socket)
    sasl_username: str = ""


@dataclass(frozen=True)
class RecipientPolicy:
    """Relay control. Pure: a client, an address in, a refusal out (None: accepted)."""

    routing: RoutingPolicy
    mynetworks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]
    relay_restrictions: tuple[str, ...]
    recipient_restrictions: tuple[str, ...]
    local_recipients: tuple[LookupTable, ...] = ()  # local_recipient_maps
    delimiter: str = ""

    @classmethod
    def from_config(cls, config: MainConfig) -> RecipientPolicy:
        policy = cls(
            routing=RoutingPolicy.from_config(config),
            mynetworks=_mynetworks(config),
            relay_restrictions=tuple(
                w.lower() for w in config.get(MAIN.smtpd_relay_restrictions)
            ),
            recipient_restrictions=tuple(
                w.lower() for w in config.get(MAIN.smtpd_recipient_restrictions)
            ),
            local_recipients=tuple(
                open_table(spec) for spec in config.get(MAIN.local_recipient_maps)
            ),
            delimiter=config.get(MAIN.recipient_delimiter),
        )
        if not _REFUSING & {*policy.relay_restrictions, *policy.recipient_restrictions}:
            # As Postfix: refuse to run as an open relay.
            raise config.error(
                MAIN.smtpd_relay_restrictions,
                "specify at least one working instance of: reject_unauth_destination, "
                "defer_unauth_destination, reject, defer (in smtpd_relay_restrictions or "
                "smtpd_recipient_restrictions)",
            )
        return policy

    def in_mynetworks(self, address: str) -> bool:
        if not address:
            return True  # a local (UNIX-socket) client
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self.mynetworks)

    def check(self, client: Client, recipient: str) -> Reply | None:
        for restrictions in (self.relay_restrictions, self.recipient_restrictions):
            verdict = self._evaluate(restrictions, client, recipient)
            if isinstance(verdict, Reply):
                return verdict
        return self.unknown_local_recipient(recipient)

    def unknown_local_recipient(self, recipient: str) -> Reply | None:
        """local_recipient_maps: a local domain's recipient must be in one of the tables
        (full address, then without +extension, then the local part alone, as Postfix)."""
        local, _, domain = recipient.rpartition("@")
        if not self.local_recipients or not self.routing.is_local_domain(domain):
            return None
        base = local
        for char in self.delimiter:
            base = base.split(char, 1)[0]
        keys = dict.fromkeys((recipient, f"{base}@{domain}", local, base))
        for table in self.local_recipients:
            for key in keys:
                try:
                    if table.lookup(key) is not None:
                        return None
                except ConfigError as exc:
                    log.warning("%s: local_recipient_maps lookup failed: %s", recipient, exc)
                    return Reply(451, "4.3.0", f"<{recipient}>: Temporary lookup failure")
        return Reply(
            550,
            "5.1.1",
            f"<{recipient}>: Recipient address rejected: User unknown in local recipient table",
        )

    def _evaluate(
        self, restrictions: Sequence[str], client: Client, recipient: str
    ) -> Reply | bool | None:
        """A Reply refuses, True permits (this list), None: no decision."""
        _, _, domain = recipient.rpartition("@")
        for word in restrictions:
            if word == "permit_mynetworks":
                if self.in_mynetworks(client.address):
                    return True
            elif word == "permit_sasl_authenticated":
                if client.sasl_username:
                    return True
            elif word == "permit_auth_destination":
                if self.routing.is_authorized_destination(domain):
                    return True
            elif word in ("reject_unauth_destination", "defer_unauth_destination"):
                if not self.routing.is_authorized_destination(domain):
                    code, dsn = (554, "5.7.1") if word.startswith("reject") else (454, "4.7.1")
                    return Reply(code, dsn, f"<{recipient}>: Relay access denied")
            elif word == "reject_non_fqdn_recipient":
                if "." not in domain:
                    return Reply(
                        504,
                        "5.5.2",
                        f"<{recipient}>: Recipient address rejected: need fully-qualified address",
                    )
            elif word == "permit":
                return True
            elif word == "reject":
                return Reply(
                    554, "5.7.1", f"<{recipient}>: Recipient address rejected: Access denied"
                )
            elif word == "defer":
                return Reply(
                    450, "4.7.1", f"<{recipient}>: Recipient address rejected: Access denied"
                )
            elif word == "dunno":
                continue
            else:
                log.warning("unknown smtpd restriction: %r", word)
                return Reply(451, "4.3.5", "Server configuration error")
        return None


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
    ) -> None:
        self.config = config
        self.settings = SmtpdSettings.from_config(config)
        self.policy = RecipientPolicy.from_config(config)
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
        self.notify = NotifySettings.from_config(config)
        self.transcripts = bool(self.notify.classes & SESSION_CLASSES)
        if self.settings.tls_level == "encrypt" and tls_context is None:
            raise config.error(MAIN.smtpd_tls_security_level, "encrypt needs a TLS certificate")

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

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = SmtpdSession(self, reader, writer)
        await sessions.serve_session(self.sessions, writer, session.run())


@dataclass
class _Transaction:
    sender: str = ""
    recipients: list[RecipientRecord] = field(default_factory=list)
    ret: str = ""  # RFC 3461 4.3 RET=FULL|HDRS
    envid: str = ""  # RFC 3461 4.4 ENVID, decoded from xtext
    smtputf8: bool = False  # RFC 6531 MAIL ... SMTPUTF8


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
        # Postfix's smtpd log lines name the client (no DNS lookups here), not a session.
        self.client = f"unknown[{address}]" if address else "localhost[local]"
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
        service = self.service
        settings = service.settings
        log.info("connect from %s", self.client)
        self.conn = conn = ServerConnection(
            mode=Mode.SMTP,
            hostname=settings.hostname,
            limits=settings.limits,
            auth_mechanisms=self._mechanisms(),
            starttls_available=service.tls_context is not None,
            greeting_text=settings.banner.removeprefix(settings.hostname).strip(),
            dsn=True,
            smtputf8=settings.smtputf8,
            strict_smtputf8=settings.smtputf8,
            record_history=service.transcripts,
        )
        await sessions.drive(conn, self.writer, self._read, self._on_event)
        log.info("disconnect from %s", self.client)
        await service.notify_postmaster(conn, self.client)

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

    async def _on_event(self, event: object) -> bool:
        conn = self.conn
        if isinstance(event, Hello):
            self.helo = event.hostname
            self.ehlo = event.command != "HELO"
            self.txn = _Transaction()
        elif isinstance(event, MailFrom):
            conn.answer(self._mail_from(event))
        elif isinstance(event, RcptTo):
            conn.answer(self._rcpt_to(event))
        elif isinstance(event, MessageData):
            conn.answer(await self._receive(event))
            self.txn = _Transaction()
        elif isinstance(event, (Reset, Quit)):
            self.txn = _Transaction()
        elif isinstance(event, StartTLS):
            return await self._start_tls()
        elif isinstance(event, AuthStart):
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

    def _qualify(self, address: Address | None, text: str) -> str:
        """A bare local part gets @$myorigin (RFC 5321 4.1.1.3's <postmaster>, Postfix's
        append_at_myorigin)."""
        if address is not None and address.domain is None:
            return f"{address}@{self.service.settings.myorigin}"
        return str(address) if address is not None else text

    def _mail_from(self, event: MailFrom) -> Reply:
        settings = self.service.settings
        if settings.tls_level == "encrypt" and not self.secure:
            self.conn.note_error("policy")
            return Reply(530, "5.7.0", "Must issue a STARTTLS command first")
        if settings.helo_required and not self.helo:
            self.conn.note_error("protocol")
            return Reply(503, "5.5.1", "Error: send HELO/EHLO first")
        sender = "" if not event.reverse_path else self._qualify(event.address, event.reverse_path)
        self.txn = _Transaction(
            sender=sender,
            ret=(event.params.get("RET") or "").upper(),
            envid=_xtext(event.params.get("ENVID")),
            smtputf8="SMTPUTF8" in event.params,
        )
        return Reply(250, "2.1.0", "Ok")

    def _rcpt_to(self, event: RcptTo) -> Reply:
        recipient = self._qualify(event.address, event.forward_path)
        client = Client(self.client_address, self.sasl_username)
        refusal = self.service.policy.check(client, recipient)
        if refusal is not None:
            # 451 4.3.x is our own trouble (configuration, a lookup), the rest is policy.
            self.conn.note_error("software" if refusal.enhanced in ("4.3.0", "4.3.5")
                                 else "policy")
            log.info(
                "NOQUEUE: reject: RCPT from %s: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
                self.client,
                refusal.render().decode("utf-8", "replace").strip(),
                self.txn.sender,
                recipient,
                self.protocol,
                self.helo,
            )
            return refusal
        self.txn.recipients.append(
            RecipientRecord(
                recipient,
                recipient,
                dsn_notify(event.params.get("NOTIFY")),
                event.params.get("ORCPT") or "",
            )
        )
        return Reply(250, "2.1.5", "Ok")

    async def _receive(self, event: MessageData) -> Reply:
        pending = self.conn.data_to_send()
        if pending:
            self.writer.write(pending)
        service = self.service
        txn = self.txn
        started = time.monotonic()
        try:
            writer, envelope, cleaned = prepare_message(
                service.commits.reserve(),
                service.cleanup,
                sender=txn.sender,
                recipients=txn.recipients,
                content=event.content,
                arrival=service.clock(),
                protocol=self.protocol,
                helo=self.helo,
                client_name="unknown" if self.client_address else "localhost",
                client_address=self.client_address or "127.0.0.1",
                sasl_username=self.sasl_username,
                ret=txn.ret,
                envid=txn.envid,
                smtputf8=txn.smtputf8,
            )
            queue_id = await service.commits.commit(writer, envelope)
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

    async def _start_tls(self) -> bool:
        """RFC 3207: 220, then the handshake within smtpd_starttls_timeout, or the end."""
        service = self.service
        assert service.tls_context is not None
        self.conn.answer(Reply(220, "2.0.0", "Ready to start TLS"))
        started = await self.handshake(
            service.tls_context,
            self.conn.data_to_send(),
            timeout=service.settings.starttls_timeout,
        )
        if not started:
            log.info("lost connection after STARTTLS from %s", self.client)
            return False
        # Neither the cipher's strength nor a client certificate counts for SASL here.
        self.tls_bits = self.tls_peer = None
        # RFC 3207 4.2: forget what the client said in clear (its EHLO, a transaction).
        self.helo = ""
        self.txn = _Transaction()
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
        self.sasl_username = result.authzid
        self.sasl_method = self.auth.mechanism_name
        self.conn.auth_succeeded(result.authzid)
        return True

    def sasl_give_up(self) -> None:
        self.writer.write(self.conn.data_to_send() + TOO_MANY_AUTH_FAILURES.render())


def _verb(conn: ServerConnection) -> str:
    return conn.state.name


async def serve_sockets(service: SmtpdService, sockets: Sequence[object]) -> list[asyncio.Server]:
    """Start serving on already-bound listening sockets; returns the servers."""
    import socket as socket_module

    servers = []
    for sock in sockets:
        assert isinstance(sock, socket_module.socket)
        servers.append(await serve_on(service.handle, sock))
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
    import socket as socket_module

    from sealmail.mta.cleanup import cleanup_from_config
    from sealmail.mta.config import load_mta_config

    config = load_mta_config(config_directory, hostname=hostname)
    entry = config.master_cf.get(service_name, "inet")
    if entry is None:
        raise ConfigError(config.master_cf.path, 0, service_name, "no such inet service")
    settings = entry.effective(config.main)
    queue = Queue.from_config(config.main)
    service = SmtpdService.from_config(
        settings,
        queue,
        cleanup_from_config(config.main),
        on_queued=QueueManagerNudge(str(queue.control_socket)),
        service_name=service_name,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(parent_fd, stop.set)  # readable only at EOF: the master is gone
    servers = []
    for fd in fds:
        sock = socket_module.socket(fileno=fd)
        servers.append(await serve_on(service.handle, sock))
    await stop.wait()
    loop.remove_reader(parent_fd)
    for server in servers:
        server.close()
    service.drain()
    if service.sessions:
        await asyncio.wait(set(service.sessions), timeout=30)
    service.commits.close()


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
