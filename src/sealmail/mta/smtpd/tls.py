"""smtpd's TLS: STARTTLS (RFC 3207), the implicit TLS of wrappermode, Postfix's TLS lines.

Implicit TLS (smtpd_tls_wrappermode, RFC 8314 3.3's submissions on 465) is opened here before
the session starts, as Postfix's smtpd does it: `connect from`, then the new-TLS-session rate
(over it, a warning and the end, without a word to the client), then the handshake; a failed
one is logged in Postfix's lines (`SSL_accept error from`, `warning: TLS library problem`,
`lost connection after CONNECT from`, `disconnect from`). The listener hands over the
connection unread (sealmail.server.listeners.serve_unread), so a failure is the session's to
log: a listener's own handshake fails silently outside asyncio's debug mode.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from typing import TYPE_CHECKING

from sealmail.mta.restrictions import ClientNames, Facts
from sealmail.mta.smtpd.auth import SaslSession
from sealmail.mta.smtpd_limits import ClientLimiter
from sealmail.proto.smtp import Reply
from sealmail.server.listeners import accept_tls

if TYPE_CHECKING:
    from sealmail.mta.smtpd.service import SmtpdService

log = logging.getLogger("sealmail.mta.smtpd")


def log_tls_failure(client: str, error: Exception) -> None:
    """Postfix's tls_server.c line: the OpenSSL error (and its `TLS library problem`), the
    system error, or "lost connection" when the client just went away."""
    if isinstance(error, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
        log.info("SSL_accept error from %s: lost connection", client)
    elif isinstance(error, ssl.SSLError):
        log.info("SSL_accept error from %s: -1", client)
        log.warning("TLS library problem: %s", error)
    elif isinstance(error, ConnectionAbortedError):  # the loop's handshake timeout
        log.info("SSL_accept error from %s: Connection timed out", client)
    elif isinstance(error, OSError) and error.strerror:
        log.info("SSL_accept error from %s: %s", client, error.strerror)
    else:
        log.info("SSL_accept error from %s: lost connection", client)


async def open_implicit_tls(
    service: SmtpdService, connection: socket.socket
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, ClientNames] | None:
    """smtpd_tls_wrappermode: the client named and announced, the TLS session open; None when
    the connection ended before it (refused or failed, logged)."""
    settings = service.settings
    assert service.tls_context is not None
    try:  # the socket is ours to close until accept_tls gives it to a transport
        facts = await _announce(service, connection)
    except BaseException:
        connection.close()
        raise
    if facts is None:
        connection.close()
        return None
    try:
        reader, writer = await accept_tls(connection, service.tls_context,
                                          settings.starttls_timeout)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        log_tls_failure(facts.namaddr, exc)
        log.info("lost connection after CONNECT from %s", facts.namaddr)
        log.info("disconnect from %s", facts.namaddr)
        return None
    return reader, writer, facts.names


async def _announce(service: SmtpdService, connection: socket.socket) -> Facts | None:
    """`connect from`, then the new-TLS-session rate: the client, or None to hang up."""
    try:
        peer = connection.getpeername() if connection.family != socket.AF_UNIX else None
    except OSError:  # gone already
        return None
    facts = Facts(client_address=str(peer[0]) if peer else "")
    engine = service.restrictions
    if engine.needs_client_names:
        facts.names = await engine.client_names(facts.client_address)
    client = facts.namaddr
    log.info("connect from %s", client)
    limiter = ClientLimiter(service.limits, service.anvil, service.service_name,
                            facts.client_address, client, service.settings.hostname)
    if await limiter.implicit_tls_refused():
        log.info("disconnect from %s", client)
        return None
    return facts


class TlsSession(SaslSession):
    """STARTTLS and the handshake's log lines (after TLS, AUTH offers change)."""

    async def _count_tls_session(self) -> bool:
        """A new (not resumed) TLS session counts against the new-session rate limit; False
        when it went over it: Postfix's 421, sent under TLS, and the session ends."""
        ssl_object = self.writer.get_extra_info("ssl_object")
        if ssl_object is not None and ssl_object.session_reused:
            return True
        refusal = await self.limiter.tls_started()
        if refusal is None:
            return True
        self.writer.write(refusal.render())
        return False

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
        if not await self._count_tls_session():
            return False
        # Neither the cipher's strength nor a client certificate counts for SASL here.
        self.tls_bits = self.tls_peer = None
        # RFC 3207 4.2: forget what the client said in clear (its EHLO, a transaction).
        self.helo = ""
        self.facts.helo = None
        self._end_transaction()
        self.conn.tls_started(auth_mechanisms=self._mechanisms())
        return True

    def tls_failed(self, error: Exception) -> None:
        log_tls_failure(self.client, error)

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
