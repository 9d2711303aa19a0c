"""The sans-I/O SMTP/LMTP server connection.

Theory of operation: sealmail.proto.core's, after h11 (feed bytes, pull events until NEED_DATA,
answer each event whose `needs_reply` is set, send what `data_to_send` returns). The core parses
one command at a time and stops at an event that needs the host's answer, so a pipelined batch
(RFC 2920) comes out in order and its replies go out in order. Everything the protocol itself
decides (LHLO capabilities, syntax and order errors, limits, NOOP, RSET, VRFY, HELP, QUIT, the
354 to DATA) is answered here; the host decides only what needs mail knowledge: senders,
recipients, the message, authentication and TLS.

LMTP (RFC 2033 4.2): after the data the host gives one reply per accepted recipient, in RCPT
order; `answer` enforces the count and then ends the transaction.

With `record_history`, the core keeps the session's transcript as Postfix's smtpd does for its
postmaster notices (notify_classes): "In:  " for each command line (an AUTH line only as far as
its mechanism, SASL responses and message content not at all) and "Out: " for each reply line,
at most HISTORY_LINES of them; and `error_classes` names the kinds of errors it answered itself
("protocol": syntax and order; "policy": limits; "bounce": a message too big). The host adds its
own with `note_error` (a refused recipient is "policy", a queue file write error "resource").
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sealmail.proto.buffer import DotDataReader, LineTooLong
from sealmail.proto.core import Rendered, ServerCore, UsageError
from sealmail.proto.smtp.address import (
    AddressError,
    ParamError,
    parse_params,
    parse_path,
    split_path_argument,
)
from sealmail.proto.smtp.events import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    DataCommand,
    Event,
    Hello,
    HelloCommand,
    MailFrom,
    MessageData,
    NeedData,
    NonSmtpCommand,
    ProtocolError,
    Quit,
    RcptTo,
    Reset,
    StartTLS,
)
from sealmail.proto.smtp.replies import Reply
from sealmail.proto.smtp.state import (
    LEGAL,
    NO_RECIPIENTS_REPLIES,
    Command,
    Mode,
    SessionState,
    order_error,
)

__all__ = ["HISTORY_LINES", "Limits", "ServerConnection", "UsageError"]

HISTORY_LINES = 1000  # the transcript keeps the last this many lines

# RFC 4954 4: "a server implementation MUST be able to receive ... 12288 octets" for an AUTH
# command line or a response line.
AUTH_LINE_LENGTH = 12288
_SIZE_VALUE = re.compile(r"[0-9]{1,20}")
_BDAT_ARGS = re.compile(r"([0-9]{1,20})(?: +(LAST))? *", re.IGNORECASE)
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+")
_BODY_TYPES = frozenset({"7BIT", "8BITMIME", "BINARYMIME"})
_FROM = re.compile(r"FROM: *", re.IGNORECASE)
_TO = re.compile(r"TO: *", re.IGNORECASE)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters other than TAB

OK = Reply(250, "2.0.0", "Ok")
BYE = Reply(221, "2.0.0", "Bye")
UNKNOWN = Reply(500, "5.5.2", "Error: command not recognized")
LINE_TOO_LONG = Reply(500, "5.5.2", "Error: line too long")
BAD_SYNTAX = Reply(500, "5.5.2", "Error: bad syntax")
NOT_UTF8 = Reply(501, "5.5.2", "Error: command is not valid UTF-8")
CONTROL_CHARS = Reply(501, "5.5.2", "Error: control characters in command")
NO_ARGUMENTS = Reply(501, "5.5.4", "Syntax error: no arguments allowed")
TOO_MANY_RECIPIENTS = Reply(452, "4.5.3", "Error: too many recipients")
MESSAGE_TOO_BIG = Reply(552, "5.2.3", "Message size exceeds fixed maximum message size")
AUTH_REQUIRED = Reply(530, "5.7.0", "Authentication required")
UNDECLARED_UTF8 = Reply(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
VRFY_REPLY = Reply(252, "2.5.2", "Cannot VRFY user, but will accept message and attempt delivery")
START_DATA = Reply(354, None, "End data with <CR><LF>.<CR><LF>")


@dataclass(frozen=True, slots=True)
class Limits:
    """Explicit limits (0 means none for the three counts that allow it)."""

    max_line_length: int = 4096
    max_message_size: int = 0
    max_recipients: int = 1000
    max_bad_commands: int = 20
    # SMTP only, as Postfix's smtpd: HELO, EHLO, RSET, NOOP and VRFY past this many in a row
    # (a delivered message starts again) each count as an error (smtpd_junk_command_limit).
    max_junk_commands: int = 100
    # SMTP only: verbs that end the session at once (smtpd_forbidden_commands; a verb ending
    # in ":" is a mail header sent as a command, which Postfix's smtpd refuses the same way).
    forbidden_commands: frozenset[str] = frozenset({"CONNECT", "GET", "POST"})

    def __post_init__(self) -> None:
        if self.max_line_length < 512:
            # RFC 5321 4.5.3.1.4: a command line is up to 512 octets with its CRLF.
            raise ValueError("max_line_length must be at least 512")
        for name in ("max_message_size", "max_recipients", "max_bad_commands",
                     "max_junk_commands"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")


@dataclass(slots=True)
class _Transaction:
    reverse_path: str
    params: dict[str, str | None]
    recipients: list[str] = field(default_factory=list)
    chunks: list[bytes] = field(default_factory=list)
    size: int = 0
    oversized: bool = False
    chunking: bool = False  # a BDAT chunk was taken: DATA is no longer allowed


class ServerConnection(ServerCore[SessionState]):
    """One SMTP or LMTP server session, without I/O."""

    def __init__(
        self,
        mode: Mode = Mode.LMTP,
        hostname: str = "localhost",
        session_id: str = "",
        limits: Limits | None = None,
        auth_mechanisms: tuple[str, ...] = (),
        auth_required: bool = False,
        starttls_available: bool = False,
        greeting_text: str | None = None,
        greeting_code: int = 220,
        accept_mail_auth: bool = False,
        dsn: bool = False,
        smtputf8: bool = False,
        strict_smtputf8: bool = False,
        record_history: bool = False,
        answer_hello: bool = False,
        answer_data: bool = False,
    ) -> None:
        super().__init__(SessionState.GREETED, auth_mechanisms=auth_mechanisms)
        self.history: deque[str] | None = deque(maxlen=HISTORY_LINES) if record_history else None
        self.error_classes: set[str] = set()
        # The host decides HELO/EHLO and DATA (access restrictions at those commands): the core
        # then hands out HelloCommand / DataCommand and waits for the answer.
        self.answer_hello = answer_hello
        self.answer_data = answer_data
        self.mode = mode
        self.dsn = dsn  # RFC 3461: advertise DSN and take RET/ENVID and NOTIFY/ORCPT
        # RFC 6531: advertise SMTPUTF8 and take MAIL's SMTPUTF8 parameter. Strict: an address
        # that is not ASCII is refused in a transaction that did not declare it (RFC 6531 3.4:
        # without the parameter, the envelope is ASCII as RFC 5321 has it).
        self.smtputf8 = smtputf8
        self.strict_smtputf8 = strict_smtputf8 and smtputf8
        # MAIL's AUTH= (RFC 4954 5) is also taken from clients trusted without AUTH (a UNIX-socket
        # deliver passing -a AUTHUSER, as Cyrus's deliver does).
        self.accept_mail_auth = accept_mail_auth
        self.hostname = hostname
        self.session_id = session_id
        self.limits = limits or Limits()
        self.auth_required = auth_required
        self.starttls_available = starttls_available
        self.authenticated_as: str | None = None
        self.hello_name: str | None = None
        self.bad_commands = 0
        self.junk_commands = 0
        self._transaction: _Transaction | None = None
        self._replies_owed = 0  # LMTP: replies still owed for the pending MessageData
        self._data_reader: DotDataReader | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_error: Reply | None = None
        self._bdat_return = SessionState.READY
        self._auth_mechanism: str | None = None
        self._last_sent: Rendered | None = None
        self._last_rendered = b""
        text = greeting_text if greeting_text is not None else f"{mode.value} sealmail ready"
        # RFC 5321 3.1: 554 instead of 220 when the host will not take mail on this connection
        # (Postfix's smtpd after a milter's rejection at CONNECT); the session goes on, with
        # that refusal as its first error (smtpd.c: error_count++, toward the hard limit).
        self._send(Reply(greeting_code, None, f"{hostname} {text}"))
        if greeting_code >= 500:
            self.error_classes.add("policy")
            self._count_error()

    # -- public API -------------------------------------------------------------------------

    @property
    def recipients(self) -> tuple[str, ...]:
        """Recipients accepted in the current transaction, in RCPT order."""
        return tuple(self._transaction.recipients) if self._transaction else ()

    @property
    def capabilities(self) -> tuple[str, ...]:
        """The keywords LHLO/EHLO advertises now (RFC 5321 4.1.1.1, RFC 2033 4.1)."""
        caps = ["8BITMIME", "ENHANCEDSTATUSCODES", "PIPELINING"]
        size = self.limits.max_message_size
        # RFC 1870 4: "SIZE" with no value means no fixed maximum.
        caps.append(f"SIZE {size}" if size else "SIZE")
        caps += ["CHUNKING", "BINARYMIME"]
        if self.mode is Mode.LMTP:
            caps.append("IGNOREQUOTA")
        if self.dsn:
            caps.append("DSN")
        if self.smtputf8:
            caps.append("SMTPUTF8")
        if self.auth_mechanisms and self.authenticated_as is None:
            caps.append("AUTH " + " ".join(self.auth_mechanisms))
        if self.starttls_available and not self.tls_active:
            caps.append("STARTTLS")
        return tuple(caps)

    def answer(self, reply: Reply) -> None:
        """Answer the pending event (for LMTP data: once per recipient, in order)."""
        event = self._pending
        if event is None:
            raise UsageError("no event is waiting for an answer")
        # One lookup by the event's type (an LMTP message of 50 recipients answers ~100 events;
        # a chain of isinstance tests each was ~1 us of the event loop's time a reply).
        _ANSWERS[type(event)](self, event, reply)

    def _answer_final(self, event: Event, reply: Reply) -> None:
        """Send a final reply (not 3xx) to `event` and count it (`_answered`)."""
        if 300 <= reply.code < 400:
            raise UsageError(f"a {reply.code} reply cannot answer {type(event).__name__}")
        self._send(reply)
        self._answered(event, reply)

    def _answer_mail(self, event: MailFrom, reply: Reply) -> None:
        self._answer_final(event, reply)
        self._pending = None
        if reply.is_success:
            self._transaction = _Transaction(event.reverse_path, dict(event.params))
            self.state = SessionState.MAIL

    def _answer_rcpt(self, event: RcptTo, reply: Reply) -> None:
        self._answer_final(event, reply)
        self._pending = None
        if reply.is_success and self._transaction is not None:
            self._transaction.recipients.append(event.forward_path)
            self.state = SessionState.RCPT

    def _answer_message(self, event: MessageData, reply: Reply) -> None:
        self._answer_final(event, reply)
        self._replies_owed -= 1
        if self._replies_owed == 0:
            self._pending = None
            self._end_transaction()

    def _answer_auth(self, event: AuthStart | AuthResponse, reply: Reply) -> None:
        if reply.code < 400:
            raise UsageError("use auth_challenge() / auth_succeeded() to go on with AUTH")
        self._send(reply)
        self._answered(event, reply)
        self._pending = None
        self._auth_mechanism = None
        self.state = SessionState.READY

    def _answer_starttls(self, event: StartTLS, reply: Reply) -> None:
        self._answer_final(event, reply)
        self._pending = None
        if reply.is_success:
            self._await_handshake()

    def _answer_hello(self, event: HelloCommand, reply: Reply) -> None:
        """A 2xx lets the core send its own 250 with the keywords; a refusal goes as given."""
        if 300 <= reply.code < 400:
            raise UsageError(f"a {reply.code} reply cannot answer {type(event).__name__}")
        if not reply.is_success:
            self._send(reply)
        self._answered(event, reply)
        self._pending = None
        if reply.is_success:
            self._accept_hello(event.command, event.hostname)

    def _answer_data_command(self, event: DataCommand, reply: Reply) -> None:
        if reply.code != 354 and reply.code < 400:
            raise UsageError("DataCommand takes 354 or a refusal")
        self._send(START_DATA if reply.code == 354 else reply)
        self._answered(event, reply)
        self._pending = None
        if reply.code == 354:
            self._data_reader = DotDataReader(self.limits.max_message_size)
            self.state = SessionState.DATA

    def _answered(self, event: Event, reply: Reply) -> None:
        """SMTP, as Postfix's smtpd.c: a command the host refused is an error toward
        smtpd_hard_error_limit (its command handler returned non-zero); a delivered message
        starts the junk command count again. LMTP's refused recipients are the MTA's business,
        never a reason to cut its session."""
        if self.mode is not Mode.SMTP:
            return
        if reply.code >= 400 and not (isinstance(event, MessageData) and reply.code == 421):
            self._count_error()
        elif isinstance(event, MessageData) and reply.is_success:
            self.junk_commands = 0

    def _count_error(self) -> None:
        """One more error; SMTP ends the session with 421 once they reach the limit, before
        another command is read (smtpd.c checks at the top of its command loop). LMTP counts
        its protocol errors in `_error`."""
        self.bad_commands += 1
        limit = self.limits.max_bad_commands
        if self.mode is Mode.SMTP and limit and self.bad_commands >= limit and not self.closed:
            self._send(Reply(421, "4.7.0", f"{self.hostname} Error: too many errors"))
            self._close()

    def _junk(self) -> None:
        """SMTP: HELO, EHLO, RSET, NOOP and VRFY are free only up to smtpd_junk_command_limit
        (smtpd.c: `junk_cmds++ > limit` counts an error)."""
        if self.mode is Mode.SMTP:
            self.junk_commands += 1
            if self.junk_commands > self.limits.max_junk_commands + 1:
                self._count_error()

    def note_error(self, kind: str) -> None:
        """The host refused something for a reason of this kind (Postfix's notify_classes:
        policy, resource, software, protocol, bounce)."""
        self.error_classes.add(kind)

    def _send(self, reply: Rendered) -> None:
        # LMTP answers one data command with a reply per recipient, mostly the same object
        # (sealmail.delivery.replies.delivered): rendered once. Replies are immutable.
        if reply is not self._last_sent:
            self._last_sent, self._last_rendered = reply, reply.render()
        self._emit(self._last_rendered)

    def _emit(self, data: bytes) -> None:
        self._out += data
        if self.history is not None:
            for line in data.decode("utf-8", "replace").splitlines():
                self.history.append("Out: " + line)

    @property
    def replies_owed(self) -> int:
        """LMTP: how many per-recipient replies the pending MessageData still needs."""
        return self._replies_owed

    def auth_challenge(self, data: bytes) -> None:
        """Send a 334 challenge; the client's answer comes as AuthResponse."""
        if not isinstance(self._pending, (AuthStart, AuthResponse)):
            raise UsageError("auth_challenge() without a pending AUTH exchange")
        self._emit(b"334 " + base64.b64encode(data) + b"\r\n")
        self._pending = None
        self.state = SessionState.AUTH

    def auth_succeeded(self, identity: str) -> None:
        """Finish AUTH with 235 2.7.0; MAIL may follow as `identity`."""
        if not isinstance(self._pending, (AuthStart, AuthResponse)):
            raise UsageError("auth_succeeded() without a pending AUTH exchange")
        self._send(Reply(235, "2.7.0", "Authentication successful"))
        self._pending = None
        self._auth_mechanism = None
        self.authenticated_as = identity
        self.state = SessionState.READY

    def tls_started(self, auth_mechanisms: tuple[str, ...] | None = None) -> None:
        """The driver finished the TLS handshake: start the session over (RFC 3207 4.2).

        RFC 3207 4.2: "The server MUST discard any knowledge obtained from the client, such as
        the argument to the EHLO command, which was not obtained from the TLS negotiation
        itself." `auth_mechanisms` replaces the offered mechanisms (e.g. PLAIN only under TLS).
        """
        self._handshake_done("STARTTLS", auth_mechanisms)
        self.hello_name = None
        self.authenticated_as = None
        self._transaction = None
        self.state = SessionState.GREETED

    # -- engine -----------------------------------------------------------------------------

    def _close(self) -> None:
        super()._close()
        self._transaction = None

    def _end_transaction(self) -> None:
        self._transaction = None
        self._data_reader = None
        self.state = SessionState.READY

    def _error(self, reply: Reply, line: bytes = b"") -> ProtocolError:
        """Send an error the core decided; protocol errors (X.5.X) count toward the limit. A
        recipient over the limit is not one: RFC 5321 4.5.3.1.10 has the client deliver to the
        accepted ones and retry the rest, which it cannot do if the session is cut."""
        line = _without_credentials(line)
        self.error_classes.add(_error_class(reply))
        if self.mode is Mode.SMTP:  # every refused command, as Postfix's smtpd
            self._send(reply)
            if reply is not TOO_MANY_RECIPIENTS:
                self._count_error()
            return ProtocolError(reply, line)
        counted = reply not in NO_RECIPIENTS_REPLIES and reply is not TOO_MANY_RECIPIENTS
        if counted and reply.enhanced is not None and reply.enhanced[2] == "5":
            self.bad_commands += 1
            limit = self.limits.max_bad_commands
            if limit and self.bad_commands > limit:
                reply = Reply(421, "4.7.0", f"{self.hostname} Error: too many errors")
                self._send(reply)
                self._close()
                return ProtocolError(reply, line)
        self._send(reply)
        return ProtocolError(reply, line)

    def _step(self) -> Event | NeedData | None:
        """Make one step; None means "step again" (a command answered with no event)."""
        if self.state is SessionState.DATA:
            return self._read_data()
        if self.state is SessionState.BDAT:
            return self._read_chunk()
        limit = self.limits.max_line_length
        if self.state is SessionState.AUTH:
            limit = max(limit, AUTH_LINE_LENGTH)
        try:
            line = self._buffer.next_line(limit)
        except LineTooLong:
            if self.state is SessionState.AUTH:
                self.state = SessionState.READY
                self._auth_mechanism = None
            return self._error(LINE_TOO_LONG)
        if line is None:
            return NEED_DATA
        if self.state is SessionState.AUTH:
            return self._auth_line(line)
        if self.history is not None:
            self.history.append("In:  " + _without_credentials(line).decode("utf-8", "replace"))
        return self._command(line)

    def _command(self, line: bytes) -> Event | None:
        verb_bytes, _, arg_bytes = line.partition(b" ")
        if self.mode is Mode.SMTP and self._forbidden(verb_bytes):
            self._send(Reply(221, "2.7.0", "Error: I can break rules, too. Goodbye."))
            self._close()
            return NonSmtpCommand(line)
        verb = _VERBS.get(verb_bytes.upper())
        if verb is None:
            return self._error(BAD_SYNTAX if not line.strip() else UNKNOWN, line)
        command, legal, handler = verb
        try:
            arg = arg_bytes.decode("utf-8")
        except UnicodeDecodeError:
            if command is Command.MAIL:
                return self._error(Reply(553, "5.1.7", "Bad sender address: not UTF-8"), line)
            if command is Command.RCPT:
                return self._error(Reply(553, "5.1.3", "Bad recipient address: not UTF-8"), line)
            return self._error(NOT_UTF8, line)
        if _CONTROL.search(arg):
            return self._error(CONTROL_CHARS, line)
        if command in (Command.EHLO, Command.HELO) and self.mode is Mode.LMTP:
            # RFC 2033 4.1: "The LHLO command ... MUST be used instead of HELO or EHLO."
            return self._error(Reply(500, "5.5.1", "Error: this is LMTP, use LHLO"), line)
        if command is Command.LHLO and self.mode is Mode.SMTP:
            return self._error(UNKNOWN, line)
        if command in (Command.AUTH, Command.STARTTLS) and not self._offers(command):
            return self._error(Reply(502, "5.5.1", "Error: command not implemented"), line)
        if command is Command.STARTTLS and self.tls_active:
            return self._error(Reply(554, "5.5.1", "Error: TLS already active"), line)
        if self.state not in legal:
            refusal = order_error(command, self.state, self.mode)
            if command is Command.BDAT:
                return self._bdat_refused(arg.strip(" \t"), line, refusal)
            return self._error(refusal, line)
        return handler(self, arg.strip(" \t"), line)

    def _forbidden(self, verb: bytes) -> bool:
        """An HTTP request or a mail header where a command belongs: a proxy abused to reach
        us, or a client that lost track of its DATA (smtpd_forbidden_commands)."""
        name = verb.decode("latin-1").upper()
        return name in self.limits.forbidden_commands or (
            len(name) > 1 and name.endswith(":") and name[:-1].replace("-", "").isalnum())

    def _offers(self, command: Command) -> bool:
        if command is Command.AUTH:
            return bool(self.auth_mechanisms)
        return self.starttls_available

    # -- commands -----------------------------------------------------------------------------

    def _hello(self, arg: str, line: bytes) -> Event | None:
        verb = line.split(b" ", 1)[0].decode("ascii").upper()
        if not arg or " " in arg:
            return self._error(Reply(501, "5.5.4", f"Syntax: {verb} hostname"), line)
        if self.answer_hello and self.mode is Mode.SMTP:
            return HelloCommand(verb, arg)
        return self._accept_hello(verb, arg)

    def _accept_hello(self, verb: str, arg: str) -> Event:
        # RFC 5321 4.1.4: EHLO/HELO (and so LHLO) in a transaction reset it, as RSET does.
        self._transaction = None
        self.hello_name = arg
        self.state = SessionState.READY
        if verb == "HELO":
            self._emit(Reply(250, None, self.hostname).render(enhanced=False))
        else:
            lines = (self.hostname, *self.capabilities)
            self._emit(Reply(250, None, lines).render(enhanced=False))
        self._junk()
        return Hello(verb, arg)

    def _mail(self, arg: str, line: bytes) -> Event | None:
        if self.auth_required and self.authenticated_as is None:
            return self._error(AUTH_REQUIRED, line)
        match = _FROM.match(arg)
        if not match:
            return self._error(Reply(501, "5.5.4", "Syntax: MAIL FROM:<address>"), line)
        path_text, params_text = split_path_argument(arg[match.end() :])
        try:
            path = parse_path(path_text)
        except AddressError as exc:
            return self._error(Reply(501, "5.1.7", f"Bad sender address syntax: {exc}"), line)
        try:
            params = parse_params(params_text)
        except ParamError as exc:
            return self._error(Reply(501, "5.5.4", f"Syntax error in parameters: {exc}"), line)
        for name, value in params.items():
            if name == "SIZE":
                if value is None or not _SIZE_VALUE.fullmatch(value):
                    return self._error(Reply(501, "5.5.4", "Bad SIZE parameter"), line)
                limit = self.limits.max_message_size
                # RFC 1870 6.2: a declared size over the fixed maximum gets 552.
                if limit and int(value) > limit:
                    return self._error(MESSAGE_TOO_BIG, line)
            elif name == "BODY":
                if value is None or value.upper() not in _BODY_TYPES:
                    return self._error(Reply(501, "5.5.4", "Bad BODY parameter"), line)
                params[name] = value.upper()
            elif name == "AUTH" and (self.auth_mechanisms or self.accept_mail_auth):
                # RFC 4954 5: AUTH=<> or AUTH=xtext; the host decides whether to trust it.
                if value is None or not (value == "<>" or _XTEXT.fullmatch(value)):
                    return self._error(Reply(501, "5.5.4", "Bad AUTH parameter"), line)
            elif name == "RET" and self.dsn:
                # RFC 3461 4.3: RET=FULL or RET=HDRS.
                if value is None or value.upper() not in ("FULL", "HDRS"):
                    return self._error(Reply(501, "5.5.4", "Bad RET parameter"), line)
                params[name] = value.upper()
            elif name == "ENVID" and self.dsn:
                # RFC 3461 4.4: xtext, at most 100 characters.
                if value is None or len(value) > 100 or not _XTEXT.fullmatch(value):
                    return self._error(Reply(501, "5.5.4", "Bad ENVID parameter"), line)
            elif name == "SMTPUTF8" and self.smtputf8:
                # RFC 6531 3.4: "SMTPUTF8" takes no value.
                if value is not None:
                    return self._error(Reply(501, "5.5.4", "Bad SMTPUTF8 parameter"), line)
            else:
                return self._error(Reply(555, "5.5.4", f"Unsupported parameter {name}"), line)
        address = path.address
        if self._undeclared_utf8(path_text, params):
            return self._error(UNDECLARED_UTF8, line)
        return MailFrom("" if address is None else str(address), params, address)

    def _undeclared_utf8(self, path_text: str, params: dict[str, str | None]) -> bool:
        """RFC 6531 3.4, when strict: a non-ASCII address needs MAIL's SMTPUTF8 parameter."""
        return self.strict_smtputf8 and not path_text.isascii() and "SMTPUTF8" not in params

    def _rcpt(self, arg: str, line: bytes) -> Event | None:
        match = _TO.match(arg)
        if not match:
            return self._error(Reply(501, "5.5.4", "Syntax: RCPT TO:<address>"), line)
        path_text, params_text = split_path_argument(arg[match.end() :])
        try:
            path = parse_path(path_text)
        except AddressError as exc:
            return self._error(Reply(501, "5.1.3", f"Bad recipient address syntax: {exc}"), line)
        if path.address is None:
            return self._error(Reply(501, "5.1.3", "Bad recipient address syntax: <>"), line)
        try:
            params = parse_params(params_text)
        except ParamError as exc:
            return self._error(Reply(501, "5.5.4", f"Syntax error in parameters: {exc}"), line)
        for name, value in params.items():
            if name == "IGNOREQUOTA" and self.mode is Mode.LMTP:
                if value is not None:
                    return self._error(Reply(501, "5.5.4", "IGNOREQUOTA takes no value"), line)
            elif name == "NOTIFY" and self.dsn:
                # RFC 3461 4.1: NEVER alone, or a list of SUCCESS, FAILURE, DELAY.
                words = (value or "").upper().split(",")
                if not value or not (
                    words == ["NEVER"] or set(words) <= {"SUCCESS", "FAILURE", "DELAY"}
                ):
                    return self._error(Reply(501, "5.5.4", "Bad NOTIFY parameter"), line)
                params[name] = ",".join(words)
            elif name == "ORCPT" and self.dsn:
                # RFC 3461 4.2: addr-type ";" xtext.
                addr_type, sep, text = (value or "").partition(";")
                if not sep or not addr_type or not text or not _XTEXT.fullmatch(text):
                    return self._error(Reply(501, "5.5.4", "Bad ORCPT parameter"), line)
            else:
                return self._error(Reply(555, "5.5.4", f"Unsupported parameter {name}"), line)
        if self._transaction and self._undeclared_utf8(path_text, self._transaction.params):
            return self._error(UNDECLARED_UTF8, line)
        limit = self.limits.max_recipients
        if limit and self._transaction and len(self._transaction.recipients) >= limit:
            return self._error(TOO_MANY_RECIPIENTS, line)
        return RcptTo(str(path.address), params, path.address)

    def _data(self, arg: str, line: bytes) -> Event | None:
        if arg:
            return self._error(NO_ARGUMENTS, line)
        assert self._transaction is not None
        if self._transaction.chunking:
            return self._error(Reply(503, "5.5.1", "Error: DATA after BDAT"), line)
        if self._transaction.params.get("BODY") == "BINARYMIME":
            # RFC 3030 3: with BODY=BINARYMIME, DATA gets 503 "Bad sequence of commands".
            return self._error(Reply(503, "5.5.1", "Error: BINARYMIME requires BDAT"), line)
        if self.answer_data:
            return DataCommand()
        self._send(START_DATA)
        self._data_reader = DotDataReader(self.limits.max_message_size)
        self.state = SessionState.DATA
        return None

    def _read_data(self) -> Event | NeedData | None:
        reader = self._data_reader
        assert reader is not None
        if not reader.read_from(self._buffer):
            return NEED_DATA
        if reader.oversized:
            return self._refuse_message()
        return self._deliver(reader.content())

    def _bdat(self, arg: str, line: bytes) -> Event | None:
        match = _BDAT_ARGS.fullmatch(arg)
        if not match:
            # The chunk's length is unknown, so its octets cannot be skipped: they would be
            # read as commands. Give up on the session, as the only safe course.
            reply = self._error(Reply(501, "5.5.4", "Syntax: BDAT count [LAST]"), line)
            self._close()
            return reply
        self._bdat_left = int(match.group(1))
        self._bdat_last = match.group(2) is not None
        self._bdat_error = None
        self.state = SessionState.BDAT
        return None

    def _bdat_refused(self, arg: str, line: bytes, reply: Reply) -> Event | None:
        """BDAT where it may not run: skip its chunk, then refuse (RFC 3030 2)."""
        match = _BDAT_ARGS.fullmatch(arg)
        if not match:
            return self._bdat(arg, line)
        self._bdat_left = int(match.group(1))
        self._bdat_last = False
        self._bdat_error = reply
        self._bdat_return = self.state
        self.state = SessionState.BDAT
        return None

    def _read_chunk(self) -> Event | NeedData | None:
        chunk = self._buffer.take(self._bdat_left)
        self._bdat_left -= len(chunk)
        transaction = self._transaction
        if self._bdat_error is None and transaction is not None:
            transaction.chunking = True
            transaction.size += len(chunk)
            limit = self.limits.max_message_size
            if limit and transaction.size > limit:
                transaction.oversized = True
                transaction.chunks.clear()
            elif chunk:
                transaction.chunks.append(chunk)
        if self._bdat_left:
            return NEED_DATA
        if self._bdat_error is not None:
            error, self._bdat_error = self._bdat_error, None
            self.state = self._bdat_return
            return self._error(error)
        assert transaction is not None
        if not self._bdat_last:
            self.state = SessionState.RCPT
            self._send(Reply(250, "2.0.0", f"{transaction.size} octets received"))
            return None
        if transaction.oversized:
            return self._refuse_message()
        return self._deliver(b"".join(transaction.chunks))

    def _refuse_message(self) -> Event:
        """Too big: the core answers every recipient itself (LMTP) or once (SMTP)."""
        transaction = self._transaction
        assert transaction is not None
        count = len(transaction.recipients) if self.mode is Mode.LMTP else 1
        self.error_classes.add("bounce")
        for _ in range(count):
            self._send(MESSAGE_TOO_BIG)
        self._end_transaction()
        return ProtocolError(MESSAGE_TOO_BIG)

    def _deliver(self, content: bytes) -> Event:
        transaction = self._transaction
        assert transaction is not None
        recipients = tuple(transaction.recipients)
        self._replies_owed = len(recipients) if self.mode is Mode.LMTP else 1
        self.state = SessionState.RCPT
        return MessageData(content, recipients, transaction.reverse_path, transaction.params)

    def _rset(self, arg: str, line: bytes) -> Event | None:
        if arg:
            return self._error(NO_ARGUMENTS, line)
        self._transaction = None
        if self.state is not SessionState.GREETED:
            self.state = SessionState.READY
        self._send(OK)
        self._junk()
        return Reset()

    def _noop(self, arg: str, line: bytes) -> Event | None:
        # RFC 5321 4.1.1.9: "NOOP [ SP String ]": an argument is allowed and ignored.
        self._send(OK)
        self._junk()
        return None

    def _quit(self, arg: str, line: bytes) -> Event | None:
        if arg:
            return self._error(NO_ARGUMENTS, line)
        self._send(BYE)
        self._close()
        return Quit()

    def _vrfy(self, arg: str, line: bytes) -> Event | None:
        if not arg:
            return self._error(Reply(501, "5.5.4", "Syntax: VRFY address"), line)
        self._send(VRFY_REPLY)
        self._junk()
        return None

    def _expn(self, arg: str, line: bytes) -> Event | None:
        return self._error(Reply(502, "5.5.1", "Error: command not implemented"), line)

    def _help(self, arg: str, line: bytes) -> Event | None:
        names = [c.value for c in Command if self._advertises(c)]
        self._send(Reply(214, "2.0.0", "Commands: " + " ".join(names)))
        return None

    def _advertises(self, command: Command) -> bool:
        if command in (Command.EHLO, Command.HELO):
            return self.mode is Mode.SMTP
        if command is Command.LHLO:
            return self.mode is Mode.LMTP
        if command is Command.EXPN:
            return False
        if command in (Command.AUTH, Command.STARTTLS):
            return self._offers(command)
        return True

    def _auth(self, arg: str, line: bytes) -> Event | None:
        if self.authenticated_as is not None:
            # RFC 4954 4: "After a successful AUTH command completes, a server MUST reject any
            # further AUTH commands with a 503 reply."
            return self._error(Reply(503, "5.5.1", "Error: already authenticated"), line)
        mechanism, _, initial = arg.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip(" ")
        if not mechanism or " " in initial:
            return self._error(
                Reply(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]"), line
            )
        # Any mechanism name goes to the host: only it knows whether one not offered is unknown
        # (504 5.5.4) or needs encryption first (538 5.7.11, RFC 4954 6).
        response: bytes | None = None
        if initial:
            # RFC 4954 4: "=" stands for an empty initial response.
            response = b"" if initial == "=" else _b64decode(initial)
            if response is None:
                return self._error(Reply(501, "5.5.2", "Cannot decode initial response"), line)
        self._auth_mechanism = mechanism
        return AuthStart(mechanism, response)

    def _auth_line(self, line: bytes) -> Event | None:
        if line.strip() == b"*":
            return AuthResponse(None)
        data = _b64decode(line.decode("latin-1").strip())
        if data is None:
            self.state = SessionState.READY
            self._auth_mechanism = None
            return self._error(Reply(501, "5.5.2", "Cannot decode response"))  # no echo
        return AuthResponse(data)

    def _starttls(self, arg: str, line: bytes) -> Event | None:
        if arg:
            return self._error(NO_ARGUMENTS, line)
        return StartTLS()


def _error_class(reply: Reply) -> str:
    """Postfix smtpd's error class of a reply the core gives: a message too big is "bounce",
    a limit or a refusal by policy "policy", the rest (syntax, order, unknown) "protocol"."""
    if reply is MESSAGE_TOO_BIG:
        return "bounce"
    if reply is TOO_MANY_RECIPIENTS or reply is AUTH_REQUIRED:
        return "policy"
    return "protocol"


def _without_credentials(line: bytes) -> bytes:
    """An AUTH line as far as its mechanism: what follows may be a password in base64, and a
    ProtocolError's line may reach a log (issue 23: no error may echo credentials)."""
    words = line.split(None, 2)
    if words and words[0].upper() == b"AUTH":
        return b" ".join(words[:2])
    return line


def _b64decode(text: str) -> bytes | None:
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None


# How `answer` answers each kind of event that waits for one.
_ANSWERS: dict[type[Event], Callable[[ServerConnection, Any, Reply], None]] = {
    MailFrom: ServerConnection._answer_mail,
    RcptTo: ServerConnection._answer_rcpt,
    MessageData: ServerConnection._answer_message,
    AuthStart: ServerConnection._answer_auth,
    AuthResponse: ServerConnection._answer_auth,
    StartTLS: ServerConnection._answer_starttls,
    HelloCommand: ServerConnection._answer_hello,
    DataCommand: ServerConnection._answer_data_command,
}

_Handler = Callable[[ServerConnection, str, bytes], "Event | None"]

_HANDLERS: dict[Command, _Handler] = {
    Command.LHLO: ServerConnection._hello,
    Command.EHLO: ServerConnection._hello,
    Command.HELO: ServerConnection._hello,
    Command.MAIL: ServerConnection._mail,
    Command.RCPT: ServerConnection._rcpt,
    Command.DATA: ServerConnection._data,
    Command.BDAT: ServerConnection._bdat,
    Command.RSET: ServerConnection._rset,
    Command.NOOP: ServerConnection._noop,
    Command.QUIT: ServerConnection._quit,
    Command.VRFY: ServerConnection._vrfy,
    Command.EXPN: ServerConnection._expn,
    Command.HELP: ServerConnection._help,
    Command.AUTH: ServerConnection._auth,
    Command.STARTTLS: ServerConnection._starttls,
}

# A command verb as sent, upper-cased -> its Command, the states LEGAL allows it in and its
# handler: one dict lookup by the verb's octets. The states as a tuple: membership by identity,
# where a frozenset or a dict keyed by the Enums called Enum.__hash__ (Python code) three times
# a command, ~1 us of every RCPT on lmtpd's event loop (issue 18).
_VERBS: dict[bytes, tuple[Command, tuple[SessionState, ...], _Handler]] = {
    command.value.encode("ascii"): (command, tuple(LEGAL[command]), _HANDLERS[command])
    for command in Command
}
