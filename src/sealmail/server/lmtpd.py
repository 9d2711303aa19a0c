"""lmtpd: the asyncio driver around the sans-I/O LMTP core and the delivery engine.

Bytes in -> `ServerConnection` events -> decisions (recipient checks in the loop, deliveries in
worker threads so their fsyncs overlap and the store can group-commit them) -> replies out. All
protocol rules live in sealmail.proto.smtp; all store-to-reply mapping in sealmail.delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import signal
import socket
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sealmail.config.imapd_conf import ImapdConfig
from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.delivery.recipient import Recipient
from sealmail.delivery.replies import RECIPIENT_OK, SENDER_OK
from sealmail.proto.smtp import (
    NEED_DATA,
    ConnectionClosed,
    Hello,
    Limits,
    MailFrom,
    MessageData,
    Mode,
    ProtocolError,
    Quit,
    RcptTo,
    Reply,
    Reset,
    ServerConnection,
    parse_address,
)
from sealmail.store.errors import StoreError

log = logging.getLogger("sealmail.lmtpd")

POSTMAN = "postman"  # who a UNIX-socket client is (the seed's section 2.1)
_counter = itertools.count(1)


def new_session_id() -> str:
    """Short, unique across processes and restarts, easy to grep."""
    return f"{os.getpid():x}{next(_counter):x}{secrets.token_hex(3)}".upper()


@dataclass
class Transaction:
    sender: str | None = None
    size_hint: int = 0
    recipients: list[Recipient] = field(default_factory=list)


class LmtpService:
    """Serves LMTP sessions on any number of listening sockets."""

    def __init__(
        self,
        config: ImapdConfig,
        engine: DeliveryEngine,
        *,
        trust_tcp: bool = False,
        executor: ThreadPoolExecutor | None = None,
    ) -> None:
        self.config = config
        self.engine = engine
        self.trust_tcp = trust_tcp
        self.executor = executor or ThreadPoolExecutor(max_workers=32, thread_name_prefix="deliver")
        self.limits = Limits(
            max_line_length=config.integer("lmtp_max_line_length"),
            max_message_size=config.integer("maxmessagesize"),
            max_recipients=config.integer("lmtp_max_recipients"),
            max_bad_commands=config.integer("lmtp_max_bad_commands"),
        )
        self.timeout = float(config.integer("lmtptimeout"))
        self.sessions: set[asyncio.Task[None]] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.sessions.add(task)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.sessions.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        is_unix = sock is not None and sock.family == socket.AF_UNIX
        peer = writer.get_extra_info("peername")
        client = "unix socket" if is_unix else f"[{peer[0]}]"
        session_id = new_session_id()
        if not is_unix and not self.trust_tcp:
            # Authentication over TCP arrives with its own issue; until then TCP needs -a.
            log.warning(
                "%s: refused TCP client %s: authentication required (use -a)", session_id, client
            )
            writer.write(Reply(421, "4.7.0", "Authentication required; not available").render())
            return
        identity = POSTMAN if is_unix else "anonymous"
        log.info("%s: connect from %s as %s", session_id, client, identity)
        conn = ServerConnection(
            mode=Mode.LMTP,
            hostname=self.config.servername,
            session_id=session_id,
            limits=self.limits,
            greeting_text=f"LMTP sealmail ready, SESSIONID=<{session_id}>",
        )
        writer.write(conn.data_to_send())
        helo: str | None = None
        txn = Transaction()
        loop = asyncio.get_running_loop()
        while not conn.closed:
            try:
                data = await asyncio.wait_for(reader.read(65536), self.timeout)
            except TimeoutError:
                log.info("%s: timeout after %ds from %s", session_id, self.timeout, client)
                writer.write(Reply(421, "4.4.2", "Timeout, closing connection").render())
                break
            conn.receive_data(data)
            while True:
                event = conn.next_event()
                if event is NEED_DATA or isinstance(event, ConnectionClosed):
                    break
                if isinstance(event, Hello):
                    helo = event.hostname
                elif isinstance(event, MailFrom):
                    txn = Transaction(
                        sender=event.reverse_path, size_hint=_size_param(event.params.get("SIZE"))
                    )
                    conn.answer(SENDER_OK)
                elif isinstance(event, RcptTo):
                    conn.answer(self._check_recipient(session_id, client, txn, event))
                elif isinstance(event, MessageData):
                    writer.write(conn.data_to_send())  # earlier replies need not wait for the disk
                    envelope = Envelope(
                        sender=txn.sender or "",
                        recipients=tuple(txn.recipients),
                        session_id=session_id,
                        helo=helo,
                        client=client,
                        protocol="LMTP",
                    )
                    replies = await loop.run_in_executor(
                        self.executor, self.engine.deliver, envelope, event.content
                    )
                    for reply in replies:
                        conn.answer(reply)
                    txn = Transaction()
                elif isinstance(event, (Reset, Quit)):
                    txn = Transaction()
                elif isinstance(event, ProtocolError):
                    log.info(
                        "%s: protocol error from %s: %s",
                        session_id,
                        client,
                        event.reply.render().decode("ascii", "replace").strip(),
                    )
            out = conn.data_to_send()
            if out:
                writer.write(out)
                await writer.drain()
            if not data:
                break
        out = conn.data_to_send()
        if out:
            writer.write(out)
        log.info("%s: disconnect from %s", session_id, client)

    def _check_recipient(
        self, session_id: str, client: str, txn: Transaction, event: RcptTo
    ) -> Reply:
        address = event.address or parse_address(event.forward_path)
        try:
            recipient = self.engine.check_recipient(
                address.local_part,
                address.domain,
                ignore_quota="IGNOREQUOTA" in event.params,
                size_hint=txn.size_hint,
            )
        except StoreError as exc:
            reply = self.engine.reply_for(exc)
            log.info(
                "%s: reject: RCPT from %s: %d %s <%s>: %s",
                session_id,
                client,
                reply.code,
                reply.enhanced,
                event.forward_path,
                exc,
            )
            return reply
        txn.recipients.append(recipient)
        return RECIPIENT_OK


def _size_param(value: str | None) -> int:
    return int(value) if value and value.isdigit() else 0


async def serve(
    service: LmtpService, sockets: Iterable[socket.socket], shutdown_timeout: float = 30.0
) -> None:
    """Serve until SIGTERM/SIGINT; then stop accepting and let sessions finish (bounded)."""
    servers = []
    for sock in sockets:
        if sock.family == socket.AF_UNIX:
            servers.append(await asyncio.start_unix_server(service.handle, sock=sock))
        else:
            servers.append(await asyncio.start_server(service.handle, sock=sock))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("lmtpd ready")
    await stop.wait()
    log.info("lmtpd stopping: %d session(s) open", len(service.sessions))
    for server in servers:
        server.close()
    if service.sessions:
        _, pending = await asyncio.wait(set(service.sessions), timeout=shutdown_timeout)
        for task in pending:
            task.cancel()
    service.executor.shutdown(wait=True)
