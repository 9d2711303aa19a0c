"""What every daemon session shares: who the client is, tcp_wrappers, TLS, SASL, ids, closing.

lmtpd, smtpd, pop3d, sieved and imapd differ in their protocol cores; the way they learn the
peer, refuse it by hosts.allow (before any greeting, as tcpd), turn on TLS and log it, run the
SASL AUTH exchange (`SaslExchange`; each protocol only says how it answers), wait for the
client's bytes and drive the core is one piece of code here.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
import os
import secrets
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

from sealmail.auth.authenticator import Authenticator, MechanismUnavailable
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.proto.core import NEED_DATA, ConnectionClosed
from sealmail.proto.sasl import Challenge, Failure, FailureReason, ServerMechanism, Success
from sealmail.server.listeners import accept_tls, no_delay
from sealmail.server.read_deadline import ReadDeadline
from sealmail.server.tls import cipher_bits, peer_identity
from sealmail.store.errors import MailboxNotFound, StoreError
from sealmail.store.names import user_inbox, validate_internal

log = logging.getLogger("sealmail.session")

TLS_HANDSHAKE_TIMEOUT = 180.0  # seconds, as Cyrus gives a handshake
CLOSE_TIMEOUT = 30.0  # seconds for a closing client to take the last output
_counter = itertools.count(1)


def new_session_id() -> str:
    """Short, unique across processes and restarts, easy to grep."""
    return f"{os.getpid():x}{next(_counter):x}{secrets.token_hex(3)}".upper()


@dataclass(frozen=True, slots=True)
class ClientEndpoint:
    """The two ends of a connection; UNIX-socket clients have no addresses."""

    is_unix: bool
    client_ip: str | None
    server_ip: str | None

    @classmethod
    def of(cls, writer: asyncio.StreamWriter) -> ClientEndpoint:
        sock = writer.get_extra_info("socket")
        if sock is None or sock.family == socket.AF_UNIX:
            return cls(True, None, None)
        peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
        return cls(False, str(peer[0]), str(local[0]))

    @property
    def label(self) -> str:
        """How logs and Received: name the client."""
        return "unix socket" if self.is_unix else f"[{self.client_ip}]"

    def admitted(self, hosts: HostsAccess, daemon: str, session_id: str) -> bool:
        """hosts.allow / hosts.deny for a TCP client (UNIX sockets are not wrapped)."""
        if self.client_ip is None:
            return True
        verdict = hosts.check(daemon, self.client_ip, self.server_ip)
        if not verdict.allowed:
            log.warning(
                "%s: refused connect from %s (%s: %s)",
                session_id,
                self.label,
                daemon,
                verdict.rule or "no rule",
            )
        return verdict.allowed


@dataclass(frozen=True, slots=True)
class TlsInfo:
    bits: int  # the cipher's secret bits, what sasl_minimum_layer counts
    peer: str | None  # identity of a verified client certificate (EXTERNAL)


async def start_tls(
    writer: asyncio.StreamWriter, context: ssl.SSLContext, session_id: str, client: str
) -> TlsInfo | None:
    """TLS on this connection (unless the listener did it at accept); None if it failed."""
    if writer.get_extra_info("ssl_object") is None:
        try:
            await writer.start_tls(context, ssl_handshake_timeout=TLS_HANDSHAKE_TIMEOUT)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            log.info("%s: TLS handshake with %s failed: %s", session_id, client, exc)
            return None
    ssl_object = writer.get_extra_info("ssl_object")
    info = TlsInfo(cipher_bits(ssl_object), peer_identity(ssl_object))
    log.info(
        "%s: TLS %s %s (%d bits)%s",
        session_id,
        ssl_object.version(),
        ssl_object.cipher()[0],
        info.bits,
        f" client certificate {info.peer}" if info.peer else "",
    )
    return info


class ClientSession:
    """What one daemon session starts with, whatever its protocol: the streams, an id, who the
    client is, and how the connection is protected (what `SaslHost` reads)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.session_id = new_session_id()
        self.endpoint = ClientEndpoint.of(writer)
        self.client = self.endpoint.label
        self.secure = False
        self.tls_bits: int | None = None  # the cipher's secret bits, once TLS is on
        self.tls_peer: str | None = None  # the identity of a verified client certificate

    async def handshake(
        self,
        context: ssl.SSLContext,
        go_ahead: bytes = b"",
        *,
        timeout: float = TLS_HANDSHAKE_TIMEOUT,
    ) -> bool:
        """Send `go_ahead` (the core's yes to STARTTLS/STLS) if any, then turn TLS on within
        `timeout` seconds; False when the handshake failed and the session must end."""
        writer = self.writer
        if go_ahead:
            writer.write(go_ahead)
            await writer.drain()
            # RFC 3207 5, RFC 2595 4 (CVE-2011-0411): what came in clear after the client's
            # command, and was not yet read, must not be read as if it came under TLS. The core
            # dropped what it had been fed; the StreamReader may hold more (it has no public
            # way to drop it).
            self.reader._buffer.clear()  # type: ignore[attr-defined]
        try:
            if writer.get_extra_info("ssl_object") is None:
                # asyncio and uvloop alike abort a handshake that outlasts the timeout with
                # ConnectionAbortedError.
                await writer.start_tls(context, ssl_handshake_timeout=timeout)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            self.tls_failed(exc)
            return False
        ssl_object = writer.get_extra_info("ssl_object")
        self.secure = True
        self.tls_bits, self.tls_peer = cipher_bits(ssl_object), peer_identity(ssl_object)
        self.tls_established(ssl_object)
        return True

    # -- the log lines of the handshake (smtpd writes Postfix's instead) ------------------------

    def tls_failed(self, error: Exception) -> None:
        log.info("%s: TLS handshake with %s failed: %s", self.session_id, self.client, error)

    def tls_established(self, ssl_object: ssl.SSLObject) -> None:
        name = (ssl_object.cipher() or ("",))[0]
        log.info(
            "%s: TLS %s %s (%d bits)%s",
            self.session_id,
            ssl_object.version(),
            name,
            self.tls_bits,
            f" client certificate {self.tls_peer}" if self.tls_peer else "",
        )


class Handler(Protocol):
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...


async def serve_session(
    tasks: set[asyncio.Task[None]], writer: asyncio.StreamWriter, run: Awaitable[None]
) -> None:
    """Run one session to its end, as every daemon's `handle` does.

    The task is in `tasks` meanwhile (a stopping daemon waits for it or drains it); a client that
    vanishes mid-session, or breaks TLS, ends it quietly; the connection is always closed.
    """
    task = asyncio.current_task()
    assert task is not None
    tasks.add(task)
    try:
        await run
    except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
        pass
    finally:
        tasks.discard(task)
        await close(writer)


async def serve_connection(
    service: Handler, connection: socket.socket, implicit_tls: ssl.SSLContext | None = None
) -> None:
    """Serve one accepted connection to its end with server-side streams (as
    asyncio.start_server makes them, so a later STARTTLS handshakes as the server); a TCP one
    without Nagle's delay, as `listeners.serve_on` serves theirs."""
    if implicit_tls is not None:
        streams = await open_implicit_tls(service, connection, implicit_tls)
        if streams is not None:
            await service.handle(*streams)
        return
    no_delay(connection)
    loop = asyncio.get_running_loop()
    finished = loop.create_future()

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await service.handle(reader, writer)
        finally:
            if not finished.done():
                finished.set_result(None)

    protocol = asyncio.StreamReaderProtocol(asyncio.StreamReader(), session)
    await loop.connect_accepted_socket(lambda: protocol, connection, ssl=implicit_tls)
    await finished


async def open_implicit_tls(
    service: Handler, connection: socket.socket, context: ssl.SSLContext
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
    """imaps/pop3s: the handshake on the session's own unread connection (not the listener's,
    which asyncio and uvloop log only in debug mode), so a failure gets Cyrus's line,
    `imaps TLS negotiation failed: [ADDR]`, and its reason; None then."""
    try:
        peer = connection.getpeername()
    except OSError:  # gone before its turn
        connection.close()
        return None
    client = "unix socket" if connection.family == socket.AF_UNIX else f"[{peer[0]}]"
    try:
        return await accept_tls(connection, context, TLS_HANDSHAKE_TIMEOUT)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        name = getattr(service, "implicit_tls_name", "tls")
        log.info("%s TLS negotiation failed: %s (%s)", name, client, _handshake_failure(exc))
        return None


def _handshake_failure(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, (ConnectionAbortedError, TimeoutError)):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return "lost connection"


def maildrop_name(identity: str, config: ImapdConfig) -> str:
    """The INBOX of a canonical SASL identity (`alice`, or `alice@realm` outside servername).

    A realm other than the server's is a mail domain only under virtdomains; otherwise such a
    user has no maildrop here (never someone else's: `alice@other` is not `alice`).
    """
    user, at, realm = identity.partition("@")
    domain: str | None = None
    if at:
        default_domain = (config.get(IMAPD.defaultdomain) or "").lower()
        if config.get(IMAPD.virtdomains) == "off" and realm.lower() != default_domain:
            raise MailboxNotFound(f"no maildrop for {identity!r}: virtdomains is off")
        domain = None if realm.lower() == default_domain else realm.lower()
    name = user_inbox(user, domain)
    try:
        validate_internal(name)
    except StoreError:
        raise MailboxNotFound(f"no maildrop for {identity!r}") from None
    return name


class SaslHost(Protocol):
    """A daemon session as its SASL exchange sees it: how its connection is protected, and how
    its protocol answers each step of AUTH / AUTHENTICATE (or of a password command)."""

    @property
    def secure(self) -> bool: ...

    @property
    def tls_bits(self) -> int | None: ...

    @property
    def tls_peer(self) -> str | None: ...

    @property
    def session_id(self) -> str: ...

    @property
    def client(self) -> str: ...

    def sasl_challenge(self, data: bytes) -> None:
        """Send the mechanism's challenge; the client's answer comes back as an event."""

    def sasl_refuse(self, reason: FailureReason) -> None:
        """Refuse the pending command with the protocol's reply for `reason`."""

    async def sasl_accept(self, result: Success) -> bool:
        """The client proved `result.authzid`: log it in (or refuse it); False ends the session."""
        ...

    def sasl_give_up(self) -> None:
        """Too many failures: send the protocol's goodbye; the session ends after it."""


# Cyrus SASL's codes and texts (sasl_errstring) for what a failed exchange logs, as Cyrus does.
SASL_ERRORS = {
    FailureReason.BAD_CREDENTIALS: "SASL(-13): authentication failure",
    FailureReason.AUTHZ_DENIED: "SASL(-14): authorization failure",
    FailureReason.MALFORMED: "SASL(-5): bad protocol / cancel",
    FailureReason.TEMPORARY: "SASL(-1): generic failure",
    FailureReason.TOO_WEAK: "SASL(-15): mechanism too weak for this user",
    FailureReason.ENCRYPTION_REQUIRED: "SASL(-16): encryption needed to use mechanism",
    FailureReason.UNKNOWN_MECHANISM: "SASL(-4): no mechanism available",
}

PENALTY_DELAY_CAP = 15.0  # seconds: the most a failure waits for other sessions' failures


class SaslExchange:
    """The SASL exchange (RFC 4422 3) of one daemon session, the same in every protocol.

    The mechanism is started through the Authenticator (which decides what this connection may
    use), and stepped in a worker thread, since a check may run scrypt or ask saslauthd. Each
    failed attempt waits `failure_delay` times the failures so far before its refusal goes out,
    and after `max_failures` the session ends (Cyrus's auth_failure_delay, auth_max_failures).
    A temporary failure (the password backend is down) is not the client's fault and is not
    counted, unless `temporary_counts`.

    Logs name the session, the client, the mechanism and a claimed user name; never a response
    or a password, which only the mechanism sees.
    """

    def __init__(
        self,
        host: SaslHost,
        authenticator: Authenticator,
        service: str,
        *,
        log: logging.Logger,
        command: str = "AUTH",
        failure_delay: float = 0.0,
        max_failures: int = 3,
        success_data: bool = False,
        temporary_counts: bool = False,
    ) -> None:
        self.host = host
        self.authenticator = authenticator
        self.service = service  # the SASL service name: "pop", "sieve", "lmtp", "smtp", "imap"
        self.log = log
        self.command = command  # how the protocol names its AUTH command, for the log
        self.failure_delay = failure_delay
        self.max_failures = max_failures
        self.success_data = success_data  # RFC 5804 2.1: the final data may ride in the OK
        self.temporary_counts = temporary_counts
        self.mechanism: ServerMechanism | None = None
        self.mechanism_name = ""
        self.password_command = ""  # set while a password command is checked
        self.failures = 0

    def offered(self) -> tuple[str, ...]:
        """The mechanisms to advertise now (they change with TLS), strongest first."""
        host = self.host
        return self.authenticator.available_mechanisms(
            host.secure, self.service, tls_bits=host.tls_bits, tls_peer_identity=host.tls_peer
        )

    async def start(self, mechanism: str, initial_response: bytes | None) -> bool:
        """AUTH `mechanism` [initial-response]; False ends the session."""
        self.mechanism_name, self.password_command = mechanism, ""
        started = self._start(mechanism)
        if isinstance(started, FailureReason):
            self._log_refused(started)
            self.host.sasl_refuse(started)
            return True
        self.mechanism = started
        return await self.step(initial_response)

    async def step(self, data: bytes | None) -> bool:
        """The client's answer to the last challenge (None: no initial response)."""
        mechanism = self.mechanism
        if mechanism is None:
            self.host.sasl_refuse(FailureReason.MALFORMED)
            return True
        result = await asyncio.to_thread(mechanism.step, data)
        if isinstance(result, Challenge):
            self.host.sasl_challenge(result.data)
            return True
        self.mechanism = None
        return await self._verdict(result, None)

    async def password(self, user: str, password: str, command: str) -> bool:
        """A password command (POP3 USER/PASS, IMAP LOGIN): checked as a PLAIN exchange, so
        the same policy (allowplaintext, sasl_mech_list, backends) decides."""
        self.mechanism_name = self.password_command = command
        started = self._start("PLAIN")
        if isinstance(started, FailureReason):
            self.host.sasl_refuse(started)
            return True
        message = b"\0" + user.encode("utf-8") + b"\0" + password.encode("utf-8")
        result = await asyncio.to_thread(started.step, message)
        return await self._verdict(result, user)

    def abort(self, reason: str) -> None:
        """The client cancelled the exchange ("*") or the core ended it: forget the mechanism."""
        self.mechanism = None
        self._log_aborted(reason)

    async def count_failure(self, refuse: Callable[[], None], claimed: str | None = None) -> bool:
        """One failed attempt: wait, longer each time, then `refuse`; past the limit the host
        says goodbye and False ends the session. The wait also grows with the client's and the
        claimed user's recent failures in other sessions (up to PENALTY_DELAY_CAP)."""
        self.failures += 1
        keys = [f"client {self.host.client}"] + ([f"user {claimed}"] if claimed else [])
        recent = self.authenticator.penalty.record(*keys)
        if self.failure_delay:
            delay = self.failure_delay * self.failures
            if recent > self.failures:
                delay = max(delay, min(self.failure_delay * recent, PENALTY_DELAY_CAP))
                self.log.info("%s: %d recent failed logins from %s%s; answering in %.0fs",
                              self.host.session_id, recent, self.host.client,
                              f" or for {claimed}" if claimed else "", delay)
            await asyncio.sleep(delay)
        refuse()
        if self.failures >= self.max_failures:
            self.host.sasl_give_up()
            return False
        return True

    def _start(self, mechanism: str) -> ServerMechanism | FailureReason:
        host = self.host
        try:
            return self.authenticator.start(
                mechanism,
                host.secure,
                host.tls_peer,
                service=self.service,
                tls_bits=host.tls_bits,
                success_data=self.success_data,
            )
        except MechanismUnavailable as exc:
            return exc.reason

    async def _verdict(self, result: Success | Failure | Challenge, claimed: str | None) -> bool:
        if isinstance(result, Success):
            return await self.host.sasl_accept(result)
        assert isinstance(result, Failure)
        self._log_failed(result, claimed)
        if result.reason is FailureReason.TEMPORARY and not self.temporary_counts:
            self.host.sasl_refuse(result.reason)
            return True
        return await self.count_failure(partial(self.host.sasl_refuse, result.reason), claimed)

    # -- the log lines (smtpd writes Postfix's instead) -------------------------------------------

    def _log_refused(self, reason: FailureReason) -> None:
        self.log.info(
            "%s: %s %s refused from %s: %s",
            self.host.session_id,
            self.command,
            self.mechanism_name,
            self.host.client,
            reason.value,
        )

    def _log_failed(self, failure: Failure, claimed: str | None) -> None:
        """Cyrus's badlogin line, which fail2ban's cyrus-imap filter and operators' greps read:
        `badlogin: CLIENT MECH [USER] [SASL(-13): authentication failure: DETAIL]`."""
        self.log.warning(
            "badlogin: %s %s%s [%s: %s] SESSIONID=<%s>",
            self.host.client,
            self.logged_mechanism,
            f" {claimed}" if claimed else "",
            SASL_ERRORS.get(failure.reason, "SASL(-1): generic failure"),
            failure.detail,
            self.host.session_id,
        )

    @property
    def logged_mechanism(self) -> str:
        """The mechanism as Cyrus logs it: a password command (LOGIN, USER/PASS) is plaintext."""
        name = self.mechanism_name
        return "plaintext" if name == self.password_command else name

    def _log_aborted(self, reason: str) -> None:
        host = self.host
        self.log.info(
            "%s: %s aborted from %s: %s", host.session_id, self.command, host.client, reason
        )


class Core(Protocol):
    """What every sans-I/O server core offers its driver."""

    @property
    def closed(self) -> bool: ...

    def receive_data(self, data: bytes) -> None: ...

    def next_event(self) -> object: ...

    def data_to_send(self) -> bytes: ...


async def drive(
    core: Core,
    writer: asyncio.StreamWriter,
    read: Callable[[], Awaitable[bytes | None]],
    on_event: Callable[[Any], Awaitable[bool]],
    need_data: object = NEED_DATA,
    closed: type = ConnectionClosed,
    pace: Callable[[bytes], float] | None = None,
) -> None:
    """The one read -> feed -> events -> write loop of every daemon.

    `read` gives the client's next bytes, or None when the session must end (it has written its
    own goodbye: timeout, shutdown); `on_event` acts on one event and returns False to end the
    session. Replies a batch of pipelined commands produced go out in one write. `need_data` and
    `closed` are sealmail.proto.core's unless the core has its own. `pace` says how long to
    wait before writing given replies (smtpd's tarpit for clients that make errors).
    """
    writer.write(core.data_to_send())
    going_on = True
    while going_on and not core.closed:
        data = await read()
        if data is None:
            break
        core.receive_data(data)
        while not core.closed:
            event = core.next_event()
            if event is need_data or isinstance(event, closed):
                break
            if not await on_event(event):
                going_on = False
                break
        out = core.data_to_send()
        if out:
            if pace is not None and (delay := pace(out)) > 0:
                await asyncio.sleep(delay)
            writer.write(out)
            await writer.drain()
        if not data:
            break
    out = core.data_to_send()
    if out:
        if pace is not None and (delay := pace(out)) > 0:
            await asyncio.sleep(delay)
        writer.write(out)


class Interruption(enum.Enum):
    """Why `read_client` gave no bytes: the session must end with the protocol's goodbye."""

    SHUTDOWN = enum.auto()  # the daemon is stopping
    IDLE_TIMEOUT = enum.auto()  # the client said nothing for the whole timeout


class Drain:
    """A daemon's stop, which also ends its sessions' waits for client bytes.

    Each read waits under one asyncio.timeout (or its session's `ReadDeadline`), and `set`
    moves the deadline of every read under way to now: waiting on the read and on the stop at
    once took two tasks and an asyncio.wait per read, a good part of a short session's CPU.
    """

    def __init__(self) -> None:
        self._stopped = asyncio.Event()
        self._reads: set[asyncio.Timeout | ReadDeadline] = set()

    def is_set(self) -> bool:
        return self._stopped.is_set()

    def set(self) -> None:
        self._stopped.set()
        if self._reads:
            now = asyncio.get_running_loop().time()
            for read in self._reads:
                read.reschedule(now)

    async def wait(self) -> None:
        await self._stopped.wait()


async def read_client(
    reader: asyncio.StreamReader,
    *,
    timeout: float,
    draining: Drain,
    idle: Callable[[], bool] | None = None,
    watch: ReadDeadline | None = None,
) -> bytes | Interruption:
    """The client's next bytes (b"" at its end), or why the session must stop waiting for them.

    A stop (`draining` set) ends the wait at once; with `idle`, it waits until the session is
    idle, so a transaction under way always completes, and applies at once if it already is.
    A cancelled StreamReader.read keeps what it had buffered, so nothing the client sent is lost.
    `watch`, the session's own timer for its reads, saves an asyncio.timeout per read.
    """
    if draining.is_set() and (idle is None or idle()):
        return Interruption.SHUTDOWN
    deadline = asyncio.get_running_loop().time() + timeout
    reads = draining._reads
    while True:
        if watch is not None:
            reads.add(watch)
            try:
                data = await watch.read(reader, deadline)
            finally:
                reads.discard(watch)
            if data is not None:
                return data
        else:
            try:
                async with asyncio.timeout_at(deadline) as read:
                    reads.add(read)
                    try:
                        return await reader.read(65536)
                    finally:
                        reads.discard(read)
            except TimeoutError:
                pass
        if not draining.is_set() or asyncio.get_running_loop().time() >= deadline:
            return Interruption.IDLE_TIMEOUT
        if idle is None or idle():
            return Interruption.SHUTDOWN
        # Stopping, but a transaction is under way: wait for the client to finish it.


async def close(writer: asyncio.StreamWriter) -> None:
    """Closes after the last output has gone; a client that has not taken it within
    CLOSE_TIMEOUT is cut off (the transport would otherwise hold the socket and its buffer for
    as long as the client stays connected without reading)."""
    writer.close()
    try:
        async with asyncio.timeout(CLOSE_TIMEOUT):
            await writer.wait_closed()
    except TimeoutError:
        writer.transport.abort()
    except Exception:  # a connection that failed is closed all the same
        pass
