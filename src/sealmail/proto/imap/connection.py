"""The sans-I/O IMAP server connection: bytes in, events out, responses in, bytes out.

Theory of operation (after h11 and pymap): the driver feeds what the socket gave
(`receive_data`), pulls events (`next_event`) until NEED_DATA, and writes what `data_to_send`
returns. The core frames commands (lines and literals), parses them, checks that each command is
legal in the current state, and answers on its own everything that needs no mail knowledge:
bad syntax, unknown commands, commands in the wrong state, literals over the limit, the "+"
continuation of a synchronizing literal, and the bad-command budget. The host answers each
`CommandReceived` by `send`-ing untagged data and then one tagged response; the tagged status of
LOGIN, SELECT, CLOSE, ... moves the state (`state.TRANSITIONS`), so the host never sets it.

Literals (RFC 9051 4.3, 7.5; RFC 7888): `{n}` gets "+ Ready" before its octets come, `{n+}` does
not. A literal over the limit is refused before it is read: a synchronizing one with a tagged
BAD [TOOBIG] (NO [TOOBIG] for APPEND) and no continuation, so the client never sends it; a
non-synchronizing one is read and dropped with the rest of its command. With LITERAL- a
non-synchronizing literal over 4096 octets is refused the same way (RFC 7888 5).

A line over `max_line_length` ends the session with BYE: its start (the tag) was not kept, and
reading on could take the octets of a literal announced on that line as commands.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from sealmail.proto.buffer import LineTooLong, ReceiveBuffer
from sealmail.proto.imap.commands import Authenticate, Command, Idle
from sealmail.proto.imap.errors import (
    BadCommand,
    CommandNotAllowed,
    ImapError,
    LiteralTooLarge,
    UsageError,
)
from sealmail.proto.imap.events import (
    NEED_DATA,
    AuthenticateAborted,
    AuthenticateData,
    CommandReceived,
    ConnectionClosed,
    Event,
    IdleDone,
    NeedData,
    ProtocolError,
)
from sealmail.proto.imap.parser import ParserLimits, parse_command, peek_command
from sealmail.proto.imap.response import (
    ContinuationRequest,
    Response,
    StatusResponse,
    render,
)
from sealmail.proto.imap.state import ConnectionState, next_state

__all__ = ["Limits", "ServerConnection"]

_LITERAL_AT_END = re.compile(rb"(~?)\{([0-9]{1,20})(\+?)\}\Z")
# RFC 4959 / RFC 4954 4: SASL lines may be up to 12288 octets whatever the command line limit.
AUTH_LINE_LENGTH = 12288
LITERAL_MINUS_MAX = 4096  # RFC 7888 5
_STATE_NAMES = {
    ConnectionState.NOT_AUTHENTICATED: "not authenticated",
    ConnectionState.AUTHENTICATED: "authenticated",
    ConnectionState.SELECTED: "selected",
    ConnectionState.LOGOUT: "logout",
}


def _literal_at_end(line: bytes) -> re.Match[bytes] | None:
    """The `{n}`, `{n+}` or `~{n}` that ends `line`, if one does.

    What `_LITERAL_AT_END.search(line)` finds, without its try at every octet of the line
    (~20 us for imaptest's 300-octet FETCH lines): such a match starts at the last "{" (or the
    "~" just before it), as nothing after it may be a "{".
    """
    if not line.endswith(b"}"):
        return None
    start = line.rfind(b"{")
    if start > 0 and line[start - 1] == 0x7E:  # "~"
        start -= 1
    return _LITERAL_AT_END.match(line, start) if start >= 0 else None


@dataclass(frozen=True, slots=True)
class Limits:
    """The limits a connection enforces; each has a test.

    `max_line_length` counts the octets of one line before its CRLF; `max_literal_size` bounds
    every literal but APPEND's message, which `max_append_size` bounds; `max_command_size` bounds
    a whole command apart from the APPEND message; `max_depth` and `max_items` bound nesting and
    list items; after `max_bad_commands` BAD replies the session ends (0: no limit).

    Lines: RFC 7162 4 asks servers to take at least 8192 octets, and an RFC 2971 ID may carry
    30 pairs of a 30-octet field and a 1024-octet value, some 32 KiB on one line (imaptest's
    id group sends 31,809 octets); 64 KiB is also Dovecot's imap_max_line_length.
    """

    max_line_length: int = 65536
    max_literal_size: int = 65536
    max_append_size: int = 64 * 1024 * 1024
    max_command_size: int = 1024 * 1024
    max_depth: int = 20
    max_items: int = 10000
    max_bad_commands: int = 20
    literal_minus: bool = False

    def __post_init__(self) -> None:
        if self.max_line_length < 1000:
            raise ValueError("max_line_length must be at least 1000 (RFC 7162 4 asks 8192)")
        for name in ("max_literal_size", "max_append_size", "max_command_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.max_bad_commands < 0:
            raise ValueError("max_bad_commands must not be negative")
        ParserLimits(self.max_depth, self.max_items)  # validates those two


class ServerConnection:
    """One IMAP server session, without I/O."""

    def __init__(self, limits: Limits | None = None,
                 state: ConnectionState = ConnectionState.NOT_AUTHENTICATED) -> None:
        self.limits = limits or Limits()
        self.state = state
        self.bad_commands = 0
        # Set by the host once UTF8=ACCEPT or IMAP4rev2 is enabled: 8-bit text may go quoted
        # both ways, and mailbox names may come as unquoted UTF-8 (RFC 6855 3, RFC 9051 5.1).
        self.utf8 = False
        self.tls_active = False
        self._parser_limits = ParserLimits(self.limits.max_depth, self.limits.max_items)
        self._buffer = ReceiveBuffer()
        self._out: list[bytes] = []  # joined once in data_to_send: a big FETCH is not copied twice
        # The command being assembled, in pieces (its lines with their CRLF, its literals'
        # chunks) joined once it is whole: an APPEND's message is not copied twice.
        self._command: list[bytes] = []
        self._command_size = 0
        self._literal_left = 0  # octets of the current literal still to come
        self._discarding = False  # dropping the rest of a refused command
        self._pending: Command | None = None
        self._continued = False  # the host sent "+" for the pending IDLE / AUTHENTICATE
        self._closed: str | None = None
        self._tls_wait = False
        self._compress_wait = False

    # -- host side ----------------------------------------------------------------------------

    @property
    def pending(self) -> Command | None:
        """The command waiting for its tagged response."""
        return self._pending

    @property
    def between_commands(self) -> bool:
        """No command pending and none half received: unsolicited news may go out now
        (RFC 5465 3)."""
        return (self._pending is None and not self._command and not self._literal_left
                and not len(self._buffer))

    def receive_data(self, data: bytes) -> None:
        """Bytes from the client; b"" when the client closed its side."""
        if self._tls_wait and data:
            return  # RFC 9051 6.2.1: nothing sent before the TLS negotiation may be used
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)  # one piece (most often): that piece itself, no copy
        self._out.clear()
        return out

    def send(self, response: Response) -> None:
        """Queue a response. A tagged one must carry the pending command's tag and ends it."""
        if isinstance(response, ContinuationRequest):
            if not isinstance(self._pending, Authenticate | Idle):
                raise UsageError("a continuation goes only to a pending IDLE or AUTHENTICATE")
            self._continued = True
        elif isinstance(response, StatusResponse):
            if response.tag is not None:
                self._finish(response)
            elif response.status == "BYE":
                self.state = ConnectionState.LOGOUT
            elif response.status == "PREAUTH":
                if self.state is not ConnectionState.NOT_AUTHENTICATED:
                    raise UsageError("PREAUTH is a greeting")
                self.state = ConnectionState.AUTHENTICATED
        self._out.append(render(response, self.utf8))

    def _finish(self, response: StatusResponse) -> None:
        command = self._pending
        if command is None or response.tag != command.tag:
            raise UsageError(f"no pending command with tag {response.tag!r}")
        self._pending = None
        self._continued = False
        self.state = next_state(self.state, command.name, response.status)
        if response.status == "BAD":
            self._count_bad()
        elif response.status == "OK" and command.name == "STARTTLS":
            self._buffer.clear()  # RFC 9051 6.2.1: drop plaintext that followed STARTTLS
            self._tls_wait = True
        elif response.status == "OK" and command.name == "COMPRESS":
            self._compress_wait = True

    def tls_started(self) -> None:
        """The driver finished the TLS handshake after the tagged OK to STARTTLS."""
        if not self._tls_wait:
            raise UsageError("tls_started() without an accepted STARTTLS")
        self._tls_wait = False
        self.tls_active = True

    def compression_started(self) -> bytes:
        """After the tagged OK to COMPRESS (RFC 4978): return the octets already received, which
        are compressed; the driver inflates them and everything after, and feeds the result."""
        if not self._compress_wait:
            raise UsageError("compression_started() without an accepted COMPRESS")
        self._compress_wait = False
        return self._buffer.clear()

    def close(self, reason: str) -> None:
        """End the session from the host side (idle timeout, shutdown): sends BYE."""
        if self._closed is None:
            self._out.append(render(StatusResponse("BYE", reason), self.utf8))
            self._closed = reason
            self.state = ConnectionState.LOGOUT

    # -- events -------------------------------------------------------------------------------

    def next_event(self) -> Event | NeedData:
        if self._closed is not None:
            return ConnectionClosed(self._closed)
        if self.state is ConnectionState.LOGOUT and self._pending is None:
            self._closed = "logged out"
            return ConnectionClosed(self._closed)
        if self._tls_wait or self._compress_wait:
            return NEED_DATA
        if self._pending is not None:
            if self._continued and isinstance(self._pending, Authenticate | Idle):
                return self._continuation_line(self._pending)
            return NEED_DATA
        try:
            return self._read_command()
        except LineTooLong as error:
            self._closed = "line too long"
            bye = StatusResponse("BYE", f"Command line too long ({error.length} octets)")
            self._out.append(render(bye, self.utf8))
            return ProtocolError(BadCommand(str(error), code="TOOBIG"))

    def _eof(self) -> Event | NeedData:
        if self._buffer.at_eof:
            self._closed = "client closed the connection"
            return ConnectionClosed(self._closed)
        return NEED_DATA

    def _continuation_line(self, command: Authenticate | Idle) -> Event | NeedData:
        limit = AUTH_LINE_LENGTH if isinstance(command, Authenticate) else 1000
        try:
            line = self._buffer.next_line(max(limit, self.limits.max_line_length))
        except LineTooLong:
            line = b"\x00"  # neither DONE nor base64: ends the exchange below
        if line is None:
            return self._eof()
        self._continued = False
        if isinstance(command, Idle):
            if line.upper() == b"DONE":
                return IdleDone()
            # RFC 2177 3: anything but DONE ends IDLE; the command fails.
            return self._refuse(BadCommand("Expected DONE", command.tag))
        if line == b"*":
            return self._abort_auth(command, "Authentication cancelled")
        try:
            data = base64.b64decode(line, validate=True)
        except binascii.Error:
            return self._abort_auth(command, "Invalid base64 in authentication response")
        return AuthenticateData(data)

    def _abort_auth(self, command: Authenticate, reason: str) -> Event:
        self._refuse(BadCommand(reason, command.tag))
        return AuthenticateAborted(reason)

    def _refuse(self, error: ImapError) -> Event:
        """Answer bad input with the error's own reply, count it, end the session past budget."""
        if self._pending is not None and error.tag == self._pending.tag:
            self._pending = None
            self._continued = False
        self._out.append(error.reply_bytes())
        if error.status == "BAD":
            self._count_bad()
        return ProtocolError(error)

    def _count_bad(self) -> None:
        self.bad_commands += 1
        budget = self.limits.max_bad_commands
        if budget and self.bad_commands >= budget and self._closed is None:
            self._out.append(render(StatusResponse("BYE", "Too many bad commands"), self.utf8))
            self._closed = "too many bad commands"
            self.state = ConnectionState.LOGOUT

    # -- framing ------------------------------------------------------------------------------

    def _read_command(self) -> Event | NeedData:
        while True:
            if self._literal_left:
                chunk = self._buffer.take(self._literal_left)
                if not chunk:
                    return self._eof()
                self._literal_left -= len(chunk)
                if not self._discarding:
                    self._command.append(chunk)
                    self._command_size += len(chunk)
                if self._literal_left:
                    return self._eof()
            line = self._buffer.next_line(self.limits.max_line_length)
            if line is None:
                return self._eof()
            marker = _literal_at_end(line)
            if self._discarding:
                if marker and marker.group(3):  # another non-synchronizing literal to skip
                    self._literal_left = int(marker.group(2))
                    continue
                self._discarding = False  # a sync literal: the client waits for a "+" never sent
                continue
            self._command.append(line + b"\r\n")
            self._command_size += len(line) + 2
            if marker is None:
                return self._complete()
            error = self._check_literal(marker)
            if error is not None:
                return error
            self._literal_left = int(marker.group(2))
            if not marker.group(3):
                self._out.append(render(ContinuationRequest("Ready for literal data"), self.utf8))
            if self._literal_left == 0:
                continue

    def _check_literal(self, marker: re.Match[bytes]) -> Event | None:
        size = int(marker.group(2))
        first_line = self._command[0][:-2]
        tag, name = peek_command(first_line)
        is_append = name == "APPEND"
        limit = self.limits.max_append_size if is_append else self.limits.max_literal_size
        nonsync = bool(marker.group(3))
        if nonsync and self.limits.literal_minus:
            limit = min(limit, LITERAL_MINUS_MAX)
        # A whole command is bounded too: APPEND's by the message limit plus the usual command
        # size, so the messages of a MULTIAPPEND (RFC 3502) and the TEXT parts of a CATENATE
        # (RFC 4469) together hold no more memory than one message may.
        whole = self.limits.max_command_size + (self.limits.max_append_size if is_append else 0)
        too_big = size > limit or self._command_size + size > whole
        if not too_big:
            return None
        self._command.clear()
        self._command_size = 0
        error = LiteralTooLarge(size, limit, tag)
        if nonsync:
            self._discarding = True
            self._literal_left = size
        elif is_append:
            # RFC 9051 7.1: TOOBIG; for APPEND a NO tells the client the message is refused.
            error.status = "NO"
        return self._refuse(error)

    def _complete(self) -> Event:
        data = b"".join(self._command)
        self._command.clear()
        self._command_size = 0
        try:
            command = parse_command(data, self._parser_limits, utf8=self.utf8)
        except ImapError as error:
            if error.tag is None:
                error.tag = peek_command(data.split(b"\r\n", 1)[0])[0]
            return self._refuse(error)
        if self.state not in command.states:
            where = _STATE_NAMES[self.state]
            return self._refuse(CommandNotAllowed(
                f"{command.wire_name} is not allowed in the {where} state", command.tag))
        self._pending = command
        return CommandReceived(command)
