"""A fake milter for tests: a threaded socket server that speaks the milter side with sealmail's
own codec, answers each command from a script, and records what it was sent."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sealmail.proto import milter as m

Script = Callable[[Any], list[Any]]  # a command -> the replies to send (none: no reply)


def continue_all(command: Any) -> list[Any]:
    if isinstance(command, (m.Macro, m.Abort, m.Quit)):
        return []
    return [m.Continue()]


class FakeMilter:
    """Listens on 127.0.0.1:<free port> (or a UNIX socket); one thread per connection."""

    def __init__(self, script: Script = continue_all, *, actions: int = int(m.ACTIONS),
                 protocol: int = 0, unix_path: Path | None = None,
                 optneg_macros: tuple[tuple[int, bytes], ...] = ()) -> None:
        self.script = script
        self.actions = actions
        self.protocol = protocol
        self.optneg_macros = optneg_macros
        self.sessions: list[list[Any]] = []  # per connection, the commands received
        if unix_path is not None:
            self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.listener.bind(str(unix_path))
            os.chmod(unix_path, 0o666)
            self.spec = f"unix:{unix_path}"
        else:
            self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            self.listener.bind(("127.0.0.1", 0))
            self.spec = f"inet:127.0.0.1:{self.listener.getsockname()[1]}"
        self.listener.listen(16)
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    @property
    def commands(self) -> list[Any]:
        return [c for session in self.sessions for c in session]

    def macros(self, for_command: bytes) -> dict[bytes, bytes]:
        found: dict[bytes, bytes] = {}
        for command in self.commands:
            if isinstance(command, m.Macro) and command.for_command == for_command:
                found.update(command.pairs)
        return found

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(sock,), daemon=True).start()

    def _serve(self, sock: socket.socket) -> None:
        received: list[Any] = []
        self.sessions.append(received)
        reader = m.PacketReader()
        with sock:
            while True:
                try:
                    data = sock.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                for code, payload in reader.feed(data):
                    command = m.decode_command(code, payload)
                    received.append(command)
                    if isinstance(command, m.OptNeg):
                        replies: list[Any] = [m.OptNeg(6, self.actions, self.protocol,
                                                       self.optneg_macros)]
                    else:
                        replies = self.script(command)
                    for reply in replies:
                        if isinstance(reply, bytes):
                            sock.sendall(reply)  # raw octets: a broken milter
                        else:
                            sock.sendall(m.encode_reply(reply))
                    if isinstance(command, m.Quit):
                        return
