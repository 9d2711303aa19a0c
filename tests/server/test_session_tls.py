"""sealmail.server.session.ClientSession.handshake: STARTTLS as every daemon turns it on.

A real TLS client over 127.0.0.1, on both event loops: the go-ahead, then the handshake; clear
text the client sent before its handshake is never read as if it came under TLS; a handshake
that outlasts its timeout, or fails, ends with False and the session's log line.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trustme
from tests.support.loops import LOOPS, runner

from sealmail.server.session import ClientSession


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("localhost").configure_cert(context)
    return context


def client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ca.configure_trust(context)
    return context


Serve = Callable[[ClientSession], Awaitable[object]]
Client = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def session_with(serve: Serve, client: Client) -> object:
    """Run `serve` on the server's ClientSession and `client` on the other end; what `serve`
    returned."""
    outcome: asyncio.Future[object] = asyncio.get_running_loop().create_future()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            outcome.set_result(await serve(ClientSession(reader, writer)))
        except BaseException as exc:
            outcome.set_exception(exc)
        finally:
            writer.close()

    listener = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await client(reader, writer)
        return await asyncio.wait_for(outcome, 30)
    finally:
        writer.close()
        listener.close()
        await listener.wait_closed()


@pytest.mark.parametrize("loop", LOOPS)
def test_clear_text_buffered_before_the_handshake_is_dropped(
    loop: str, ca: trustme.CA, server_context: ssl.SSLContext
) -> None:
    async def serve(session: ClientSession) -> object:
        # What a client (or a man in the middle) sent in clear after STARTTLS, which arrived
        # after the core was fed and before the handshake: it sits in the StreamReader.
        session.reader.feed_data(b"RSET\r\nMAIL FROM:<mallory@example.net>\r\n")
        started = await session.handshake(server_context, b"220 go ahead\r\n")
        return started, session.secure, await session.reader.readline()

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"220 go ahead\r\n"
        await writer.start_tls(client_context(ca), server_hostname="localhost")
        writer.write(b"EHLO under.tls\r\n")
        await writer.drain()

    outcome = runner(loop)(session_with(serve, client))
    assert outcome == (True, True, b"EHLO under.tls\r\n")


@pytest.mark.parametrize("loop", LOOPS)
def test_a_handshake_that_outlasts_its_timeout_fails(
    loop: str, server_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealmail")

    async def serve(session: ClientSession) -> object:
        return await session.handshake(server_context, b"220 go ahead\r\n", timeout=0.5), (
            session.secure
        )

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"220 go ahead\r\n"
        # ...and never a ClientHello: the server gives up and closes.
        assert await asyncio.wait_for(reader.read(), 30) == b""

    assert runner(loop)(session_with(serve, client)) == (False, False)
    assert "TLS handshake with [127.0.0.1] failed" in caplog.text


@pytest.mark.parametrize("loop", LOOPS)
def test_a_failed_handshake_is_false(
    loop: str, server_context: ssl.SSLContext, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sealmail")

    async def serve(session: ClientSession) -> object:
        return await session.handshake(server_context, b"220 go ahead\r\n")

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"220 go ahead\r\n"
        writer.write(b"QUIT\r\n" * 10)  # not a ClientHello

    assert runner(loop)(session_with(serve, client)) is False
    assert "TLS handshake with [127.0.0.1] failed" in caplog.text
