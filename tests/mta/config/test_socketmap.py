"""socketmap: tables (Sendmail's socketmap protocol, as Postfix speaks it to
postfix-mta-sts-resolver): a small socketmap server on a real socket, good and bad answers."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.peers import closed_tcp_port

from sealmail.mta.config.tables import TableError, netstring, open_table, read_netstring


class SocketmapServer:
    """Answers each `name key` netstring with what `answer` says (raw bytes, sent as is)."""

    def __init__(self, answer: Callable[[str], bytes], path: Path | None = None) -> None:
        family = socket.AF_UNIX if path is not None else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind(str(path) if path is not None else ("127.0.0.1", 0))
        self.sock.listen(8)
        self.answer = answer
        self.queries: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def port(self) -> int:
        port: int = self.sock.getsockname()[1]
        return port

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                try:
                    query = read_netstring(client).decode()
                except ValueError:
                    continue
                self.queries.append(query)
                client.sendall(self.answer(query))

    def close(self) -> None:
        self.sock.close()


def resolver_like(query: str) -> bytes:
    """postfix-mta-sts-resolver's answers for its `postfix` map."""
    name, _, key = query.partition(" ")
    if name != "postfix":
        return netstring(b"PERM unknown map")
    if key == "enforce.example":
        return netstring(b"OK secure match=mx.enforce.example servername=hostname")
    if key == "slow.example":
        return netstring(b"TEMP resolver busy")
    if key == "broken.example":
        return b"12:OK"  # truncated
    return netstring(b"NOTFOUND ")


@pytest.fixture(scope="module")
def server() -> Iterator[SocketmapServer]:
    found = SocketmapServer(resolver_like)
    yield found
    found.close()


def test_lookups_over_tcp(server: SocketmapServer) -> None:
    table = open_table(f"socketmap:inet:127.0.0.1:{server.port}:postfix")
    assert table.lookup("Enforce.Example") == "secure match=mx.enforce.example servername=hostname"
    assert server.queries[-1] == "postfix enforce.example"  # folded, as other tables
    assert table.lookup("other.example") is None


@pytest.mark.parametrize("key", ["slow.example", "broken.example"])
def test_failures_are_not_not_found(server: SocketmapServer, key: str) -> None:
    table = open_table(f"socketmap:inet:127.0.0.1:{server.port}:postfix")
    with pytest.raises(TableError, match="lookup of"):
        table.lookup(key)


def test_unknown_map_and_no_server(server: SocketmapServer) -> None:
    with pytest.raises(TableError, match="PERM unknown map"):
        open_table(f"socketmap:inet:127.0.0.1:{server.port}:other").lookup("x")
    with closed_tcp_port() as closed, pytest.raises(TableError, match="failed"):
        open_table(f"socketmap:inet:127.0.0.1:{closed}:postfix").lookup("x")


def test_unix_socket(tmp_path: Path) -> None:
    found = SocketmapServer(lambda query: netstring(b"OK " + query.encode()), tmp_path / "sm")
    try:
        assert open_table(f"socketmap:unix:{tmp_path / 'sm'}:map").lookup("k") == "map k"
    finally:
        found.close()


@pytest.mark.parametrize("spec", ["socketmap:inet:127.0.0.1:postfix", "socketmap:tcp:h:1:m",
                                  "socketmap:inet:h:port:m", "socketmap:unix:/x:"])
def test_malformed_names(spec: str) -> None:
    with pytest.raises(TableError):
        open_table(spec)


@pytest.mark.parametrize(("sent", "reason"), [
    (b"999999999:", "over"), (b"x:", "malformed"), (b":ok,", "no length"), (b"2:okX", "comma"),
    (b"5:ok", "closed"), (b"", "closed")])
def test_an_oversized_or_malformed_reply_is_refused(sent: bytes, reason: str) -> None:
    left, right = socket.socketpair()
    with left:
        right.sendall(sent)
        right.close()
        with pytest.raises(ValueError, match=reason):
            read_netstring(left)
