"""ImapConnection: one client connection: reads, feeds the core, runs commands (the store's in a
worker thread), and answers what needs the connection itself (STARTTLS, LOGIN and AUTHENTICATE,
IDLE, COMPRESS)."""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from sealmail import metrics
from sealmail import sessions as live_sessions
from sealmail.config.options import IMAPD
from sealmail.imap import ImapSession, notify
from sealmail.imap.quick import read_only
from sealmail.imap.session import server_id
from sealmail.proto.imap import (
    NEED_DATA,
    AuthenticateAborted,
    AuthenticateData,
    Capability,
    Command,
    CommandReceived,
    Compress,
    ConnectionClosed,
    ContinuationRequest,
    Event,
    Id,
    Idle,
    IdleDone,
    Login,
    Logout,
    Noop,
    ProtocolError,
    Response,
    ResponseCode,
    StartTLS,
    StatusResponse,
)
from sealmail.proto.imap import (
    Authenticate as AuthenticateCommand,
)
from sealmail.proto.imap import response as replies
from sealmail.proto.sasl import FailureReason, Success
from sealmail.server.imapd.output import ResponseWriter, _Deflate
from sealmail.server.imapd.threads import in_thread
from sealmail.server.read_deadline import ReadDeadline
from sealmail.server.session import (
    Interruption,
    SaslExchange,
    maildrop_name,
    read_client,
)
from sealmail.store.api import AccessKeys
from sealmail.store.auditlog import audit_for
from sealmail.store.errors import StoreError

if TYPE_CHECKING:
    from sealmail.server.imapd.service import ImapService

log = logging.getLogger("sealmail.imapd")
_T = TypeVar("_T")

SASL_SERVICE = "imap"
NOTIFY_POLL_INTERVAL = notify.POLL_INTERVAL  # between commands, a mailbox list each

# Extensions this server implements (RFC 9051 7.2.2 CAPABILITY); AUTH=, STARTTLS and
# LOGINDISABLED are added per session. Both revisions: a client is served as IMAP4rev1 until it
# sends ENABLE IMAP4rev2 (RFC 9051 Appendix A); ENABLE never changes this list (6.3.1).
BASE_CAPABILITIES = (
    "IMAP4rev1",
    "IMAP4rev2",
    "LITERAL+",
    "ID",
    "ENABLE",
    "IDLE",
    "NAMESPACE",
    "UIDPLUS",
    "MULTIAPPEND",
    "CATENATE",
    "MOVE",
    "UNSELECT",
    "CHILDREN",
    "SASL-IR",
    "BINARY",
    "CONDSTORE",
    "QRESYNC",
    "ESEARCH",
    "ESORT",
    "NOTIFY",
    "CONTEXT=SEARCH",
    "CONTEXT=SORT",
    "SEARCHRES",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "WITHIN",
    "ACL",
    "RIGHTS=kxten",
    "QUOTA",
    "QUOTA=RES-STORAGE",
    "QUOTA=RES-MESSAGE",
    "SORT",
    "SORT=DISPLAY",
    "THREAD=ORDEREDSUBJECT",
    "THREAD=REFERENCES",
    "COMPRESS=DEFLATE",
    "STATUS=SIZE",
    "UTF8=ACCEPT",
)

# How IMAP refuses each SASL failure (RFC 5530 response codes), for AUTHENTICATE and LOGIN alike.
SASL_REFUSALS: dict[FailureReason, tuple[str, str | None, str]] = {
    FailureReason.MALFORMED: ("BAD", None, "Malformed authentication exchange"),
    FailureReason.BAD_CREDENTIALS: ("NO", "AUTHENTICATIONFAILED", "Authentication failed"),
    FailureReason.AUTHZ_DENIED: (
        "NO",
        "AUTHORIZATIONFAILED",
        "Authorization as that identity is not allowed",
    ),
    FailureReason.TEMPORARY: ("NO", "UNAVAILABLE", "Authentication is temporarily unavailable"),
    FailureReason.ENCRYPTION_REQUIRED: ("NO", "PRIVACYREQUIRED", "This mechanism needs TLS"),
    FailureReason.UNKNOWN_MECHANISM: ("NO", "CANNOT", "Mechanism not available"),
    FailureReason.TOO_WEAK: ("NO", "PRIVACYREQUIRED", "Mechanism too weak"),
}


def sasl_refusal(reason: FailureReason, tag: str) -> StatusResponse:
    """The tagged response refusing an AUTHENTICATE or LOGIN for `reason`."""
    status, code, text = SASL_REFUSALS.get(reason, ("NO", None, "Authentication failed"))
    return StatusResponse(status, text, tag=tag, code=ResponseCode(code) if code else None)




class ImapConnection(ResponseWriter):
    """One client connection: reads, feeds the core, runs commands, writes responses."""

    def __init__(
        self, service: ImapService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(service, reader, writer)
        self.auth = SaslExchange(
            self,
            service.authenticator,
            SASL_SERVICE,
            log=log,
            command="AUTHENTICATE",
            failure_delay=service.failure_delay,
            max_failures=service.max_auth_failures,
        )
        self.idling = False
        self._carried = b""  # bytes read with the COMPRESS command, to inflate before reading
        self.live: live_sessions.Registration | None = None  # admin who / kick
        self.reads = ReadDeadline()  # one timer for the session's reads

    async def _in_thread(self, function: Callable[..., _T], *args: object) -> _T:
        return await in_thread(self.service.executor, function, *args)

    # -- capabilities -------------------------------------------------------------------------

    def capabilities(self) -> list[str]:
        caps = list(BASE_CAPABILITIES)
        if self.session is None:
            if self.service.tls_context is not None and not self.secure:
                caps.append("STARTTLS")
            if not self.service.authenticator.allows_plaintext(self.secure, SASL_SERVICE):
                caps.append("LOGINDISABLED")  # RFC 9051 6.2.3
            caps += [f"AUTH={m}" for m in self.auth.offered()]
        if isinstance(self.service.store, AccessKeys):
            caps += ["URLAUTH", "URLAUTH=BINARY"]  # RFC 4467, RFC 5524: keys in the store
        if self.compression is not None:
            caps.remove("COMPRESS=DEFLATE")
        return caps

    # -- the loop -----------------------------------------------------------------------------

    async def run(self) -> None:
        if not self.endpoint.admitted(
            self.service.hosts, self.service.daemon_name, self.session_id
        ):
            return
        log.info("%s: connect from %s", self.session_id, self.client)
        if self.service.implicit_tls and not await self._handshake():
            return
        greeting = f"{self.service.config.servername} sealmail IMAP server ready"
        self.conn.send(
            StatusResponse(
                "OK",
                greeting,
                code=ResponseCode(
                    "CAPABILITY", tuple(replies.capability(self.capabilities()).values[1:])
                ),
            )
        )
        await self._flush()
        try:
            await self._loop()
        finally:
            self.reads.close()
            if self.live is not None:
                self.live.remove()
            if self._direct_fd is not None:
                os.close(self._direct_fd)
            log.info("%s: disconnect from %s", self.session_id, self.client)

    async def _loop(self) -> None:
        while True:
            data, self._carried = self._carried or await self._receive(), b""
            if data is Interruption.SHUTDOWN:
                log.info("%s: shutting down: closing session of %s", self.session_id, self.client)
                self.conn.close("Server shutting down")
                await self._flush()
                return
            if data is Interruption.IDLE_TIMEOUT:
                # RFC 9051 5.4: an autologout timer of at least 30 minutes.
                log.info("%s: autologout: idle too long from %s", self.session_id, self.client)
                self.conn.close("Autologout; idle for too long")
                await self._flush()
                return
            compression = self.compression
            pieces = compression.inflate(data) if compression is not None and data else (data,)
            for piece in pieces:
                self.conn.receive_data(piece)
                if not await self._answer_events():
                    return
            await self._flush()
            if not data:
                return

    async def _answer_events(self) -> bool:
        """Every event the core has now; False when the session is over."""
        while True:
            event = self.conn.next_event()
            if event is NEED_DATA:
                return True
            if isinstance(event, ConnectionClosed):
                await self._flush()
                return False
            await self._on_event(event)
            await self._flush()

    async def _receive(self) -> bytes | Interruption:
        """The client's next bytes, or why the session must end (the daemon stops: at once, as
        no command is running; the autologout time passed). While idling, news of the mailbox
        is sent meanwhile (`IdleWatch`); a read cut short for that loses nothing."""
        service = self.service
        if not self.idling:
            if self.session is not None and self.session.notify_spec is not None:
                return await self._receive_notifying()
            return await read_client(
                self.reader, timeout=service.timeout, draining=service.draining, watch=self.reads
            )
        # Idling: the service's IdleWatch cuts the read short when the mailbox has news.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + service.timeout
        service.idle_watch.add(self)
        try:
            while True:
                data = await read_client(self.reader, timeout=max(0.0, deadline - loop.time()),
                                         draining=service.draining, watch=self.reads)
                if data is not Interruption.IDLE_TIMEOUT or loop.time() >= deadline:
                    return data
                session = self.session
                if session is not None:
                    self._send(await self._idle_news(session))
                    await self._flush()
        finally:
            service.idle_watch.discard(self)

    async def _idle_news(self, session: ImapSession) -> list[Response]:
        """What an idling client is told (at IDLE, then whenever the watch saw news): read on
        the loop where quick commands may read (`ImapService.quick_commands`), else in a thread.

        The news is one read of the index (a WAL reader never waits for a writer) and at most a
        \\Recent claim, a short write to recent.db that never fsyncs per claim
        (sealmail.store.disk.recent); never a message file, never a group commit. With 200
        sessions idling on imaptest's busy INBOX each tick woke them all, and their hops to the
        command threads, competing for the GIL with the commands, cost the workers 12-40% more
        CPU per command than reading on the loop (docs/benchmarks.md, "Idle sessions")."""
        if not self.service.quick_commands:
            return await self._in_thread(session.poll)
        self._inline = True  # should the news ever stream (`_stream`), it joins the output
        try:
            return session.poll()
        finally:
            self._inline = False

    async def _receive_notifying(self) -> bytes | Interruption:
        """`_receive` once NOTIFY is set (RFC 5465): news of the watched mailboxes is sent
        every NOTIFY_POLL_INTERVAL while the client is between commands (never inside one, a
        literal half sent)."""
        service = self.service
        loop = asyncio.get_running_loop()
        deadline = loop.time() + service.timeout
        interval = max(service.idle_poll_interval, NOTIFY_POLL_INTERVAL)
        while True:
            wait = max(0.0, min(deadline - loop.time(), interval))
            data = await read_client(self.reader, timeout=wait, draining=service.draining,
                                     watch=self.reads)
            if data is not Interruption.IDLE_TIMEOUT or loop.time() >= deadline:
                return data
            session = self.session
            if session is not None and self.conn.between_commands:
                self._send(await self._in_thread(session.notify_poll))
                await self._flush()

    async def _on_event(self, event: Event) -> None:
        if isinstance(event, CommandReceived):
            started = time.monotonic()
            await self._command(event.command)
            metrics.observe_command(event.command.name, time.monotonic() - started)
            if self.live is not None and self.session is not None:
                selected = self.session.selected
                self.live.update(selected.name if selected is not None else "")
        elif isinstance(event, AuthenticateData):
            await self.auth.step(event.data)  # False (too many failures): the core is closed
        elif isinstance(event, IdleDone):
            self.idling = False
            pending = self.conn.pending
            assert pending is not None
            self._send([StatusResponse("OK", "IDLE terminated", tag=pending.tag)])
        elif isinstance(event, AuthenticateAborted):
            self.auth.abort(event.reason)  # the core sent the tagged BAD (RFC 9051 6.2.2)
        elif isinstance(event, ProtocolError):
            self.idling = False
            log.info(
                "%s: refused input from %s: %s",
                self.session_id,
                self.client,
                event.error.reply_bytes().decode("utf-8", "replace").strip(),
            )

    async def _command(self, command: Command) -> None:
        tag = command.tag
        if isinstance(command, Capability):
            self._send(
                [
                    replies.capability(self.capabilities()),
                    StatusResponse("OK", "CAPABILITY completed", tag=tag),
                ]
            )
        elif isinstance(command, Logout):
            self._send(
                [
                    StatusResponse("BYE", "LOGOUT received"),
                    StatusResponse("OK", "LOGOUT completed", tag=tag),
                ]
            )
        elif isinstance(command, Id) or (isinstance(command, Noop) and self.session is None):
            out: list[Response] = []
            if isinstance(command, Id):
                out.append(replies.id_response(server_id()))
            self._send([*out, StatusResponse("OK", f"{command.name} completed", tag=tag)])
        elif isinstance(command, StartTLS):
            await self._starttls(command)
        elif isinstance(command, Login):
            await self._login(command)
        elif isinstance(command, AuthenticateCommand):
            await self._authenticate(command)
        elif isinstance(command, Idle):
            # RFC 2177 3: news is sent as it happens until DONE.
            self.idling = True
            self._send([ContinuationRequest("idling")])
            assert self.session is not None
            self._send(await self._idle_news(self.session))
        elif isinstance(command, Compress):
            await self._compress(command)
        else:
            assert self.session is not None
            if self.service.quick_commands and read_only(self.session, command):
                responses = self._execute_here(self.session, command)
            else:
                responses = await self._execute_in_thread(self.session, command)
            log.debug(
                "%s: %s %s",
                self.session_id,
                command.wire_name,
                responses[-1].status if isinstance(responses[-1], StatusResponse) else "",
            )

    # -- TLS and compression -----------------------------------------------------------------

    async def _handshake(self, go_ahead: bytes = b"") -> bool:
        context = self.service.tls_context
        assert context is not None
        return await self.handshake(context, go_ahead)

    async def _starttls(self, command: StartTLS) -> None:
        if self.service.tls_context is None or self.secure:
            self._send([StatusResponse("NO", "TLS is not available", tag=command.tag)])
            return
        self._send([StatusResponse("OK", "Begin TLS negotiation now", tag=command.tag)])
        if not await self._handshake(self.conn.data_to_send()):
            raise ConnectionError("TLS handshake failed")
        self.conn.tls_started()

    async def _compress(self, command: Compress) -> None:
        if self.compression is not None:
            # RFC 4978 3: a second COMPRESS gets NO [COMPRESSIONACTIVE].
            self._send(
                [
                    StatusResponse(
                        "NO",
                        "Compression is already active",
                        tag=command.tag,
                        code=ResponseCode("COMPRESSIONACTIVE"),
                    )
                ]
            )
            return
        if command.mechanism.upper() != "DEFLATE":
            self._send(
                [StatusResponse("BAD", f"Unknown mechanism {command.mechanism}", tag=command.tag)]
            )
            return
        self._send([StatusResponse("OK", "DEFLATE active", tag=command.tag)])
        await self._flush()
        self._carried = self.conn.compression_started()  # compressed already: read next
        self.compression = _Deflate()

    # -- authentication: the exchange is session.SaslExchange; these are IMAP's answers ---------

    async def _login(self, command: Login) -> None:
        if not self.service.authenticator.allows_plaintext(self.secure, SASL_SERVICE):
            # RFC 9051 6.2.3: refuse LOGIN when LOGINDISABLED is advertised.
            self._send(
                [
                    StatusResponse(
                        "NO",
                        "LOGIN is disabled without TLS",
                        tag=command.tag,
                        code=ResponseCode("PRIVACYREQUIRED"),
                    )
                ]
            )
            return
        # False (too many failures) needs nothing more here: sasl_give_up closed the core.
        await self.auth.password(command.userid, command.password, "LOGIN")

    async def _authenticate(self, command: AuthenticateCommand) -> None:
        initial: bytes | None = None
        if command.initial_response is not None:
            # SASL-IR (RFC 4959); the parser has checked it is base64, "=" is b"".
            initial = base64.b64decode(command.initial_response, validate=True)
        await self.auth.start(command.mechanism.upper(), initial)

    def _pending_tag(self) -> str:
        pending = self.conn.pending
        assert pending is not None  # the LOGIN or AUTHENTICATE being answered
        return pending.tag

    def sasl_challenge(self, data: bytes) -> None:
        self._send([ContinuationRequest(challenge=data)])

    def sasl_refuse(self, reason: FailureReason) -> None:
        self._send([sasl_refusal(reason, self._pending_tag())])

    async def sasl_accept(self, result: Success) -> bool:
        await self._open_session(result.authzid, self._pending_tag())
        return True

    def sasl_give_up(self) -> None:
        self.conn.close("Too many authentication failures")

    async def _open_session(self, identity: str, tag: str) -> None:
        config = self.service.config
        try:
            inbox = maildrop_name(identity, config)
        except StoreError as exc:
            log.info("%s: login %s: no mailbox: %s", self.session_id, identity, exc)
            self._send(
                [
                    StatusResponse(
                        "NO",
                        "No mailbox for this user",
                        tag=tag,
                        code=ResponseCode("AUTHORIZATIONFAILED"),
                    )
                ]
            )
            return
        admins = self.service.authenticator.admins(SASL_SERVICE)
        self.session = ImapSession(
            self.service.store,
            config,
            identity,
            inbox,
            is_admin=identity in admins,
            clock=self.service.clock,
            max_message_size=self.service.max_message_size,
            audit=audit_for(config.get(IMAPD.auditlog), self.session_id),
        )
        loop = asyncio.get_running_loop()
        self.session.stream = lambda responses: self._stream(loop, responses)
        log.info(  # Cyrus's line, SESSIONID last
            "login: %s %s %s%s User logged in SESSIONID=<%s>",
            self.client,
            identity,
            self.auth.logged_mechanism,
            "+TLS" if self.secure else "",
            self.session_id,
        )
        self.live = live_sessions.register(
            live_sessions.registry_directory(config.configdirectory),
            live_sessions.LiveSession(self.session_id, identity, self.service.daemon_name,
                                      "imap", self.endpoint.client_ip or "", time.time(),
                                      os.getpid()),
            self._kicked,
        )
        self._send(
            [
                StatusResponse(
                    "OK",
                    "Logged in",
                    tag=tag,
                    code=ResponseCode(
                        "CAPABILITY", tuple(replies.capability(self.capabilities()).values[1:])
                    ),
                )
            ]
        )


