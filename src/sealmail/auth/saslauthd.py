"""A client of a running saslauthd (Cyrus SASL's sasl2-bin) over its UNIX socket.

Wire protocol (saslauthd's ipc_unix.c, as libsasl's checkpw.c speaks it): the request is four
counted strings, each a 2-byte big-endian length then the bytes, in the order login, password,
service, realm; the answer is one counted string starting with "OK" or "NO". One request per
connection. saslauthd needs the password itself, so only PLAIN and LOGIN can use it.
"""

from __future__ import annotations

import os
import socket
import struct
from pathlib import Path

from sealmail.proto.sasl import CredentialsUnavailable, Identity, Verdict

__all__ = ["DEFAULT_SASLAUTHD_PATH", "SaslauthdClient", "SaslauthdError", "encode_request"]

DEFAULT_SASLAUTHD_PATH = "/var/run/saslauthd/mux"
_MAX_FIELD = 0xFFFF  # the count is an unsigned short
_MAX_REQUEST = 8192  # libsasl's own request buffer
_MAX_ANSWER = 1024


class SaslauthdError(CredentialsUnavailable):
    """saslauthd could not be asked (socket missing, daemon down, garbled answer)."""


def encode_request(login: bytes, password: bytes, service: bytes, realm: bytes) -> bytes:
    """The request bytes; ValueError for NUL (the daemon reads C strings) or oversize fields."""
    parts = []
    for name, value in (
        ("login", login),
        ("password", password),
        ("service", service),
        ("realm", realm),
    ):
        if b"\x00" in value:
            raise ValueError(f"saslauthd {name} contains NUL")
        if len(value) > _MAX_FIELD:
            raise ValueError(f"saslauthd {name} too long")
        parts.append(struct.pack("!H", len(value)) + value)
    request = b"".join(parts)
    if len(request) > _MAX_REQUEST:
        raise ValueError("saslauthd request too long")
    return request


class SaslauthdClient:
    """Checks passwords with saslauthd; implements `check_password` of proto.sasl.Credentials."""

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_SASLAUTHD_PATH,
        service: str = "imap",
        *,
        timeout: float = 15.0,
    ) -> None:
        self.path = Path(path)
        self.service = service
        self.timeout = timeout

    def check(self, login: str, password: str, realm: str = "") -> Verdict:
        """Ask saslauthd; `login` is the user without realm, as libsasl sends it."""
        try:
            request = encode_request(
                login.encode("utf-8"),
                password.encode("utf-8"),
                self.service.encode("utf-8"),
                realm.encode("utf-8"),
            )
        except ValueError:
            return Verdict.NO  # a NUL cannot be in any stored password
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(str(self.path))
                sock.sendall(request)
                (count,) = struct.unpack("!H", _read_exactly(sock, 2))
                if count < 2:
                    raise SaslauthdError(f"saslauthd {self.path}: answer too short")
                answer = _read_exactly(sock, min(count, _MAX_ANSWER))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise SaslauthdError(f"saslauthd {self.path}: {reason}") from None
        if answer.startswith(b"OK"):
            return Verdict.OK
        if answer.startswith(b"NO"):
            return Verdict.NO
        raise SaslauthdError(f"saslauthd {self.path}: unexpected answer")

    def check_password(self, identity: Identity, password: str) -> Verdict:
        return self.check(identity.user, password, identity.realm)


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise SaslauthdError("saslauthd closed the connection early")
        data += chunk
    return data
