"""Sans-I/O SMTP/LMTP client core: the MTA's side of RFC 5321, RFC 2033, RFC 2920, RFC 3030,
RFC 4954 and RFC 3207.

Theory of operation. The host (an asyncio delivery agent) owns the socket. It feeds received bytes
with `receive_data` (b"" at EOF), pulls events with `next_event` until NEED_DATA, and writes
`data_to_send()`. It sends commands by calling methods (`hello`, `mail`, `rcpt`, `data`,
`send_message`, `bdat`, `rset`, `auth`, `starttls`, `quit`); each queues one command and the
reply it waits for. The core keeps the order of replies, so every event names the command it
answers.

    GREETING --220--> HELLO --EHLO/LHLO 250--> READY --MAIL--> TRANSACTION --DATA 354--> MESSAGE
                        ^                       ^ ^ \\--AUTH (334 exchange inside the core)--/ |
                        |                       | \\--- end of data replies; RSET; DATA refused -/
                        \\-- tls_started() <-- TLS_WAIT <--STARTTLS 220-- READY
    (any state) --QUIT 221, EOF, malformed reply--> CLOSED

`LEGAL` below says where each command may be sent. Pipelining (RFC 2920 3.1): without the
PIPELINING extension a command may be sent only when no reply is outstanding; with it, commands
queue behind each other except after a command that ends a group (EHLO, DATA, AUTH, STARTTLS,
QUIT, NOOP, ...), whose reply must come first.

LMTP (RFC 2033 4.2): after the end of data the server gives one reply per accepted recipient, in
RCPT order; the core counts the RCPT replies and emits one `MessageReply` per accepted recipient,
naming it. With no accepted recipient the server gives a single (error) reply.

A malformed reply, one over the limits, or a reply nobody asked for raises `ServerReplyError`
from `next_event` and closes the core: the conversation cannot be trusted any more. Misusing the
core (a command out of order) raises `ClientUsageError`.
"""

from __future__ import annotations

import base64
import binascii
import collections
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from sealmail.proto.buffer import LineTooLong, ReceiveBuffer
from sealmail.proto.smtp.client_sasl import SaslClient, SaslClientError
from sealmail.proto.smtp.events import NEED_DATA, NeedData
from sealmail.proto.smtp.state import Mode

__all__ = [
    "LEGAL",
    "AuthReply",
    "Capabilities",
    "ClientCommand",
    "ClientConnection",
    "ClientEvent",
    "ClientLimits",
    "ClientState",
    "ClientUsageError",
    "CommandReply",
    "ConnectionClosed",
    "DataStuffer",
    "Greeting",
    "HelloReply",
    "MessageReply",
    "ServerReply",
    "ServerReplyError",
    "parse_capabilities",
]


class ClientState(enum.Enum):
    GREETING = enum.auto()  # connected, waiting for the 220
    HELLO = enum.auto()  # greeted (or TLS just started): EHLO/LHLO/HELO must come next
    READY = enum.auto()  # no transaction
    TRANSACTION = enum.auto()  # MAIL sent (its reply may still be on its way)
    MESSAGE = enum.auto()  # 354 received: the host sends the message with send_message()
    TLS_WAIT = enum.auto()  # 220 to STARTTLS received: the host does the handshake
    CLOSED = enum.auto()


class ClientCommand(enum.Enum):
    GREETING = "greeting"  # not sent: the server's opening reply is waited for like one
    EHLO = "EHLO"
    LHLO = "LHLO"
    HELO = "HELO"
    MAIL = "MAIL"
    RCPT = "RCPT"
    DATA = "DATA"
    END_OF_DATA = "."  # the final dot (or the last BDAT chunk): LMTP answers per recipient
    BDAT = "BDAT"
    RSET = "RSET"
    NOOP = "NOOP"
    QUIT = "QUIT"
    AUTH = "AUTH"
    STARTTLS = "STARTTLS"


_S = ClientState
_C = ClientCommand
_HELLOS = frozenset({_C.EHLO, _C.LHLO, _C.HELO})
_OPEN = frozenset({_S.HELLO, _S.READY, _S.TRANSACTION, _S.MESSAGE, _S.GREETING})

LEGAL: dict[ClientCommand, frozenset[ClientState]] = {
    _C.EHLO: frozenset({_S.HELLO, _S.READY}),
    _C.LHLO: frozenset({_S.HELLO, _S.READY}),
    _C.HELO: frozenset({_S.HELLO, _S.READY}),
    _C.MAIL: frozenset({_S.READY}),
    _C.RCPT: frozenset({_S.TRANSACTION}),
    _C.DATA: frozenset({_S.TRANSACTION}),
    _C.END_OF_DATA: frozenset({_S.MESSAGE}),
    _C.BDAT: frozenset({_S.TRANSACTION}),
    _C.RSET: frozenset({_S.READY, _S.TRANSACTION}),
    _C.NOOP: frozenset({_S.READY, _S.TRANSACTION}),
    _C.QUIT: _OPEN,
    # RFC 4954 4: "The AUTH command is not permitted during a mail transaction."
    _C.AUTH: frozenset({_S.READY}),
    # RFC 3207 4: STARTTLS outside a transaction only.
    _C.STARTTLS: frozenset({_S.READY}),
}

# RFC 2920 3.1: "The EHLO, DATA, VRFY, EXPN, TURN, QUIT, and NOOP commands can only appear as
# the last command in a group since their success or failure produces a change of state which
# the client SMTP must accommodate." AUTH and STARTTLS change the session likewise.
_GROUP_ENDERS = frozenset(
    {_C.EHLO, _C.LHLO, _C.HELO, _C.DATA, _C.QUIT, _C.NOOP, _C.AUTH, _C.STARTTLS, _C.END_OF_DATA}
)


class ClientUsageError(Exception):
    """The host misused the core (a command out of order, or pipelined where it may not be)."""


class ServerReplyError(Exception):
    """The server broke the protocol: a malformed reply, one over the limits, or unsolicited."""


@dataclass(frozen=True, slots=True)
class ClientLimits:
    """What a server may send us before we give up on it."""

    # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; real servers exceed that a little.
    max_line_length: int = 4096
    max_reply_lines: int = 128


# RFC 3463 2: status-code = class "." subject "." detail (1-3 digits each).
_ENHANCED = re.compile(r"([245])\.([0-9]{1,3})\.([0-9]{1,3})(?= |$)")
# RFC 5321 4.2: Reply-line = *( Reply-code "-" [ textstring ] CRLF )
#                            Reply-code [ SP textstring ] CRLF
#               Reply-code = %x32-35 %x30-35 %x30-39
_REPLY_LINE = re.compile(rb"([2-5][0-5][0-9])(?:([ -])(.*))?")


@dataclass(frozen=True, slots=True)
class ServerReply:
    """One reply: its code, the texts of its lines, and the RFC 3463 code of its first line."""

    code: int
    lines: tuple[str, ...]
    enhanced: str | None = None

    @property
    def text(self) -> str:
        """The lines joined with spaces (as Postfix logs a multi-line reply)."""
        return " ".join(line for line in self.lines if line)

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_transient(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return 500 <= self.code < 600

    def dsn(self) -> str:
        """The enhanced status code, its class made to agree with the reply code.

        RFC 3463 3.1 wants the class to match the reply; a server that answers "450 5.1.1" is
        obeyed on the reply code (the one that decides retry or bounce), as Postfix does.
        """
        klass = str(self.code)[0]
        if self.enhanced is None:
            return f"{klass}.0.0"
        return klass + self.enhanced[1:]

    def __str__(self) -> str:
        text = self.text
        return f"{self.code} {text}" if text else str(self.code)


@dataclass(frozen=True, slots=True)
class Capabilities:
    """An EHLO/LHLO reply (RFC 5321 4.1.1.1): the server's name and its extension keywords."""

    server_name: str
    extensions: dict[str, tuple[str, ...]] = field(default_factory=dict)

    def offers(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    @property
    def pipelining(self) -> bool:
        return self.offers("PIPELINING")

    @property
    def auth_mechanisms(self) -> tuple[str, ...]:
        return tuple(m.upper() for m in self.extensions.get("AUTH", ()))

    @property
    def size_limit(self) -> int | None:
        """RFC 1870 4: "SIZE" with no number or 0 means no fixed limit."""
        if "SIZE" not in self.extensions:
            return None
        values = self.extensions["SIZE"]
        return int(values[0]) if values and values[0].isdigit() and int(values[0]) else None


def parse_capabilities(reply: ServerReply) -> Capabilities:
    """Keywords of an EHLO/LHLO 250 reply; `AUTH=...` (a pre-RFC 2554 form) is read as AUTH."""
    first, *rest = reply.lines or ("",)
    extensions: dict[str, tuple[str, ...]] = {}
    for line in rest:
        words = line.split()
        if not words:
            continue
        keyword = words[0].upper()
        if keyword.startswith("AUTH="):
            words = [*keyword.split("=", 1)[1:], *words[1:]]
            keyword = "AUTH"
        else:
            words = words[1:]
        if keyword == "AUTH" and "AUTH" in extensions:
            words = [*extensions["AUTH"], *(w for w in words if w not in extensions["AUTH"])]
        extensions[keyword] = tuple(words)
    name = first.split()[0] if first.split() else ""
    return Capabilities(name, extensions)


# ---------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class ClientEvent:
    pass


@dataclass(frozen=True, slots=True)
class Greeting(ClientEvent):
    """The server's opening reply; anything but 2xx means no service (RFC 5321 3.1)."""

    reply: ServerReply


@dataclass(frozen=True, slots=True)
class HelloReply(ClientEvent):
    """The reply to EHLO/LHLO/HELO; `capabilities` is None unless it succeeded."""

    command: ClientCommand
    reply: ServerReply
    capabilities: Capabilities | None


@dataclass(frozen=True, slots=True)
class CommandReply(ClientEvent):
    """The reply to MAIL, RCPT (argument: the recipient), DATA, BDAT, RSET, NOOP, QUIT, STARTTLS."""

    command: ClientCommand
    argument: str
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class MessageReply(ClientEvent):
    """A reply after the end of data: LMTP one per accepted recipient, SMTP one (recipient None).

    With LMTP and no accepted recipient, the single reply also comes with recipient None.
    """

    recipient: str | None
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class AuthReply(ClientEvent):
    """The end of an AUTH exchange; `error` is set when our side gave up or distrusts a 235."""

    mechanism: str
    reply: ServerReply
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.reply.code == 235 and self.error is None


@dataclass(frozen=True, slots=True)
class ConnectionClosed(ClientEvent):
    """The server closed the connection; `pending` is the command left without its reply."""

    pending: ClientCommand | None


# ---------------------------------------------------------------------------------------------
# Message content on the wire


class DataStuffer:
    """Message content to DATA form, chunk by chunk (RFC 5321 4.5.2 and 2.3.8).

    Every line end becomes CRLF (a bare LF or CR must never reach the wire: with lenient servers
    "<LF>.<CRLF>" would end the data early, the "SMTP smuggling" attack), a line starting with "."
    gets one more, and `finish` ends the last line before the terminating ".".
    """

    __slots__ = ("_at_line_start", "_held_cr")

    def __init__(self) -> None:
        self._at_line_start = True
        self._held_cr = False  # the previous chunk ended with CR: maybe half of a CRLF

    def feed(self, chunk: bytes) -> bytes:
        data = (b"\r" if self._held_cr else b"") + chunk
        self._held_cr = data.endswith(b"\r")
        if self._held_cr:
            data = data[:-1]
        if not data:
            return b""
        normal = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
        if self._at_line_start and normal.startswith(b"."):
            normal = b"." + normal
        self._at_line_start = normal.endswith(b"\r\n")
        return normal.replace(b"\r\n.", b"\r\n..")

    def finish(self) -> bytes:
        out = b""
        if self._held_cr:
            self._held_cr = False
            out, self._at_line_start = b"\r\n", True
        if not self._at_line_start:
            out += b"\r\n"
        self._at_line_start = True
        return out + b".\r\n"


# ---------------------------------------------------------------------------------------------
# The connection


@dataclass(slots=True)
class _Pending:
    command: ClientCommand
    argument: str = ""


class ClientConnection:
    """One client session, no I/O. See the module text for how a host drives it."""

    def __init__(self, mode: Mode = Mode.SMTP, limits: ClientLimits | None = None) -> None:
        self.mode = mode
        self.limits = limits or ClientLimits()
        self.state = ClientState.GREETING
        self.capabilities: Capabilities | None = None
        self.tls_active = False
        self.authenticated = False
        self._buffer = ReceiveBuffer()
        self._out = bytearray()
        self._pending: collections.deque[_Pending] = collections.deque([_Pending(_C.GREETING)])
        self._lines: list[tuple[int, str]] = []
        self._auth: SaslClient | None = None
        self._auth_error: str | None = None
        self._mail_ok: bool | None = None
        self._recipients: list[str] = []  # accepted by RCPT, in order
        self._message_replies: collections.deque[str | None] = collections.deque()
        self._stuffer: DataStuffer | None = None

    # -- bytes in and out ---------------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Bytes from the server; b"" when it closed its side."""
        if self.state is ClientState.TLS_WAIT:
            return  # RFC 3207 injection: nothing read before the handshake may count after it
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def pending(self) -> tuple[ClientCommand, ...]:
        """Commands sent whose replies have not come yet, oldest first."""
        return tuple(p.command for p in self._pending)

    @property
    def awaiting(self) -> ClientCommand | None:
        """The oldest command whose reply has not come yet."""
        return self._pending[0].command if self._pending else None

    @property
    def accepted_recipients(self) -> tuple[str, ...]:
        return tuple(self._recipients)

    # -- commands -----------------------------------------------------------------------------

    def hello(self, name: str, command: ClientCommand | None = None) -> None:
        """EHLO (SMTP) or LHLO (LMTP); `command=ClientCommand.HELO` for the RFC 821 fallback."""
        chosen = command or (_C.LHLO if self.mode is Mode.LMTP else _C.EHLO)
        if chosen not in _HELLOS:
            raise ClientUsageError(f"{chosen.value} is not a hello command")
        self._command(chosen, f"{chosen.value} {_checked(name)}", name)

    def mail(self, sender: str, params: Iterable[str] = ()) -> None:
        """MAIL FROM:<sender> (sender "" for the null reverse path) with ESMTP parameters."""
        line = f"MAIL FROM:<{_checked(sender, path=True)}>{_params(params)}"
        self._command(_C.MAIL, line, sender)
        self._mail_ok = None
        self._recipients.clear()
        self.state = ClientState.TRANSACTION

    def rcpt(self, recipient: str, params: Iterable[str] = ()) -> None:
        line = f"RCPT TO:<{_checked(recipient, path=True)}>{_params(params)}"
        self._command(_C.RCPT, line, recipient)

    def data(self) -> None:
        self._command(_C.DATA, "DATA")

    def send_message(self, content: bytes, *, end: bool = True) -> None:
        """After the 354: message content (any line ends), dot-stuffed; `end` adds the final dot.

        Call with end=False for each chunk of a large message, then once with end=True.
        """
        self._check_legal(_C.END_OF_DATA)
        if self._stuffer is None:
            self._stuffer = DataStuffer()
        self._out += self._stuffer.feed(content)
        if end:
            self._out += self._stuffer.finish()
            self._stuffer = None
            self._pending.append(_Pending(_C.END_OF_DATA))
            self.state = ClientState.READY

    def bdat(self, chunk: bytes, *, last: bool) -> None:
        """RFC 3030 BDAT: the octets go as they are (no dot-stuffing); they must be CRLF text
        or BINARYMIME. The LAST chunk ends the transaction."""
        if not (self.capabilities and self.capabilities.offers("CHUNKING")):
            raise ClientUsageError("the server does not offer CHUNKING")
        command = f"BDAT {len(chunk)}{' LAST' if last else ''}"
        self._check_legal(_C.BDAT)
        self._check_pipelining(_C.BDAT)
        self._out += command.encode("ascii") + b"\r\n" + chunk
        self._pending.append(_Pending(_C.END_OF_DATA if last else _C.BDAT, command))
        if last:
            self.state = ClientState.READY

    def rset(self) -> None:
        self._command(_C.RSET, "RSET")
        self.state = ClientState.READY

    def noop(self) -> None:
        self._command(_C.NOOP, "NOOP")

    def quit(self) -> None:
        self._command(_C.QUIT, "QUIT")

    def starttls(self) -> None:
        if self.tls_active:
            raise ClientUsageError("TLS is already active")
        self._command(_C.STARTTLS, "STARTTLS")

    def tls_started(self) -> None:
        """The handshake is done: RFC 3207 4.2, the client "MUST discard any knowledge obtained
        from the server" and send EHLO again."""
        if self.state is not ClientState.TLS_WAIT:
            raise ClientUsageError("tls_started() without an accepted STARTTLS")
        self.tls_active = True
        self.capabilities = None
        self.state = ClientState.HELLO

    def auth(self, mechanism: SaslClient) -> None:
        """AUTH with `mechanism`; challenges are answered inside the core; ends in AuthReply."""
        try:
            initial = mechanism.initial_response()
        except SaslClientError as exc:
            raise ClientUsageError(f"cannot start {mechanism.name}: {exc}") from None
        line = f"AUTH {mechanism.name}"
        if initial is not None:
            # RFC 4954 4: an empty initial response is sent as "=".
            line += " " + (base64.b64encode(initial).decode("ascii") if initial else "=")
        self._command(_C.AUTH, line, mechanism.name)
        self._auth = mechanism
        self._auth_error = None

    def _command(self, command: ClientCommand, line: str, argument: str = "") -> None:
        self._check_legal(command)
        self._check_pipelining(command)
        self._out += line.encode("utf-8") + b"\r\n"
        self._pending.append(_Pending(command, argument))

    def _check_legal(self, command: ClientCommand) -> None:
        if self.state not in LEGAL[command]:
            raise ClientUsageError(f"{command.value} may not be sent in state {self.state.name}")

    def _check_pipelining(self, command: ClientCommand) -> None:
        if not self._pending:
            return
        last = self._pending[-1].command
        if last is _C.GREETING:
            # RFC 5321 4.3.1: the client waits for the greeting (anything earlier is a "early
            # talker"); only QUIT may go out before it.
            if command is _C.QUIT:
                return
            raise ClientUsageError(f"{command.value} before the server's greeting")
        if not (self.capabilities and self.capabilities.pipelining):
            raise ClientUsageError(f"{command.value} while {last.value} waits for its reply "
                                   "(the server does not offer PIPELINING)")
        if last in _GROUP_ENDERS and command is not _C.QUIT:
            # RFC 2920 3.1: a group ends with such a command; wait for its reply.
            raise ClientUsageError(f"{command.value} may not follow {last.value} in a group")

    # -- replies in ---------------------------------------------------------------------------

    def next_event(self) -> ClientEvent | NeedData:
        while True:
            if self.state is ClientState.CLOSED:
                return NEED_DATA
            if self.state is ClientState.TLS_WAIT:
                return NEED_DATA
            reply = self._next_reply()
            if reply is None:
                if self._buffer.at_eof and not len(self._buffer):
                    return self._closed()
                return NEED_DATA
            event = self._on_reply(reply)
            if event is not None:
                return event

    def _closed(self) -> ConnectionClosed:
        pending = self._pending[0].command if self._pending else None
        if pending is _C.GREETING:
            pending = None
        self.state = ClientState.CLOSED
        self._pending.clear()
        return ConnectionClosed(pending)

    def _fail(self, message: str) -> ServerReplyError:
        self.state = ClientState.CLOSED
        self._pending.clear()
        return ServerReplyError(message)

    def _next_reply(self) -> ServerReply | None:
        """One whole reply out of the buffer, or None until its last line is here."""
        while True:
            try:
                raw = self._buffer.next_line(self.limits.max_line_length)
            except LineTooLong as exc:
                raise self._fail(f"reply line of {exc.length} octets is too long") from None
            if raw is None:
                if self._buffer.at_eof and len(self._buffer):
                    raise self._fail("connection closed inside a reply line")
                return None
            match = _REPLY_LINE.fullmatch(raw)
            if match is None:
                raise self._fail(f"malformed reply line {raw[:80]!r}")
            code = int(match.group(1))
            if self._lines and self._lines[0][0] != code:
                # RFC 5321 4.2.1: every line of a multi-line reply carries the same code.
                raise self._fail(f"reply code changed inside a reply: {raw[:80]!r}")
            text = (match.group(3) or b"").decode("utf-8", "replace")
            self._lines.append((code, text))
            if len(self._lines) > self.limits.max_reply_lines:
                raise self._fail(f"reply of more than {self.limits.max_reply_lines} lines")
            if match.group(2) != b"-":
                lines = tuple(t for _, t in self._lines)
                self._lines = []
                found = _ENHANCED.match(lines[0])
                enhanced = found.group(0) if found else None
                return ServerReply(code, lines, enhanced)

    def _on_reply(self, reply: ServerReply) -> ClientEvent | None:
        if not self._pending:
            raise self._fail(f"unsolicited reply: {reply}")
        pending = self._pending[0]
        command = pending.command
        if command is _C.GREETING:
            self._pending.popleft()
            self.state = ClientState.HELLO if reply.is_success else self.state
            return Greeting(reply)
        if command is _C.AUTH:
            return self._on_auth_reply(reply)
        if reply.code // 100 == 3 and command is not _C.DATA:
            raise self._fail(f"{reply.code} reply to {command.value}")
        self._pending.popleft()
        if command in _HELLOS:
            if reply.is_success:
                self.capabilities = (
                    parse_capabilities(reply) if command is not _C.HELO else Capabilities(
                        reply.lines[0].split()[0] if reply.lines[0].split() else "")
                )
                self.state = ClientState.READY
            return HelloReply(command, reply, self.capabilities if reply.is_success else None)
        if command is _C.MAIL:
            self._mail_ok = reply.is_success
        elif command is _C.RCPT:
            if reply.is_success and self._mail_ok:
                self._recipients.append(pending.argument)
        elif command is _C.DATA:
            if reply.code == 354:
                self.state = ClientState.MESSAGE
            elif self.state is ClientState.TRANSACTION:
                self.state = ClientState.READY
        elif command is _C.END_OF_DATA:
            return self._on_end_of_data(reply)
        elif command is _C.STARTTLS:
            if reply.is_success:
                # Bytes after the 220 were sent before TLS: drop them (RFC 3207 injection).
                self._buffer.clear()
                self.state = ClientState.TLS_WAIT
        elif command is _C.QUIT:
            self.state = ClientState.CLOSED
            self._pending.clear()
        return CommandReply(command, pending.argument, reply)

    def _on_end_of_data(self, reply: ServerReply) -> ClientEvent:
        # RFC 2033 4.2: one reply for each accepted recipient, in RCPT order; with none accepted
        # the server refused the data with one reply.
        if self.mode is Mode.LMTP and self._recipients:
            if not self._message_replies:
                self._message_replies.extend(self._recipients)
            recipient = self._message_replies.popleft()
            if self._message_replies:
                self._pending.appendleft(_Pending(_C.END_OF_DATA))
            return MessageReply(recipient, reply)
        return MessageReply(None, reply)

    def _on_auth_reply(self, reply: ServerReply) -> ClientEvent | None:
        mechanism = self._auth
        assert mechanism is not None
        if reply.code == 334:
            if self._auth_error is not None:
                raise self._fail("334 after the AUTH exchange was cancelled")
            try:
                challenge = base64.b64decode(reply.lines[0].strip(), validate=True)
                answer = base64.b64encode(mechanism.respond(challenge)).decode("ascii")
            except (binascii.Error, SaslClientError) as exc:
                # RFC 4954 4: "*" cancels; the server MUST answer 501.
                self._auth_error = str(exc) or "malformed challenge"
                answer = "*"
            self._out += answer.encode("ascii") + b"\r\n"
            return None
        self._pending.popleft()
        self._auth = None
        error = self._auth_error
        if reply.code == 235 and error is None and not mechanism.complete:
            error = f"{mechanism.name}: the server did not prove that it knows the password"
        if reply.code == 235 and error is None:
            self.authenticated = True
        return AuthReply(mechanism.name, reply, error)


def _checked(text: str, *, path: bool = False) -> str:
    """Refuse what would end the command line early, or the <path> when `path` is set."""
    if "\r" in text or "\n" in text or (path and ("<" in text or ">" in text)):
        raise ClientUsageError(f"{text!r} would break the command line")
    return text


def _params(params: Iterable[str]) -> str:
    out = ""
    for param in params:
        if not param or any(c in param for c in " \r\n"):
            raise ClientUsageError(f"bad ESMTP parameter {param!r}")
        out += " " + param
    return out
