"""Fixtures for sealmail.auth: a cheap-scrypt sasldb and a real saslauthd on a private socket.

saslauthd's own `-a sasldb` reads only /etc/sasldb2 (its sasldb driver takes no path), so the
real daemon runs with `-a rimap` against a small IMAP LOGIN responder on 127.0.0.1 that this
fixture starts: nothing on the machine outside the temporary directory is read or changed.
"""

from __future__ import annotations

import shutil
import socketserver
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sealmail.auth.sasldb import SaslDB

CHEAP_SCRYPT_N = 2**10  # tests only; the default cost is 2**15


@pytest.fixture
def sasldb(tmp_path: Path) -> SaslDB:
    return SaslDB(tmp_path / "sasldb2", scrypt_n=CHEAP_SCRYPT_N)


IMAP_USERS = {"carol": "carolpw"}


class _ImapLogin(socketserver.StreamRequestHandler):
    """Enough IMAP (RFC 3501 6.2.3 LOGIN, 6.1.3 LOGOUT) for saslauthd's rimap driver."""

    def handle(self) -> None:
        self.wfile.write(b"* OK test IMAP ready\r\n")
        for line in self.rfile:
            tag, _, rest = line.rstrip(b"\r\n").partition(b" ")
            command, _, arguments = rest.partition(b" ")
            if command.upper() == b"LOGIN":
                words = [w.strip(b'"') for w in arguments.split(b" ")]
                ok = len(words) == 2 and IMAP_USERS.get(words[0].decode()) == words[1].decode()
                self.wfile.write(tag + (b" OK logged in\r\n" if ok else b" NO bad login\r\n"))
            elif command.upper() == b"LOGOUT":
                self.wfile.write(b"* BYE\r\n" + tag + b" OK bye\r\n")
                return
            else:
                self.wfile.write(tag + b" BAD unknown\r\n")


@dataclass
class RunningSaslauthd:
    socket_path: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture
def saslauthd(tmp_path: Path) -> Iterator[RunningSaslauthd]:
    binary = shutil.which("saslauthd") or (
        "/usr/sbin/saslauthd" if Path("/usr/sbin/saslauthd").exists() else None
    )
    if binary is None:
        pytest.skip("saslauthd (Debian sasl2-bin) is not installed")
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ImapLogin)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    run_dir = tmp_path / "saslauthd"
    run_dir.mkdir()
    log_path = tmp_path / "saslauthd.log"
    port = server.server_address[1]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [binary, "-d", "-a", "rimap", "-O", f"127.0.0.1/{port}", "-m", str(run_dir), "-n", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            # saslauthd signals its whole process group when it exits: give it its own.
            start_new_session=True,
        )
    socket_path = run_dir / "mux"
    try:
        deadline = time.monotonic() + 10
        while not socket_path.exists():  # the daemon creates its socket when ready
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"saslauthd did not start: {log_path.read_text()}")
            time.sleep(0.02)
        yield RunningSaslauthd(socket_path, log_path)
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.shutdown()
        server.server_close()
