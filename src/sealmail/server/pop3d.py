"""pop3d: the asyncio driver around the sans-I/O POP3 core, over the store's user INBOXes.

Bytes in -> `sealmail.proto.pop3.ServerConnection` events -> decisions -> replies out. The
protocol rules live in the core; this module only answers what needs the outside world:

* passwords and SASL (sealmail.auth.Authenticator, service "pop"), in worker threads since a
  check may run scrypt or ask saslauthd;
* the maildrop: the user's INBOX, held under an exclusive, non-blocking POP lock for the whole
  session so a second POP session gets [IN-USE] while IMAP sessions and deliveries go on (the
  lock guards nothing the store itself needs; Cyrus keeps a POP lock apart from its index locks
  the same way);
* message bytes (RETR/TOP) and, at QUIT only, the removal of DELE'd messages as a store expunge,
  which every other reader of the mailbox sees.

The POP lock file also keeps the time of the last completed POP session, which `popminpoll`
(RFC 2449 LOGIN-DELAY) compares against, as Cyrus keeps pop3_last_login in its index header.
"""

from __future__ import annotations

import asyncio
import errno
import fcntl
import logging
import os
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sealmail.auth.authenticator import Authenticator
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.proto.pop3 import (
    AuthAborted,
    AuthResponse,
    AuthStart,
    Event,
    Login,
    Maildrop,
    MaildropMessage,
    MessageRequest,
    ProtocolError,
    Reply,
    ResponseCode,
    ServerConnection,
    StartTLS,
    Update,
    maildrop_error,
    message_error,
    sasl_failure,
    update_error,
)
from sealmail.proto.sasl import FailureReason, Success
from sealmail.server import session as sessions
from sealmail.server.tls import server_context
from sealmail.store.api import MessageStore
from sealmail.store.errors import MailboxBusy, MailboxNotFound, StoreError
from sealmail.store.locks import lock_filename

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
        timeout = max(config.integer("poptimeout"), 10) * 60.0
        expire = config.integer("popexpiretime")
        return cls(
            timeout=timeout,
            min_poll=config.integer("popminpoll") * 60,
            expire_days=None if expire < 0 else expire,
            use_imap_flags=config.switch("popuseimapflags"),
            failure_delay=float(config.integer("auth_failure_delay")),
            max_auth_failures=config.integer("auth_max_failures"),
            implicit_tls=implicit_tls,
        )


class PopLock:
    """The exclusive POP lock on one maildrop: flock(2), taken without waiting.

    flock belongs to the open file description, so a second session of the same process is
    refused as one of another process is, and a crashed process leaves no lock behind.
    """

    def __init__(self, directory: Path, mailbox: str) -> None:
        self.path = directory / "pop" / lock_filename(mailbox)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Lock, or MailboxBusy at once when another POP session holds the maildrop."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise StoreError(f"cannot open POP lock {self.path}: {exc.strerror}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise MailboxBusy("Mailbox is locked by another POP session") from None
            raise StoreError(f"cannot lock {self.path}: {exc.strerror}") from exc
        self._fd = fd

    def last_login(self) -> float:
        """When the last POP session on this maildrop ended well (0: never)."""
        assert self._fd is not None
        raw = os.pread(self._fd, 64, 0).strip()
        try:
            return float(raw) if raw else 0.0
        except ValueError:
            return 0.0

    def record_login(self, when: float) -> None:
        assert self._fd is not None
        data = f"{when:.0f}\n".encode("ascii")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, data, 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


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
            raise ConfigError(config.path, 0, "tls_server_cert", "pop3s needs a certificate")
        self.daemon_name = daemon_name
        self.owns_store = owns_store
        self.clock = clock
        self.lock_directory = config.configdirectory / "lock"
        self.hosts = HostsAccess.from_config(config)
        self.sessions: set[asyncio.Task[None]] = set()

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
        self.lock: PopLock | None = None
        self.mailbox: str | None = None
        self.login_time = 0.0

    # -- policy -------------------------------------------------------------------------------

    def _user_allowed(self, mechanisms: tuple[str, ...]) -> bool:
        """USER/PASS is offered exactly when PLAIN is: same password, same policy."""
        return "PLAIN" in mechanisms

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
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
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    async def _read(self) -> bytes | None:
        try:
            return await asyncio.wait_for(self.reader.read(65536), self.service.settings.timeout)
        except TimeoutError:
            # RFC 1939 3: an autologout timer; it does not enter UPDATE, so nothing goes.
            log.info("%s: autologout: idle too long from %s", self.session_id, self.client)
            self.writer.write(Reply(False, "Autologout; idle for too long").render())
            return None

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
        try:
            maildrop = await asyncio.to_thread(self._lock_and_list, identity)
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
        except _TooSoon as exc:
            self.release()
            minutes = max(1, round(self.service.settings.min_poll / 60))
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
        log.info(
            "%s: login: %s %s%s %s %d message(s) via %s",
            self.session_id,
            self.client,
            identity,
            " (TLS)" if self.secure else "",
            self.mailbox,
            len(maildrop.messages),
            self.auth.mechanism_name,
        )
        return True

    def _lock_and_list(self, identity: str) -> Maildrop:
        """Worker thread: lock the INBOX for POP, check LOGIN-DELAY, list its messages."""
        name = sessions.maildrop_name(identity, self.service.config)
        store = self.service.store
        if store.mailbox(name) is None:
            raise MailboxNotFound(f"no mailbox {name}")
        lock = PopLock(self.service.lock_directory, name)
        lock.acquire()
        self.lock = lock
        self.mailbox = name
        self.login_time = self.service.clock()
        min_poll = self.service.settings.min_poll
        last = lock.last_login()
        if min_poll and last and last + min_poll > self.login_time:
            raise _TooSoon(f"last POP session ended {self.login_time - last:.0f}s ago")
        info = store.mailbox(name)  # read under the lock: the UIDVALIDITY UIDL is made of
        if info is None:
            raise MailboxNotFound(f"no mailbox {name}")
        records = store.messages(name)
        if self.service.settings.use_imap_flags:
            records = [r for r in records if "\\Deleted" not in r.flags]
        return Maildrop(info.uidvalidity, tuple(MaildropMessage(r.uid, r.size) for r in records))

    async def _send_message(self, event: MessageRequest) -> None:
        assert self.mailbox is not None
        try:
            content = await asyncio.to_thread(
                self.service.store.message_bytes, self.mailbox, event.uid
            )
        except StoreError as exc:
            log.warning(
                "%s: cannot read UID %d of %s: %s", self.session_id, event.uid, self.mailbox, exc
            )
            self.conn.refuse(message_error(exc))
            return
        self.conn.send_message(content)

    async def _update(self, event: Update) -> None:
        """RFC 1939 6 UPDATE: remove the DELE'd messages, as one store expunge, then QUIT."""
        assert self.mailbox is not None and self.lock is not None
        try:
            removed = await asyncio.to_thread(self._apply_update, event)
        except StoreError as exc:
            log.error("%s: update of %s failed: %s", self.session_id, self.mailbox, exc)
            self.conn.refuse(update_error(exc))
            return
        log.info(
            "%s: update: %s expunged %d of %d deleted message(s), retrieved %d",
            self.session_id,
            self.mailbox,
            len(removed),
            len(event.deleted),
            len(event.retrieved),
        )
        self.conn.update_done()

    def _apply_update(self, event: Update) -> list[int]:
        assert self.mailbox is not None and self.lock is not None
        store = self.service.store
        removed = store.expunge(self.mailbox, event.deleted) if event.deleted else []
        if self.service.settings.use_imap_flags and event.retrieved:
            wanted = set(event.retrieved)
            for record in store.messages(self.mailbox):
                if record.uid in wanted and "\\Seen" not in record.flags:
                    store.set_flags(self.mailbox, [record.uid], [*record.flags, "\\Seen"])
        self.lock.record_login(self.login_time)
        return removed


class _TooSoon(Exception):
    """popminpoll: this maildrop was POP'd too recently (RFC 2449 8.1.2 LOGIN-DELAY)."""


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
        raise ConfigError(
            config.path, 0, "tls_server_cert", f"{service_name}: pop3d -s needs a certificate"
        )
    owned = store is None
    if store is None:
        from sealmail.store.backends import open_store

        store = open_store(config)
    return Pop3Service(config, store, settings=settings, daemon_name=service_name, owns_store=owned)
