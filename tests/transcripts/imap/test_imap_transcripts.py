"""Runs the *.imap transcripts against the sans-I/O core with a scripted host.

A transcript is a list of lines: "C:" client input, "H:" a response the host sends (parsed into a
response object and so also expected on the wire), "S:" a line the core must send by itself. The
runner feeds the client's lines, and whenever the core hands out an event that needs the host, it
plays the "H:" lines that follow. At the end the wire output must be exactly the H/S lines.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.proto.imap import (
    NEED_DATA,
    Atom,
    CommandReceived,
    ConnectionClosed,
    ContinuationRequest,
    DataResponse,
    IdleDone,
    ServerConnection,
    StatusResponse,
)
from sealmail.proto.imap.response import Response

HERE = Path(__file__).parent


def host_response(line: str) -> Response:
    if line.startswith("+"):
        text = line[2:]
        # An empty challenge is "+ " (RFC 4959 3): base64 of nothing.
        return ContinuationRequest(text) if text else ContinuationRequest(challenge=b"")
    tag, rest = line.split(" ", 1)
    status, _, text = rest.partition(" ")
    if status in ("OK", "NO", "BAD", "BYE", "PREAUTH") and not text.startswith("["):
        return StatusResponse(status, text, None if tag == "*" else tag)
    if status in ("OK", "NO", "BAD") and text.startswith("["):
        # Keep the code verbatim: the transcript checks the wire, not the code model.
        return StatusResponse(status, text, None if tag == "*" else tag)
    return DataResponse((Atom(rest),))


def run(path: Path, feed_bytewise: bool) -> None:
    lines = [ln for ln in path.read_text().splitlines() if ln and not ln.startswith("#")]
    conn = ServerConnection()
    expected = bytearray()
    index = 0

    def play_host() -> None:
        nonlocal index
        while index < len(lines) and lines[index].startswith("H: "):
            text = lines[index][3:]
            conn.send(host_response(text))
            expected.extend(text.encode() + b"\r\n")
            index += 1

    play_host()  # the greeting
    while index < len(lines):
        line = lines[index]
        if line.startswith("C: "):
            data = line[3:].encode() + b"\r\n"
            chunks = [data[i : i + 1] for i in range(len(data))] if feed_bytewise else [data]
            index += 1
            while index < len(lines) and lines[index].startswith("S: "):
                expected.extend(lines[index][3:].encode() + b"\r\n")
                index += 1
            for chunk in chunks:
                conn.receive_data(chunk)
                while (event := conn.next_event()) is not NEED_DATA:
                    if isinstance(event, ConnectionClosed):
                        assert index == len(lines), f"closed early: {event.reason}"
                        break
                    if isinstance(event, CommandReceived | IdleDone):
                        play_host()
                    # IDLE and AUTHENTICATE wait for their "+" from the host
                    if conn.pending is not None and index < len(lines) and lines[index].startswith(
                            "H: +"):
                        play_host()
        elif line.startswith("H: "):
            play_host()
        else:
            raise AssertionError(f"unexpected transcript line {line!r}")
    assert conn.data_to_send().decode() == expected.decode()


TRANSCRIPTS = sorted(HERE.glob("*.imap"))


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=[p.stem for p in TRANSCRIPTS])
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_transcript(path: Path, bytewise: bool) -> None:
    run(path, bytewise)


def test_there_are_transcripts() -> None:
    assert len(TRANSCRIPTS) >= 2
