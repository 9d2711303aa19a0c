"""What the lmtp and smtp delivery agents share: next hops, sessions, the connection cache.

Theory of operation. An agent (`ClientAgent`, made by lmtp.py or smtp.py with its parameter
prefix, "lmtp" or "smtp") gets a `DeliveryRequest`, resolves the next hop to an endpoint, takes an
idle session for it from the cache or opens one (connect, greeting, LHLO/EHLO, STARTTLS as
`*_tls_security_level` wants, LHLO/EHLO again, AUTH when `*_sasl_auth_enable` and the password
map has the host), runs one MAIL/RCPT/DATA transaction through the sans-I/O core
(sealmail.proto.smtp.client), and turns the replies into one `RecipientResult` per recipient:
2xx sent, 4xx deferred, 5xx bounced; no connection, a lost one, or a timeout defer everything
not yet answered (dsn 4.4.1 before a session exists, 4.4.2 inside one), as Postfix does.

Connection cache (Postfix's `*_connection_cache_on_demand`, the seed's `lmtp_cache_connection`,
and `*_connection_cache_destinations`): when the queue manager allows it (`cache_session`: the
destination has mail back to back, sealmail.mta.concurrency) or the destination is listed,
after a clean transaction the session is kept idle for
`*_connection_cache_time_limit`, then closed with QUIT; a session older than
`*_connection_reuse_time_limit` is not reused. A reused session is first RSET (RFC 5321 4.1.1.5)
so a transaction half-left by the server cannot leak into the next one; if the RSET fails the
agent opens a fresh session, which costs a connect but never a delivery.

Postfix's log text: failures read `host RELAY said: REPLY (in reply to COMMAND command)`, and
`relay=` is `host[address]:port` for TCP and the socket path as configured for UNIX sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from sealmail.config.imapd_conf import ConfigError
from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, RecipientResult, Status
from sealmail.mta.agents.smtputf8 import Smtputf8Required, mail_parameters
from sealmail.mta.config import MainConfig, TableError, open_table
from sealmail.mta.config.parameters import MAIN
from sealmail.proto.smtp import Mode, encode_xtext
from sealmail.proto.smtp.client import (
    AuthReply,
    ClientCommand,
    ClientConnection,
    ClientEvent,
    ClientState,
    CommandReply,
    ConnectionClosed,
    Greeting,
    HelloReply,
    MessageReply,
    ServerReply,
    ServerReplyError,
)
from sealmail.proto.smtp.client_sasl import choose_mechanism, new_client_mechanism

__all__ = [
    "ClientAgent",
    "DeliveryFailure",
    "Endpoint",
    "NexthopError",
    "parse_nexthop",
    "sasl_password",
    "sasl_password_keys",
]

log = logging.getLogger("sealmail.mta.agents")

_T = TypeVar("_T")
_CHUNK = 256 * 1024  # message content sent (and timed by *_data_xfer_timeout) in pieces of this
_TLS_LEVELS = ("none", "may", "encrypt", "verify", "secure")

# Postfix's words for what the client was doing when the conversation broke off.
_STAGE = {
    ClientCommand.GREETING: "receiving the initial server greeting",
    ClientCommand.EHLO: "performing the EHLO handshake",
    ClientCommand.LHLO: "performing the LHLO handshake",
    ClientCommand.HELO: "performing the HELO handshake",
    ClientCommand.STARTTLS: "sending STARTTLS",
    ClientCommand.AUTH: "performing SASL authentication",
    ClientCommand.MAIL: "sending MAIL FROM",
    ClientCommand.RCPT: "sending RCPT TO",
    ClientCommand.DATA: "sending DATA command",
    ClientCommand.END_OF_DATA: "sending end of data -- message may be sent more than once",
    ClientCommand.RSET: "sending RSET",
    ClientCommand.QUIT: "sending QUIT",
    ClientCommand.NOOP: "sending NOOP",
    ClientCommand.BDAT: "sending message body",
}
_IN_REPLY_TO = {
    ClientCommand.GREETING: "initial greeting",
    ClientCommand.END_OF_DATA: "end of DATA command",
    ClientCommand.MAIL: "MAIL FROM command",
    ClientCommand.RCPT: "RCPT TO command",
}


class NexthopError(ValueError):
    """A next hop we cannot parse: a configuration error, so the mail waits (4.3.5)."""


class _StaleSession(Exception):
    """A cached session failed its RSET: nothing was answered yet, so try another session."""


class DeliveryFailure(Exception):
    """Everything not yet answered fails the same way (no session, or the session broke)."""

    def __init__(self, status: Status, dsn: str, text: str, *, relay: str = "none",
                 reusable: bool = False) -> None:
        super().__init__(text)
        self.status = status
        self.dsn = dsn
        self.text = text
        self.relay = relay
        self.reusable = reusable


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where to connect: a UNIX socket path, or a host (name or address literal) and port."""

    path: str | None = None
    host: str = ""
    port: int = 0
    written: str = ""  # a UNIX socket path as configured (relative ones stay so in logs)

    @property
    def is_unix(self) -> bool:
        return self.path is not None

    def display(self) -> str:
        return self.path if self.path is not None else f"{self.host}:{self.port}"


def _port(text: str, default_port: int, whole: str,
          services_file: str | os.PathLike[str]) -> int:
    if not text:
        return default_port
    if text.isdigit():
        port = int(text)
        if 0 < port < 65536:
            return port
        raise NexthopError(f"bad port in next hop {whole!r}")
    try:
        # inet:host:service, looked up in the services file as Postfix does, with IANA's port
        # for a mail service the file lacks (Debian's has no lmtp).
        return service_port(text, services_file)
    except UnknownService as exc:
        raise NexthopError(f"{exc} in next hop {whole!r}") from None


def parse_nexthop(
    nexthop: str, *, default_port: int, queue_directory: str, unix_allowed: bool = True,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
) -> Endpoint:
    """`unix:/abs`, `unix:rel` (to the queue directory), `inet:host[:port]`, `inet:[addr]:port`,
    `[host]:port`, `host:port`, `host`. Postfix's lmtp takes `inet:` as the default type."""
    text = nexthop.strip()
    if not text:
        raise NexthopError("empty next hop")
    kind, sep, rest = text.partition(":")
    if sep and kind in ("unix", "inet"):
        if kind == "unix":
            if not unix_allowed:
                raise NexthopError(f"unix: next hop {nexthop!r} is not supported by this agent")
            if not rest:
                raise NexthopError(f"empty socket path in next hop {nexthop!r}")
            path = rest if rest.startswith("/") else str(Path(queue_directory) / rest)
            return Endpoint(path=path, written=rest)
        text = rest
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            raise NexthopError(f"missing ']' in next hop {nexthop!r}")
        host, after = text[1:close], text[close + 1 :]
        if after and not after.startswith(":"):
            raise NexthopError(f"junk after ']' in next hop {nexthop!r}")
        port = _port(after[1:], default_port, nexthop, services_file)
    else:
        host, _, service = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
        if not host:
            host, service = text, ""
        port = _port(service, default_port, nexthop, services_file)
    if host.lower().startswith("ipv6:"):
        host = host[5:]
    if not host or any(c.isspace() for c in host):
        raise NexthopError(f"bad host in next hop {nexthop!r}")
    return Endpoint(host=host, port=port)


def sasl_password_keys(nexthop: str, endpoint: Endpoint) -> list[str]:
    """The password map keys for this next hop, in the order tried: the next hop as written
    (without `inet:`/`unix:`), then `host:port`, `[host]:port`, then `host` (seed 2.2.1.2:
    `cyrus.example.com lmtpuser:PASSWORD`)."""
    written = nexthop.split(":", 1)[1] if nexthop.startswith(("inet:", "unix:")) else nexthop
    keys = [written]
    if not endpoint.is_unix:
        keys += [f"{endpoint.host}:{endpoint.port}", f"[{endpoint.host}]:{endpoint.port}",
                 endpoint.host]
    return list(dict.fromkeys(keys))


def sasl_password(settings: MainConfig, prefix: str, nexthop: str,
                  endpoint: Endpoint) -> tuple[str, str] | None:
    """`user:password` for this next hop from `*_sasl_password_maps`, or None; the first key
    of `sasl_password_keys` found in the first map that has one wins."""
    keys = sasl_password_keys(nexthop, endpoint)
    for spec in settings.maps(f"{prefix}_sasl_password_maps"):
        table = open_table(spec)
        for key in keys:
            value = table.lookup(key)
            if value is not None:
                user, sep, password = value.strip().partition(":")
                if not sep or not user:
                    raise TableError(spec, 0, key, "value must be user:password")
                return user, password
    return None


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Timeouts:
    connect: float | None
    hello: float
    starttls: float
    mail: float
    rcpt: float
    data_init: float
    data_xfer: float
    data_done: float
    rset: float
    quit: float

    @classmethod
    def of(cls, settings: MainConfig, prefix: str) -> _Timeouts:
        def t(name: str) -> float:
            return float(settings.time(f"{prefix}_{name}_timeout"))

        connect = t("connect")
        return cls(
            connect=connect or None,  # lmtp's 0s: the system's own limit
            hello=t("lhlo" if prefix == "lmtp" else "helo"),
            starttls=t("starttls"), mail=t("mail"), rcpt=t("rcpt"), data_init=t("data_init"),
            data_xfer=t("data_xfer"), data_done=t("data_done"), rset=t("rset"), quit=t("quit"),
        )


class _Session:
    """One connection driven through the client core; every wait is bounded by a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: ClientConnection, relay: str, timeouts: _Timeouts, born: float) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.relay = relay
        self.timeouts = timeouts
        self.born = born
        self.transactions = 0
        self.probing = False  # a cached session's RSET leads the next command group
        # Why this session did not authenticate though *_sasl_auth_enable is on (for 530s).
        self.no_password: str | None = None

    def fail(self, command: ClientCommand | None, what: str, *,
             timed_out: bool = False) -> DeliveryFailure:
        stage = _STAGE.get(command, "talking") if command is not None else "talking"
        timed = " timed out" if timed_out else ""
        return DeliveryFailure(Status.DEFERRED, "4.4.2",
                               f"{what} with {self.relay}{timed} while {stage}", relay=self.relay)

    async def flush(self, timeout: float) -> None:
        data = self.conn.data_to_send()
        if not data:
            return
        self.writer.write(data)
        if self.writer.transport.get_write_buffer_size():  # the kernel did not take it all
            await self._bounded(self.writer.drain(), timeout)

    async def _bounded(self, work: Awaitable[_T], timeout: float) -> _T:
        command = self.conn.awaiting
        try:
            async with asyncio.timeout(timeout):  # no task per read, as wait_for makes
                return await work
        except TimeoutError:
            raise self.fail(command, "conversation", timed_out=True) from None
        except (ConnectionError, OSError):
            raise self.fail(command, "lost connection") from None

    async def event(self, timeout: float) -> ClientEvent:
        """The next event, reading as needed; EOF and bad replies become DeliveryFailure."""
        while True:
            await self.flush(timeout)
            pending = self.conn.awaiting
            try:
                event = self.conn.next_event()
            except ServerReplyError as exc:
                stage = _STAGE.get(pending, "talking") if pending is not None else "talking"
                raise DeliveryFailure(
                    Status.DEFERRED, "4.4.2",
                    f"protocol error with {self.relay} while {stage}: {exc}",
                    relay=self.relay) from None
            if isinstance(event, ConnectionClosed):
                raise self.fail(event.pending, "lost connection")
            if isinstance(event, ClientEvent):
                return event
            await self.flush(timeout)  # the core may have answered a 334 challenge
            data = await self._bounded(self.reader.read(65536), timeout)
            self.conn.receive_data(data)

    def said(self, reply: ServerReply, command: ClientCommand) -> str:
        what = _IN_REPLY_TO.get(command, f"{command.value} command")
        text = f"host {self.relay} said: {reply} (in reply to {what})"
        if reply.code == 530 and self.no_password:  # RFC 4954 6: authentication required
            text += f"; {self.no_password}"
        return text

    async def close(self, *, polite: bool, skip_quit_response: bool = False) -> None:
        """QUIT (when the core may still send it) and close; never raises."""
        with contextlib.suppress(DeliveryFailure, OSError, ConnectionError, RuntimeError):
            if polite and self.conn.state in (ClientState.READY, ClientState.HELLO):
                self.conn.quit()
                await self.flush(self.timeouts.quit)
                if not skip_quit_response:
                    await self.event(self.timeouts.quit)
        self.writer.close()
        with contextlib.suppress(OSError, ConnectionError, TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(self.writer.wait_closed(), 5)


# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Policy:
    """The parameters of one delivery, read once from the request's settings."""

    timeouts: _Timeouts
    hello_name: str
    tls_level: str
    tls_cafile: str
    tls_cert: str
    tls_key: str
    sasl_enabled: bool
    sasl_options: tuple[str, ...]
    sasl_filter: tuple[str, ...]
    cache: bool
    cache_destinations: tuple[str, ...]
    cache_time: float
    reuse_time: float
    skip_quit_response: bool


class ClientAgent:
    """The SMTP/LMTP delivery agent; `prefix` selects the parameter family ("lmtp", "smtp")."""

    def __init__(self, prefix: str, mode: Mode, default_port: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.prefix = prefix
        self.mode = mode
        self.default_port = default_port
        self.clock = clock
        self._idle: dict[tuple[object, ...], list[tuple[_Session, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._policies: dict[int, tuple[MainConfig, _Policy]] = {}

    # -- what the queue manager calls -------------------------------------------------------

    def nexthop_for(self, request: DeliveryRequest) -> str:
        return request.nexthop

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        answered: dict[int, RecipientResult] = {}
        try:
            policy = self._policy(request.settings)
            nexthop = self.nexthop_for(request)
            endpoint = parse_nexthop(
                nexthop, default_port=self.default_port,
                queue_directory=request.settings.get(MAIN.queue_directory),
                unix_allowed=self.mode is Mode.LMTP,
            )
            credentials = (
                sasl_password(request.settings, self.prefix, nexthop, endpoint)
                if policy.sasl_enabled else None
            )
            no_password = (
                self._no_password(request, nexthop, endpoint)
                if policy.sasl_enabled and credentials is None else None
            )
        except (ConfigError, NexthopError, ValueError) as exc:
            log.warning("%s: %s: %s", request.queue_id, self.prefix, exc)
            failure = DeliveryFailure(Status.DEFERRED, "4.3.5",
                                      f"mail system configuration error: {exc}")
            return self._fill(request, answered, failure)
        key = (endpoint, policy.tls_level, credentials, request.settings.get(MAIN.myhostname))
        session: _Session | None = None
        try:
            while True:
                session = await self._session(key, endpoint, nexthop, policy, credentials,
                                              request)
                session.no_password = no_password
                try:
                    await self._transaction(session, request, policy, answered)
                    break
                except _StaleSession:  # only cached sessions probe: this ends
                    await session.close(polite=False)
                    session = None
        except DeliveryFailure as failure:
            if session is not None and not failure.reusable:
                await session.close(polite=False)
                session = None
            self._fill(request, answered, failure)
        if session is not None:
            caching = ((policy.cache and request.cache_session)
                       or nexthop in policy.cache_destinations)
            if caching and session.conn.state is ClientState.READY and (
                self.clock() - session.born < policy.reuse_time
            ):
                self._keep(key, session, policy.cache_time)
            else:
                await session.close(polite=True, skip_quit_response=policy.skip_quit_response)
        return [answered[r.index] for r in request.recipients]

    async def close(self) -> None:
        """Close every cached session (QUIT) and wait for the closes under way."""
        for entries in self._idle.values():
            for session, timer in entries:
                timer.cancel()
                self._closing.add(asyncio.ensure_future(session.close(polite=True)))
        self._idle.clear()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)
        self._closing.clear()

    def _no_password(self, request: DeliveryRequest, nexthop: str, endpoint: Endpoint) -> str:
        """Say which keys the password maps lacked (Postfix tells only with -v, yet a wrong key,
        as the seed's `cyrus.example.com` against a next hop `localhost`, fails silently);
        the words also go into a 530 reply's bounce or defer text."""
        maps = f"{self.prefix}_sasl_password_maps"
        what = (f"no SASL password found in {maps} "
                f"({' '.join(request.settings.maps(maps)) or 'empty'}) "
                f"for the keys {', '.join(sasl_password_keys(nexthop, endpoint))}")
        log.info("%s: %s: %s; delivering without authentication", request.queue_id,
                 self.prefix, what)
        return what

    # -- parameters -------------------------------------------------------------------------

    def _policy(self, settings: MainConfig) -> _Policy:
        """The transport's parameters, read once per configuration (a reload makes new ones)."""
        cached = self._policies.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
        policy = self._read_policy(settings)
        self._policies[id(settings)] = (settings, policy)
        return policy

    def _read_policy(self, settings: MainConfig) -> _Policy:
        p = self.prefix
        level = settings.string(f"{p}_tls_security_level").strip().lower() or "none"
        if level not in _TLS_LEVELS:
            raise ValueError(f"{p}_tls_security_level = {level} is not supported "
                             f"(use one of {', '.join(_TLS_LEVELS)})")
        cache = settings.boolean(f"{p}_connection_cache_on_demand")
        skip_quit = settings.boolean(f"{p}_skip_quit_response")
        return _Policy(
            timeouts=_Timeouts.of(settings, p),
            hello_name=settings.string(f"{p}_lhlo_name" if p == "lmtp" else f"{p}_helo_name"),
            tls_level=level,
            tls_cafile=settings.string(f"{p}_tls_CAfile"),
            tls_cert=settings.string(f"{p}_tls_cert_file"),
            tls_key=settings.string(f"{p}_tls_key_file"),
            sasl_enabled=settings.boolean(f"{p}_sasl_auth_enable"),
            sasl_options=settings.words(f"{p}_sasl_security_options"),
            sasl_filter=settings.words(f"{p}_sasl_mechanism_filter"),
            cache=cache,
            cache_destinations=settings.words(f"{p}_connection_cache_destinations"),
            cache_time=float(settings.time(f"{p}_connection_cache_time_limit")),
            reuse_time=float(settings.time(f"{p}_connection_reuse_time_limit")),
            skip_quit_response=skip_quit,
        )

    # -- the connection cache ---------------------------------------------------------------

    def _keep(self, key: tuple[object, ...], session: _Session, idle: float) -> None:
        loop = asyncio.get_running_loop()
        timer = loop.call_later(idle, self._expire, key, session)
        self._idle.setdefault(key, []).append((session, timer))

    def _expire(self, key: tuple[object, ...], session: _Session) -> None:
        entries = self._idle.get(key, [])
        for entry in entries:
            if entry[0] is session:
                entries.remove(entry)
                break
        if not entries:
            self._idle.pop(key, None)
        task = asyncio.ensure_future(session.close(polite=True))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _cached(self, key: tuple[object, ...], policy: _Policy) -> _Session | None:
        while self._idle.get(key):
            session, timer = self._idle[key].pop()
            timer.cancel()
            if not self._idle[key]:
                del self._idle[key]
            if self.clock() - session.born >= policy.reuse_time:
                await session.close(polite=True)
                continue
            capabilities = session.conn.capabilities
            if capabilities is not None and capabilities.pipelining:
                # RFC 2920 3.1: RSET may lead the command group, which saves a round trip;
                # its reply is read first and a failed one means another session.
                session.conn.rset()
                session.probing = True
                return session
            try:
                session.conn.rset()
                reply = await session.event(policy.timeouts.rset)
            except DeliveryFailure:
                await session.close(polite=False)
                continue
            if isinstance(reply, CommandReply) and reply.reply.is_success:
                return session
            await session.close(polite=True)
        return None

    # -- opening a session ------------------------------------------------------------------

    async def _session(self, key: tuple[object, ...], endpoint: Endpoint, nexthop: str,
                       policy: _Policy, credentials: tuple[str, str] | None,
                       request: DeliveryRequest) -> _Session:
        cached = await self._cached(key, policy)
        if cached is not None:
            return cached
        try:
            return await self._open(endpoint, policy, credentials, request, tls=True)
        except _TlsFallback:
            # "may": opportunistic TLS that failed its handshake; Postfix goes on in plaintext.
            return await self._open(endpoint, policy, credentials, request, tls=False)

    async def _connect(
        self, endpoint: Endpoint, policy: _Policy, myhostname: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        # Postfix names a UNIX-socket server "$myhostname[path]", a TCP one "host[address]:port".
        if endpoint.path is not None:
            shown = f"{myhostname}[{endpoint.written or endpoint.path}]"
        else:
            shown = f"{endpoint.host}[{endpoint.host}]:{endpoint.port}"
        try:
            if endpoint.path is not None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(endpoint.path, limit=1 << 20),
                    policy.timeouts.connect)
                return reader, writer, shown
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.host, endpoint.port, limit=1 << 20),
                policy.timeouts.connect)
        except TimeoutError:
            raise DeliveryFailure(Status.DEFERRED, "4.4.1",
                                  f"connect to {shown}: Connection timed out") from None
        except OSError as exc:
            if isinstance(exc, socket.gaierror):
                raise DeliveryFailure(Status.DEFERRED, "4.4.4",
                                      f"Host or domain name not found. Name service error for "
                                      f"name={endpoint.host}: {exc.strerror or exc}") from None
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise DeliveryFailure(Status.DEFERRED, "4.4.1",
                                  f"connect to {shown}: {reason}") from None
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else endpoint.host
        return reader, writer, f"{endpoint.host}[{address}]:{endpoint.port}"

    async def _open(self, endpoint: Endpoint, policy: _Policy,
                    credentials: tuple[str, str] | None, request: DeliveryRequest,
                    *, tls: bool) -> _Session:
        reader, writer, relay = await self._connect(
            endpoint, policy, request.settings.get(MAIN.myhostname))
        session = _Session(reader, writer, ClientConnection(self.mode), relay, policy.timeouts,
                           self.clock())
        try:
            await self._handshake(session, endpoint, policy, credentials, tls=tls)
        except BaseException:
            await session.close(polite=False)
            raise
        return session

    async def _handshake(self, session: _Session, endpoint: Endpoint, policy: _Policy,
                         credentials: tuple[str, str] | None, *, tls: bool) -> None:
        t = policy.timeouts
        greeting = await session.event(t.hello)
        assert isinstance(greeting, Greeting)
        if not greeting.reply.is_success:
            # Postfix (smtp_skip_5xx_greeting = yes) defers whatever the greeting's class.
            raise DeliveryFailure(Status.DEFERRED, "4" + greeting.reply.dsn()[1:],
                                  session.said(greeting.reply, ClientCommand.GREETING),
                                  relay=session.relay)
        await self._hello(session, policy)
        caps = session.conn.capabilities
        assert caps is not None
        level = policy.tls_level if tls else "none"
        if endpoint.is_unix and level == "may":
            level = "none"  # as Postfix: opportunistic TLS on a private socket is only waste
        if level in ("encrypt", "verify", "secure") and not caps.offers("STARTTLS"):
            raise DeliveryFailure(Status.DEFERRED, "4.7.4",
                                  f"TLS is required, but was not offered by host {session.relay}",
                                  relay=session.relay)
        if level != "none" and caps.offers("STARTTLS"):
            await self._starttls(session, endpoint, policy, level)
            await self._hello(session, policy)
        if credentials is not None:
            await self._authenticate(session, policy, credentials)

    async def _hello(self, session: _Session, policy: _Policy) -> None:
        conn = session.conn
        conn.hello(policy.hello_name)
        reply = await session.event(policy.timeouts.hello)
        assert isinstance(reply, HelloReply)
        if not reply.reply.is_success and self.mode is Mode.SMTP and reply.reply.is_permanent:
            conn.hello(policy.hello_name, ClientCommand.HELO)  # RFC 5321 3.2: fall back
            reply = await session.event(policy.timeouts.hello)
            assert isinstance(reply, HelloReply)
        if not reply.reply.is_success:
            status = Status.BOUNCED if reply.reply.is_permanent else Status.DEFERRED
            raise DeliveryFailure(status, reply.reply.dsn(),
                                  session.said(reply.reply, reply.command), relay=session.relay)

    async def _starttls(self, session: _Session, endpoint: Endpoint, policy: _Policy,
                        level: str) -> None:
        session.conn.starttls()
        reply = await session.event(policy.timeouts.starttls)
        assert isinstance(reply, CommandReply)
        if not reply.reply.is_success:
            if level == "may":
                return
            raise DeliveryFailure(Status.DEFERRED, "4.7.5",
                                  f"TLS is required, but host {session.relay} refused to start "
                                  f"TLS: {reply.reply}", relay=session.relay)
        context = self._tls_context(policy, level)
        name = None if endpoint.is_unix else endpoint.host
        try:
            await asyncio.wait_for(
                session.writer.start_tls(context, server_hostname=name),
                policy.timeouts.starttls)
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            if level == "may":
                raise _TlsFallback() from None
            raise DeliveryFailure(Status.DEFERRED, "4.7.5",
                                  f"Cannot start TLS: handshake failure with {session.relay}: "
                                  f"{exc}", relay=session.relay) from None
        session.conn.tls_started()

    def _tls_context(self, policy: _Policy, level: str) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=policy.tls_cafile or None)
        if level in ("may", "encrypt"):
            # Postfix: "encrypt" is mandatory encryption without peer authentication.
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if policy.tls_cert:
            context.load_cert_chain(policy.tls_cert, policy.tls_key or None)
        return context

    async def _authenticate(self, session: _Session, policy: _Policy,
                            credentials: tuple[str, str]) -> None:
        caps = session.conn.capabilities
        assert caps is not None
        if not caps.auth_mechanisms:
            log.info("%s offered no AUTH: delivering without SASL", session.relay)
            return
        chosen = choose_mechanism(caps.auth_mechanisms, policy.sasl_options, policy.sasl_filter)
        if chosen is None:
            raise DeliveryFailure(
                Status.DEFERRED, "4.7.0",
                f"SASL authentication failed; cannot authenticate to server {session.relay}: "
                f"no mechanism available (offered: {' '.join(caps.auth_mechanisms)})",
                relay=session.relay)
        user, password = credentials
        session.conn.auth(new_client_mechanism(chosen, user, password))
        done = await session.event(policy.timeouts.hello)
        assert isinstance(done, AuthReply)
        if not done.succeeded:
            why = done.error or str(done.reply)
            # smtp_sasl_auth_soft_bounce = yes: an authentication failure is never final.
            raise DeliveryFailure(
                Status.DEFERRED, "4" + done.reply.dsn()[1:] if done.reply.code >= 400 else "4.7.0",
                f"SASL authentication failed; server {session.relay} said: {why}",
                relay=session.relay)
        log.debug("authenticated to %s as %s with %s", session.relay, user, chosen)

    # -- one transaction --------------------------------------------------------------------

    async def _transaction(self, session: _Session, request: DeliveryRequest, policy: _Policy,
                           answered: dict[int, RecipientResult]) -> None:
        conn, t = session.conn, policy.timeouts
        caps = conn.capabilities
        assert caps is not None
        content = request.message.read()
        try:
            params = mail_parameters(request, content, caps.offers("SMTPUTF8"), session.relay)
        except Smtputf8Required as exc:
            raise DeliveryFailure(exc.status, exc.dsn, str(exc), relay=session.relay) from None
        if caps.offers("SIZE"):
            params.append(f"SIZE={len(content)}")
        if caps.offers("8BITMIME") and not content.isascii():
            params.append("BODY=8BITMIME")
        pipelining = caps.pipelining
        recipients = request.recipients

        def rcpt_params(recipient: QueuedRecipient) -> list[str]:
            if not caps.offers("DSN"):
                return []
            out = [f"NOTIFY={','.join(recipient.notify)}"] if recipient.notify else []
            return [*out, f"ORCPT=rfc822;{encode_xtext(recipient.original)}"]

        conn.mail(request.sender, params)
        if pipelining:
            # RFC 2920 3.1: MAIL, the RCPTs and DATA go in one group.
            for recipient in recipients:
                conn.rcpt(recipient.address, rcpt_params(recipient))
            conn.data()
        if session.probing:
            session.probing = False
            try:
                reset = await session.event(t.rset)
            except DeliveryFailure:
                raise _StaleSession from None
            if not (isinstance(reset, CommandReply) and reset.reply.is_success):
                raise _StaleSession
        mail = await session.event(t.mail)
        assert isinstance(mail, CommandReply)
        by_address: dict[str, list[QueuedRecipient]] = {}
        rcpt_ok: list[QueuedRecipient] = []
        for recipient in recipients:
            if not pipelining:
                if not mail.reply.is_success:
                    break
                conn.rcpt(recipient.address, rcpt_params(recipient))
            reply = await session.event(t.rcpt)
            assert isinstance(reply, CommandReply)
            if not mail.reply.is_success:
                continue
            if reply.reply.is_success:
                rcpt_ok.append(recipient)
                by_address.setdefault(recipient.address, []).append(recipient)
            else:
                self._answer(answered, recipient, reply.reply, session.said(reply.reply,
                             ClientCommand.RCPT), session.relay)
        if not mail.reply.is_success:
            text = session.said(mail.reply, ClientCommand.MAIL)
            for recipient in recipients:
                self._answer(answered, recipient, mail.reply, text, session.relay)
        if not pipelining and rcpt_ok:
            conn.data()
        if pipelining or rcpt_ok:
            go = await session.event(t.data_init)
            assert isinstance(go, CommandReply)
            if go.reply.code != 354:
                for recipient in rcpt_ok:
                    self._answer(answered, recipient, go.reply,
                                 session.said(go.reply, ClientCommand.DATA), session.relay)
                return
        else:
            return
        if not rcpt_ok:
            # The server wants data although nobody was accepted: end it empty and move on.
            conn.send_message(b"")
            await session.event(t.data_done)
            return
        start = 0
        while len(content) - start > _CHUNK:
            conn.send_message(content[start : start + _CHUNK], end=False)
            await session.flush(t.data_xfer)
            start += _CHUNK
        conn.send_message(content[start:])  # the rest and the final dot in one write
        session.transactions += 1
        if self.mode is Mode.LMTP:
            # RFC 2033 4.2: one reply per accepted recipient, in RCPT order.
            for recipient in rcpt_ok:
                final = await session.event(t.data_done)
                assert isinstance(final, MessageReply)
                self._final(answered, recipient, final.reply, session)
        else:
            final = await session.event(t.data_done)
            assert isinstance(final, MessageReply)
            for recipient in rcpt_ok:
                self._final(answered, recipient, final.reply, session)

    def _final(self, answered: dict[int, RecipientResult], recipient: QueuedRecipient,
               reply: ServerReply, session: _Session) -> None:
        text = str(reply) if reply.is_success else session.said(reply, ClientCommand.END_OF_DATA)
        self._answer(answered, recipient, reply, text, session.relay)

    @staticmethod
    def _answer(answered: dict[int, RecipientResult], recipient: QueuedRecipient,
                reply: ServerReply, text: str, relay: str) -> None:
        status = (Status.SENT if reply.is_success
                  else Status.DEFERRED if reply.is_transient else Status.BOUNCED)
        answered[recipient.index] = RecipientResult(recipient.index, status, reply.dsn(), text,
                                                    relay)

    @staticmethod
    def _fill(request: DeliveryRequest, answered: dict[int, RecipientResult],
              failure: DeliveryFailure) -> list[RecipientResult]:
        for recipient in request.recipients:
            if recipient.index not in answered:
                answered[recipient.index] = RecipientResult(
                    recipient.index, failure.status, failure.dsn, failure.text, failure.relay,
                    hop_failure=failure.status is Status.DEFERRED)
        return [answered[r.index] for r in request.recipients]


class _TlsFallback(Exception):
    """An opportunistic ("may") handshake failed: reconnect without TLS."""


