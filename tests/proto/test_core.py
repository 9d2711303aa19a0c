"""sealmail.proto.core: the loop the POP3, ManageSieve and SMTP/LMTP cores share, and its events.

Each protocol's own tests drive the loop through its grammar; these pin what is shared: one
sentinel and one set of common events (re-exported by every package), and the loop's rules on a
toy core whose `_step` reads lines.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import pytest

import sealmail.proto.managesieve as managesieve
import sealmail.proto.pop3 as pop3
import sealmail.proto.smtp as smtp
from sealmail.proto import core
from sealmail.proto.core import (
    NEED_DATA,
    AuthStart,
    ConnectionClosed,
    Event,
    NeedData,
    ServerCore,
    StartTLS,
    UsageError,
)

SHARED = (
    "NEED_DATA",
    "NeedData",
    "Event",
    "StartTLS",
    "AuthStart",
    "AuthResponse",
    "ConnectionClosed",
)


@pytest.mark.parametrize("package", [pop3, managesieve, smtp], ids=lambda p: p.__name__)
def test_every_line_core_re_exports_the_shared_names(package: object) -> None:
    for name in (*SHARED, "UsageError"):
        assert getattr(package, name) is getattr(core, name), name
        assert name in package.__all__  # type: ignore[attr-defined]


@pytest.mark.parametrize("package", [pop3, managesieve], ids=lambda p: p.__name__)
def test_cores_that_answer_a_cancel_themselves_share_auth_aborted(package: object) -> None:
    """SMTP leaves a cancel to its host (AuthResponse(None)); these report it as AuthAborted."""
    assert package.AuthAborted is core.AuthAborted  # type: ignore[attr-defined]
    assert "AuthAborted" in package.__all__  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "connection",
    [pop3.ServerConnection(), managesieve.ServerConnection(), smtp.ServerConnection()],
    ids=["pop3", "managesieve", "smtp"],
)
def test_every_line_core_is_a_server_core(connection: ServerCore[enum.Enum]) -> None:
    assert isinstance(connection, ServerCore)
    connection.data_to_send()
    connection.receive_data(b"")
    assert connection.next_event() == ConnectionClosed()
    assert connection.closed


def test_secrets_stay_out_of_the_repr() -> None:
    assert "hunter2" not in repr(AuthStart("PLAIN", b"\0alice\0hunter2"))
    assert "hunter2" not in repr(core.AuthResponse(b"\0alice\0hunter2"))
    assert AuthStart("PLAIN") == AuthStart("PLAIN", None)
    assert repr(NEED_DATA) == "NEED_DATA"


class ToyState(enum.Enum):
    OPEN = enum.auto()
    TLS_WAIT = enum.auto()
    CLOSED = enum.auto()


@dataclass(frozen=True, slots=True)
class Said(Event):
    line: bytes


class ToyCore(ServerCore[ToyState]):
    """Each line is an event; "TLS" asks for TLS, "BYE" ends the session, "" is skipped."""

    def __init__(self) -> None:
        super().__init__(ToyState.OPEN, auth_mechanisms=("plain", "Scram-Sha-256"))

    def _step(self) -> Event | NeedData | None:
        line = self._buffer.next_line(100)
        if line is None:
            return NEED_DATA
        if line == b"":
            return None
        if line == b"TLS":
            return StartTLS()
        if line == b"BYE":
            self._out += b"bye\r\n"
            self._close()
            return None
        return Said(line)

    def start_tls(self) -> None:
        self._take(StartTLS)
        self._out += b"go ahead\r\n"
        self._await_handshake()

    def tls_started(self, auth_mechanisms: tuple[str, ...] | None = None) -> None:
        self._handshake_done("TLS", auth_mechanisms)
        self.state = ToyState.OPEN


def events(conn: ToyCore) -> list[object]:
    found: list[object] = []
    while True:
        event = conn.next_event()
        found.append(event)
        if event is NEED_DATA or isinstance(event, ConnectionClosed) or event.needs_reply:
            return found


def test_lines_become_events_in_order_and_blank_steps_are_skipped() -> None:
    conn = ToyCore()
    conn.receive_data(b"one\r\n\r\ntwo\r\nthr")
    assert events(conn) == [Said(b"one"), Said(b"two"), NEED_DATA]
    conn.receive_data(b"ee\r\n")
    assert events(conn) == [Said(b"three"), NEED_DATA]


def test_mechanism_names_are_upper_case() -> None:
    assert ToyCore().auth_mechanisms == ("PLAIN", "SCRAM-SHA-256")


def test_an_unanswered_event_stops_the_core() -> None:
    conn = ToyCore()
    conn.receive_data(b"TLS\r\n")
    assert conn.next_event() == StartTLS()
    with pytest.raises(UsageError, match="StartTLS is waiting"):
        conn.next_event()


def test_take_refuses_an_answer_to_nothing() -> None:
    conn = ToyCore()
    with pytest.raises(UsageError, match="no StartTLS is waiting"):
        conn.start_tls()
    with pytest.raises(UsageError, match="without an accepted TLS"):
        conn.tls_started()


def test_bytes_sent_in_clear_before_the_handshake_are_dropped() -> None:
    """RFC 3207 5 / RFC 2595 4 (CVE-2011-0411): nothing pipelined after the TLS command, nor
    anything received before the handshake is done, is read as if it came under TLS."""
    conn = ToyCore()
    conn.receive_data(b"TLS\r\ninjected-before\r\n")
    assert conn.next_event() == StartTLS()
    conn.start_tls()
    assert conn.data_to_send() == b"go ahead\r\n"
    assert len(conn._buffer) == 0
    conn.receive_data(b"injected-after\r\n")
    assert len(conn._buffer) == 0  # not even held until the handshake
    assert conn.next_event() is NEED_DATA
    conn.tls_started(("external",))
    assert conn.tls_active and conn.auth_mechanisms == ("EXTERNAL",)
    conn.receive_data(b"under tls\r\n")
    assert events(conn) == [Said(b"under tls"), NEED_DATA]


def test_the_end_of_the_stream_closes_the_session() -> None:
    conn = ToyCore()
    conn.receive_data(b"last\r\nhalf a line")
    conn.receive_data(b"")
    assert events(conn) == [Said(b"last"), ConnectionClosed()]
    assert conn.closed
    conn.receive_data(b"more\r\n")  # ignored once closed
    assert conn.next_event() == ConnectionClosed()


def test_a_core_that_closes_itself_reports_it_once_its_output_is_queued() -> None:
    conn = ToyCore()
    conn.receive_data(b"BYE\r\nignored\r\n")
    assert conn.next_event() == ConnectionClosed()
    assert conn.data_to_send() == b"bye\r\n"
    assert conn.data_to_send() == b""
