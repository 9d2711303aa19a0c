"""What the line-protocol server cores share: POP3, ManageSieve and SMTP/LMTP, the h11 way.

Theory of operation (after h11): the host feeds received bytes with `receive_data` (b"" when the
peer closed its side), pulls events with `next_event` until NEED_DATA, answers each event whose
`needs_reply` is set with the method the protocol's core names for it, and sends what
`data_to_send` returns. A core reads one command at a time and stops at an event that needs the
host's answer, so a pipelined batch comes out, and is answered, in order.

`ServerCore` is that loop, written once. A protocol's core gives it its session states (an enum
with TLS_WAIT, where it waits for the TLS handshake, and CLOSED) and `_step()`: read one unit (a
line, a literal, a chunk of data) and say what came of it. Everything else (grammar, replies, what
each state allows) stays in the protocol's own package.

The events every one of these protocols has are here too (`StartTLS`, `AuthStart`,
`AuthResponse`, `AuthAborted`, `ConnectionClosed`), so a host's log or a driver (and the one SASL
exchange of sealmail.server.session) can treat them alike; each package re-exports them with its
own events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import ClassVar, Final, Generic, Protocol, TypeVar

from sealmail.proto.buffer import ReceiveBuffer

__all__ = [
    "NEED_DATA",
    "AuthAborted",
    "AuthResponse",
    "AuthStart",
    "ConnectionClosed",
    "Event",
    "NeedData",
    "ServerCore",
    "StartTLS",
    "UsageError",
]


class NeedData(enum.Enum):
    """The sentinel type of NEED_DATA: the core needs more bytes before the next event."""

    NEED_DATA = "NEED_DATA"

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = NeedData.NEED_DATA


class UsageError(Exception):
    """The host used a core wrongly: answered nothing pending, answered with the wrong kind of
    reply, gave more LMTP replies than recipients, called `tls_started()` unasked, ..."""


@dataclass(frozen=True, slots=True)
class Event:
    """Something a core hands its host. One with `needs_reply` stops the core until answered;
    the others were answered by the core already and are for logs and bookkeeping. Events keep
    passwords and SASL data out of their repr, so logging one is safe."""

    needs_reply: ClassVar[bool] = False


@dataclass(frozen=True, slots=True)
class StartTLS(Event):
    """STARTTLS (RFC 3207, RFC 5804 2.2) or STLS (RFC 2595 4). The host accepts with the core's
    go-ahead, flushes it, does the handshake and calls `tls_started(...)`; or refuses."""

    needs_reply: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AuthStart(Event):
    """AUTH / AUTHENTICATE mechanism [initial-response], base64 already undone.

    `initial_response` is None when the client sent none and b"" for an empty one (RFC 4422
    3.3; RFC 4954 4 and RFC 5034 4 send that as "="). The host answers with the core's
    challenge, success or refusal method.
    """

    needs_reply: ClassVar[bool] = True
    mechanism: str
    initial_response: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class AuthResponse(Event):
    """The client's answer to a challenge, base64 already undone; answered as AuthStart is.

    `data` is None only where the core leaves a cancel ("*") to its host: SMTP, whose host
    MUST reject it with 501 (RFC 4954 4). POP3 and ManageSieve answer a cancel themselves and
    report it as AuthAborted.
    """

    needs_reply: ClassVar[bool] = True
    data: bytes | None = field(repr=False)


@dataclass(frozen=True, slots=True)
class AuthAborted(Event):
    """The exchange ended without the host: the client cancelled it ("*") or sent garbage
    (bad base64, a line too long), and the core refused the command already. The host forgets
    the mechanism; `reason` is for the log."""

    reason: str


@dataclass(frozen=True, slots=True)
class ConnectionClosed(Event):
    """The session is over (QUIT or LOGOUT done, the core gave up, or the peer closed its side):
    close the connection."""


class Rendered(Protocol):
    """A reply or response that knows its own bytes on the wire."""

    def render(self) -> bytes: ...


StateT = TypeVar("StateT", bound=enum.Enum)


class ServerCore(Generic[StateT]):
    """The receive -> events -> send loop of one server session, without I/O.

    A subclass passes its first state to `__init__` (its enum must have TLS_WAIT and CLOSED),
    implements `_step()`, and may extend `_close()` (SMTP drops its transaction there).
    """

    def __init__(
        self, state: StateT, *, auth_mechanisms: tuple[str, ...] = (), tls_active: bool = False
    ) -> None:
        self.state = state
        self._tls_wait_state = type(state)["TLS_WAIT"]
        self._closed_state = type(state)["CLOSED"]
        # RFC 4422 3.1: mechanism names are upper case (clients may send them in any case).
        self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
        self.tls_active = tls_active
        self._buffer = ReceiveBuffer()
        self._out = bytearray()
        self._pending: Event | None = None

    @property
    def closed(self) -> bool:
        """True once the core wants the connection closed."""
        return self.state is self._closed_state

    @property
    def buffered_input(self) -> int:
        """Bytes received and not read yet: a client that sent ahead of a reply it had to wait
        for (RFC 2920 3.1) has some when its command's event comes out."""
        return len(self._buffer)

    def peek_input(self, limit: int = 100) -> bytes:
        """The first bytes of `buffered_input`, for a log line."""
        return self._buffer.peek(limit)

    def receive_data(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if data and self.state in (self._tls_wait_state, self._closed_state):
            # RFC 3207 5, RFC 2595 4, RFC 5804 2.2 (and CVE-2011-0411): bytes sent in clear
            # between our go-ahead and the handshake are never read as if they came under TLS.
            return
        self._buffer.feed(data)

    def data_to_send(self) -> bytes:
        """All bytes queued for the peer since the last call."""
        out = bytes(self._out)
        self._out.clear()
        return out

    def next_event(self) -> Event | NeedData:
        """The next event, or NEED_DATA; ConnectionClosed once the session is over."""
        if self._pending is not None:
            raise UsageError(f"{type(self._pending).__name__} is waiting for an answer")
        while True:
            if self.state is self._closed_state:
                return ConnectionClosed()
            if self.state is self._tls_wait_state:
                return NEED_DATA
            event = self._step()
            if event is None:
                continue
            if isinstance(event, NeedData):
                if self._buffer.at_eof:
                    # The stream ended with no command to end the session: no protocol here
                    # takes that as one (POP3 never enters UPDATE: RFC 1939 6).
                    self._close()
                    return ConnectionClosed()
                return NEED_DATA
            if event.needs_reply:
                self._pending = event
            return event

    # -- for the protocol's core ------------------------------------------------------------

    def _step(self) -> Event | NeedData | None:
        """Read one unit; None means "step again" (a command answered with no event)."""
        raise NotImplementedError

    def _close(self) -> None:
        self.state = self._closed_state

    def _send(self, reply: Rendered) -> None:
        self._out += reply.render()

    def _take(self, *kinds: type[Event]) -> Event:
        """The pending event, which must be one of `kinds`; it is answered from now on."""
        event = self._pending
        if not isinstance(event, kinds):
            wanted = " or ".join(kind.__name__ for kind in kinds)
            raise UsageError(f"no {wanted} is waiting for an answer (pending: {event!r})")
        self._pending = None
        return event

    def _await_handshake(self) -> None:
        """Our go-ahead to STARTTLS/STLS is queued: what the client pipelined after its command
        came in clear and is dropped (RFC 3207 5, RFC 2595 4), and nothing is read until
        `tls_started()`."""
        self._buffer.clear()
        self.state = self._tls_wait_state

    def _handshake_done(self, command: str, auth_mechanisms: tuple[str, ...] | None) -> None:
        """The handshake after `command` is done: read again, under TLS, and offer
        `auth_mechanisms` from now on when given (e.g. PLAIN only under TLS). The caller then
        forgets what it learnt in clear and sets its state."""
        if self.state is not self._tls_wait_state:
            raise UsageError(f"tls_started() without an accepted {command}")
        self._buffer.clear()
        self.tls_active = True
        if auth_mechanisms is not None:
            self.auth_mechanisms = tuple(m.upper() for m in auth_mechanisms)
