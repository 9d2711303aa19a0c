"""ImapService: what every IMAP session of one listener shares; `build_service`, the contract
`sealmail master`'s workers and the standalone daemon start imapd by."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

from sealmail.auth.authenticator import Authenticator
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.proto.imap import Limits
from sealmail.server.imapd.connection import ImapConnection
from sealmail.server.imapd.idle import IdleWatch
from sealmail.server.imapd.threads import CommandThreads
from sealmail.server.session import Drain, serve_session
from sealmail.server.tls import server_context
from sealmail.store.api import MessageStore

TIMEOUT_MINUTES = 30  # Cyrus's `timeout` (RFC 9051 5.4: at least 30 minutes)
IDLE_POLL_INTERVAL = 0.25  # seconds between cheap checks of the selected mailbox while idling


class ImapService:
    """Serves IMAP sessions; one per listener kind (plain with STARTTLS, or imaps)."""

    def __init__(
        self,
        config: ImapdConfig,
        store: MessageStore,
        *,
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        implicit_tls: bool = False,
        daemon_name: str = "imap",
        owns_store: bool = False,
        timeout: float = TIMEOUT_MINUTES * 60.0,
        idle_poll_interval: float = IDLE_POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.store = store
        self.authenticator = authenticator or Authenticator(config)
        self.tls_context = tls_context if tls_context is not None else server_context(config)
        self.implicit_tls = implicit_tls
        if implicit_tls and self.tls_context is None:
            raise config.error(IMAPD.tls_server_cert, "imaps needs a certificate")
        self.daemon_name = daemon_name
        self.owns_store = owns_store
        self.timeout = timeout
        self.idle_poll_interval = idle_poll_interval
        self.clock = clock
        self.failure_delay = float(config.get(IMAPD.auth_failure_delay))
        self.max_auth_failures = config.get(IMAPD.auth_max_failures)
        self.max_message_size = config.get(IMAPD.maxmessagesize)
        self.hosts = HostsAccess.from_config(config)
        self.sessions: set[asyncio.Task[None]] = set()
        self.draining = Drain()
        # Commands (the store blocks; SASL steps run in SaslExchange's threads). More threads
        # than CPUs: a FETCH whose client reads slowly waits in its thread
        # (`ImapConnection._stream`), using no CPU.
        self.executor: Executor = CommandThreads(max_workers=32, name="imap")
        # Quick commands run on the loop (sealmail.imap.quick) unless a read may wait for a
        # pooled PostgreSQL connection a worker thread holds.
        self.quick_commands = config.get(IMAPD.store_backend) != "postgresql"
        self.idle_watch = IdleWatch(idle_poll_interval, self.executor, self.quick_commands)

    def drain(self) -> None:
        """The daemon is stopping: sessions waiting for a command get BYE and end now, one
        running a command ends once it is answered (RFC 9051 7.1.5)."""
        self.draining.set()

    implicit_tls_name = "imaps"  # in Cyrus's "imaps TLS negotiation failed" line

    @property
    def implicit_tls_context(self) -> ssl.SSLContext | None:
        """For master's workers: imaps connections are wrapped at accept."""
        return self.tls_context if self.implicit_tls else None

    def limits(self) -> Limits:
        size = self.max_message_size or 64 * 1024 * 1024
        return Limits(max_append_size=size)

    def close(self) -> None:
        self.idle_watch.close()
        self.executor.shutdown(wait=True)
        if self.owns_store:
            self.owns_store = False
            self.store.close()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await serve_session(self.sessions, writer, ImapConnection(self, reader, writer).run())


# -- the service contract of `sealmail master`, and the standalone daemon ----------------------


def build_service(
    config: ImapdConfig,
    argv: Sequence[str],
    *,
    service_name: str = "imap",
    store: MessageStore | None = None,
) -> ImapService:
    """imapd as cyrus.conf runs it: `imapd [-s]`; -s serves imaps (TLS from the first byte).

    Without a `store` the service opens its own store (store_backend) and closes it in `close()`.
    """
    for arg in argv:
        if arg != "-s":
            raise ConfigError(config.path, 0, None, f"{service_name}: unknown argument {arg!r}")
    implicit_tls = "-s" in argv
    if implicit_tls and server_context(config) is None:
        raise config.error(IMAPD.tls_server_cert, f"{service_name}: imapd -s needs a certificate")
    owned = store is None
    if store is None:
        from sealmail.store.backends import open_store

        store = open_store(config)
    return ImapService(
        config,
        store,
        implicit_tls=implicit_tls,
        daemon_name=service_name,
        owns_store=owned,
        timeout=max(config.get(IMAPD.timeout), 30) * 60.0,  # RFC 9051 5.4: at least 30 minutes
    )

