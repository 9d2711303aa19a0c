"""Implicit TLS a session watches (listeners.serve_unread + accept_tls), on both event loops.

A listener's own TLS (ssl=) fails silently outside asyncio's debug mode, and a handshake begun on
a stream that uvloop has already read from misses the ClientHello. Here the handler gets the
connection unread and does the handshake itself: a good client, garbage, a client gone at once
and a silent one each give the handler what it must log, and the server goes on.
"""

from __future__ import annotations

import asyncio
import socket
import ssl

import pytest
import trustme
from tests.support.loops import LOOPS, runner

from sealmail.server.listeners import accept_tls, serve_unread


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


async def scenario(server_context: ssl.SSLContext, client_context: ssl.SSLContext) -> list[str]:
    outcomes: list[str] = []

    async def handler(connection: socket.socket) -> None:
        try:
            reader, writer = await accept_tls(connection, server_context, 1.0)
        except (ssl.SSLError, OSError, TimeoutError) as exc:
            outcomes.append(type(exc).__name__)
            return
        writer.write(b"220 ready\r\n")
        outcomes.append("ok " + (await reader.readline()).decode().strip())
        writer.close()

    listening = socket.create_server(("127.0.0.1", 0))
    port = listening.getsockname()[1]
    server = await serve_unread(handler, listening)

    async def good(line: bytes) -> None:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_context, server_hostname="localhost")
        assert await reader.readline() == b"220 ready\r\n"
        writer.write(line)
        await writer.drain()
        await reader.read()
        writer.close()

    async def settled(count: int) -> None:
        async with asyncio.timeout(10):
            while len(outcomes) < count:
                await asyncio.sleep(0.01)

    await good(b"EHLO first\r\n")
    await settled(1)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"EHLO plaintext\r\n")  # garbage to a TLS server
    assert not (await reader.read()).startswith(b"220")
    writer.close()
    await settled(2)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()  # gone before any handshake
    await settled(3)
    _, silent = await asyncio.open_connection("127.0.0.1", port)  # says nothing: the timeout
    await settled(4)
    silent.close()
    await good(b"EHLO last\r\n")
    await settled(5)
    server.close()
    return outcomes


@pytest.mark.parametrize("loop", LOOPS)
def test_the_handler_sees_each_handshake_end(
    loop: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    outcomes = runner(loop)(scenario(*contexts))
    assert outcomes[0] == "ok EHLO first" and outcomes[-1] == "ok EHLO last"
    assert outcomes[1] == "SSLError"  # the OpenSSL error to log
    assert outcomes[2] in ("ConnectionResetError", "SSLEOFError")  # "lost connection"
    assert outcomes[3] == "ConnectionAbortedError"  # the handshake timeout

