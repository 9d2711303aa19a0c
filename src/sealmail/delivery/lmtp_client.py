"""A small blocking LMTP client (RFC 2033), for `sealmail deliver` talking to the running lmtpd.

deliver runs once per message from a pipe transport, so this module stays light: the standard
library only (no asyncio, nothing from sealmail.proto, whose import costs more than a whole
delivery on a warm store). It speaks exactly what deliver needs: LHLO, one MAIL / RCPT... / DATA
transaction, pipelined when the server offers PIPELINING (RFC 2920), then QUIT.

Why not `smtplib.LMTP`: after DATA it reads a single reply, but RFC 2033 4.2 gives "one reply for
each successful RCPT command", in RCPT order, and a multi-user deliver needs all of them.

Failures that are not an LMTP reply (no server, a dropped connection, a timeout, a malformed reply)
raise `LmtpConnectionError`: the caller cannot know whether the message was stored, so it must
treat them as temporary.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

# Cyrus deliver's own client waits 300 seconds for the server (prot_settimeout(deliver_in, 300)).
DEFAULT_TIMEOUT = 300.0
MAX_REPLY_LINE = 4096  # RFC 5321 4.5.3.1.5: a reply line is at most 512 octets; be generous

_REPLY_LINE = re.compile(rb"([2-5][0-9][0-9])([ -]|\r?\n|$)")
_ENHANCED = re.compile(r"([245]\.[0-9]{1,3}\.[0-9]{1,3})(?: |$)")
# RFC 5321 4.1.2 Dot-string, as far as a local part needs no quoting.
_ATEXT = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~\-\u0080-\U0010ffff"
_DOT_STRING = re.compile(rf"[{_ATEXT}]+(?:\.[{_ATEXT}]+)*")


class LmtpConnectionError(Exception):
    """No usable LMTP conversation: the outcome of the message is unknown (a temporary failure)."""


@dataclass(frozen=True, slots=True)
class LmtpReply:
    """A server reply: `enhanced` is the RFC 3463 code that opens the last line, if any."""

    code: int
    lines: tuple[str, ...]

    @property
    def enhanced(self) -> str | None:
        found = _ENHANCED.match(self.lines[-1]) if self.lines else None
        return found.group(1) if found else None

    @property
    def is_success(self) -> bool:
        return 200 <= self.code < 300

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    def __str__(self) -> str:
        return f"{self.code} {self.lines[-1] if self.lines else ''}".rstrip()


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What happened to one recipient: its RCPT refusal, or its own reply after the data."""

    address: str
    reply: LmtpReply


@dataclass(frozen=True, slots=True)
class TransactionOutcome:
    """The MAIL reply, and one outcome per recipient in the order they were given."""

    mail: LmtpReply
    recipients: tuple[RecipientOutcome, ...]


def render_address(local_part: str, domain: str | None = None) -> str:
    """`local@domain` for an envelope path, quoting the local part when RFC 5321 4.1.2 needs it."""
    local = local_part
    if not _DOT_STRING.fullmatch(local):
        local = '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return local if not domain else f"{local}@{domain}"


def dot_stuff(content: bytes) -> bytes:
    """DATA form of a CRLF message (RFC 5321 4.5.2), always ending with CRLF before the dot."""
    if content and not content.endswith(b"\r\n"):
        content += b"\r\n"
    if content.startswith(b"."):
        content = b"." + content
    return content.replace(b"\r\n.", b"\r\n..")


@dataclass(frozen=True, slots=True)
class Rcpt:
    """One RCPT TO: the address as it goes between the brackets, and its parameters."""

    address: str
    params: tuple[str, ...] = ()


class LmtpClient:
    """One LMTP session on a connected stream socket; use `connect_unix` for lmtpsocket."""

    def __init__(
        self, sock: socket.socket, *, lhlo_name: str = "localhost", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._reader = sock.makefile("rb")
        self.extensions: dict[str, str] = {}
        greeting = self.read_reply()
        if greeting.code != 220:
            self.close()
            raise LmtpConnectionError(f"lmtpd greeted with {greeting}")
        self._send(f"LHLO {lhlo_name}\r\n".encode("ascii"))
        reply = self.read_reply()
        if reply.code != 250:
            self.close()
            raise LmtpConnectionError(f"lmtpd refused LHLO: {reply}")
        # RFC 5321 4.1.1.1: the first line is the server's name, each further line a keyword.
        for line in reply.lines[1:]:
            keyword, _, value = line.partition(" ")
            if keyword:
                self.extensions[keyword.upper()] = value

    @classmethod
    def connect_unix(
        cls, path: str, *, lhlo_name: str = "localhost", timeout: float = DEFAULT_TIMEOUT
    ) -> LmtpClient:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise LmtpConnectionError(
                f"cannot connect to lmtpd at {path}: {exc.strerror or exc}"
            ) from None
        try:
            return cls(sock, lhlo_name=lhlo_name, timeout=timeout)
        except OSError as exc:
            sock.close()
            raise LmtpConnectionError(f"lmtpd at {path}: {exc}") from None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.quit()

    def offers(self, keyword: str) -> bool:
        return keyword.upper() in self.extensions

    def _send(self, data: bytes) -> None:
        try:
            self._sock.sendall(data)
        except OSError as exc:
            raise LmtpConnectionError(f"lost lmtpd while sending: {exc}") from None

    def read_reply(self) -> LmtpReply:
        """One reply, possibly multi-line (RFC 5321 4.2.1: "250-..." lines, then "250 ...")."""
        lines: list[str] = []
        code: bytes | None = None
        while True:
            try:
                raw = self._reader.readline(MAX_REPLY_LINE)
            except OSError as exc:  # socket.timeout is an OSError
                raise LmtpConnectionError(f"no reply from lmtpd: {exc or 'timeout'}") from None
            if not raw:
                raise LmtpConnectionError("lmtpd closed the connection")
            match = _REPLY_LINE.match(raw)
            if match is None or (code is not None and match.group(1) != code):
                raise LmtpConnectionError(f"malformed reply from lmtpd: {raw[:80]!r}")
            code = match.group(1)
            lines.append(raw[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if match.group(2) != b"-":
                return LmtpReply(int(code), tuple(lines))

    def transaction(
        self,
        sender: str,
        recipients: Sequence[Rcpt],
        content: bytes,
        mail_params: Sequence[str] = (),
    ) -> TransactionOutcome:
        """MAIL FROM:<sender>, the RCPTs, DATA: one outcome per recipient, in order.

        `sender` is the reverse path without brackets ("" for <>); `content` has CRLF line ends.
        """
        params = "".join(f" {p}" for p in mail_params)
        commands = [f"MAIL FROM:<{sender}>{params}\r\n".encode()]
        commands += [
            f"RCPT TO:<{r.address}>{''.join(f' {p}' for p in r.params)}\r\n".encode()
            for r in recipients
        ]
        if self.offers("PIPELINING"):
            # RFC 2920 3.1: MAIL, RCPT and DATA may be sent in one group; the message itself only
            # after the 354 (the last command of a group is the one that changes direction).
            self._send(b"".join([*commands, b"DATA\r\n"]))
            mail = self.read_reply()
            rcpt_replies = [self.read_reply() for _ in recipients]
            go_ahead = self.read_reply()
        else:
            self._send(commands[0])
            mail = self.read_reply()
            rcpt_replies = []
            if mail.is_success:
                for command in commands[1:]:
                    self._send(command)
                    rcpt_replies.append(self.read_reply())
            else:
                rcpt_replies = [mail] * len(recipients)
            go_ahead = mail
            if any(r.is_success for r in rcpt_replies):
                self._send(b"DATA\r\n")
                go_ahead = self.read_reply()
        if not mail.is_success:
            return TransactionOutcome(
                mail, tuple(RecipientOutcome(r.address, mail) for r in recipients)
            )
        accepted = [i for i, reply in enumerate(rcpt_replies) if reply.is_success]
        final: list[LmtpReply] = list(rcpt_replies)
        if accepted and go_ahead.code == 354:
            self._send(dot_stuff(content) + b".\r\n")
            # RFC 2033 4.2: after the final dot, one reply per accepted recipient, in RCPT order.
            for index in accepted:
                final[index] = self.read_reply()
        elif go_ahead.code == 354:
            # A server that wants data with no recipient accepted: give it an empty message.
            self._send(b".\r\n")
            self.read_reply()
        elif accepted:
            # DATA refused although recipients were accepted: that reply answers for them all.
            for index in accepted:
                final[index] = go_ahead
        return TransactionOutcome(
            mail, tuple(RecipientOutcome(r.address, final[i]) for i, r in enumerate(recipients))
        )

    def quit(self) -> None:
        """QUIT politely; a server already gone is no error, the transaction is over anyway."""
        try:
            self._sock.sendall(b"QUIT\r\n")
            self.read_reply()
        except (OSError, LmtpConnectionError):
            pass
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()
