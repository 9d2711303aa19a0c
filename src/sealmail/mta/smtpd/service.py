"""One smtpd service (a master.cf smtpd entry): its listeners, shared state and sessions."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import time
from collections.abc import Callable, Sequence

from sealmail.auth.authenticator import Authenticator
from sealmail.maillog import SERVICE_SYSLOG_NAME
from sealmail.mta.anvil import AnvilTable, LocalAnvil
from sealmail.mta.cleanup import Cleanup
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.milter import MilterSettings
from sealmail.mta.notify import NotifySettings
from sealmail.mta.queue import Queue, QueueError
from sealmail.mta.queue_commit import CommitThread
from sealmail.mta.restrictions import ClientNames, Engine
from sealmail.mta.smtpd.session import SmtpdSession
from sealmail.mta.smtpd.settings import SmtpdSettings, authenticator_from_config
from sealmail.mta.smtpd.tls import open_implicit_tls
from sealmail.mta.smtpd_limits import Anvil, ClientLimits
from sealmail.mta.smtpd_notice import SESSION_CLASSES, session_notice
from sealmail.mta.smtpd_tls import smtpd_context
from sealmail.proto.smtp import ServerConnection
from sealmail.server import session as sessions
from sealmail.server.listeners import serve_on, serve_unread

log = logging.getLogger("sealmail.mta.smtpd")


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
        """Serve a listening socket. With smtpd_tls_wrappermode (465) each connection comes
        unread, for the session to open TLS on and log its failure as Postfix does
        (sealmail.mta.smtpd.tls.open_implicit_tls)."""
        if self.settings.wrappermode:
            return await serve_unread(self.handle_implicit_tls, sock)
        return await serve_on(self.handle, sock)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.settings.syslog_name:  # this session's task only: postfix/submission/smtpd
            SERVICE_SYSLOG_NAME.set(self.settings.syslog_name)
        await self._serve(SmtpdSession(self, reader, writer))

    async def handle_implicit_tls(self, connection: socket.socket) -> None:
        """smtpd_tls_wrappermode: TLS first, then the session."""
        if self.settings.syslog_name:
            SERVICE_SYSLOG_NAME.set(self.settings.syslog_name)
        opened = await open_implicit_tls(self, connection)
        if opened is not None:
            reader, writer, names = opened
            await self._serve(SmtpdSession(self, reader, writer), names)

    async def _serve(self, session: SmtpdSession, announced: ClientNames | None = None) -> None:
        try:
            await sessions.serve_session(self.sessions, session.writer, session.run(announced))
        finally:
            if session.milters is not None:
                await session.milters.close()

async def serve_sockets(service: SmtpdService, sockets: Sequence[object]) -> list[asyncio.Server]:
    """Start serving on already-bound listening sockets; returns the servers."""
    servers = []
    for sock in sockets:
        assert isinstance(sock, socket.socket)
        servers.append(await service.serve(sock))
    return servers
