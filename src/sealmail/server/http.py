"""A small HTTP/1.1 server for the web console: h11 (a sans-I/O HTTP core, the shape our own
protocol cores follow) driven by asyncio streams, with the limits a server facing browsers needs.

The driver knows nothing about the console: it reads one request at a time (keep-alive, no
pipelining of answers), hands a complete `Request` to the application's handler and writes the
`Response` back. What it refuses itself, before the handler sees anything:

- a request head over `HttpLimits.max_head` bytes: 431 (h11's receive buffer cap);
- a body over `HttpLimits.max_body` bytes: 413, from Content-Length before reading it, or as
  soon as a chunked body passes the limit; the connection is then closed;
- a method other than GET, HEAD and POST: 405 with Allow;
- malformed HTTP: 400 (h11's hint); a client silent for `HttpLimits.idle` seconds, or taking
  over `HttpLimits.request` seconds to send a request (a trickle), is disconnected.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

import h11

from sealmail.server.listeners import serve_on

log = logging.getLogger("sealmail.http")

METHODS = ("GET", "HEAD", "POST")
READ_SIZE = 16384
LINGER_SECONDS, LINGER_BYTES = 2.0, 1 << 20  # what a refused client may still send


@dataclass(frozen=True, slots=True)
class HttpLimits:
    max_head: int = 16384  # request line and headers
    max_body: int = 65536  # a form post; nothing the console takes is larger
    idle: float = 30.0  # seconds a client may stay silent (before a request, within one)
    request: float = 60.0  # seconds for a whole request, however it trickles in


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    target: str  # as sent: path and query
    headers: dict[str, str]  # lower-case names; a repeated header's values joined by ", "
    body: bytes
    client: str  # the peer's address, for logs and login throttling
    secure: bool  # over TLS

    @property
    def path(self) -> str:
        return urlsplit(self.target).path or "/"

    @property
    def query(self) -> dict[str, str]:
        """The query string's fields (the first value of each)."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.target).query).items()}

    def form(self) -> dict[str, str]:
        """An application/x-www-form-urlencoded body's fields (the first value of each)."""
        text = self.body.decode("utf-8", "replace")
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}

    def cookies(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for part in self.headers.get("cookie", "").replace(",", ";").split(";"):
            name, equals, value = part.strip().partition("=")
            if equals and name not in found:
                found[name] = value
        return found


@dataclass(slots=True)
class Response:
    status: int
    body: bytes = b""
    content_type: str = "text/html; charset=utf-8"
    headers: list[tuple[str, str]] = field(default_factory=list)


Handler = Callable[[Request], Awaitable[Response]]


def plain(status: int, text: str) -> Response:
    return Response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


class _Refused(Exception):
    """The driver answers this request itself and closes the connection."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status)
        self.response = response


class HttpConnection:
    """One client connection: read a request, answer it, again until either side closes."""

    def __init__(
        self,
        handler: Handler,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: HttpLimits,
    ) -> None:
        self.handler = handler
        self.reader = reader
        self.writer = writer
        self.limits = limits
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_head)
        peer = writer.get_extra_info("peername")
        self.client = str(peer[0]) if isinstance(peer, tuple) else "unix"
        self.secure = writer.get_extra_info("ssl_object") is not None

    async def serve(self) -> None:
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation
                    # that meets a read completing (a trickling client's next bytes), and then
                    # waits for a request head that never ends (test_a_trickling_client_...).
                    async with asyncio.timeout(self.limits.request):
                        request = await self._read_request()
                except _Refused as refused:
                    await self._send(refused.response, head_only=False, close=True)
                    await self._linger()
                    break
                if request is None:
                    break
                try:
                    response = await self.handler(request)
                except Exception:
                    log.exception("http: %s %s failed", request.method, request.path)
                    response = plain(500, "Internal error; see the server's log")
                await self._send(response, head_only=request.method == "HEAD", close=False)
                if self.conn.our_state is not h11.DONE or self.conn.their_state is not h11.DONE:
                    break
                self.conn.start_next_cycle()
        except (ConnectionError, TimeoutError, ssl.SSLError, h11.LocalProtocolError):
            pass
        except asyncio.CancelledError:  # the service is closing: no goodbye to wait for
            self.writer.transport.abort()
            raise
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 5)

    async def _linger(self) -> None:
        """After refusing a request whose body is still coming, read and drop what the client
        sends (a while, a bounded amount) before closing: closed at once, the kernel answers
        those bytes with a reset, which can destroy the refusal before the client reads it."""
        if self.secure or not self.writer.can_write_eof():
            return
        self.writer.write_eof()
        dropped = 0
        with contextlib.suppress(TimeoutError, ConnectionError):
            async with asyncio.timeout(LINGER_SECONDS):
                while dropped < LINGER_BYTES and (data := await self.reader.read(READ_SIZE)):
                    dropped += len(data)

    async def _next_event(self) -> object:
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as exc:
                raise _Refused(plain(exc.error_status_hint, f"Bad request: {exc}")) from None
            if event is not h11.NEED_DATA:
                return event
            async with asyncio.timeout(self.limits.idle):
                data = await self.reader.read(READ_SIZE)
            self.conn.receive_data(data)  # b"" is the end of the stream: h11 says so next

    async def _read_request(self) -> Request | None:
        event = await self._next_event()
        if isinstance(event, h11.ConnectionClosed):
            return None
        if not isinstance(event, h11.Request):
            raise _Refused(plain(400, "Bad request"))
        method = event.method.decode("ascii", "replace")
        if method not in METHODS:
            response = plain(405, "Method not allowed")
            response.headers.append(("Allow", ", ".join(METHODS)))
            raise _Refused(response)
        headers: dict[str, str] = {}
        for name, value in event.headers:
            key = name.decode("ascii", "replace").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.limits.max_body:
            raise _Refused(plain(413, "Request body too large"))
        body = bytearray()
        while True:
            part = await self._next_event()
            if isinstance(part, h11.Data):
                body += part.data
                if len(body) > self.limits.max_body:
                    raise _Refused(plain(413, "Request body too large"))
            elif isinstance(part, h11.EndOfMessage):
                break
            else:
                raise _Refused(plain(400, "Bad request"))
        return Request(method, event.target.decode("ascii", "replace"), headers, bytes(body),
                       self.client, self.secure)

    async def _send(self, response: Response, *, head_only: bool, close: bool) -> None:
        if self.conn.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
            return  # h11 already failed this connection: nothing can be sent
        headers = [("Content-Type", response.content_type),
                   ("Content-Length", str(len(response.body))), *response.headers]
        if close:
            headers.append(("Connection", "close"))
        try:
            reason = HTTPStatus(response.status).phrase.encode()
        except ValueError:
            reason = b""
        head = h11.Response(status_code=response.status, headers=headers, reason=reason)
        data = self.conn.send(head) or b""
        if response.body and not head_only:
            data += self.conn.send(h11.Data(data=response.body)) or b""
        data += self.conn.send(h11.EndOfMessage()) or b""
        self.writer.write(data)
        await self.writer.drain()


class HttpService:
    """The listeners and live connections of `serve_http`; `close` ends them all."""

    def __init__(self) -> None:
        self.servers: list[asyncio.Server] = []
        self.connections: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        for server in self.servers:
            server.close()
        for task in list(self.connections):
            task.cancel()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=10)


async def serve_http(
    handler: Handler,
    sockets: Sequence[socket.socket],
    *,
    tls: ssl.SSLContext | None = None,
    limits: HttpLimits | None = None,
) -> HttpService:
    """Serve `handler` on bound listening sockets until the service is closed."""
    chosen = limits or HttpLimits()
    service = HttpService()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        service.connections.add(task)
        try:
            await HttpConnection(handler, reader, writer, chosen).serve()
        finally:
            service.connections.discard(task)

    for sock in sockets:
        service.servers.append(await serve_on(handle, sock, tls, 30.0 if tls else None))
    return service
