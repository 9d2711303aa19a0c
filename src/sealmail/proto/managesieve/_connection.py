"""The sans-I/O ManageSieve server connection (RFC 5804).

Theory of operation: sealmail.proto.core's, after h11 (feed bytes, pull events until NEED_DATA,
answer each event whose `needs_reply` is set as its docstring says, send what `data_to_send`
returns). Commands are taken one at a time, so a pipelined batch is answered in order.

A command is read in pieces: a line, and when the line ends with a literal marker (`{n+}`), n
octets, and then the rest of the command on the next line. Before login, a literal over
`Limits.max_literal_before_login` ends the session with BYE. A literal larger than
`Limits.max_literal_size` is read to its end but not kept, and the command gets NO (for a
script: QUOTA/MAXSIZE); so a client sending a non-synchronizing literal never desynchronizes
the session, and nothing grows past the limits.

The core answers what needs no outside knowledge: CAPABILITY, NOOP, LOGOUT, UNAUTHENTICATE,
syntax and state errors, script-name rules (RFC 5804 1.6). The host answers SASL, TLS and every
script operation (validation with the Sieve library, quotas and files with the script store).
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from sealmail.proto.buffer import LineTooLong
from sealmail.proto.core import ServerCore, UsageError
from sealmail.proto.managesieve._events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    CheckScript,
    DeleteScript,
    Event,
    GetScript,
    HaveSpace,
    ListScripts,
    Logout,
    NeedData,
    ProtocolError,
    PutScript,
    RenameScript,
    SetActive,
    StartTLS,
    Unauthenticated,
)
from sealmail.proto.managesieve._responses import BYE, NO, OK, Response, ResponseCode, Status
from sealmail.proto.managesieve._state import (
    ARGUMENTS,
    LEGAL,
    Argument,
    Command,
    SessionState,
)
from sealmail.proto.managesieve._syntax import (
    MAX_NUMBER,
    Atom,
    String,
    SyntaxProblem,
    Token,
    render_string,
    tokenize,
)

__all__ = [
    "VERSION",
    "Capabilities",
    "Limits",
    "ServerConnection",
    "UsageError",
    "check_script_name",
]

VERSION = "1.0"  # RFC 5804 1.7: the protocol version this server speaks
# RFC 4422 3.1: sasl-mech = 1*20mech-char (accepted in any case).
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}")
_NUMBER = re.compile(r"(0|[1-9][0-9]{0,9})")
_MAX_TOKENS = 8  # more than any command takes; beyond it the command is refused
_SCRIPT_COMMANDS = frozenset({Command.PUTSCRIPT, Command.CHECKSCRIPT})


@dataclass(frozen=True, slots=True)
class Limits:
    """Explicit limits. `max_line_length` counts the octets of a line before its CRLF."""

    max_line_length: int = 8192
    max_literal_size: int = 1 << 20  # the host sets it to sieve_maxscriptsize
    # Before login a literal can only carry a SASL response: one larger than this ends the
    # session (reading gigabytes to stay in step would let anyone hold the server busy).
    max_literal_before_login: int = 1 << 16
    max_name_length: int = 512  # octets of UTF-8; RFC 5804 1.6 asks for at least 128 chars
    max_bad_commands: int = 20

    def __post_init__(self) -> None:
        if self.max_line_length < 1024 or self.max_literal_size < 1 or self.max_bad_commands < 1:
            raise ValueError("limits too small to speak ManageSieve")


@dataclass(frozen=True, slots=True)
class Capabilities:
    """What the greeting and CAPABILITY advertise besides the session's own SASL/STARTTLS/OWNER."""

    implementation: str = "sealmail"
    sieve_extensions: tuple[str, ...] = ()
    notify_methods: tuple[str, ...] = ()
    max_redirects: int | None = None


def check_script_name(raw: bytes) -> str | Response:
    """RFC 5804 1.6: the name as text, or the NO to send.

    "Script names MUST comply with the Net-Unicode Definition (Section 2 of [NET-UNICODE]),
    with the additional restriction of prohibiting the following Unicode characters:
    0000-001F, 007F, 0080-009F, 2028, 2029." Net-Unicode text is UTF-8 in NFC.
    """
    try:
        name = raw.decode("utf-8")
    except UnicodeDecodeError:
        return NO("Script name is not valid UTF-8")
    if not name:
        return NO("Script name is empty")
    if any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F or ch in "\u2028\u2029" for ch in name):
        return NO("Script name holds control characters")
    if unicodedata.normalize("NFC", name) != name:
        return NO("Script name is not in Unicode normalization form C")
    return name


class ServerConnection(ServerCore[SessionState]):
    """One ManageSieve server session, without I/O."""

    def __init__(
        self,
        capabilities: Capabilities | None = None,
        session_id: str = "",
        *,
        limits: Limits | None = None,
        auth_mechanisms: tuple[str, ...] = (),
        starttls_available: bool = False,
        tls_active: bool = False,
        greeting_text: str = "sealmail ManageSieve ready",
    ) -> None:
        super().__init__(
            SessionState.NOT_AUTHENTICATED,
            auth_mechanisms=auth_mechanisms,
            tls_active=tls_active,
        )
        self.capabilities = capabilities or Capabilities()
        self.session_id = session_id
        self.limits = limits or Limits()
        self.starttls_available = starttls_available
        self.authenticated_as: str | None = None
        self.bad_commands = 0
        # The command being read: its tokens so far, and the literal it waits for.
        self._tokens: list[Token] = []
        self._literal_left: int | None = None  # octets of the current literal still to come
        self._literal_parts: list[bytes] = []
        self._literal_dropped = False  # over max_literal_size: read, not kept
        self._problem: str | None = None  # the command already failed; read it to its end
        self._oversized = False
        self._send_capabilities()
        self._send(OK(greeting_text))

    # -- public API -------------------------------------------------------------------------

    def capability_lines(self) -> list[bytes]:
        """RFC 5804 1.7, the capability response as it stands in this state."""
        caps = self.capabilities
        authenticated = self.state is SessionState.AUTHENTICATED
        lines = [b'"IMPLEMENTATION" ' + render_string(caps.implementation)]
        # After login AUTHENTICATE is not valid, so no mechanism is offered.
        mechanisms = "" if authenticated else " ".join(self.auth_mechanisms)
        lines.append(b'"SASL" ' + render_string(mechanisms))
        lines.append(b'"SIEVE" ' + render_string(" ".join(caps.sieve_extensions)))
        if self.starttls_available and not self.tls_active and not authenticated:
            lines.append(b'"STARTTLS"')
        if caps.notify_methods:
            lines.append(b'"NOTIFY" ' + render_string(" ".join(caps.notify_methods)))
        if caps.max_redirects is not None:
            lines.append(b'"MAXREDIRECTS" ' + render_string(str(caps.max_redirects)))
        if authenticated and self.authenticated_as is not None:
            lines.append(b'"OWNER" ' + render_string(self.authenticated_as))
        lines.append(b'"UNAUTHENTICATE"')
        lines.append(b'"VERSION" ' + render_string(VERSION))
        return lines

    def answer(self, response: Response) -> None:
        """Answer the pending event with an OK or NO status response.

        For AuthStart/AuthResponse only a NO fits (success is `authenticated`); it ends the
        exchange. For StartTLS only a NO fits (acceptance is `start_tls`).
        """
        if response.ok and isinstance(self._pending, (StartTLS, AuthStart, AuthResponse)):
            raise UsageError(f"{type(self._pending).__name__} takes a NO here")
        event = self._take(
            StartTLS,
            AuthStart,
            AuthResponse,
            HaveSpace,
            PutScript,
            CheckScript,
            ListScripts,
            SetActive,
            GetScript,
            DeleteScript,
            RenameScript,
        )
        if isinstance(event, (AuthStart, AuthResponse)):
            self.state = SessionState.NOT_AUTHENTICATED
        if response.status is Status.BYE:
            self._send(response)
            self._close()
            return
        self._send(response)

    def bye(self, text: str, code: ResponseCode | None = None) -> None:
        """End the session from the server's side (timeout, shutdown, too many failures)."""
        self._pending = None
        self._send(BYE(text, code))
        self._close()

    def start_tls(self) -> None:
        """Accept STARTTLS: send OK; the driver flushes it, then does the handshake."""
        self._take(StartTLS)
        self._send(OK("Begin TLS negotiation now"))
        self._await_handshake()

    def tls_started(self, auth_mechanisms: tuple[str, ...] | None = None) -> None:
        """The handshake is done; RFC 5804 2.2: "After the TLS layer is established, the server
        MUST re-issue the capability results, followed by an OK response." """
        self._handshake_done("STARTTLS", auth_mechanisms)
        self.state = SessionState.NOT_AUTHENTICATED
        self._send_capabilities()
        self._send(OK("TLS negotiation successful"))

    def auth_challenge(self, data: bytes) -> None:
        """Send a SASL challenge as a string (RFC 5804 2.1); the answer comes as AuthResponse."""
        self._take(AuthStart, AuthResponse)
        self._out += render_string(base64.b64encode(data)) + b"\r\n"
        self.state = SessionState.AUTH

    def authenticated(self, user: str, data: bytes | None = None) -> None:
        """The exchange succeeded: OK, with the mechanism's final data in a SASL code
        (RFC 5804 2.1: "the server MAY include ... additional data ... in the OK response")."""
        self._take(AuthStart, AuthResponse)
        self.authenticated_as = user
        self.state = SessionState.AUTHENTICATED
        if data is not None:
            self._send(OK("Authentication successful", ResponseCode.SASL, base64.b64encode(data)))
        else:
            self._send(OK("Authentication successful"))

    def send_listing(self, entries: Iterable[tuple[str, bool]]) -> None:
        """Answer LISTSCRIPTS: one line per script, "ACTIVE" after the active one, then OK."""
        self._take(ListScripts)
        for name, active in entries:
            self._out += render_string(name) + (b" ACTIVE" if active else b"") + b"\r\n"
        self._send(OK("Listscripts completed"))

    def send_script(self, content: bytes) -> None:
        """Answer GETSCRIPT: the script as a literal (it holds line ends), CRLF, then OK."""
        self._take(GetScript)
        self._out += b"{%d}\r\n" % len(content) + content + b"\r\n"
        self._send(OK("Getscript completed"))

    # -- engine -----------------------------------------------------------------------------

    def _send_capabilities(self) -> None:
        for line in self.capability_lines():
            self._out += line + b"\r\n"

    def _reset_command(self) -> None:
        self._tokens = []
        self._literal_left = None
        self._literal_parts = []
        self._literal_dropped = False
        self._problem = None
        self._oversized = False

    def _error(self, response: Response, command: str) -> ProtocolError:
        """Refuse a command; past max_bad_commands the session ends with BYE."""
        self.bad_commands += 1
        if self.bad_commands >= self.limits.max_bad_commands:
            self._send(BYE("Too many protocol errors"))
            self._close()
        else:
            self._send(response)
        return ProtocolError(response, command)

    def _step(self) -> Event | NeedData | None:
        if self._literal_left is not None:
            return self._read_literal()
        try:
            line = self._buffer.next_line(self.limits.max_line_length)
        except LineTooLong:
            in_auth = self.state is SessionState.AUTH
            self._reset_command()
            if in_auth:
                self.state = SessionState.NOT_AUTHENTICATED
                self._send(NO("Authentication aborted: line too long"))
                return AuthAborted("line too long")
            return self._error(NO("Line too long"), "")
        if line is None:
            return NEED_DATA
        try:
            tokens, literal = tokenize(line)
        except SyntaxProblem as exc:
            tokens, literal = [], None
            self._problem = self._problem or str(exc)
        if len(self._tokens) + len(tokens) > _MAX_TOKENS:
            self._problem = self._problem or "Too many arguments"
        else:
            self._tokens += tokens
        if literal is not None:
            if (self.state is not SessionState.AUTHENTICATED
                    and literal.size > self.limits.max_literal_before_login):
                self._reset_command()
                self._send(BYE("Literal too large before login"))
                self._close()
                return ProtocolError(BYE("Literal too large before login"), "")
            self._literal_left = literal.size
            self._literal_parts = []
            self._literal_dropped = literal.size > self.limits.max_literal_size
            if self._literal_left == 0:
                return self._read_literal()
            return None
        tokens, problem, oversized = self._tokens, self._problem, self._oversized
        self._reset_command()
        if self.state is SessionState.AUTH:
            return self._auth_line(tokens, problem or ("Literal too large" if oversized else None))
        return self._command(tokens, problem, oversized)

    def _read_literal(self) -> NeedData | None:
        left = self._literal_left
        assert left is not None
        if self._literal_dropped:
            chunk = self._buffer.take(left)
            left -= len(chunk)
        else:
            chunk = self._buffer.take(left)
            self._literal_parts.append(chunk)
            left -= len(chunk)
        self._literal_left = left
        if left > 0:
            return NEED_DATA
        self._literal_left = None
        if self._literal_dropped:
            self._oversized = True
        elif len(self._tokens) < _MAX_TOKENS:
            self._tokens.append(String(b"".join(self._literal_parts), literal=True))
        else:
            self._problem = self._problem or "Too many arguments"
        self._literal_parts = []
        self._literal_dropped = False
        return None  # the command goes on on the next line

    # -- commands -----------------------------------------------------------------------------

    def _command(self, tokens: list[Token], problem: str | None, oversized: bool) -> Event | None:
        if not tokens and problem is None and not oversized:
            return None  # an empty line: nothing to answer (clients send one after a literal)
        head = tokens[0] if tokens else None
        if not isinstance(head, Atom):
            return self._error(NO(problem or "Expected a command name"), "")
        try:
            command = Command(head.text.upper())
        except ValueError:
            return self._error(NO("Unknown command"), head.text[:20])
        if oversized:
            if command in _SCRIPT_COMMANDS:
                return self._error(
                    NO(
                        f"Script is over the limit of {self.limits.max_literal_size} octets",
                        ResponseCode.QUOTA_MAXSIZE,
                    ),
                    command.value,
                )
            return self._error(NO("String too long"), command.value)
        if problem is not None:
            return self._error(NO(problem), command.value)
        if command is Command.STARTTLS and not self.starttls_available:
            return self._error(NO("STARTTLS is not available"), command.value)
        if self.state not in LEGAL[command]:
            text = (
                "Authenticate first"
                if self.state is SessionState.NOT_AUTHENTICATED
                else "Already authenticated"
            )
            return self._error(NO(text), command.value)
        arguments = _arguments(tokens[1:], ARGUMENTS[command])
        if isinstance(arguments, str):
            return self._error(NO(arguments), command.value)
        return _HANDLERS[command](self, arguments)

    def _name(self, raw: object, command: Command) -> str | ProtocolError:
        assert isinstance(raw, bytes)
        if len(raw) > self.limits.max_name_length:
            return self._error(NO("Script name is too long"), command.value)
        checked = check_script_name(raw)
        if isinstance(checked, Response):
            return self._error(checked, command.value)
        return checked

    def _authenticate(self, args: list[bytes | int | None]) -> Event | None:
        raw_mechanism, initial = args[0], args[1]
        assert isinstance(raw_mechanism, bytes)
        mechanism = raw_mechanism.decode("ascii", "replace")
        if not _MECHANISM.fullmatch(mechanism):
            return self._error(NO("Invalid mechanism name"), "AUTHENTICATE")
        response: bytes | None = None
        if initial is not None:
            assert isinstance(initial, bytes)
            # RFC 5804 2.1: the initial response is a base64 string; "" is an empty one.
            decoded = _b64decode(initial)
            if decoded is None:
                return self._error(NO("Invalid base64 in the initial response"), "AUTHENTICATE")
            response = decoded
        return AuthStart(mechanism.upper(), response)

    def _auth_line(self, tokens: list[Token], problem: str | None) -> Event:
        self.state = SessionState.NOT_AUTHENTICATED  # until the host sends another challenge
        if problem is not None or len(tokens) != 1:
            self._send(NO("Authentication aborted: expected one string"))
            return AuthAborted(problem or "not one string")
        token = tokens[0]
        raw = token.value if isinstance(token, String) else token.text.encode("ascii")
        if raw.strip() == b"*":
            # RFC 5804 2.1: "If the client wishes to cancel the authentication exchange, it
            # issues a string containing a single "*". If the server receives such a response,
            # it MUST reject the AUTHENTICATE command by sending a NO reply."
            self._send(NO("Authentication aborted by client"))
            return AuthAborted("cancelled by the client")
        data = _b64decode(raw)
        if data is None:
            self._send(NO("Authentication aborted: invalid base64"))
            return AuthAborted("invalid base64 in the response")
        return AuthResponse(data)

    def _starttls(self, args: list[bytes | int | None]) -> Event | None:
        if self.tls_active:
            return self._error(NO("TLS is already active"), "STARTTLS")
        return StartTLS()

    def _logout(self, args: list[bytes | int | None]) -> Event | None:
        self._send(OK("Logout completed"))
        self._close()
        return Logout()

    def _capability(self, args: list[bytes | int | None]) -> Event | None:
        self._send_capabilities()
        self._send(OK("Capability completed"))
        return None

    def _noop(self, args: list[bytes | int | None]) -> Event | None:
        tag = args[0]
        if tag is None:
            self._send(OK("NOOP completed"))
        else:
            assert isinstance(tag, bytes)
            # RFC 5804 2.13: the tag string comes back in a TAG response code.
            self._send(OK("Done", ResponseCode.TAG, tag))
        return None

    def _unauthenticate(self, args: list[bytes | int | None]) -> Event | None:
        user = self.authenticated_as or ""
        self.authenticated_as = None
        self.state = SessionState.NOT_AUTHENTICATED
        self._send(OK("Unauthenticate completed"))
        return Unauthenticated(user)

    def _havespace(self, args: list[bytes | int | None]) -> Event | None:
        name = self._name(args[0], Command.HAVESPACE)
        if isinstance(name, ProtocolError):
            return name
        size = args[1]
        assert isinstance(size, int)
        return HaveSpace(name, size)

    def _putscript(self, args: list[bytes | int | None]) -> Event | None:
        name = self._name(args[0], Command.PUTSCRIPT)
        if isinstance(name, ProtocolError):
            return name
        content = args[1]
        assert isinstance(content, bytes)
        return PutScript(name, content)

    def _checkscript(self, args: list[bytes | int | None]) -> Event | None:
        content = args[0]
        assert isinstance(content, bytes)
        return CheckScript(content)

    def _listscripts(self, args: list[bytes | int | None]) -> Event | None:
        return ListScripts()

    def _setactive(self, args: list[bytes | int | None]) -> Event | None:
        if args[0] == b"":
            return SetActive(None)  # RFC 5804 2.8: the empty name deactivates every script
        name = self._name(args[0], Command.SETACTIVE)
        if isinstance(name, ProtocolError):
            return name
        return SetActive(name)

    def _getscript(self, args: list[bytes | int | None]) -> Event | None:
        name = self._name(args[0], Command.GETSCRIPT)
        if isinstance(name, ProtocolError):
            return name
        return GetScript(name)

    def _deletescript(self, args: list[bytes | int | None]) -> Event | None:
        name = self._name(args[0], Command.DELETESCRIPT)
        if isinstance(name, ProtocolError):
            return name
        return DeleteScript(name)

    def _renamescript(self, args: list[bytes | int | None]) -> Event | None:
        old = self._name(args[0], Command.RENAMESCRIPT)
        if isinstance(old, ProtocolError):
            return old
        new = self._name(args[1], Command.RENAMESCRIPT)
        if isinstance(new, ProtocolError):
            return new
        return RenameScript(old, new)


def _arguments(tokens: list[Token], shape: tuple[Argument, ...]) -> list[bytes | int | None] | str:
    """The command's arguments by its shape (strings as bytes, numbers as int), or the error."""
    values: list[bytes | int | None] = []
    if len(tokens) > len(shape):
        return "Too many arguments"
    for position, kind in enumerate(shape):
        if position >= len(tokens):
            if kind is Argument.OPTIONAL_STRING:
                values.append(None)
                continue
            return "Missing argument"
        token = tokens[position]
        if kind is Argument.NUMBER:
            if not isinstance(token, Atom) or not _NUMBER.fullmatch(token.text):
                return "Expected a number"
            number = int(token.text)
            if number > MAX_NUMBER:
                return "Number is over 4294967295"
            values.append(number)
        else:
            if not isinstance(token, String):
                return "Expected a string (quoted or literal)"
            values.append(token.value)
    return values


def _b64decode(raw: bytes) -> bytes | None:
    try:
        return base64.b64decode(raw.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None


_Handler = Callable[[ServerConnection, list[bytes | int | None]], Event | None]
_HANDLERS: dict[Command, _Handler] = {
    Command.AUTHENTICATE: ServerConnection._authenticate,
    Command.STARTTLS: ServerConnection._starttls,
    Command.LOGOUT: ServerConnection._logout,
    Command.CAPABILITY: ServerConnection._capability,
    Command.NOOP: ServerConnection._noop,
    Command.UNAUTHENTICATE: ServerConnection._unauthenticate,
    Command.HAVESPACE: ServerConnection._havespace,
    Command.PUTSCRIPT: ServerConnection._putscript,
    Command.CHECKSCRIPT: ServerConnection._checkscript,
    Command.LISTSCRIPTS: ServerConnection._listscripts,
    Command.SETACTIVE: ServerConnection._setactive,
    Command.GETSCRIPT: ServerConnection._getscript,
    Command.DELETESCRIPT: ServerConnection._deletescript,
    Command.RENAMESCRIPT: ServerConnection._renamescript,
}
