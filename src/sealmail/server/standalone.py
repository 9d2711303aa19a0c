"""Running a store daemon on its own (`sealmail lmtpd|pop3d|imapd|sieved --listen ...`).

Under `sealmail master` the workers do this (sealmail.server.worker); standalone, one process
binds the listen= addresses, serves every connection with asyncio until SIGTERM/SIGINT, then
stops accepting, lets sessions finish (bounded) and closes the services.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Protocol

from sealmail import sessions as live_sessions
from sealmail.config.cyrus_conf import (
    DEFAULT_SERVICES_FILE,
    ListenAddress,
    UnixAddress,
    resolve_listen,
)
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.privileges import Account
from sealmail.server.listeners import bind, describe, serve_on, serve_unread
from sealmail.server.session import serve_connection

log = logging.getLogger("sealmail.server")


class Service(Protocol):
    sessions: set[asyncio.Task[None]]

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...

    def close(self) -> None: ...


def listen_addresses(config: ImapdConfig, texts: Sequence[str], option: str) -> list[ListenAddress]:
    """--listen values read as cyrus.conf's listen= (UNIX sockets get imapd.conf's mode/group)."""
    return [
        address
        for text in texts
        for address in resolve_listen(
            text,
            "tcp",
            config.configdirectory,
            DEFAULT_SERVICES_FILE,
            unix_mode=config.get(IMAPD.unix_socket_mode),
            unix_group=config.get(IMAPD.unix_socket_group),
            path=option,
        )
    ]


def bind_all(
    addresses: Sequence[ListenAddress], owner: Account | None = None
) -> list[socket.socket]:
    """Every address's sockets, or none (ListenError/OSError after closing what was bound);
    UNIX sockets belong to `owner`, the account the daemon goes on as."""
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            sockets += bind(address, owner)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    for address in addresses:
        log.info("listening on %s", describe(address))
    return sockets


def remove_sockets(addresses: Sequence[ListenAddress]) -> None:
    for address in addresses:
        if isinstance(address, UnixAddress):
            try:
                address.path.unlink(missing_ok=True)
            except OSError as exc:  # a directory of root's: the next start replaces it
                log.warning("cannot remove %s: %s", address.path, exc.strerror)


async def serve(
    services: Sequence[tuple[Service, Sequence[socket.socket]]],
    name: str,
    shutdown_timeout: float = 30.0,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain and close every service."""
    servers = []
    for service, sockets in services:
        # imaps/pop3s: the session does its handshake on an unread connection, to log a failure
        tls: ssl.SSLContext | None = getattr(service, "implicit_tls_context", None)
        for sock in sockets:
            if tls is None:
                servers.append(await serve_on(service.handle, sock))
            else:
                session = partial(serve_connection, service, implicit_tls=tls)
                servers.append(await serve_unread(session, sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    live_sessions.install_kick_handler(loop.add_signal_handler)  # SIGUSR2: admin kick
    log.info("%s ready", name)
    await stop.wait()
    sessions = {task for service, _ in services for task in service.sessions}
    log.info("%s stopping: %d session(s) open", name, len(sessions))
    for server in servers:
        server.close()
    for service, _ in services:
        drain = getattr(service, "drain", None)
        if drain is not None:
            drain()  # idle sessions end now, busy ones after their transaction
    if sessions:
        _, pending = await asyncio.wait(sessions, timeout=shutdown_timeout)
        for task in pending:
            task.cancel()
    closed: set[int] = set()
    for service, _ in services:
        if id(service) not in closed:
            closed.add(id(service))
            service.close()
