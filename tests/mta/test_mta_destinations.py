"""Destinations as Postfix's queue manager treats them, on real sockets: sealmail's MTA relays
to Postfix's smtp-sink (which takes a second over each DATA, so deliveries overlap) through a
proxy that counts connections; smtp_destination_concurrency_limit holds, deliveries start
slowly, sessions are reused for the next message; a destination that refuses connections is
tried once and its other mail waits ("delivery temporarily suspended")."""

from __future__ import annotations

import smtplib
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import SmtpSink, closed_tcp_port, free_tcp_port, traversable_tmpdir

pytestmark = pytest.mark.peer

MESSAGE = b"From: a@example.org\r\nSubject: many\r\n\r\none of many\r\n"


class CountingProxy:
    """A TCP relay to `target` that counts connections, and the most open at once."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open = self.total = self.most_open = 0
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open += 1
                self.total += 1
                self.most_open = max(self.most_open, self.open)
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        done = threading.Event()

        def pump(source: socket.socket, sink: socket.socket) -> None:
            try:
                while data := source.recv(65536):
                    sink.sendall(data)
            except OSError:
                pass
            done.set()

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)
        done.wait(30)
        for sock in (client, upstream):
            sock.close()
        with self.lock:
            self.open -= 1

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smdest-") as path:
        yield path


def test_concurrency_limit_slow_start_session_reuse_and_a_dead_destination(
        root: Path, caplog: pytest.LogCaptureFixture) -> None:
    port = free_tcp_port()
    caplog.set_level("INFO", logger="sealmail")
    with closed_tcp_port() as dead_port, \
            SmtpSink(root, "127.0.0.1", free_tcp_port(), options=["-w", "1"]) as sink:
        proxy = CountingProxy(sink.port)
        config = root / "etc"
        config.mkdir()
        (config / "transport").write_text(f"sink.example smtp:[127.0.0.1]:{proxy.port}\n"
                                          f"dead.example smtp:[127.0.0.1]:{dead_port}\n")
        (config / "main.cf").write_text(
            f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
            "mydestination =\ninet_interfaces = loopback-only\n"
            f"transport_maps = texthash:{config / 'transport'}\n"
            "smtp_destination_concurrency_limit = 3\n"
            "smtp_initial_destination_concurrency = 1\nminimal_backoff_time = 1h\n")
        (config / "master.cf").write_text(
            f"127.0.0.1:{port} inet n - n - - smtpd\n"
            "smtp      unix  -       -       n       -       -       smtp\n")
        try:
            with RunningMta(config, smtpd_processes=1):
                with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
                    for n in range(10):
                        client.sendmail("a@example.org", [f"u{n}@sink.example"], MESSAGE)
                    for n in range(4):
                        client.sendmail("a@example.org", [f"u{n}@dead.example"], MESSAGE)
                wait_for(lambda: len(sink.messages()) == 10, 60, "ten deliveries")
                wait_for(lambda: caplog.text.count("status=deferred") == 4, 30,
                         "the dead destination's four deferrals")
        finally:
            proxy.close()
    assert 2 <= proxy.most_open <= 3  # grew from 1, up to smtp_destination_concurrency_limit
    assert proxy.total < 10  # sessions were reused for the next message
    refused = f"connect to 127.0.0.1[127.0.0.1]:{dead_port}: Connection refused"
    deferred = [r.getMessage() for r in caplog.records if "status=deferred" in r.getMessage()]
    # Slow start: one try at the dead destination, which then counts as dead.
    assert sum(f"status=deferred ({refused})" in line for line in deferred) == 1
    assert sum(f"(delivery temporarily suspended: {refused})" in line for line in deferred) == 3
