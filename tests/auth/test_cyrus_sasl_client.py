"""Interop with Cyrus SASL's own client library, the one Postfix's lmtp client links.

sasl-sample-client (Debian sasl2-bin) speaks `S: base64` / `C: base64` lines on a terminal and
asks for the password there, so it runs under a pseudo-terminal. Its first line carries the
mechanism name, a NUL and the initial response.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pty
import select
import shutil
import signal
import time

import pytest

from sealmail.auth import Authenticator, SaslDB
from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.proto.sasl import Challenge, Failure, Identity, StepResult, Success

SERVER = "cyrus.example.com"
CLIENT = shutil.which("sasl-sample-client")

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(CLIENT is None, reason="sasl-sample-client (sasl2-bin) not installed"),
]


class SampleClient:
    def __init__(self, mechanism: str, authcid: str, password: str, authzid: str | None) -> None:
        argv = [CLIENT or "", "-m", mechanism, "-a", authcid, "-s", "lmtp", "-n", SERVER]
        if authzid is not None:
            argv += ["-u", authzid]
        self.password = password
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: become the client
            os.execv(argv[0], argv)
        self.buffer = b""

    def _read_more(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"the client stalled: {self.buffer[-400:]!r}")
        ready, _, _ = select.select([self.fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(self.fd, 4096)
            except OSError:
                chunk = b""
            if not chunk:
                raise AssertionError(f"the client ended: {self.buffer[-400:]!r}")
            self.buffer += chunk

    def wait_for(self, marker: bytes, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while marker not in self.buffer:
            self._read_more(deadline)
        self.buffer = self.buffer.partition(marker)[2]

    def client_message(self, timeout: float = 30.0) -> bytes:
        """The next `C: ...` line, answering a password prompt whenever the client asks."""
        deadline = time.monotonic() + timeout
        while True:
            if b"Password: " in self.buffer:
                self.buffer = self.buffer.partition(b"Password: ")[2]
                os.write(self.fd, self.password.encode() + b"\n")
            lines = self.buffer.split(b"\n")
            for index, line in enumerate(lines[:-1]):
                if line.startswith(b"C: "):
                    self.buffer = b"\n".join(lines[index + 1 :])
                    return base64.b64decode(line[3:].strip())
            self._read_more(deadline)

    def send(self, data: bytes) -> None:
        os.write(self.fd, b"S: " + base64.b64encode(data) + b"\n")

    def close(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        os.waitpid(self.pid, 0)


def run_exchange(
    auth: Authenticator, mechanism: str, authcid: str, password: str, authzid: str | None = None
) -> StepResult:
    client = SampleClient(mechanism, authcid, password, authzid)
    try:
        client.wait_for(b"Waiting for mechanism list")
        client.send(mechanism.encode())
        name, nul, initial = client.client_message().partition(b"\x00")
        assert name == mechanism.encode()
        mech = auth.start(mechanism, True, service="lmtp")
        result = mech.step(initial if nul else None)
        while isinstance(result, Challenge):
            client.send(result.data)
            result = mech.step(client.client_message())
        return result
    finally:
        client.close()


@pytest.fixture
def auth(sasldb: SaslDB) -> Authenticator:
    sasldb.set_password(Identity("lmtpuser", SERVER), "secret")
    sasldb.set_password(Identity("alice", SERVER), "alicepw")
    config = parse_imapd_conf(f"servername: {SERVER}\nlmtp_admins: lmtpuser\n")
    return Authenticator(config, sasldb=sasldb)


@pytest.mark.parametrize(
    "mechanism", ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"]
)
def test_cyrus_client_authenticates(auth: Authenticator, mechanism: str) -> None:
    assert run_exchange(auth, mechanism, "lmtpuser", "secret") == Success("lmtpuser", "lmtpuser")


@pytest.mark.parametrize("mechanism", ["PLAIN", "CRAM-MD5", "SCRAM-SHA-256"])
def test_cyrus_client_wrong_password_fails(auth: Authenticator, mechanism: str) -> None:
    result = run_exchange(auth, mechanism, "lmtpuser", "wrong")
    assert isinstance(result, Failure)


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-256"])
def test_cyrus_client_proxy_authorization(auth: Authenticator, mechanism: str) -> None:
    assert run_exchange(auth, mechanism, "lmtpuser", "secret", "alice") == Success(
        "lmtpuser", "alice"
    )
    result = run_exchange(auth, mechanism, "alice", "alicepw", "lmtpuser")
    assert isinstance(result, Failure)
