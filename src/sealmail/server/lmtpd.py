"""lmtpd: the asyncio driver around the sans-I/O LMTP core and the delivery engine.

Bytes in -> `ServerConnection` events -> decisions (recipient checks in the loop, deliveries in
one delivery thread that runs them in batches: sealmail.server.delivery_queue) -> replies out.
All protocol rules live in sealmail.proto.smtp; all store-to-reply mapping in
sealmail.delivery.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial

from sealmail import metrics
from sealmail.auth.authenticator import Authenticator
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.delivery.engine import DeliveryEngine, Envelope, describe_failure
from sealmail.delivery.recipient import Recipient
from sealmail.delivery.replies import RECIPIENT_OK, SENDER_OK
from sealmail.proto.sasl import FailureReason, Success
from sealmail.proto.smtp import (
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
    SessionState,
    StartTLS,
    decode_xtext,
    parse_address,
)
from sealmail.proto.smtp.auth_replies import (
    AUTH_ABORTED,
    AUTH_FAILURE_REPLIES,
    AUTH_NOT_PERMITTED,
    TOO_MANY_AUTH_FAILURES,
)
from sealmail.server import session
from sealmail.server.delivery_queue import DeliveryQueue
from sealmail.server.read_deadline import ReadDeadline
from sealmail.server.tls import server_context
from sealmail.store.api import MessageStore
from sealmail.store.errors import StoreError

log = logging.getLogger("sealmail.lmtpd")

POSTMAN = "postman"  # who a UNIX-socket client is (the seed's section 2.1)
SASL_SERVICE = "lmtp"  # selects lmtp_admins and lmtp_allowplaintext


@dataclass
class Transaction:
    sender: str | None = None
    size_hint: int = 0
    poster: str | None = None  # MAIL's AUTH= identity, from a trusted client
    recipients: list[Recipient] = field(default_factory=list)
    looked_up: bool = False  # a RCPT read the namespace stamp (DeliveryEngine.check_recipient)


class LmtpService:
    """Serves LMTP sessions on any number of listening sockets.

    Who a client is decides what it must do (the seed's sections 2.1-2.3): a UNIX-socket client is
    trusted as `postman`; a TCP client must pass hosts.allow and then AUTH as an identity in
    lmtp_admins, unless lmtpd runs with -a.
    """

    def __init__(
        self,
        config: ImapdConfig,
        engine: DeliveryEngine,
        *,
        trust_tcp: bool = False,
        daemon_name: str = "lmtp",
        store: MessageStore | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.store = store  # the store this service opened, closed by close()
        self.trust_tcp = trust_tcp
        self.daemon_name = daemon_name
        self.deliveries = DeliveryQueue(engine)
        self.limits = Limits(
            max_line_length=config.get(IMAPD.lmtp_max_line_length),
            max_message_size=config.get(IMAPD.maxmessagesize),
            max_recipients=config.get(IMAPD.lmtp_max_recipients),
            max_bad_commands=config.get(IMAPD.lmtp_max_bad_commands),
        )
        self.timeout = float(config.get(IMAPD.lmtptimeout))
        self.failure_delay = float(config.get(IMAPD.auth_failure_delay))
        self.max_auth_failures = config.get(IMAPD.auth_max_failures)
        self.tls_context = server_context(config)
        self.authenticator = Authenticator(config)
        self.admins = self.authenticator.admins(SASL_SERVICE)
        self.hosts = HostsAccess.from_config(config)
        self.sessions: set[asyncio.Task[None]] = set()
        self.draining = session.Drain()

    def drain(self) -> None:
        """Stop: idle sessions are closed now, busy ones after their transaction."""
        self.draining.set()

    def close(self) -> None:
        self.deliveries.close()
        if self.store is not None:
            self.store.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await session.serve_session(self.sessions, writer, LmtpSession(self, reader, writer).run())


class LmtpSession(session.ClientSession):
    """One client connection: reads, feeds the core, acts on its events, writes replies."""

    def __init__(
        self, service: LmtpService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.is_unix = self.endpoint.is_unix
        self.needs_auth = not self.is_unix and not service.trust_tcp
        self.identity: str | None = (
            None if self.needs_auth else (POSTMAN if self.is_unix else "anonymous")
        )
        self.auth = session.SaslExchange(
            self,
            service.authenticator,
            SASL_SERVICE,
            log=log,
            failure_delay=service.failure_delay,
            max_failures=service.max_auth_failures,
            temporary_counts=True,
        )
        self.helo: str | None = None
        self.txn = Transaction()
        self.reads = ReadDeadline()  # one timer for the session's reads, not one per read

    def _mechanisms(self) -> tuple[str, ...]:
        return self.auth.offered() if self.needs_auth else ()

    async def run(self) -> None:
        if not self.endpoint.admitted(
            self.service.hosts, self.service.daemon_name, self.session_id
        ):
            return  # as tcpd: no greeting at all
        log.info(
            "%s: connect from %s%s",
            self.session_id,
            self.client,
            f" as {self.identity}" if self.identity else "",
        )
        self.conn = conn = ServerConnection(
            mode=Mode.LMTP,
            hostname=self.service.config.servername,
            session_id=self.session_id,
            limits=self.service.limits,
            auth_mechanisms=self._mechanisms(),
            auth_required=self.needs_auth,
            starttls_available=self.service.tls_context is not None and not self.is_unix,
            greeting_text=f"LMTP sealmail ready, SESSIONID=<{self.session_id}>",
            accept_mail_auth=not self.needs_auth,
            smtputf8=True,  # RFC 6531 on offer, so an MTA passes UTF-8 mail on (not strict)
        )
        try:
            await session.drive(conn, self.writer, self._read, self._on_event)
        finally:
            self.reads.close()
        log.info("%s: disconnect from %s", self.session_id, self.client)

    def _idle(self) -> bool:
        return self.conn.state in (SessionState.GREETED, SessionState.READY)

    async def _read(self) -> bytes | None:
        """The client's next bytes; None when the session must end (timeout, or master is
        stopping and no transaction is under way: a delivery in progress always completes)."""
        service = self.service
        data = await session.read_client(
            self.reader,
            timeout=service.timeout,
            draining=service.draining,
            idle=self._idle,
            watch=self.reads,
        )
        if data is session.Interruption.SHUTDOWN:
            self.writer.write(Reply(421, "4.3.2", "Server shutting down").render())
        elif data is session.Interruption.IDLE_TIMEOUT:
            log.info("%s: timeout after %ds from %s", self.session_id, service.timeout, self.client)
            self.writer.write(Reply(421, "4.4.2", "Timeout, closing connection").render())
        else:
            return data
        return None

    async def _on_event(self, event: object) -> bool:
        """Act on one event; False ends the session."""
        conn = self.conn
        if isinstance(event, Hello):
            self.helo = event.hostname
        elif isinstance(event, MailFrom):
            self.txn = Transaction(
                sender=event.reverse_path,
                size_hint=_size_param(event.params.get("SIZE")),
                poster=self._poster(event.params.get("AUTH")),
            )
            conn.answer(SENDER_OK)
        elif isinstance(event, RcptTo):
            conn.answer(self._check_recipient(event))
        elif isinstance(event, MessageData):
            await self._deliver(event)
        elif isinstance(event, (Reset, Quit)):
            self.txn = Transaction()
        elif isinstance(event, StartTLS):
            return await self._start_tls()
        elif isinstance(event, AuthStart):
            return await self.auth.start(event.mechanism, event.initial_response)
        elif isinstance(event, AuthResponse):
            if event.data is None:  # the client sent "*" (RFC 4954 4)
                self.auth.abort("cancelled by the client")
                conn.answer(AUTH_ABORTED)
                return True
            return await self.auth.step(event.data)
        elif isinstance(event, ProtocolError):
            log.info(
                "%s: protocol error from %s: %s",
                self.session_id,
                self.client,
                event.reply.render().decode("ascii", "replace").strip(),
            )
        return True

    async def _deliver(self, event: MessageData) -> None:
        self.writer.write(self.conn.data_to_send())  # earlier replies need not wait for the disk
        protocol = "LMTP" + ("S" if self.secure else "") + ("A" if self.needs_auth else "")
        envelope = Envelope(
            sender=self.txn.sender or "",
            recipients=tuple(self.txn.recipients),
            session_id=self.session_id,
            helo=self.helo,
            client=self.client,
            protocol=protocol,
        )
        started = time.monotonic()
        replies = await self.service.deliveries.deliver(envelope, event.content)
        metrics.observe_end_of_data("lmtpd", time.monotonic() - started)
        for reply in replies:
            self.conn.answer(reply)
        self.txn = Transaction()

    def _poster(self, auth_param: str | None) -> str | None:
        """RFC 4954 5: trust AUTH= only from a client that is itself trusted or authenticated."""
        if auth_param is None or auth_param == "<>" or self.identity is None:
            return None
        try:
            return decode_xtext(auth_param)
        except AddressError:
            return None

    def _check_recipient(self, event: RcptTo) -> Reply:
        address = event.address or parse_address(event.forward_path)
        engine = self.service.engine
        fresh = not self.txn.looked_up
        self.txn.looked_up = True
        try:
            recipient = engine.check_recipient(
                address.local_part,
                address.domain,
                ignore_quota="IGNOREQUOTA" in event.params,
                size_hint=self.txn.size_hint,
                poster=self.txn.poster,
                fresh=fresh,  # the namespace stamp: read once per transaction
            )
        except StoreError as exc:
            reply = engine.reply_for(exc)
            log.info(
                "%s: reject: RCPT from %s: %d %s <%s>: %s",
                self.session_id,
                self.client,
                reply.code,
                reply.enhanced,
                event.forward_path,
                describe_failure(exc),
            )
            return reply
        self.txn.recipients.append(recipient)
        return RECIPIENT_OK

    async def _start_tls(self) -> bool:
        context = self.service.tls_context
        assert context is not None  # the core offers STARTTLS only with a context
        self.conn.answer(Reply(220, "2.0.0", "Ready to start TLS"))
        if not await self.handshake(context, self.conn.data_to_send()):
            return False
        self.conn.tls_started(auth_mechanisms=self._mechanisms())
        self.txn = Transaction()
        return True

    # -- authentication: the exchange is session.SaslExchange; these are LMTP's answers -------

    def sasl_challenge(self, data: bytes) -> None:
        self.conn.auth_challenge(data)

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.conn.answer(AUTH_FAILURE_REPLIES[reason])

    async def sasl_accept(self, result: Success) -> bool:
        """Only an identity in lmtp_admins may deliver over TCP (the seed's section 2.3)."""
        if result.authzid in self.service.admins:
            self.identity = result.authzid
            self.conn.auth_succeeded(result.authzid)
            log.info(
                "%s: authenticated as %s from %s (%s)",
                self.session_id,
                result.authzid,
                self.client,
                self.auth.mechanism_name,
            )
            return True
        log.warning(
            "%s: %s authenticated from %s but is not in lmtp_admins: refused",
            self.session_id,
            result.authzid,
            self.client,
        )
        return await self.auth.count_failure(partial(self.conn.answer, AUTH_NOT_PERMITTED))

    def sasl_give_up(self) -> None:
        self.writer.write(self.conn.data_to_send() + TOO_MANY_AUTH_FAILURES.render())


def build_service(
    config: ImapdConfig, argv: Sequence[str], *, service_name: str = "lmtp"
) -> LmtpService:
    """lmtpd as cyrus.conf runs it: `lmtpd [-a]`."""
    for arg in argv:
        if arg != "-a":
            raise ConfigError(config.path, 0, None, f"{service_name}: unknown argument {arg!r}")
    if "-a" in argv:
        log.warning(
            "%s: TCP clients are not authenticated: guard the port with hosts.allow or a firewall",
            service_name,
        )
    return _build(config, "-a" in argv, service_name)


def build_deliver_service(
    config: ImapdConfig, argv: Sequence[str], *, service_name: str = "deliver"
) -> LmtpService:
    """`deliver -e -l` as a socket service: the seed's section 7 inetd entry, LMTP without
    authentication like its tcpd-guarded original (hosts.allow is what protects it)."""
    for arg in argv:
        if arg not in ("-e", "-l"):
            raise ConfigError(config.path, 0, None, f"{service_name}: unknown argument {arg!r}")
    return _build(config, True, service_name)


def _build(config: ImapdConfig, trust_tcp: bool, service_name: str) -> LmtpService:
    from sealmail.delivery.outbound import outbound_from_config
    from sealmail.delivery.sieve import SieveFilter
    from sealmail.store.backends import open_store
    from sealmail.store.sieve_scripts import SieveScriptStore
    from sealmail.store.sieve_tracking import SieveTracking

    store = open_store(config)
    sieve = SieveFilter(
        config,
        store,
        SieveScriptStore.from_config(config),
        SieveTracking(config.configdirectory / "sieve.db"),
        outbound_from_config(config),
    )
    engine = DeliveryEngine(config, store, store.duplicates(), sieve)
    service = LmtpService(
        config, engine, trust_tcp=trust_tcp, daemon_name=service_name, store=store
    )
    _freeze_start_up_objects()
    return service


@functools.cache  # once per process: a test building many services freezes one snapshot
def _freeze_start_up_objects() -> None:
    """What start-up made (modules, configuration, the store's objects) out of the garbage
    collector's walks: a 50-recipient batch allocates enough to trigger several collections,
    and a full one walked every object of the process: ~20 ms without a reply, once every
    ~250 messages, in process at 50 recipients under load (issue 18's p99). Frozen objects sit
    in a permanent generation that collections skip (gc.freeze)."""
    gc.collect()
    gc.freeze()


def _size_param(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0
