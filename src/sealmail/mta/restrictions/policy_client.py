"""check_policy_service: the client side of Postfix's policy delegation protocol.

One connection per policy server per smtpd process, shared by its sessions one request at a
time (as Postfix's attr_clnt), kept open between requests: closed after
smtpd_policy_service_max_idle without use and reopened after smtpd_policy_service_max_ttl.
A request that fails (cannot connect, no complete answer within smtpd_policy_service_timeout,
a malformed answer) is tried again on a new connection up to smtpd_policy_service_try_limit
times, smtpd_policy_service_retry_delay apart; then the answer is
smtpd_policy_service_default_action (451 4.3.5 Server configuration problem), as Postfix.

Servers: `inet:host:port`, `unix:/path`, or `unix:private/name` relative to queue_directory.
The bytes are sealmail.proto.policy's.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.proto.policy import PolicyProtocolError, ResponseParser, encode_request

if TYPE_CHECKING:
    from sealmail.mta.restrictions.evaluator import Session

log = logging.getLogger("sealmail.mta.smtpd")

__all__ = ["PolicyClient", "PolicySettings", "request_attributes"]

_INSTANCES = itertools.count(1)


@dataclass(frozen=True)
class PolicySettings:
    timeout: float = 100.0
    max_idle: float = 300.0
    max_ttl: float = 1000.0
    try_limit: int = 2
    retry_delay: float = 1.0
    default_action: str = "451 4.3.5 Server configuration problem"
    request_limit: int = 0
    policy_context: str = ""

    @classmethod
    def from_config(cls, config: MainConfig) -> PolicySettings:
        return cls(
            timeout=float(config.get(MAIN.smtpd_policy_service_timeout)),
            max_idle=float(config.get(MAIN.smtpd_policy_service_max_idle)),
            max_ttl=float(config.get(MAIN.smtpd_policy_service_max_ttl)),
            try_limit=max(1, config.get(MAIN.smtpd_policy_service_try_limit)),
            retry_delay=float(config.get(MAIN.smtpd_policy_service_retry_delay)),
            default_action=config.get(MAIN.smtpd_policy_service_default_action),
            request_limit=config.get(MAIN.smtpd_policy_service_request_limit),
            policy_context=config.get(MAIN.smtpd_policy_service_policy_context),
        )


def new_instance() -> str:
    """A value unique to one mail transaction (Postfix's `instance`, which policy servers such
    as policyd-spf use to cache their answer for the message)."""
    return f"{os.getpid():x}.{int(time.time()):x}.{next(_INSTANCES):x}"


def request_attributes(session: Session, context: str = "") -> dict[str, str]:
    """The request as Postfix 3.7's smtpd sends it (SMTPD_POLICY_README)."""
    facts = session.facts
    in_message = facts.where in ("DATA", "END-OF-MESSAGE")
    return {
        "request": "smtpd_access_policy",
        "protocol_state": facts.where,
        "protocol_name": facts.protocol,
        "client_address": facts.client_address,
        "client_name": facts.names.name,
        "client_port": facts.client_port,
        "reverse_client_name": facts.names.reverse_name,
        "server_address": facts.server_address,
        "server_port": facts.server_port,
        "helo_name": facts.helo or "",
        "sender": facts.sender or "",
        "recipient": facts.recipient or "",
        "recipient_count": str(facts.recipient_count if in_message else 0),
        "queue_id": facts.queue_id,
        "instance": facts.instance,
        "size": str(facts.size),
        "etrn_domain": "",
        "stress": "",
        "sasl_method": facts.sasl_method,
        "sasl_username": facts.sasl_username,
        "sasl_sender": "",
        "ccert_subject": "",
        "ccert_issuer": "",
        "ccert_fingerprint": "",
        "ccert_pubkey_fingerprint": "",
        "encryption_protocol": facts.tls_protocol,
        "encryption_cipher": facts.tls_cipher,
        "encryption_keysize": str(facts.tls_bits),
        "policy_context": context,
        "compatibility_level": session.engine.compatibility_level,
        "mail_version": session.engine.mail_version,
    }


class PolicyClient:
    """One policy server's endpoint (see the module text)."""

    def __init__(self, server: str, settings: PolicySettings, queue_directory: str = "",
                 *, clock: Callable[[], float] = time.monotonic) -> None:
        kind, _, where = server.partition(":")
        if kind == "inet":
            host, _, port = where.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"check_policy_service {server}: need inet:host:port")
            self._address: tuple[str, int] | str = (host.strip("[]"), int(port))
        elif kind == "unix" and where:
            path = Path(where)
            self._address = str(path if path.is_absolute() else Path(queue_directory) / path)
        else:
            raise ValueError(f"check_policy_service {server}: need inet:host:port or unix:path")
        self.server = server
        self.settings = settings
        self.clock = clock
        self._lock = asyncio.Lock()
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._opened = 0.0
        self._used = 0.0
        self._requests = 0
        self._idle_timer: asyncio.TimerHandle | None = None

    async def query(self, session: Session) -> str:
        """The server's action for this request, or the default action."""
        request = encode_request(request_attributes(session, self.settings.policy_context))
        async with self._lock:
            for attempt in range(self.settings.try_limit):
                if attempt:
                    await asyncio.sleep(self.settings.retry_delay)
                try:
                    return await asyncio.wait_for(self._exchange(request),
                                                  self.settings.timeout)
                except (OSError, EOFError, PolicyProtocolError, TimeoutError) as exc:
                    self._close()
                    log.warning("problem talking to server %s: %s", self.server, _why(exc))
        return self.settings.default_action

    async def _exchange(self, request: bytes) -> str:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        reader, writer = await self._connection()
        writer.write(request)
        await writer.drain()
        parser = ResponseParser()
        while True:
            response = parser.next_response()
            if response is not None:
                break
            data = await reader.read(4096)
            if not data:
                raise EOFError("lost connection" if parser.pending else
                               "connection closed by server")
            parser.feed(data)
        self._used = self.clock()
        self._requests += 1
        limit = self.settings.request_limit
        if limit and self._requests >= limit:
            self._close()
        else:  # an idle connection is closed in time (a spawned server's process ends)
            self._idle_timer = asyncio.get_running_loop().call_later(
                self.settings.max_idle, self._close)
        return response.action

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = self.clock()
        settings = self.settings
        if self._streams is not None and (now - self._used > settings.max_idle
                                          or now - self._opened > settings.max_ttl
                                          or self._streams[0].at_eof()):
            self._close()
        if self._streams is None:
            if isinstance(self._address, str):
                self._streams = await asyncio.open_unix_connection(self._address)
            else:
                self._streams = await asyncio.open_connection(*self._address)
            self._opened = self._used = now
            self._requests = 0
        return self._streams

    def _close(self) -> None:
        if self._streams is not None:
            with contextlib.suppress(Exception):
                self._streams[1].close()
            self._streams = None

    def close(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
        self._close()


def _why(exc: BaseException) -> str:
    """Postfix's words: "Connection refused", "timeout", "lost connection"."""
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno)  # asyncio's strerror names the address too
    return str(exc) or type(exc).__name__
