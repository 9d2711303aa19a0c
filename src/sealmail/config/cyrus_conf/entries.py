"""What a cyrus.conf holds once read: its START, SERVICES, EVENTS and DAEMON entries."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path

from sealmail.config.cyrus_conf.commands import ServiceCommand
from sealmail.config.cyrus_conf.listen import (
    DEFAULT_UNIX_SOCKET_MODE,
    ListenAddress,
    resolve_listen,
)
from sealmail.config.services import DEFAULT_SERVICES_FILE


@dataclass(frozen=True, slots=True)
class Entry:
    """A START or DAEMON entry: a command run once before services (START) or kept running."""

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    wait: bool = False  # DAEMON only: start it, and wait for it to be ready, before services
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Service:
    """A SERVICES entry: master listens on `listen` and runs `cmd` for connections.

    `babysit` asks master to keep at least one process forked (Cyrus also raises a zero
    maxforkrate to 10 then); the values are kept as written (postconf-style rendering), and
    master names at start those it does not apply (maxfds, maxforkrate, babysit).
    """

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    listen: str
    proto: str = "tcp"
    prefork: int = 0
    maxchild: int = -1  # -1: unlimited
    maxfds: int = 256
    maxforkrate: int = 0  # 0: no limit
    babysit: bool = False
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)

    def addresses(
        self,
        configdirectory: Path,
        services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
        *,
        unix_mode: int = DEFAULT_UNIX_SOCKET_MODE,
        unix_group: str | None = None,
    ) -> list[ListenAddress]:
        """This service's sockets; a bad listen= is reported at this entry's file and line."""
        return resolve_listen(
            self.listen,
            self.proto,
            configdirectory,
            services_file,
            unix_mode=unix_mode,
            unix_group=unix_group,
            path=self.path,
            line=self.line,
        )


@dataclass(frozen=True, slots=True)
class Event:
    """An EVENTS entry: a command run every `period` minutes, or daily at `at`."""

    name: str
    cmd: tuple[str, ...]
    command: ServiceCommand
    period: int | None = None
    at: time | None = None
    path: str = field(default="<string>", compare=False)
    line: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class CyrusConf:
    path: str
    start: list[Entry]
    services: list[Service]
    events: list[Event]
    daemons: list[Entry]

    def service(self, name: str) -> Service | None:
        return next((s for s in self.services if s.name == name), None)
