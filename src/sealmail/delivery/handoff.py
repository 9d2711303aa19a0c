"""deliver's hand-off to the running lmtpd: one LMTP transaction over lmtpsocket, blocking.

A thin driver of the MTA's own client core (`sealmail.proto.smtp.client`): the core parses the
replies, keeps their order, dot-stuffs the message and gives one reply per accepted recipient
after the data (RFC 2033 4.2: "one reply for each successful RCPT command", in RCPT order, which
`smtplib.LMTP` does not); this module owns only the socket. deliver runs once per message from a
pipe transport, so it is plain blocking I/O with no event loop. It sends LHLO, one MAIL / RCPT...
/ DATA transaction, pipelined when the server offers PIPELINING (RFC 2920), then QUIT.

Failures that are not an LMTP reply (no server, a dropped connection, a timeout, a malformed reply)
raise `LmtpConnectionError`: the caller cannot know whether the message was stored, so it must
treat them as temporary.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from sealmail.proto.smtp.client import (
    ClientConnection,
    ClientEvent,
    ClientUsageError,
    CommandReply,
    ConnectionClosed,
    Greeting,
    HelloReply,
    MessageReply,
    ServerReply,
    ServerReplyError,
)
from sealmail.proto.smtp.events import NEED_DATA
from sealmail.proto.smtp.state import Mode

# Cyrus deliver's own client waits 300 seconds for the server (prot_settimeout(deliver_in, 300)).
DEFAULT_TIMEOUT = 300.0


class LmtpConnectionError(Exception):
    """No usable LMTP conversation: the outcome of the message is unknown (a temporary failure)."""


@dataclass(frozen=True, slots=True)
class Rcpt:
    """One RCPT TO: the address as it goes between the brackets, and its parameters."""

    address: str
    params: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RecipientOutcome:
    """What happened to one recipient: its RCPT refusal, or its own reply after the data."""

    address: str
    reply: ServerReply


@dataclass(frozen=True, slots=True)
class TransactionOutcome:
    """The MAIL reply, and one outcome per recipient in the order they were given."""

    mail: ServerReply
    recipients: tuple[RecipientOutcome, ...]


class LmtpClient:
    """One LMTP session on a connected stream socket; use `connect_unix` for lmtpsocket."""

    def __init__(
        self, sock: socket.socket, *, lhlo_name: str = "localhost", timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        self._sock = sock
        self._sock.settimeout(timeout)
        self._core = ClientConnection(Mode.LMTP)
        greeting = self._reply()
        if greeting.code != 220:
            self.close()
            raise LmtpConnectionError(f"lmtpd greeted with {greeting}")
        self._core.hello(lhlo_name)
        self._flush()
        reply = self._reply()
        if reply.code != 250:
            self.close()
            raise LmtpConnectionError(f"lmtpd refused LHLO: {reply}")

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
        capabilities = self._core.capabilities
        return capabilities is not None and capabilities.offers(keyword)

    def transaction(
        self,
        sender: str,
        recipients: Sequence[Rcpt],
        content: bytes,
        mail_params: Sequence[str] = (),
    ) -> TransactionOutcome:
        """MAIL FROM:<sender>, the RCPTs, DATA: one outcome per recipient, in order.

        `sender` is the reverse path without brackets ("" for <>); `content` has CRLF line ends.
        A sender or recipient that cannot be put on a command line is a ClientUsageError.
        """
        core = self._core
        core.mail(sender, mail_params)
        if self.offers("PIPELINING"):
            # RFC 2920 3.1: MAIL, RCPT and DATA may be sent in one group; the message itself only
            # after the 354 (the last command of a group is the one that changes direction).
            for recipient in recipients:
                core.rcpt(recipient.address, recipient.params)
            core.data()
            self._flush()
            mail = self._reply()
            rcpt_replies = [self._reply() for _ in recipients]
            go_ahead = self._reply()
        else:
            self._flush()
            mail = self._reply()
            rcpt_replies = []
            if mail.is_success:
                for recipient in recipients:
                    core.rcpt(recipient.address, recipient.params)
                    self._flush()
                    rcpt_replies.append(self._reply())
            else:
                rcpt_replies = [mail] * len(recipients)
            go_ahead = mail
            if any(r.is_success for r in rcpt_replies):
                core.data()
                self._flush()
                go_ahead = self._reply()
        if not mail.is_success:
            return TransactionOutcome(
                mail, tuple(RecipientOutcome(r.address, mail) for r in recipients)
            )
        accepted = [i for i, reply in enumerate(rcpt_replies) if reply.is_success]
        final: list[ServerReply] = list(rcpt_replies)
        if go_ahead.code == 354:
            # With no recipient accepted, a server that wants the data gets an empty message
            # and gives one reply; otherwise one reply per accepted recipient (RFC 2033 4.2).
            core.send_message(content)
            self._flush()
            if not accepted:
                self._reply()
            for index in accepted:
                final[index] = self._reply()
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
            self._core.quit()
            self._flush()
            self._reply()
        except (OSError, LmtpConnectionError, ClientUsageError):
            pass
        self.close()

    def close(self) -> None:
        self._sock.close()

    # -- the driver: bytes between the socket and the core -----------------------------------

    def _flush(self) -> None:
        data = self._core.data_to_send()
        if data:
            try:
                self._sock.sendall(data)
            except OSError as exc:
                raise LmtpConnectionError(f"lost lmtpd while sending: {exc}") from None

    def _reply(self) -> ServerReply:
        """The reply to the oldest command still waiting for one."""
        event = self._event()
        if not isinstance(event, Greeting | HelloReply | CommandReply | MessageReply):
            raise LmtpConnectionError(f"unexpected event from lmtpd: {event}")
        return event.reply

    def _event(self) -> ClientEvent:
        while True:
            try:
                event = self._core.next_event()
            except ServerReplyError as exc:
                raise LmtpConnectionError(f"lmtpd broke the protocol: {exc}") from None
            if event is not NEED_DATA:
                assert isinstance(event, ClientEvent)
                if isinstance(event, ConnectionClosed):
                    raise LmtpConnectionError("lmtpd closed the connection")
                return event
            try:
                data = self._sock.recv(65536)
            except OSError as exc:  # socket.timeout is an OSError
                raise LmtpConnectionError(f"no reply from lmtpd: {exc or 'timeout'}") from None
            self._core.receive_data(data)
