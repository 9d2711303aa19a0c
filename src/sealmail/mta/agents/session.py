"""What the lmtp and smtp delivery agents share: next hops, sessions, the connection cache.

Theory of operation. An agent (`ClientAgent`, made by lmtp.py or smtp.py with its parameter
family, LMTP_CLIENT or SMTP_CLIENT of sealmail.mta.config.parameters) gets a `DeliveryRequest`,
parses the next hop, decides its TLS policy (tls_policy.py: main.cf's level, or a
`*_tls_policy_maps` entry) and SASL credentials, and asks `targets()` for the servers to try: the
next hop itself for lmtp, MX hosts for smtp (mx.py). For each server in turn it takes an idle
session from the cache or opens one (connect, greeting, LHLO/EHLO, STARTTLS as the policy wants,
LHLO/EHLO again, AUTH when `*_sasl_auth_enable` and the password map has the host), runs one
MAIL/RCPT/DATA transaction through the sans-I/O core (sealmail.proto.smtp.client), and turns the
replies into one `RecipientResult` per recipient: 2xx sent, 4xx deferred, 5xx bounced; no
connection, a lost one, or a timeout defer everything not yet answered (dsn 4.4.1 before a
session exists, 4.4.2 inside one), as Postfix does. Unless the server was the last to try (or
`smtp_mx_session_limit` sessions got past their handshake), a deferred recipient goes on to the
next server, as Postfix keeps it for a backup MX.

Connection cache (Postfix's `*_connection_cache_on_demand`, the seed's `lmtp_cache_connection`,
and `*_connection_cache_destinations`): when the queue manager allows it (`cache_session`: the
destination has mail back to back, sealmail.mta.concurrency) or the destination is listed,
after a clean transaction the session is kept idle for
`*_connection_cache_time_limit`, then closed with QUIT; a session older than
`*_connection_reuse_time_limit` is not reused. A reused session is first RSET (RFC 5321 4.1.1.5)
so a transaction half-left by the server cannot leak into the next one; if the RSET fails the
agent opens a fresh session, which costs a connect but never a delivery.

Postfix's log text: failures read `host NAME[ADDRESS] said: REPLY (in reply to COMMAND command)`
(no port: Postfix's namaddr, which pflogsumm and postfix_exporter parse), while `relay=` is
`host[address]:port` for TCP (namaddrport) and `$myhostname[path]` for UNIX sockets.

Next hops, SASL password lookups and the reading of a parameter family into a `Policy` live in
client_settings.py (split out for issue 19); their public names are re-exported here.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.agents import (
    DeliveryRequest,
    QueuedRecipient,
    RecipientResult,
    Status,
    tls_policy,
)
from sealmail.mta.agents.client_settings import (
    Delivery,
    Endpoint,
    NexthopError,
    Policy,
    Timeouts,
    parse_nexthop,
    plan_delivery,
    read_policy,
    sasl_password,
    sasl_password_keys,
)
from sealmail.mta.agents.smtputf8 import Smtputf8Required, mail_parameters
from sealmail.mta.agents.tls_policy import TlsPolicy, TlsPolicyError
from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN, ClientParameters
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
from sealmail.server.listeners import no_delay

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


class _Session:
    """One connection driven through the client core; every wait is bounded by a timeout."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 conn: ClientConnection, relay: str, timeouts: Timeouts, born: float) -> None:
        self.reader = reader
        self.writer = writer
        self.conn = conn
        self.relay = relay  # relay=, and the TLS lines: host[address]:port as Postfix's namaddrport
        # What the reasons (deferred, bounced) name: Postfix's namaddr, host[address] without
        # the port (smtp_proto.c: "host %s said: ...", session->namaddr); a socket's is the same.
        self.namaddr = relay[: relay.rindex("]") + 1] if "]" in relay else relay
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
                               f"{what} with {self.namaddr}{timed} while {stage}", relay=self.relay)

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
                    f"protocol error with {self.namaddr} while {stage}: {exc}",
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
        text = f"host {self.namaddr} said: {reply} (in reply to {what})"
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


class ClientAgent:
    """The SMTP/LMTP delivery agent; `parameters` is its family (LMTP_CLIENT, SMTP_CLIENT)."""

    def __init__(self, parameters: ClientParameters, mode: Mode, default_port: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.parameters = parameters
        self.prefix = parameters.prefix  # the agent's name in the log
        self.mode = mode
        self.default_port = default_port
        self.clock = clock
        self._idle: dict[tuple[object, ...], list[tuple[_Session, asyncio.TimerHandle]]] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._policies: dict[int, tuple[MainConfig, Policy]] = {}
        self._contexts: dict[tuple[object, ...], tuple[Policy, ssl.SSLContext]] = {}
        # TLS lines and skipped servers log under the program's name, as Postfix's smtp(8).
        self._log = logging.getLogger(f"sealmail.mta.agents.{self.prefix}")

    # -- what the queue manager calls -------------------------------------------------------

    def nexthop_for(self, request: DeliveryRequest) -> str:
        return request.nexthop

    def default_port_for(self, settings: MainConfig) -> int:
        """The port of a next hop written without one."""
        return self.default_port

    async def targets(self, request: DeliveryRequest, nexthop: str,
                      endpoint: Endpoint) -> list[Endpoint]:
        """The servers to try, best first (smtp: MX lookups; lmtp: the next hop itself).
        A DeliveryFailure here answers every recipient."""
        return [endpoint]

    async def secure_targets(self, request: DeliveryRequest, endpoint: Endpoint,
                             servers: list[Endpoint], plan: Delivery,
                             policy: Policy) -> tuple[list[Endpoint], Delivery]:
        """The servers and TLS plan after a destination's own TLS policy (smtp: MTA-STS)."""
        return servers, plan

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        nexthop = self.nexthop_for(request)
        try:
            policy = self._policy(request.settings)
            endpoint = parse_nexthop(
                nexthop, default_port=self.default_port_for(request.settings),
                queue_directory=request.settings.get(MAIN.queue_directory),
                unix_allowed=self.mode is Mode.LMTP,
            )
            plan = plan_delivery(self.parameters, request, policy, nexthop, endpoint)
        except TlsPolicyError as exc:
            # Postfix: the policy is logged as the problem, the mail waits for a fixed one.
            self._log.warning("TLS policy lookup for %s: %s", nexthop, exc)
            return self._fill(request, {}, DeliveryFailure(
                Status.DEFERRED, "4.7.5", "client TLS configuration problem"))
        except (ConfigError, NexthopError, ValueError) as exc:
            log.warning("%s: %s: %s", request.queue_id, self.prefix, exc)
            failure = DeliveryFailure(Status.DEFERRED, "4.3.5",
                                      f"mail system configuration error: {exc}")
            return self._fill(request, {}, failure)
        try:
            servers = await self.targets(request, nexthop, endpoint)
            servers, plan = await self.secure_targets(request, endpoint, servers, plan, policy)
        except DeliveryFailure as failure:
            return self._fill(request, {}, failure)
        answered: dict[int, RecipientResult] = {}
        sessions = 0
        for position, server in enumerate(servers):
            remaining = tuple(r for r in request.recipients if r.index not in answered)
            attempt: dict[int, RecipientResult] = {}
            handshaken = await self._attempt(
                dataclasses.replace(request, recipients=remaining), server, plan, policy,
                attempt)
            sessions += handshaken
            final = position == len(servers) - 1 or (
                policy.session_limit > 0 and sessions >= policy.session_limit)
            if not final:
                # A temporary failure sends the recipient to the next server (Postfix keeps
                # it for a backup MX); sent and bounced ones are done.
                soft = [r for r in attempt.values() if r.status is Status.DEFERRED]
                if soft:
                    self._log.info("%s: %s", request.queue_id, soft[-1].text)
                attempt = {i: r for i, r in attempt.items() if r.status is not Status.DEFERRED}
            answered.update(attempt)
            if final or len(answered) == len(request.recipients):
                break
        return [answered[r.index] for r in request.recipients]

    async def _attempt(self, request: DeliveryRequest, server: Endpoint, plan: Delivery,
                       policy: Policy, answered: dict[int, RecipientResult]) -> bool:
        """One server: a session (cached or new), one transaction; every recipient of
        `request` answered in `answered`. True when a session got past its handshake."""
        key = (server, plan.tls, plan.credentials, request.settings.get(MAIN.myhostname))
        session: _Session | None = None
        handshaken = False
        try:
            while True:
                session = await self._session(key, server, plan, policy, request)
                handshaken = True
                session.no_password = plan.no_password
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
                       or plan.nexthop in policy.cache_destinations)
            if caching and session.conn.state is ClientState.READY and (
                self.clock() - session.born < policy.reuse_time
            ):
                self._keep(key, session, policy.cache_time)
            else:
                await session.close(polite=True, skip_quit_response=policy.skip_quit_response)
        return handshaken

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

    # -- parameters -------------------------------------------------------------------------

    def _policy(self, settings: MainConfig) -> Policy:
        """The transport's parameters, read once per configuration (a reload makes new ones)."""
        cached = self._policies.get(id(settings))
        if cached is not None and cached[0] is settings:
            return cached[1]
        policy = read_policy(self.parameters, settings)
        self._policies[id(settings)] = (settings, policy)
        return policy

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

    async def _cached(self, key: tuple[object, ...], policy: Policy) -> _Session | None:
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

    async def _session(self, key: tuple[object, ...], endpoint: Endpoint, plan: Delivery,
                       policy: Policy, request: DeliveryRequest) -> _Session:
        cached = await self._cached(key, policy)
        if cached is not None:
            return cached
        # At may/encrypt a certificate's trust only shows in the log line: ask for a trusted
        # chain only when that line is wanted and there is something to trust (tls_policy).
        probe = (policy.tls_loglevel >= 1 and policy.trust_anchors
                 and plan.tls.level in ("may", "encrypt"))
        try:
            try:
                return await self._open(endpoint, plan, policy, request, probe=probe)
            except _Untrusted:
                return await self._open(endpoint, plan, policy, request)
        except _TlsFallback:
            # "may": opportunistic TLS that failed its handshake; Postfix goes on in plaintext.
            return await self._open(endpoint, plan, policy, request, tls=False)

    async def _connect(
        self, endpoint: Endpoint, policy: Policy, myhostname: str
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
        # Postfix names a UNIX-socket server "$myhostname[path]", a TCP one "host[address]:port".
        if endpoint.path is not None:
            shown = f"{myhostname}[{endpoint.written or endpoint.path}]"
        else:
            shown = f"{endpoint.host}[{endpoint.address or endpoint.host}]:{endpoint.port}"
        try:
            if endpoint.path is not None:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(endpoint.path, limit=1 << 20),
                    policy.timeouts.connect)
                return reader, writer, shown
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(endpoint.address or endpoint.host, endpoint.port,
                                        limit=1 << 20),
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
        # Each command goes out at once, not after the server's delayed ACK of the last one:
        # asyncio turns Nagle off on the sockets it makes; said here, it never rests on the loop.
        no_delay(writer.get_extra_info("socket"))
        peer = writer.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) and peer else endpoint.host
        return reader, writer, f"{endpoint.host}[{address}]:{endpoint.port}"

    async def _open(self, endpoint: Endpoint, plan: Delivery, policy: Policy,
                    request: DeliveryRequest, *, tls: bool = True,
                    probe: bool = False) -> _Session:
        reader, writer, relay = await self._connect(
            endpoint, policy, request.settings.get(MAIN.myhostname))
        session = _Session(reader, writer, ClientConnection(self.mode), relay, policy.timeouts,
                           self.clock())
        try:
            await self._handshake(session, endpoint, plan, policy, tls=tls, probe=probe)
        except BaseException:
            await session.close(polite=False)
            raise
        return session

    async def _handshake(self, session: _Session, endpoint: Endpoint, plan: Delivery,
                         policy: Policy, *, tls: bool, probe: bool) -> None:
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
        level = plan.tls.level if tls else "none"
        if endpoint.is_unix and level == "may":
            level = "none"  # as Postfix: opportunistic TLS on a private socket is only waste
        if level in tls_policy.MANDATORY and not caps.offers("STARTTLS"):
            raise DeliveryFailure(Status.DEFERRED, "4.7.4",
                                  f"TLS is required, but was not offered by host {session.namaddr}",
                                  relay=session.relay)
        if (level != "none" and caps.offers("STARTTLS")
                and await self._starttls(session, endpoint, plan, policy, probe=probe)):
            await self._hello(session, policy)
        if plan.credentials is not None:
            await self._authenticate(session, policy, plan.credentials)

    async def _hello(self, session: _Session, policy: Policy) -> None:
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

    async def _starttls(self, session: _Session, endpoint: Endpoint, plan: Delivery,
                        policy: Policy, *, probe: bool) -> bool:
        """STARTTLS and the handshake, then what the certificate proved (tls_policy's story).
        False when a "may" server refused STARTTLS (the session goes on in plaintext)."""
        tls = plan.tls
        session.conn.starttls()
        reply = await session.event(policy.timeouts.starttls)
        assert isinstance(reply, CommandReply)
        if not reply.reply.is_success:
            if tls.level == "may":
                return False
            raise DeliveryFailure(Status.DEFERRED, "4.7.5",
                                  f"TLS is required, but host {session.namaddr} refused to start "
                                  f"TLS: {reply.reply}", relay=session.relay)
        verify = tls.authenticated or probe
        context = self._tls_context(policy, tls, verify)
        try:
            await asyncio.wait_for(
                session.writer.start_tls(context, server_hostname=self._sni(tls, endpoint, plan)),
                policy.timeouts.starttls)
        except ssl.SSLCertVerificationError as exc:
            if not tls.authenticated:
                raise _Untrusted() from None  # the probe failed: connect again, untrusted
            self._log.info("%s", tls_policy.verification_failure(exc, session.relay))
            raise DeliveryFailure(Status.DEFERRED, "4.7.5", "Server certificate not trusted",
                                  relay=session.relay) from None
        except (ssl.SSLError, OSError, TimeoutError, ConnectionError) as exc:
            if tls.level == "may":
                raise _TlsFallback() from None
            raise DeliveryFailure(Status.DEFERRED, "4.7.5",
                                  f"Cannot start TLS: handshake failure with {session.namaddr}: "
                                  f"{exc}", relay=session.relay) from None
        session.conn.tls_started()
        ssl_object = session.writer.get_extra_info("ssl_object")
        if ssl_object is None:  # the transport lost it: nothing to check
            return True
        matched = tls.authenticated and tls_policy.matches(
            tls.match, ssl_object.getpeercert() or {}, hostname=endpoint.host,
            nexthop=plan.domain)
        if tls.authenticated and not matched:
            self._log.info("%s", tls_policy.name_mismatch(session.relay))
        if policy.tls_loglevel >= 1:
            trust = ("Anonymous" if ssl_object.getpeercert(binary_form=True) is None
                     else "Verified" if matched else "Trusted" if verify else "Untrusted")
            self._log.info("%s", tls_policy.summary(trust, session.relay, ssl_object, context))
        if tls.authenticated and not matched:
            raise DeliveryFailure(Status.DEFERRED, "4.7.5", "Server certificate not verified",
                                  relay=session.relay)
        return True

    @staticmethod
    def _sni(tls: TlsPolicy, endpoint: Endpoint, plan: Delivery) -> str | None:
        """`*_tls_servername`: none by default (Postfix), the MX host, the next hop, a name."""
        if endpoint.is_unix or not tls.servername:
            return None
        name = {"hostname": endpoint.host, "nexthop": plan.domain}.get(
            tls.servername.lower(), tls.servername)
        try:
            ipaddress.ip_address(name)
            return None  # RFC 6066 3: no literal addresses in SNI
        except ValueError:
            return name

    def _tls_context(self, policy: Policy, tls: TlsPolicy, verify: bool) -> ssl.SSLContext:
        """One context per (configuration, protocols, verify): CA files are read once."""
        key = (id(policy), tls.protocols, verify)
        cached = self._contexts.get(key)
        if cached is not None and cached[0] is policy:
            return cached[1]
        context = tls_policy.client_context(
            verify=verify, cafile=policy.tls_cafile, capath=policy.tls_capath,
            append_default_ca=policy.tls_append_default_ca, protocols=tls.protocols,
            cert_file=policy.tls_cert, key_file=policy.tls_key)
        self._contexts[key] = (policy, context)
        return context

    async def _authenticate(self, session: _Session, policy: Policy,
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
                f"SASL authentication failed; cannot authenticate to server {session.namaddr}: "
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
                f"SASL authentication failed; server {session.namaddr} said: {why}",
                relay=session.relay)
        log.debug("authenticated to %s as %s with %s", session.relay, user, chosen)

    # -- one transaction --------------------------------------------------------------------

    async def _transaction(self, session: _Session, request: DeliveryRequest, policy: Policy,
                           answered: dict[int, RecipientResult]) -> None:
        conn, t = session.conn, policy.timeouts
        caps = conn.capabilities
        assert caps is not None
        content = request.message.read()
        try:
            params = mail_parameters(request, content, caps.offers("SMTPUTF8"),
                                     session.namaddr)
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


class _Untrusted(Exception):
    """A may/encrypt handshake that asked for a trusted chain did not get one: reconnect
    without asking (the log line then says Untrusted)."""


