"""How IMAP responses reach the client: the core's bytes flushed to the transport, COMPRESS's
deflate (RFC 4978), and a command's worker thread writing to the socket itself (`_stream`)."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import zlib
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from sealmail.imap import ImapSession
from sealmail.proto.imap import Command, Response, ServerConnection, StatusResponse
from sealmail.server.imapd.threads import in_thread
from sealmail.server.session import ClientSession

if TYPE_CHECKING:
    from sealmail.server.imapd.service import ImapService

log = logging.getLogger("sealmail.imapd")

STREAM_BUFFER = 1024 * 1024  # output a FETCH may have waiting for its client, beyond the kernel's
INFLATED_PIECE = 65536  # what the core is fed at once after COMPRESS, like one plain read


class _Deflate:
    """COMPRESS=DEFLATE (RFC 4978): raw deflate both ways, flushed after each write."""

    def __init__(self) -> None:
        self.inflater = zlib.decompressobj(-15)
        self.deflater = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)

    def inflate(self, data: bytes) -> Iterator[bytes]:
        """`data` inflated, in pieces of at most INFLATED_PIECE bytes: a few compressed bytes can
        stand for megabytes (a deflate stream of zeros: ~1000:1), and the core must see them a
        piece at a time to hold its limits (line length, literal size) before they pile up."""
        piece = self.inflater.decompress(data, INFLATED_PIECE)
        while piece:
            yield piece
            piece = self.inflater.decompress(self.inflater.unconsumed_tail, INFLATED_PIECE)

    def deflate(self, data: bytes) -> bytes:
        return self.deflater.compress(data) + self.deflater.flush(zlib.Z_SYNC_FLUSH)


def _write_nonblocking(fd: int, data: bytes) -> int:
    """Writes to a non-blocking socket what it takes now; how many bytes that was."""
    view = memoryview(data)
    sent = 0
    while sent < len(view):
        try:
            sent += os.write(fd, view[sent:])
        except BlockingIOError:
            break
    return sent


class ResponseWriter(ClientSession):
    """The output side of one IMAP connection (`ImapConnection` is the rest)."""

    def __init__(
        self, service: ImapService, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        super().__init__(reader, writer)
        self.service = service
        self.conn = ServerConnection(service.limits())
        self.session: ImapSession | None = None
        self.compression: _Deflate | None = None
        self._direct = False  # the running command's thread writes to `_direct_fd` (_stream)
        self._direct_fd: int | None = None
        self._inline = False  # the running command runs on the loop (`_execute_here`)

    async def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            if self.compression is not None:
                data = self.compression.deflate(data)
            self.writer.write(data)
            transport = self.writer.transport
            # Most often the kernel took it all and the connection is up: then a drain would
            # only return (a coroutine and five calls per command, for nothing). A lost
            # connection closes the transport, and the drain raises as before.
            if transport.get_write_buffer_size() or transport.is_closing():
                await self._drain()

    async def _drain(self) -> None:
        if not self.writer.transport.get_write_buffer_size():
            await self.writer.drain()  # only raises, should the connection be lost
            return
        try:
            async with asyncio.timeout(self.service.timeout):
                await self.writer.drain()
        except TimeoutError:
            # The autologout timer covers a client that stops reading our output too (as
            # Dovecot's "inactivity in reading our output"): it would hold the session.
            log.info("%s: autologout: not reading our output, %s", self.session_id, self.client)
            raise ConnectionError("client not reading") from None

    def _send(self, responses: Iterable[Response]) -> None:
        for response in responses:
            self.conn.utf8 = self.session.utf8 if self.session is not None else False
            self.conn.send(response)

    def _stream(self, loop: asyncio.AbstractEventLoop, responses: list[Response]) -> None:
        """`ImapSession.stream`, called in the command's worker thread: these untagged
        responses go out now, before anything the command sends later, so the client reads
        while the rest is built.

        On a plain connection whose earlier output has all reached the kernel (`_direct`), this
        thread writes them to the socket itself, as a process-per-connection server does: a
        hand-off to the event loop costs two thread wake-ups per batch, on a small machine as
        much CPU as the reads of the files. What the socket does not take at once goes to the
        loop's transport, and so does the rest of the command; TLS and COMPRESS keep their
        state in the loop, so their output always goes through it. This thread then waits until
        the loop has written, and, once more than STREAM_BUFFER waits for the client, until the
        client has read it (within the autologout time): a FETCH of a large mailbox never holds
        more than that in memory, whatever the client's pace; the waiting thread uses no CPU.
        """
        if self._inline:
            self._send(responses)  # on the loop (`_execute_here`): flushed after the command
            return
        if self._direct:
            self._send(responses)
            data = self.conn.data_to_send()
            assert self._direct_fd is not None
            sent = _write_nonblocking(self._direct_fd, data)
            if sent == len(data):
                return
            self._direct = False
            rest = data[sent:]
            responses = []
        else:
            rest = b""
        written = threading.Event()
        failures: list[BaseException] = []

        def write() -> None:
            try:
                self._send(responses)
                data = rest + self.conn.data_to_send()
                if data:
                    if self.compression is not None:
                        data = self.compression.deflate(data)
                    self.writer.write(data)
                if self.writer.transport.get_write_buffer_size() > STREAM_BUFFER:
                    # Memory stays bounded: the command goes on once the client has read.
                    drained = asyncio.ensure_future(self._drain())
                    drained.add_done_callback(lambda task: finish(
                        ConnectionError("session ended") if task.cancelled()
                        else task.exception()))
                    return
            except BaseException as exc:  # handed to the command's thread, which raises it
                finish(exc)
                return
            finish(None)

        def finish(failure: BaseException | None) -> None:
            if failure is not None:
                failures.append(failure)
            written.set()

        loop.call_soon_threadsafe(write)
        while not written.wait(1.0):
            if not loop.is_running():
                raise ConnectionError("the event loop stopped")
        if failures:
            raise failures[0]

    def _execute_here(self, session: ImapSession, command: Command) -> list[Response]:
        """A quick command (sealmail.imap.quick), run on the loop: no thread hand-off, and its
        responses join the core's output, flushed with the rest of the batch."""
        self._inline = True
        try:
            responses = session.execute(command)
        finally:
            self._inline = False
        self._send(responses)
        return responses

    async def _execute_in_thread(self, session: ImapSession, command: Command
                                 ) -> list[Response]:
        """Any other command, in a worker thread (the store blocks); that thread writes to the
        socket itself while it may (`_stream`)."""
        self._direct = self._may_write_directly()
        try:
            responses, rest = await in_thread(
                self.service.executor, self._execute, session, command)
        finally:
            self._direct = False
        if rest is None:
            self._send(responses)
        elif rest:
            self.writer.write(rest)
            await self._drain()
        return responses

    def _execute(self, session: ImapSession, command: Command
                 ) -> tuple[list[Response], bytes | None]:
        """The command, in its worker thread; while the socket is this thread's (`_stream`), it
        also writes the responses, so the client has the tagged one without waiting for the
        event loop to wake. Returns them, and None if the loop is to send them, else what the
        socket did not take (for the loop's transport)."""
        responses = session.execute(command)
        if not self._direct:
            return responses, None
        self._send(responses)
        data = self.conn.data_to_send()
        assert self._direct_fd is not None
        return responses, data[_write_nonblocking(self._direct_fd, data):]

    def _may_write_directly(self) -> bool:
        """Whether the next command's thread may write to the socket itself (`_stream`)."""
        if self.secure or self.compression is not None:
            return False
        if self.writer.transport.get_write_buffer_size():
            return False  # the loop still has output to send first
        if self._direct_fd is None:
            sock = self.writer.get_extra_info("socket")
            if sock is None:
                return False
            # A duplicate the loop never closes: should the client go away mid-command and the
            # loop close its descriptor, the number could name another file by the next write.
            self._direct_fd = os.dup(sock.fileno())
        return True

    def _kicked(self) -> None:
        """`sealmail admin kick`: a BYE, as Dovecot's kick, and the connection closes."""
        log.info("%s: kicked by admin from %s", self.session_id, self.client)
        self.conn.send(StatusResponse("BYE", "Kicked by admin"))
        data = self.conn.data_to_send()
        if self.compression is not None:
            data = self.compression.deflate(data)
        self.writer.write(data)
        self.writer.close()

