"""Accept balancing between the workers of one service (sealmail.server.worker.accept_delay):
every worker waits on the same listening socket, and one holding sessions lets a less busy one
take the next client. Two `serve` loops share one socket here, in one event loop, as two worker
processes share master's: the kernel tells both of each client."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from sealmail.server import worker


class Holding:
    """A service whose sessions stay open until the test ends; it counts what it got."""

    def __init__(self) -> None:
        self.sessions = 0
        self.release = asyncio.Event()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.sessions += 1
        writer.write(b"hello\r\n")
        await self.release.wait()


def _listener() -> tuple[socket.socket, int]:
    """The listening socket the two workers share, and its port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    return listener, listener.getsockname()[1]


async def _end(holdings: list[Holding], clients: list[asyncio.StreamWriter],
               workers: list[asyncio.Future[None]]) -> None:
    """The sessions released, the clients gone, the workers stopped."""
    for holding in holdings:
        holding.release.set()
    for writer in clients:
        writer.close()
    asyncio.get_running_loop().call_soon(lambda: [task.cancel() for task in workers])
    await asyncio.gather(*workers, return_exceptions=True)

    def close(self) -> None:
        pass


def test_the_delay_grows_with_the_sessions_and_is_bounded() -> None:
    assert worker.accept_delay(0) == 0
    delays = [worker.accept_delay(n) for n in range(1, 100)]
    assert delays == sorted(delays) and delays[0] > 0
    assert max(delays) == worker.ACCEPT_DELAY_MOST


def test_clients_spread_over_the_workers() -> None:
    """Ten clients, one after the other, each holding its session, end up about evenly in the
    two workers, and a worker that waited finds the client taken and goes on. (In one event loop
    the two take turns anyway; across processes the one already running won every race:
    docs/benchmarks.md, "Per-command overhead", has both counts.)"""
    listener, port = _listener()
    first, second = Holding(), Holding()

    async def main() -> None:
        shared = socket.socket(fileno=os.dup(listener.fileno()))
        shared.setblocking(False)
        workers = [
            asyncio.ensure_future(worker.serve(first, [listener], None, "imap")),
            asyncio.ensure_future(worker.serve(second, [shared], None, "imap")),
        ]
        clients = []
        for _ in range(10):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.readline() == b"hello\r\n"
            clients.append(writer)
        assert first.sessions + second.sessions == 10
        assert abs(first.sessions - second.sessions) <= 2, (first.sessions, second.sessions)
        await _end([first, second], clients, workers)

    asyncio.run(main())


def test_the_gathering_worker_accepts_at_once_the_others_only_as_a_fallback(
    tmp_path: Path,
) -> None:
    """lmtpd (GatherToken): the worker holding the token, while under LMTP_GATHER sessions,
    accepts at once; the others wait past ACCEPT_DELAY_MOST, fewest sessions first."""
    gather = worker.LMTP_GATHER
    first = worker.GatherToken(tmp_path / "lmtp.gather")
    second = worker.GatherToken(tmp_path / "lmtp.gather")
    assert first.gathering(0) is True and worker.accept_delay(0, True) == 0
    assert second.gathering(0) is False
    assert worker.accept_delay(0, False) == worker.ACCEPT_DELAY_MOST
    assert worker.accept_delay(3, False) > worker.accept_delay(0, False)
    assert first.gathering(gather - 1) is True
    assert first.gathering(gather) is False  # let go at the bound
    assert second.gathering(1) is True
    assert first.gathering(gather - 1) is False  # the second gathers now
    assert worker.accept_delay(5, None) == worker.accept_delay(5)
    first.release()
    second.release()


def test_a_token_that_cannot_be_opened_makes_the_workers_spread(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No silent failure and no crash: the worker logs it and spreads, as imapd's do."""
    (tmp_path / "file").write_bytes(b"")
    token = worker.GatherToken(tmp_path / "file" / "lmtp.gather")
    assert token.gathering(0) is None
    assert token.gathering(0) is None  # once broken, it stays so (one warning)
    warnings = [r for r in caplog.records if "spread sessions instead" in r.getMessage()]
    assert len(warnings) == 1


def _lmtp_workers(
    listener: socket.socket, tmp_path: Path, counts: list[Holding]
) -> list[asyncio.Future[None]]:
    shared = socket.socket(fileno=os.dup(listener.fileno()))
    shared.setblocking(False)
    return [
        asyncio.ensure_future(worker.serve(
            holding, [sock], None, "lmtp", b"", "lmtp",
            worker.GatherToken(tmp_path / "lmtp.gather")))
        for holding, sock in zip(counts, [listener, shared], strict=True)
    ]


@pytest.mark.parametrize("at_once", [False, True])
def test_lmtp_clients_gather_in_one_worker_then_spread(tmp_path: Path, at_once: bool) -> None:
    """LMTP_GATHER + 2 clients, one after the other or all connecting at once: LMTP_GATHER in
    one worker (its delivery batches hold them all), the next two in the other."""
    listener, port = _listener()
    first, second = Holding(), Holding()

    async def main() -> None:
        workers = _lmtp_workers(listener, tmp_path, [first, second])
        clients = []
        if at_once:
            opened = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port)
                                            for _ in range(worker.LMTP_GATHER)))
            for reader, writer in opened:
                assert await reader.readline() == b"hello\r\n"
                clients.append(writer)
            assert sorted([first.sessions, second.sessions]) == [0, worker.LMTP_GATHER]
        for _ in range(worker.LMTP_GATHER + 2 - len(clients)):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.readline() == b"hello\r\n"
            clients.append(writer)
        counts = sorted([first.sessions, second.sessions])
        assert counts == [2, worker.LMTP_GATHER], counts
        await _end([first, second], clients, workers)

    asyncio.run(main())
