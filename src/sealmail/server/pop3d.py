"""pop3d: the asyncio driver around the sans-I/O POP3 core, over the store's user INBOXes.

Bytes in -> `sealmail.proto.pop3.ServerConnection` events -> decisions -> replies out. The
protocol rules live in the core; this module only answers what needs the outside world:

* passwords and SASL (sealmail.auth.Authenticator, service "pop"), in worker threads since a
  check may run scrypt or ask saslauthd;
* the maildrop, through sealmail.pop3 (the glue between the core and the store): the user's
  INBOX under the POP lock for the whole session, message bytes for RETR/TOP, and at QUIT only
  the removal of DELE'd messages as one store expunge; all in worker threads;
* TLS (STLS, pop3s), hosts.allow, the autologout timer, and the daemon's stop.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealmail import sessions as live_sessions
from sealmail.auth.authenticator import Authenticator
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.pop3 import LockedMaildrop, TooSoon, maildrop_error, message_error, update_error
from sealmail.proto.pop3 import (
    AuthAborted,
    AuthResponse,
    AuthStart,
    Event,
    Login,
    MessageRequest,
    ProtocolError,
    Reply,
    ResponseCode,
    ServerConnection,
    StartTLS,
    Update,
    sasl_failure,
)
from sealmail.proto.sasl import FailureReason, Success
from sealmail.server import session as sessions
from sealmail.server.tls import server_context
from sealmail.store.api import MessageStore
from sealmail.store.auditlog import audit_for
from sealmail.store.errors import StoreError

log = logging.getLogger("sealmail.pop3d")

SASL_SERVICE = "pop"  # what Cyrus passes to sasl_server_new, and saslauthd is told


@dataclass(frozen=True, slots=True)
class Pop3Settings:
    """Everything pop3d takes from imapd.conf, in seconds where it is a duration."""

    timeout: float = 10 * 60.0
    min_poll: int = 0
    expire_days: int | None = None
    use_imap_flags: bool = False
    failure_delay: float = 2.0
    max_auth_failures: int = 3
    implicit_tls: bool = False  # pop3s: TLS from the first byte (cyrus.conf "pop3d -s")

    @classmethod
    def from_config(cls, config: ImapdConfig, *, implicit_tls: bool = False) -> Pop3Settings:
        # Cyrus raises a poptimeout below 10 minutes to 10 (RFC 1939 3: "at least 10 minutes").
        timeout = max(config.get(IMAPD.poptimeout), 10) * 60.0
        expire = config.get(IMAPD.popexpiretime)
        return cls(
            timeout=timeout,
            min_poll=config.get(IMAPD.popminpoll) * 60,
            expire_days=None if expire < 0 else expire,
            use_imap_flags=config.get(IMAPD.popuseimapflags),
            failure_delay=float(config.get(IMAPD.auth_failure_delay)),
            max_auth_failures=config.get(IMAPD.auth_max_failures),
            implicit_tls=implicit_tls,
        )


class Pop3Service:
    """Serves POP3 sessions; one per listener kind (plain with STLS, or pop3s)."""

    def __init__(
        self,
        config: ImapdConfig,
        store: MessageStore,
        *,
        settings: Pop3Settings | None = None,
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        daemon_name: str = "pop3",
        owns_store: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.settings = settings or Pop3Settings.from_config(config)
        self.authenticator = authenticator or Authenticator(config)
        self.tls_context = tls_context if tls_context is not None else server_context(config)
        if self.settings.implicit_tls and self.tls_context is None:
            raise config.error(IMAPD.tls_server_cert, "pop3s needs a certificate")
        self.daemon_name = daemon_name
        self.owns_store = owns_store
        self.clock = clock
        self.hosts = HostsAccess.from_config(config)
        self.sessions: set[asyncio.Task[None]] = set()
        self.draining = sessions.Drain()

    def drain(self) -> None:
        """The daemon is stopping: sessions end with -ERR [SYS/TEMP] at their next wait for the
        client (between commands; nothing DELE'd goes, as without QUIT)."""
        self.draining.set()

    implicit_tls_name = "pop3s"  # in Cyrus's "pop3s TLS negotiation failed" line

    @property
    def implicit_tls_context(self) -> ssl.SSLContext | None:
        """For master's workers: pop3s connections are wrapped at accept."""
        return self.tls_context if self.settings.implicit_tls else None

    def close(self) -> None:
        """Close the store if this service opened it; sessions release their own locks."""
        if self.owns_store:
            self.owns_store = False  # idempotent: serve() and the CLI may both call it
            self.store.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await sessions.serve_session(self.sessions, writer, Pop3Session(self, reader, writer).run())


class Pop3Session(sessions.ClientSession):
    """One client connection: reads, feeds the core, acts on its events, writes replies."""

    def __init__(
        self, service: Pop3Service, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.auth = sessions.SaslExchange(
            self,
            service.authenticator,
            SASL_SERVICE,
            log=log,
            failure_delay=service.settings.failure_delay,
            max_failures=service.settings.max_auth_failures,
        )
        self.maildrop: LockedMaildrop | None = None
        self.live: live_sessions.Registration | None = None  # admin who / kick

    # -- policy -------------------------------------------------------------------------------

    def _user_allowed(self, mechanisms: tuple[str, ...]) -> bool:
        """USER/PASS is offered exactly when PLAIN is: same password, same policy."""
        return "PLAIN" in mechanisms

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            if self.live is not None:
                self.live.remove()
            self.release()

    async def _serve(self) -> None:
        if not self.endpoint.admitted(
            self.service.hosts, self.service.daemon_name, self.session_id
        ):
            return  # as tcpd: no greeting at all
        log.info("%s: connect from %s", self.session_id, self.client)
        if self.service.settings.implicit_tls and not await self._handshake():
            return
        mechanisms = self.auth.offered()
        config = self.service.config
        self.conn = conn = ServerConnection(
            hostname=config.servername,
            session_id=self.session_id,
            auth_mechanisms=mechanisms,
            plaintext_allowed=self._user_allowed(mechanisms),
            starttls_available=self.service.tls_context is not None and not self.secure,
            tls_active=self.secure,
            login_delay=self.service.settings.min_poll,
            expire_days=self.service.settings.expire_days,
            greeting_text=f"{config.servername} sealmail POP3 server ready",
        )
        await sessions.drive(conn, self.writer, self._read, self._on_event)
        if conn.deleted and not conn.closed:
            log.info(
                "%s: connection lost without QUIT: %d deletion(s) not applied",
                self.session_id,
                len(conn.deleted),
            )
        log.info("%s: disconnect from %s", self.session_id, self.client)

    def release(self) -> None:
        if self.maildrop is not None:
            self.maildrop.release()
            self.maildrop = None

    async def _read(self) -> bytes | None:
        data = await sessions.read_client(
            self.reader, timeout=self.service.settings.timeout, draining=self.service.draining
        )
        if data is sessions.Interruption.IDLE_TIMEOUT:
            # RFC 1939 3: an autologout timer; it does not enter UPDATE, so nothing goes.
            log.info("%s: autologout: idle too long from %s", self.session_id, self.client)
            self.writer.write(Reply(False, "Autologout; idle for too long").render())
            return None
        if data is sessions.Interruption.SHUTDOWN:
            log.info("%s: shutting down: closing session of %s", self.session_id, self.client)
            closing = Reply(False, "Server shutting down", ResponseCode.SYS_TEMP)
            self.writer.write(closing.render())
            return None
        return data

    async def _on_event(self, event: Event) -> bool:
        """Act on one event; False ends the session."""
        if isinstance(event, Login):
            return await self.auth.password(event.user, event.password, "USER")
        if isinstance(event, AuthStart):
            return await self.auth.start(event.mechanism, event.initial_response)
        if isinstance(event, AuthResponse):
            return await self.auth.step(event.data)
        if isinstance(event, AuthAborted):
            self.auth.abort(event.reason)
        elif isinstance(event, StartTLS):
            return await self._start_tls()
        elif isinstance(event, MessageRequest):
            await self._send_message(event)
        elif isinstance(event, Update):
            await self._update(event)
        elif isinstance(event, ProtocolError):
            log.info(
                "%s: refused %s from %s: %s",
                self.session_id,
                event.command or "line",
                self.client,
                event.reply.render().decode("utf-8", "replace").strip(),
            )
        return True

    # -- TLS --------------------------------------------------------------------------------------

    async def _handshake(self, go_ahead: bytes = b"") -> bool:
        """TLS on this connection: STLS, or pop3s when the listener did not do it already.

        A pop3s listener should be made with `ssl=` (as `serve` does): a client's ClientHello
        that arrived before `start_tls` would sit in the StreamReader, out of TLS's reach.
        """
        context = self.service.tls_context
        assert context is not None
        return await self.handshake(context, go_ahead)

    async def _start_tls(self) -> bool:
        self.conn.start_tls()
        if not await self._handshake(self.conn.data_to_send()):
            return False
        mechanisms = self.auth.offered()
        self.conn.tls_started(mechanisms, self._user_allowed(mechanisms))
        return True

    # -- authentication: the exchange is sessions.SaslExchange; these are POP3's answers --------

    def sasl_challenge(self, data: bytes) -> None:
        self.conn.auth_challenge(data)

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.conn.refuse(sasl_failure(reason))

    async def sasl_accept(self, result: Success) -> bool:
        return await self._open_maildrop(result.authzid)

    def sasl_give_up(self) -> None:
        closing = Reply(False, "Too many authentication failures", ResponseCode.AUTH)
        self.writer.write(self.conn.data_to_send() + closing.render())

    # -- the maildrop -------------------------------------------------------------------------

    async def _open_maildrop(self, identity: str) -> bool:
        service = self.service
        settings = service.settings
        try:
            name = sessions.maildrop_name(identity, service.config)
            self.maildrop = held = LockedMaildrop(
                service.store,
                name,
                use_imap_flags=settings.use_imap_flags,
                audit=audit_for(service.config.get(IMAPD.auditlog), self.session_id),
            )
            maildrop = await asyncio.to_thread(held.open, service.clock(), settings.min_poll)
        except StoreError as exc:
            self.release()
            log.info(
                "%s: login %s from %s: cannot open maildrop: %s",
                self.session_id,
                identity,
                self.client,
                exc,
            )
            self.conn.refuse(maildrop_error(exc))
            return True
        except TooSoon as exc:
            self.release()
            minutes = max(1, round(settings.min_poll / 60))
            log.info("%s: login %s refused: %s", self.session_id, identity, exc)
            self.conn.refuse(
                Reply(
                    False,
                    f"Logins must be at least {minutes} minute{'s' * (minutes != 1)} apart",
                    ResponseCode.LOGIN_DELAY,
                )
            )
            return True
        self.conn.open_maildrop(identity, maildrop)
        log.info(  # Cyrus's line, with the maildrop as sealmail adds it; SESSIONID last
            "login: %s %s %s%s User logged in: %s, %d message(s) SESSIONID=<%s>",
            self.client,
            identity,
            self.auth.logged_mechanism,
            "+TLS" if self.secure else "",
            name,
            len(maildrop.messages),
            self.session_id,
        )
        self.live = live_sessions.register(
            live_sessions.registry_directory(service.config.configdirectory),
            live_sessions.LiveSession(self.session_id, identity, service.daemon_name, "pop3",
                                      self.endpoint.client_ip or "", time.time(), os.getpid(),
                                      name),
            self._kicked,
        )
        return True

    def _kicked(self) -> None:
        """`sealmail admin kick`: -ERR, as Dovecot's kick, and the connection closes (no
        deletion is applied: there was no QUIT)."""
        log.info("%s: kicked by admin from %s", self.session_id, self.client)
        self.writer.write(b"-ERR Kicked by admin\r\n")
        self.writer.close()

    async def _send_message(self, event: MessageRequest) -> None:
        held = self.maildrop
        assert held is not None
        try:
            content = await asyncio.to_thread(held.message, event.uid)
        except StoreError as exc:
            log.warning(
                "%s: cannot read UID %d of %s: %s", self.session_id, event.uid, held.mailbox, exc
            )
            self.conn.refuse(message_error(exc))
            return
        self.conn.send_message(content)

    async def _update(self, event: Update) -> None:
        """RFC 1939 6 UPDATE: remove the DELE'd messages, as one store expunge, then QUIT."""
        held = self.maildrop
        assert held is not None
        try:
            removed = await asyncio.to_thread(held.update, event.deleted, event.retrieved)
        except StoreError as exc:
            log.error("%s: update of %s failed: %s", self.session_id, held.mailbox, exc)
            self.conn.refuse(update_error(exc))
            return
        log.info(
            "%s: update: %s expunged %d of %d deleted message(s), retrieved %d",
            self.session_id,
            held.mailbox,
            len(removed),
            len(event.deleted),
            len(event.retrieved),
        )
        self.conn.update_done()


# -- the service contract of `sealmail master`, and the standalone daemon ----------------------


def build_service(
    config: ImapdConfig,
    argv: Sequence[str],
    *,
    service_name: str = "pop3",
    store: MessageStore | None = None,
) -> Pop3Service:
    """pop3d as cyrus.conf runs it: `pop3d [-s]`; -s serves pop3s (TLS from the first byte).

    `service_name` is the cyrus.conf entry's name, which hosts.allow rules name. Without a
    `store` the service opens its own store (store_backend) and closes it in `close()`.
    """
    for arg in argv:
        if arg != "-s":
            raise ConfigError(config.path, 0, None, f"{service_name}: unknown argument {arg!r}")
    settings = Pop3Settings.from_config(config, implicit_tls="-s" in argv)
    if settings.implicit_tls and server_context(config) is None:
        raise config.error(IMAPD.tls_server_cert, f"{service_name}: pop3d -s needs a certificate")
    owned = store is None
    if store is None:
        from sealmail.store.backends import open_store

        store = open_store(config)
    return Pop3Service(config, store, settings=settings, daemon_name=service_name, owns_store=owned)
