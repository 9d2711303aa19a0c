"""sieved: the asyncio driver around the sans-I/O ManageSieve core, over the per-user script store.

Bytes in -> `sealmail.proto.managesieve.ServerConnection` events -> decisions -> responses out.
The protocol rules live in the core; this module answers what needs the outside world:

* SASL (sealmail.auth.Authenticator, service "sieve"), in worker threads since a check may run
  scrypt or ask saslauthd; the mechanism's final data rides in `OK (SASL ...)` (RFC 5804 2.1);
* TLS (STARTTLS), hosts.allow, the idle timeout;
* scripts: validation with the Sieve library (`validate`), quotas and files with
  `sealmail.store.sieve_scripts.SieveScriptStore`, in worker threads (they fsync).

The logged-in identity (canonical: `alice`, or `alice@realm` outside servername) is the key of
the user's script directory; lmtpd finds the active script under the same key.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sealmail.auth.authenticator import Authenticator
from sealmail.config.hosts_access import HostsAccess
from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.managesieve import script_error
from sealmail.proto.managesieve import (
    NO,
    OK,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Capabilities,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    Limits,
    ListScripts,
    Logout,
    ProtocolError,
    PutScript,
    RenameScript,
    ResponseCode,
    ServerConnection,
    SetActive,
    StartTLS,
    Unauthenticated,
    sasl_failure,
)
from sealmail.proto.sasl import FailureReason, Success
from sealmail.server import session as sessions
from sealmail.server.tls import server_context
from sealmail.sieve import SUPPORTED_EXTENSIONS, SieveCompileError, SieveLimits, compile_script
from sealmail.store.errors import StoreError
from sealmail.store.sieve_scripts import SieveScriptStore

log = logging.getLogger("sealmail.sieved")

SASL_SERVICE = "sieve"  # what Cyrus's timsieved passes to sasl_server_new
TIMEOUT = "timeout"  # Cyrus's idle timeout option, in minutes (undeclared: the default below)
DEFAULT_TIMEOUT_MINUTES = 32


def validate(text: str) -> list[str]:
    """Every problem that keeps `text` from compiling, each with its line and column; [] if none.

    The one place sieved asks the Sieve library; PUTSCRIPT and CHECKSCRIPT reply with these.
    """
    try:
        compile_script(text)
    except SieveCompileError as exc:
        return [str(problem) for problem in exc.problems]
    return []


def sieve_capabilities() -> Capabilities:
    """SIEVE, NOTIFY and MAXREDIRECTS as the Sieve library supports them (RFC 5804 1.7)."""
    extensions = tuple(sorted(SUPPORTED_EXTENSIONS))
    return Capabilities(
        implementation="sealmail",
        sieve_extensions=extensions,
        # RFC 5804 1.7: NOTIFY lists the enotify methods (RFC 5435); sealmail has mailto.
        notify_methods=("mailto",) if "enotify" in SUPPORTED_EXTENSIONS else (),
        max_redirects=SieveLimits().max_redirects,
    )


@dataclass(frozen=True, slots=True)
class SievedSettings:
    """What sieved takes from imapd.conf, in seconds where it is a duration."""

    timeout: float = DEFAULT_TIMEOUT_MINUTES * 60.0
    failure_delay: float = 2.0
    max_auth_failures: int = 3

    @classmethod
    def from_config(cls, config: ImapdConfig) -> SievedSettings:
        minutes = config.integer(TIMEOUT)
        return cls(
            timeout=(minutes or DEFAULT_TIMEOUT_MINUTES) * 60.0,
            failure_delay=float(config.integer("auth_failure_delay")),
            max_auth_failures=config.integer("auth_max_failures"),
        )


class ManageSieveService:
    """Serves ManageSieve sessions (cyrus.conf `sieve cmd="sieved"`)."""

    def __init__(
        self,
        config: ImapdConfig,
        scripts: SieveScriptStore,
        *,
        settings: SievedSettings | None = None,
        authenticator: Authenticator | None = None,
        tls_context: ssl.SSLContext | None = None,
        daemon_name: str = "sieve",
        validator: Callable[[str], list[str]] = validate,
    ) -> None:
        self.config = config
        self.scripts = scripts
        self.settings = settings or SievedSettings.from_config(config)
        self.authenticator = authenticator or Authenticator(config)
        self.tls_context = tls_context if tls_context is not None else server_context(config)
        self.daemon_name = daemon_name
        self.validator = validator
        self.capabilities = sieve_capabilities()
        self.hosts = HostsAccess.from_config(config)
        self.sessions: set[asyncio.Task[None]] = set()
        self.draining = sessions.Drain()

    def drain(self) -> None:
        """The daemon is stopping: sessions end with BYE (TRYLATER) at their next wait for the
        client (a command under way, such as PUTSCRIPT, completes first)."""
        self.draining.set()

    def close(self) -> None:
        """Nothing is held between sessions: scripts are files written whole."""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        session = ManageSieveSession(self, reader, writer)
        await sessions.serve_session(self.sessions, writer, session.run())


class ManageSieveSession(sessions.ClientSession):
    """One client connection: reads, feeds the core, acts on its events, writes responses."""

    def __init__(
        self,
        service: ManageSieveService,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.secure = writer.get_extra_info("ssl_object") is not None
        self.auth = sessions.SaslExchange(
            self,
            service.authenticator,
            SASL_SERVICE,
            log=log,
            command="AUTHENTICATE",
            failure_delay=service.settings.failure_delay,
            max_failures=service.settings.max_auth_failures,
            success_data=True,  # RFC 5804 2.1: the mechanism's last data rides in the OK
        )
        self.user: str | None = None

    # -- the loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        service = self.service
        if not self.endpoint.admitted(service.hosts, service.daemon_name, self.session_id):
            return  # as tcpd: no greeting at all
        log.info("%s: connect from %s", self.session_id, self.client)
        self.conn = conn = ServerConnection(
            service.capabilities,
            self.session_id,
            limits=Limits(max_literal_size=service.scripts.max_script_size),
            auth_mechanisms=self.auth.offered(),
            starttls_available=service.tls_context is not None and not self.secure,
            tls_active=self.secure,
            greeting_text=f"{service.config.servername} sealmail ManageSieve ready",
        )
        await sessions.drive(conn, self.writer, self._read, self._on_event)
        log.info("%s: disconnect from %s", self.session_id, self.client)

    async def _read(self) -> bytes | None:
        data = await sessions.read_client(
            self.reader, timeout=self.service.settings.timeout, draining=self.service.draining
        )
        if data is sessions.Interruption.IDLE_TIMEOUT:
            log.info("%s: idle too long, closing %s", self.session_id, self.client)
            self.conn.bye("Idle for too long")
            return None
        if data is sessions.Interruption.SHUTDOWN:
            log.info("%s: shutting down: closing session of %s", self.session_id, self.client)
            self.conn.bye("Server shutting down", ResponseCode.TRYLATER)
            return None
        return data

    async def _on_event(self, event: Event) -> bool:
        """Act on one event; False ends the session."""
        if isinstance(event, StartTLS):
            return await self._start_tls()
        if isinstance(event, AuthStart):
            return await self.auth.start(event.mechanism, event.initial_response)
        if isinstance(event, AuthResponse):
            return await self.auth.step(event.data)
        if isinstance(event, AuthAborted):
            self.auth.abort(event.reason)
        elif isinstance(event, Unauthenticated):
            log.info("%s: unauthenticate %s", self.session_id, event.user)
            self.user = None
        elif isinstance(event, Logout):
            log.info("%s: logout %s", self.session_id, self.user or "(not logged in)")
        elif isinstance(event, ProtocolError):
            log.info(
                "%s: refused %s from %s: %s",
                self.session_id,
                event.command or "line",
                self.client,
                event.response.text,
            )
        else:
            await self._script_command(event)
        return True

    # -- TLS ------------------------------------------------------------------------------------

    async def _start_tls(self) -> bool:
        context = self.service.tls_context
        assert context is not None
        self.conn.start_tls()
        if not await self.handshake(context, self.conn.data_to_send()):
            return False
        self.conn.tls_started(self.auth.offered())
        return True

    # -- authentication: the exchange is sessions.SaslExchange; these are ManageSieve's answers

    def sasl_challenge(self, data: bytes) -> None:
        self.conn.auth_challenge(data)

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.conn.answer(sasl_failure(reason))

    async def sasl_accept(self, result: Success) -> bool:
        self.user = result.authzid
        self.conn.authenticated(result.authzid, result.data)
        log.info(  # Cyrus's line, SESSIONID last
            "login: %s %s %s%s User logged in SESSIONID=<%s>",
            self.client,
            result.authzid,
            self.auth.logged_mechanism,
            "+TLS" if self.secure else "",
            self.session_id,
        )
        return True

    def sasl_give_up(self) -> None:
        self.conn.bye("Too many authentication failures")

    # -- scripts --------------------------------------------------------------------------------

    async def _script_command(self, event: Event) -> None:
        user = self.user
        assert user is not None, "the core lets script commands through only after login"
        store = self.service.scripts
        conn = self.conn
        try:
            if isinstance(event, ListScripts):
                entries = await asyncio.to_thread(store.entries, user)
                conn.send_listing((e.name, e.active) for e in entries)
            elif isinstance(event, GetScript):
                conn.send_script(await asyncio.to_thread(store.read, user, event.name))
            elif isinstance(event, HaveSpace):
                await asyncio.to_thread(store.check_space, user, event.name, event.size)
                conn.answer(OK("Putscript would succeed"))
            elif isinstance(event, PutScript):
                await self._put(user, event)
            elif isinstance(event, CheckScript):
                problems = await self._problems(event.content)
                conn.answer(NO("; ".join(problems)) if problems else OK("Script is valid"))
            elif isinstance(event, SetActive):
                await asyncio.to_thread(store.set_active, user, event.name)
                log.info(
                    "%s: %s: active script %s",
                    self.session_id,
                    user,
                    event.name if event.name is not None else "(none)",
                )
                conn.answer(OK("Setactive completed"))
            elif isinstance(event, DeleteScript):
                await asyncio.to_thread(store.delete, user, event.name)
                log.info("%s: %s: deleted script %s", self.session_id, user, event.name)
                conn.answer(OK("Deletescript completed"))
            elif isinstance(event, RenameScript):
                await asyncio.to_thread(store.rename, user, event.old, event.new)
                log.info(
                    "%s: %s: renamed script %s to %s", self.session_id, user, event.old, event.new
                )
                conn.answer(OK("Renamescript completed"))
            else:
                raise AssertionError(f"unexpected event {event!r}")
        except StoreError as exc:
            log.info("%s: %s: %s refused: %s", self.session_id, user, type(event).__name__, exc)
            conn.answer(script_error(exc))

    async def _problems(self, content: bytes) -> list[str]:
        try:
            text = content.decode("utf-8")
        except UnicodeDecodeError as exc:
            return [f"script is not valid UTF-8 (octet {exc.start + 1})"]
        return await asyncio.to_thread(self.service.validator, text)

    async def _put(self, user: str, event: PutScript) -> None:
        """RFC 5804 2.6: check the quota, then validity; store only a valid script."""
        store = self.service.scripts
        await asyncio.to_thread(store.check_space, user, event.name, len(event.content))
        problems = await self._problems(event.content)
        if problems:
            log.info(
                "%s: %s: script %s refused: %d error(s)",
                self.session_id,
                user,
                event.name,
                len(problems),
            )
            self.conn.answer(NO("; ".join(problems)))
            return
        await asyncio.to_thread(store.put, user, event.name, event.content)
        log.info(
            "%s: %s: stored script %s (%d octets)",
            self.session_id,
            user,
            event.name,
            len(event.content),
        )
        self.conn.answer(OK("Putscript completed"))


# -- the service contract of `sealmail master`, and the standalone daemon ----------------------


def build_service(
    config: ImapdConfig, argv: Sequence[str], *, service_name: str = "sieve"
) -> ManageSieveService:
    """sieved as cyrus.conf runs it: `sieved` (it takes no arguments)."""
    for arg in argv:
        raise ConfigError(config.path, 0, None, f"{service_name}: unknown argument {arg!r}")
    return ManageSieveService(
        config, SieveScriptStore.from_config(config), daemon_name=service_name
    )
