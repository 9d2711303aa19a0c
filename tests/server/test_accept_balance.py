"""Accept balancing between the workers of one service (sealmail.server.worker.accept_delay):
every worker waits on the same listening socket, and one holding sessions lets a less busy one
take the next client. Two `serve` loops share one socket here, in one event loop, as two worker
processes share master's: the kernel tells both of each client."""

from __future__ import annotations

import asyncio
import os
import socket

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
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    first, second = Holding(), Holding()

    async def main() -> None:
        loop = asyncio.get_running_loop()
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
        first.release.set()
        second.release.set()
        for writer in clients:
            writer.close()
        loop.call_soon(lambda: [task.cancel() for task in workers])
        await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(main())


def test_lmtpd_workers_gather_sessions_up_to_a_bound() -> None:
    """lmtpd's order (gather): a worker serving fewer than LMTP_GATHER sessions accepts at once,
    an idle one waits longest below that, a worker at the bound waits longer than an idle one."""
    gather = worker.LMTP_GATHER
    idle = worker.accept_delay(0, gather)
    assert all(worker.accept_delay(n, gather) == 0 for n in range(1, gather))
    assert idle == worker.ACCEPT_DELAY_MOST
    beyond = [worker.accept_delay(n, gather) for n in range(gather, gather + 100)]
    assert beyond == sorted(beyond) and beyond[0] > idle
    assert max(beyond) == 2 * worker.ACCEPT_DELAY_MOST


def test_lmtp_clients_gather_in_one_worker_then_spread() -> None:
    """LMTP_GATHER + 2 clients one after the other: the first LMTP_GATHER in one worker (its
    delivery batches hold them all), the next two in the other."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    listener.setblocking(False)
    port = listener.getsockname()[1]
    first, second = Holding(), Holding()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        shared = socket.socket(fileno=os.dup(listener.fileno()))
        shared.setblocking(False)
        workers = [
            asyncio.ensure_future(worker.serve(first, [listener], None, "lmtp", b"", "lmtp")),
            asyncio.ensure_future(worker.serve(second, [shared], None, "lmtp", b"", "lmtp")),
        ]
        clients = []
        for _ in range(worker.LMTP_GATHER + 2):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert await reader.readline() == b"hello\r\n"
            clients.append(writer)
        counts = sorted([first.sessions, second.sessions])
        assert counts == [2, worker.LMTP_GATHER], counts
        first.release.set()
        second.release.set()
        for writer in clients:
            writer.close()
        loop.call_soon(lambda: [task.cancel() for task in workers])
        await asyncio.gather(*workers, return_exceptions=True)

    asyncio.run(main())
