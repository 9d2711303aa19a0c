"""The sans-I/O POP3 server connection (RFC 1939, RFC 2449, RFC 2595, RFC 5034).

Theory of operation: sealmail.proto.core's, after h11 (feed bytes, pull events until NEED_DATA,
answer each event whose `needs_reply` is set with the method the event names, send what
`data_to_send` returns). Commands are taken one at a time, so a pipelined batch (RFC 2449 6.6)
is answered in order.

The core answers everything that needs no mail knowledge itself: CAPA, USER, STAT, LIST, UIDL,
DELE, NOOP, RSET, syntax and state errors, over-long lines. The host decides what needs the
outside world: the password or SASL exchange, the maildrop (given to `open_maildrop` once the
host has locked it), message bytes, TLS, and the removal of deleted messages at QUIT.

Every refusal leaves the session usable: an unknown command, a command in the wrong state or an
over-long line gets "-ERR" and the next command is read. Only QUIT and the end of the stream end
a session, and only QUIT in TRANSACTION produces `Update`: a dropped connection removes nothing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from dataclasses import dataclass

from sealmail.proto.buffer import LineTooLong, dot_stuff
from sealmail.proto.core import ServerCore, UsageError
from sealmail.proto.pop3._events import (
    NEED_DATA,
    AuthAborted,
    AuthResponse,
    AuthStart,
    Event,
    Login,
    MessageRequest,
    NeedData,
    ProtocolError,
    Quit,
    StartTLS,
    Update,
)
from sealmail.proto.pop3._replies import ERR, OK, Reply, ResponseCode
from sealmail.proto.pop3._state import LEGAL, Command, SessionState, order_error

__all__ = [
    "AUTH_LINE_LENGTH",
    "Limits",
    "Maildrop",
    "MaildropMessage",
    "ServerConnection",
    "UsageError",
    "top_of",
]

# A SASL answer line may carry a large base64 blob (Kerberos tickets, long SCRAM messages);
# RFC 4954 4 asks SMTP servers for 12288 octets, and the same bound serves here.
AUTH_LINE_LENGTH = 12288
# RFC 4422 3.1: sasl-mech = 1*20mech-char; mech-char = UPPER-ALPHA / DIGIT / HYPHEN / UNDERSCORE
# (accepted in any case: RFC 5034 4 says the mechanism name is case-insensitive).
_MECHANISM = re.compile(r"[A-Za-z0-9_-]{1,20}")
_NUMBER = re.compile(r"[0-9]{1,10}")
_MAX_NUMBER = 2**32 - 1

UNRECOGNIZED = ERR("Unrecognized command")
EXTRA_ARGUMENT = ERR("Unexpected extra argument")
MISSING_ARGUMENT = ERR("Missing argument")
LINE_TOO_LONG = ERR("Line too long")
NOT_UTF8 = ERR("Command is not valid UTF-8")
CONTROL_CHARS = ERR("Control characters in command")


@dataclass(frozen=True, slots=True)
class Limits:
    """Explicit limits. `max_line_length` counts the octets of a command before its CRLF."""

    max_line_length: int = 8190

    def __post_init__(self) -> None:
        # RFC 2449 4: "The maximum length of a command line is 255 octets, including the
        # terminating CRLF"; a server may be more lenient, never stricter.
        if self.max_line_length < 253:
            raise ValueError("max_line_length must be at least 253")


@dataclass(frozen=True, slots=True)
class MaildropMessage:
    uid: int
    size: int  # octets as stored, which is what RETR sends before dot-stuffing


@dataclass(frozen=True, slots=True)
class Maildrop:
    """The messages of the locked maildrop at login, in UID order; numbered from 1."""

    uidvalidity: int
    messages: tuple[MaildropMessage, ...]

    def unique_id(self, message: MaildropMessage) -> str:
        """RFC 1939 7 unique-id: Cyrus's default uidl_format, UIDVALIDITY.UID.

        It is stable across sessions and never reused: a UID is never given twice within one
        UIDVALIDITY, and a re-created mailbox gets a new UIDVALIDITY.
        """
        return f"{self.uidvalidity}.{message.uid}"


def top_of(content: bytes, lines: int) -> bytes:
    """RFC 1939 7 TOP: the header, the blank line, then the first `lines` lines of the body.

    A message with no blank line is all header and is sent whole.
    """
    if content.startswith(b"\r\n"):
        body = 2
    else:
        end = content.find(b"\r\n\r\n")
        if end < 0:
            return content
        body = end + 4
    position = body
    for _ in range(lines):
        line_end = content.find(b"\r\n", position)
        if line_end < 0:
            return content
        position = line_end + 2
    return content[:position]


class ServerConnection(ServerCore[SessionState]):
    """One POP3 server session, without I/O."""

    def __init__(
        self,
        hostname: str = "localhost",
        session_id: str = "",
        *,
        limits: Limits | None = None,
        auth_mechanisms: tuple[str, ...] = (),
        plaintext_allowed: bool = False,
        starttls_available: bool = False,
        tls_active: bool = False,
        login_delay: int = 0,
        expire_days: int | None = None,
        greeting_text: str | None = None,
    ) -> None:
        super().__init__(
            SessionState.AUTHORIZATION,
            auth_mechanisms=auth_mechanisms,
            tls_active=tls_active,
        )
        self.hostname = hostname
        self.session_id = session_id
        self.limits = limits or Limits()
        self.plaintext_allowed = plaintext_allowed
        self.starttls_available = starttls_available
        self.login_delay = login_delay  # seconds, RFC 2449 6.5
        self.expire_days = expire_days  # None: NEVER, RFC 2449 6.7
        self.authenticated_as: str | None = None
        self.maildrop: Maildrop | None = None
        self._user: str | None = None
        self._deleted: set[int] = set()  # message numbers marked by DELE
        self._retrieved: set[int] = set()  # message numbers sent whole by RETR
        text = greeting_text if greeting_text is not None else f"{hostname} POP3 server ready"
        self._send(OK(text))

    # -- public API -------------------------------------------------------------------------

    @property
    def deleted(self) -> tuple[int, ...]:
        """UIDs marked for deletion so far."""
        return self._uids(self._deleted)

    @property
    def capabilities(self) -> tuple[str, ...]:
        """What CAPA lists now (RFC 2449 5, 6; RFC 2595 4; RFC 5034 3)."""
        caps: list[str] = []
        login = self.state is SessionState.AUTHORIZATION
        if login and self.auth_mechanisms:
            caps.append("SASL " + " ".join(self.auth_mechanisms))
        if login and self.starttls_available and not self.tls_active:
            caps.append("STLS")
        caps.append("EXPIRE NEVER" if self.expire_days is None else f"EXPIRE {self.expire_days}")
        caps.append(f"LOGIN-DELAY {self.login_delay}")
        caps += ["TOP", "UIDL", "PIPELINING", "RESP-CODES", "AUTH-RESP-CODE"]
        if login and self.plaintext_allowed:
            caps.append("USER")
        if not login:
            caps.append("IMPLEMENTATION sealmail")
        return tuple(caps)

    def refuse(self, reply: Reply) -> None:
        """Answer the pending event with a -ERR reply; the session goes on, except in UPDATE."""
        if reply.ok:
            raise UsageError("refuse() takes a -ERR reply")
        event = self._take(Login, AuthStart, AuthResponse, StartTLS, MessageRequest, Update)
        self._send(reply)
        if isinstance(event, Update):
            self._close()  # RFC 1939 6: QUIT ends the session whether or not removal worked
        elif isinstance(event, (Login, AuthStart, AuthResponse)):
            self._user = None
            self.state = SessionState.AUTHORIZATION

    def auth_challenge(self, data: bytes) -> None:
        """Send a SASL challenge (RFC 5034 4: "+" SP base64); the answer comes as AuthResponse."""
        self._take(AuthStart, AuthResponse)
        self._out += b"+ " + base64.b64encode(data) + b"\r\n"
        self.state = SessionState.AUTH

    def open_maildrop(self, user: str, maildrop: Maildrop) -> None:
        """Login done and the maildrop locked: enter TRANSACTION (RFC 1939 4)."""
        self._take(Login, AuthStart, AuthResponse)
        self.authenticated_as = user
        self.maildrop = maildrop
        self._user = None
        self._deleted.clear()
        self._retrieved.clear()
        self.state = SessionState.TRANSACTION
        suffix = f" SESSIONID=<{self.session_id}>" if self.session_id else ""
        self._send(OK(f"Mailbox locked and ready{suffix}"))

    def start_tls(self) -> None:
        """Accept STLS: send +OK; the driver flushes it, then does the TLS handshake."""
        self._take(StartTLS)
        self._send(OK("Begin TLS negotiation now"))
        self._await_handshake()

    def tls_started(
        self, auth_mechanisms: tuple[str, ...] | None = None, plaintext_allowed: bool | None = None
    ) -> None:
        """The handshake is done: go on in AUTHORIZATION with what TLS now allows.

        RFC 2595 4: "the client MUST discard cached information about server capabilities" and
        the server forgets what it learnt in clear (here: a USER name).
        """
        self._handshake_done("STLS", auth_mechanisms)
        self._user = None
        if plaintext_allowed is not None:
            self.plaintext_allowed = plaintext_allowed
        self.state = SessionState.AUTHORIZATION

    def send_message(self, content: bytes) -> None:
        """Answer RETR or TOP with the message's bytes (RFC 1939 3: dot-stuffed, "." ends)."""
        event = self._take(MessageRequest)
        assert isinstance(event, MessageRequest)
        if event.lines is None:
            self._send(OK(f"{len(content)} octets"))
            self._retrieved.add(event.number)
            self._out += dot_stuff(content)
        else:
            self._send(OK("Top of message follows"))
            self._out += dot_stuff(top_of(content, event.lines))

    def update_done(self) -> None:
        """The deleted messages are gone: say goodbye and close (RFC 1939 6)."""
        self._take(Update)
        left = self._remaining()
        status = "maildrop empty" if left == 0 else f"{left} message{'s' * (left != 1)} left"
        self._send(OK(f"{self.hostname} POP3 server signing off ({status})"))
        self._close()

    # -- engine -----------------------------------------------------------------------------

    def _multiline(self, reply: Reply, lines: list[str]) -> None:
        """RFC 1939 3: a multi-line response's lines are dot-stuffed and end with "."."""
        self._send(reply)
        for line in lines:
            self._out += (("." + line) if line.startswith(".") else line).encode() + b"\r\n"
        self._out += b".\r\n"

    def _error(self, reply: Reply, command: str) -> ProtocolError:
        self._send(reply)
        return ProtocolError(reply, command)

    def _step(self) -> Event | NeedData | None:
        exchange = self.state is SessionState.AUTH
        limit = (
            max(self.limits.max_line_length, AUTH_LINE_LENGTH)
            if exchange
            else (self.limits.max_line_length)
        )
        try:
            line = self._buffer.next_line(limit)
        except LineTooLong:
            if exchange:
                self.state = SessionState.AUTHORIZATION
                self._send(ERR("Response line too long", ResponseCode.AUTH))
                return AuthAborted("response line too long")
            return self._error(LINE_TOO_LONG, "")
        if line is None:
            return NEED_DATA
        if exchange:
            return self._auth_line(line)
        return self._command(line)

    def _command(self, line: bytes) -> Event | None:
        verb_bytes, arg_bytes = _split(line)
        try:
            command = Command(verb_bytes.decode("ascii").upper())
        except (UnicodeDecodeError, ValueError):
            return self._error(UNRECOGNIZED, _shown(verb_bytes))
        try:
            arg = arg_bytes.decode("utf-8")
        except UnicodeDecodeError:
            return self._error(NOT_UTF8, command.value)
        if any((ch < " " and ch != "\t") or ch == "\x7f" for ch in arg):
            return self._error(CONTROL_CHARS, command.value)
        if command is Command.APOP or (command is Command.STLS and not self.starttls_available):
            # APOP needs the password in clear on the server, which the sasldb never keeps;
            # the greeting carries no timestamp, so RFC 1939 7 says a client will not try it.
            return self._error(UNRECOGNIZED, command.value)
        if self.state not in LEGAL[command]:
            return self._error(order_error(command, self.state), command.value)
        if command is not Command.PASS:
            # RFC 1939 7 lets a server take spaces in PASS's one argument as part of the
            # password; every other argument loses surrounding blanks (Outlook sends "AUTH ").
            arg = arg.strip(" \t")
        return _HANDLERS[command](self, arg)

    # -- AUTHORIZATION --------------------------------------------------------------------------

    def _user_command(self, arg: str) -> Event | None:
        if not self.plaintext_allowed:
            return self._error(
                ERR("USER command only available under a layer", ResponseCode.AUTH), "USER"
            )
        if self._user is not None:
            return self._error(ERR("Must give PASS command", ResponseCode.AUTH), "USER")
        if not arg:
            return self._error(MISSING_ARGUMENT, "USER")
        self._user = arg
        self._send(OK("Name accepted, send PASS"))
        return None

    def _pass(self, arg: str) -> Event | None:
        if self._user is None:
            return self._error(ERR("Must give USER command", ResponseCode.AUTH), "PASS")
        if not arg:
            return self._error(MISSING_ARGUMENT, "PASS")
        user, self._user = self._user, None
        return Login(user, arg)

    def _auth(self, arg: str) -> Event | None:
        if not arg:
            # The mechanism list of draft-myers-sasl-pop3, which clients still probe with.
            self._multiline(OK("List of supported mechanisms follows"), list(self.auth_mechanisms))
            return None
        mechanism, _, initial = arg.partition(" ")
        initial = initial.strip(" \t")
        if not _MECHANISM.fullmatch(mechanism) or " " in initial:
            return self._error(ERR("Invalid AUTH arguments", ResponseCode.AUTH), "AUTH")
        self._user = None
        response: bytes | None = None
        if initial:
            # RFC 5034 4: an empty initial response is sent as a single "=".
            decoded = b"" if initial == "=" else _b64decode(initial)
            if decoded is None:
                return self._error(ERR("Invalid base64 in AUTH", ResponseCode.AUTH), "AUTH")
            response = decoded
        return AuthStart(mechanism.upper(), response)

    def _auth_line(self, line: bytes) -> Event:
        if line.strip() == b"*":
            # RFC 5034 4: "If the client wishes to cancel the authentication exchange, it
            # issues a line with a single '*'. If the server receives such a response, it MUST
            # reject the AUTH command by sending an -ERR reply."
            self.state = SessionState.AUTHORIZATION
            self._send(ERR("Client canceled authentication", ResponseCode.AUTH))
            return AuthAborted("cancelled by the client")
        data = _b64decode(line.strip().decode("ascii", "replace"))
        if data is None:
            self.state = SessionState.AUTHORIZATION
            self._send(ERR("Invalid base64 in response", ResponseCode.AUTH))
            return AuthAborted("invalid base64 in the response")
        self.state = SessionState.AUTHORIZATION  # until the host sends another challenge
        return AuthResponse(data)

    def _stls(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "STLS")
        if self.tls_active:
            return self._error(ERR("Already successfully executed STLS"), "STLS")
        return StartTLS()

    def _capa(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "CAPA")
        self._multiline(OK("List of capabilities follows"), list(self.capabilities))
        return None

    def _quit(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "QUIT")
        if self.state is SessionState.TRANSACTION:
            # RFC 1939 6: QUIT from TRANSACTION enters UPDATE; the host removes the messages.
            self.state = SessionState.UPDATE
            return Update(self._uids(self._deleted), self._uids(self._retrieved - self._deleted))
        self._send(OK(f"{self.hostname} POP3 server signing off"))
        self._close()
        return Quit()

    # -- TRANSACTION ----------------------------------------------------------------------------

    def _messages(self) -> tuple[MaildropMessage, ...]:
        assert self.maildrop is not None
        return self.maildrop.messages

    def _uids(self, numbers: set[int]) -> tuple[int, ...]:
        messages = self.maildrop.messages if self.maildrop else ()
        return tuple(messages[n - 1].uid for n in sorted(numbers))

    def _remaining(self) -> int:
        return len(self._messages()) - len(self._deleted)

    def _live(self) -> list[tuple[int, MaildropMessage]]:
        return [
            (number, message)
            for number, message in enumerate(self._messages(), 1)
            if number not in self._deleted
        ]

    def _number(self, text: str, command: str) -> int | ProtocolError:
        """A message number that exists and is not deleted, or the error already sent."""
        word, _, rest = text.partition(" ")
        if not word:
            return self._error(MISSING_ARGUMENT, command)
        if not _NUMBER.fullmatch(word) or int(word) > _MAX_NUMBER:
            return self._error(ERR("Not a number"), command)
        if rest.strip(" \t"):
            return self._error(EXTRA_ARGUMENT, command)
        number = int(word)
        count = len(self._messages())
        if not 1 <= number <= count:
            plural = "s" * (count != 1)
            return self._error(
                ERR(f"no such message, only {count} message{plural} in maildrop"), command
            )
        if number in self._deleted:
            return self._error(ERR(f"message {number} already deleted"), command)
        return number

    def _stat(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "STAT")
        live = self._live()
        # RFC 1939 5: the drop listing is exactly "+OK" SP count SP octets.
        self._send(OK(f"{len(live)} {sum(m.size for _, m in live)}"))
        return None

    def _list(self, arg: str) -> Event | None:
        if arg:
            number = self._number(arg, "LIST")
            if isinstance(number, ProtocolError):
                return number
            self._send(OK(f"{number} {self._messages()[number - 1].size}"))
            return None
        live = self._live()
        total = sum(m.size for _, m in live)
        plural = "s" * (len(live) != 1)
        self._multiline(
            OK(f"{len(live)} message{plural} ({total} octets)"),
            [f"{number} {message.size}" for number, message in live],
        )
        return None

    def _uidl(self, arg: str) -> Event | None:
        assert self.maildrop is not None
        if arg:
            number = self._number(arg, "UIDL")
            if isinstance(number, ProtocolError):
                return number
            unique_id = self.maildrop.unique_id(self._messages()[number - 1])
            self._send(OK(f"{number} {unique_id}"))
            return None
        self._multiline(
            OK("unique-id listing follows"),
            [f"{number} {self.maildrop.unique_id(message)}" for number, message in self._live()],
        )
        return None

    def _retr(self, arg: str) -> Event | None:
        number = self._number(arg, "RETR")
        if isinstance(number, ProtocolError):
            return number
        return MessageRequest(number, self._messages()[number - 1].uid)

    def _top(self, arg: str) -> Event | None:
        words = arg.split()
        if len(words) != 2:
            return self._error(ERR("Syntax: TOP msg n"), "TOP")
        if not _NUMBER.fullmatch(words[1]) or int(words[1]) > _MAX_NUMBER:
            return self._error(ERR("Invalid number of lines"), "TOP")
        number = self._number(words[0], "TOP")
        if isinstance(number, ProtocolError):
            return number
        return MessageRequest(number, self._messages()[number - 1].uid, int(words[1]))

    def _dele(self, arg: str) -> Event | None:
        number = self._number(arg, "DELE")
        if isinstance(number, ProtocolError):
            return number
        # RFC 1939 5: marked only; "the POP3 server does not actually delete the message until
        # the POP3 session enters the UPDATE state."
        self._deleted.add(number)
        self._send(OK(f"message {number} deleted"))
        return None

    def _noop(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "NOOP")
        self._send(OK())
        return None

    def _rset(self, arg: str) -> Event | None:
        if arg:
            return self._error(EXTRA_ARGUMENT, "RSET")
        self._deleted.clear()
        self._retrieved.clear()
        messages = self._messages()
        plural = "s" * (len(messages) != 1)
        total = sum(m.size for m in messages)
        self._send(OK(f"maildrop has {len(messages)} message{plural} ({total} octets)"))
        return None


def _split(line: bytes) -> tuple[bytes, bytes]:
    """Keyword and argument text: the keyword ends at the first space or tab (RFC 2449 3)."""
    match = re.match(rb"([^ \t]*)[ \t]?(.*)", line, re.DOTALL)
    assert match is not None
    return match.group(1), match.group(2)


def _shown(verb: bytes) -> str:
    """A refused keyword fit for a log line: printable ASCII, short."""
    return verb[:20].decode("ascii", "replace").encode("ascii", "replace").decode("ascii")


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


_HANDLERS: dict[Command, Callable[[ServerConnection, str], Event | None]] = {
    Command.USER: ServerConnection._user_command,
    Command.PASS: ServerConnection._pass,
    Command.AUTH: ServerConnection._auth,
    Command.STLS: ServerConnection._stls,
    Command.CAPA: ServerConnection._capa,
    Command.QUIT: ServerConnection._quit,
    Command.STAT: ServerConnection._stat,
    Command.LIST: ServerConnection._list,
    Command.UIDL: ServerConnection._uidl,
    Command.RETR: ServerConnection._retr,
    Command.TOP: ServerConnection._top,
    Command.DELE: ServerConnection._dele,
    Command.NOOP: ServerConnection._noop,
    Command.RSET: ServerConnection._rset,
}
