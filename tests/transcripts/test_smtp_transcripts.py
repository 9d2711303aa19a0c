"""C:/S: byte transcripts for the SMTP/LMTP server core (tests/transcripts/*.smtp).

Format of a transcript file:
  `# key: value` headers: mode (LMTP|SMTP), hostname, greeting, limits (k=v ...),
  auth (mechanisms), auth_required (yes), starttls (yes), smtputf8 (yes|strict),
  feed (all|lines: "lines" only for
  sessions whose meaning depends on the client waiting, e.g. STARTTLS).
  `C: text` one client line, sent with CRLF; `S: text` one expected server line (CRLF).
  Escapes in C: lines: {CR} {LF} {CRLF}, {noeol} at the end sends no line end, {rep:N:x}
  repeats text x N times.

Each transcript runs three ways: all client bytes at once (pipelined), byte by byte, and one
client line at a time; the server's bytes must equal the S: lines each time.

The application side is a small deterministic policy (see `FakeMailApp`): it stands for
lmtpd's recipient checks and delivery, which are tested elsewhere.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sealmail.proto.smtp import (
    NEED_DATA,
    AuthResponse,
    AuthStart,
    ConnectionClosed,
    Limits,
    MailFrom,
    MessageData,
    Mode,
    RcptTo,
    Reply,
    ServerConnection,
    StartTLS,
)

HERE = Path(__file__).parent
TRANSCRIPTS = sorted(HERE.glob("*.smtp"))


class FakeMailApp:
    """Answers events by the local part, like a tiny lmtpd/smtpd.

    Senders: spammer@... -> 550 5.7.1. Recipients: jones, nobody -> 550 5.1.1 at RCPT;
    green, full -> accepted, then 452 4.2.2 over quota after the data; anything else -> 250.
    AUTH PLAIN with user "alice", password "secret"; LOGIN-like exchange for mechanism "X-TWO"
    (two challenges). STARTTLS: 220, then the "handshake" completes at once.
    """

    def __init__(self, conn: ServerConnection) -> None:
        self.conn = conn
        self.auth_steps = 0

    def handle(self, event: object) -> None:
        conn = self.conn
        if isinstance(event, MailFrom):
            if event.reverse_path.startswith("spammer@"):
                conn.answer(Reply(550, "5.7.1", "Sender rejected"))
            else:
                conn.answer(Reply(250, "2.1.0", "Ok"))
        elif isinstance(event, RcptTo):
            local = event.address.local_part if event.address else ""
            if local in ("jones", "nobody"):
                conn.answer(Reply(550, "5.1.1", "No such user here"))
            else:
                conn.answer(Reply(250, "2.1.5", "Ok"))
        elif isinstance(event, MessageData):
            recipients = event.recipients if conn.mode is Mode.LMTP else ("",)
            for rcpt in recipients:
                if rcpt.split("@")[0] in ("green", "full"):
                    conn.answer(Reply(452, "4.2.2", f"<{rcpt}> is temporarily over quota"))
                else:
                    conn.answer(Reply(250, "2.1.5", f"Ok, {len(event.content)} octets"))
        elif isinstance(event, AuthStart):
            self.auth_steps = 0
            if event.mechanism not in conn.auth_mechanisms:
                conn.answer(Reply(504, "5.5.4", "Unrecognized authentication type"))
            elif event.mechanism == "PLAIN":
                if event.initial_response is None:
                    conn.auth_challenge(b"")
                else:
                    self._plain(event.initial_response)
            else:
                conn.auth_challenge(b"step0")
        elif isinstance(event, AuthResponse):
            if event.data is None:
                conn.answer(Reply(501, "5.0.0", "AUTH aborted"))
            elif event.data.startswith(b"\0"):
                self._plain(event.data)
            else:
                self.auth_steps += 1
                if self.auth_steps < 2:
                    conn.auth_challenge(b"step%d" % self.auth_steps)
                elif event.data == b"ok":
                    conn.auth_succeeded("bob")
                else:
                    conn.answer(Reply(535, "5.7.8", "Authentication credentials invalid"))
        elif isinstance(event, StartTLS):
            conn.answer(Reply(220, "2.0.0", "Ready to start TLS"))

    def _plain(self, data: bytes) -> None:
        if data == b"\0alice\0secret":
            self.conn.auth_succeeded("alice")
        else:
            self.conn.answer(Reply(535, "5.7.8", "Authentication credentials invalid"))


@dataclass
class Transcript:
    name: str
    headers: dict[str, str] = field(default_factory=dict)
    client: list[bytes] = field(default_factory=list)
    server: bytes = b""


_REP = re.compile(r"\{rep:(\d+):([^}]*)\}")


def _client_bytes(text: str) -> bytes:
    text = _REP.sub(lambda m: m.group(2) * int(m.group(1)), text)
    eol = "\r\n"
    if text.endswith("{noeol}"):
        text, eol = text[: -len("{noeol}")], ""
    text = text.replace("{CRLF}", "\r\n").replace("{CR}", "\r").replace("{LF}", "\n")
    return (text + eol).encode("utf-8")


def load(path: Path) -> Transcript:
    transcript = Transcript(path.stem)
    server = bytearray()
    for raw in path.read_text(encoding="utf-8").splitlines():
        if raw.startswith("# ") and ":" in raw:
            key, _, value = raw[2:].partition(":")
            transcript.headers[key.strip()] = value.strip()
        elif raw.startswith("C: ") or raw == "C:":
            transcript.client.append(_client_bytes(raw[3:]))
        elif raw.startswith("S: "):
            server += raw[3:].encode("utf-8") + b"\r\n"
        elif raw.strip() and not raw.startswith("#"):
            raise ValueError(f"{path.name}: cannot read line {raw!r}")
    transcript.server = bytes(server)
    return transcript


def make_connection(t: Transcript) -> ServerConnection:
    h = t.headers
    limits = {}
    for item in h.get("limits", "").split():
        key, _, value = item.partition("=")
        limits[key] = int(value)
    return ServerConnection(
        mode=Mode[h.get("mode", "LMTP")],
        hostname=h.get("hostname", "mail.example.com"),
        session_id="t1",
        limits=Limits(**limits),
        auth_mechanisms=tuple(h.get("auth", "").split()),
        auth_required=h.get("auth_required") == "yes",
        starttls_available=h.get("starttls") == "yes",
        greeting_text=h.get("greeting", "LMTP sealmail ready"),
        smtputf8=h.get("smtputf8") in ("yes", "strict"),
        strict_smtputf8=h.get("smtputf8") == "strict",
    )


def pump(conn: ServerConnection, app: FakeMailApp) -> None:
    while True:
        event = conn.next_event()
        if event is NEED_DATA or isinstance(event, ConnectionClosed):
            return
        app.handle(event)
        if isinstance(event, StartTLS) and conn.state.name == "TLS_WAIT":
            conn.tls_started()


def run(t: Transcript, pieces: Iterator[bytes]) -> bytes:
    conn = make_connection(t)
    app = FakeMailApp(conn)
    out = bytearray(conn.data_to_send())
    for piece in pieces:
        conn.receive_data(piece)
        pump(conn, app)
        out += conn.data_to_send()
    conn.receive_data(b"")
    pump(conn, app)
    out += conn.data_to_send()
    assert conn.closed
    return bytes(out)


def _ways(t: Transcript) -> dict[str, Iterator[bytes]]:
    whole = b"".join(t.client)
    ways = {
        "lines": iter(t.client),
        "bytes": (whole[i : i + 1] for i in range(len(whole))),
    }
    if t.headers.get("feed", "all") == "all":
        ways["whole"] = iter([whole])
    return ways


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
def test_transcript(path: Path) -> None:
    t = load(path)
    for way, pieces in _ways(t).items():
        got = run(t, pieces)
        assert got.decode("utf-8", "replace").splitlines() == t.server.decode().splitlines(), way
        assert got == t.server, way


def test_there_are_transcripts_for_both_modes() -> None:
    modes = {load(p).headers.get("mode", "LMTP") for p in TRANSCRIPTS}
    assert modes == {"LMTP", "SMTP"}
    assert len(TRANSCRIPTS) >= 10


def test_plain_credentials_used_in_transcripts() -> None:
    # The transcripts spell AUTH PLAIN's initial response in base64: keep them honest.
    assert base64.b64encode(b"\0alice\0secret") == b"AGFsaWNlAHNlY3JldA=="
