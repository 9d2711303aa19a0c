"""Postfix's SMTPD policy delegation protocol, without I/O.

Theory of operation (Postfix's SMTPD_POLICY_README, "Protocol description"): the client sends a
request as `name=value` lines ended by an empty line; the server answers the same way, and the
one attribute smtpd reads is `action` (an access(5) table action: OK, DUNNO, REJECT text, DEFER,
4NN/5NN text, PREPEND header, ...). The connection stays open for further requests.

`encode_request` renders a request; `ResponseParser` takes bytes as they come and hands out each
complete response. Bad input is a `PolicyProtocolError` (the client then applies
smtpd_policy_service_default_action, as Postfix does): a line without `=`, a line or response
over the limits, bytes that are not UTF-8, or a response with no `action`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "MAX_ATTRIBUTES",
    "MAX_LINE",
    "PolicyProtocolError",
    "PolicyResponse",
    "ResponseParser",
    "encode_request",
]

MAX_LINE = 4096  # bytes of one attribute line (Postfix's attr_scan_plain reads up to its limit)
MAX_ATTRIBUTES = 1024  # lines in one response


class PolicyProtocolError(Exception):
    """The policy server said something that is not a response."""


@dataclass(frozen=True, slots=True)
class PolicyResponse:
    attributes: tuple[tuple[str, str], ...]

    @property
    def action(self) -> str:
        """The last `action=` value (there is always one: the parser checks)."""
        return [value for name, value in self.attributes if name == "action"][-1]


def encode_request(attributes: Mapping[str, str]) -> bytes:
    """`name=value` lines and the empty line. A value's CR or LF would end the request early
    (a client could forge attributes through its HELO name or an address): they become spaces,
    as Postfix's smtpd never passes a line end either."""
    lines = []
    for name, value in attributes.items():
        if not name or "=" in name or any(ch in name for ch in "\r\n"):
            raise ValueError(f"bad attribute name {name!r}")
        clean = value.replace("\r", " ").replace("\n", " ")
        lines.append(f"{name}={clean}\n")
    return ("".join(lines) + "\n").encode("utf-8")


class ResponseParser:
    """Bytes in, `PolicyResponse`s out, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._attributes: list[tuple[str, str]] = []

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_response(self) -> PolicyResponse | None:
        """The next complete response, or None until more bytes come."""
        while True:
            end = self._buffer.find(b"\n")
            if end < 0:
                if len(self._buffer) > MAX_LINE:
                    raise PolicyProtocolError("policy response line too long")
                return None
            line = bytes(self._buffer[:end]).removesuffix(b"\r")
            del self._buffer[: end + 1]
            if len(line) > MAX_LINE:
                raise PolicyProtocolError("policy response line too long")
            if not line:
                return self._finish()
            self._attributes.append(_attribute(line))
            if len(self._attributes) > MAX_ATTRIBUTES:
                raise PolicyProtocolError("too many attributes in a policy response")

    @property
    def pending(self) -> bool:
        """Part of a response has come (an end of stream now truncates it)."""
        return bool(self._buffer or self._attributes)

    def _finish(self) -> PolicyResponse:
        attributes, self._attributes = tuple(self._attributes), []
        if not any(name == "action" for name, _ in attributes):
            raise PolicyProtocolError("policy response without action attribute")
        return PolicyResponse(attributes)


def _attribute(line: bytes) -> tuple[str, str]:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyProtocolError("policy response is not UTF-8") from None
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise PolicyProtocolError(f"malformed policy response line: {text[:100]!r}")
    return name.strip(), value.strip()
