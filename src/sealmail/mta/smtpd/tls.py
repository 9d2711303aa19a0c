"""smtpd's TLS: STARTTLS (RFC 3207), the implicit TLS of wrappermode, Postfix's TLS lines."""

from __future__ import annotations

import logging
import ssl

from sealmail.mta.smtpd.auth import SaslSession
from sealmail.proto.smtp import Reply

log = logging.getLogger("sealmail.mta.smtpd")


class TlsSession(SaslSession):
    """STARTTLS and the handshake's log lines (after TLS, AUTH offers change)."""

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
