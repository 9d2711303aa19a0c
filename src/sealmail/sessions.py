"""Live sessions across the store's worker processes: `sealmail admin who` and `kick`.

Each logged-in IMAP or POP3 session has one small JSON file, named by its session id, in
configdirectory/proc (Cyrus keeps its per-process proc/ files there too): user, service,
protocol, remote address, login time, the worker's pid and the selected mailbox. The worker
writes it at login (a write to a temporary name and a rename, so a reader never sees half of it),
rewrites it when the selected mailbox changes and removes it at logout.

Why files and not a control socket per worker: the registry must survive what workers do when
they fail. A worker that crashes or is killed leaves files naming a pid that no longer runs;
every reader skips and removes those (`list_sessions` checks the pid), and master removes a
reaped worker's files and empties the directory when it starts. `who` needs nothing from a
worker, so a worker that hangs is still listed; no socket, thread or protocol is added to the
workers.

Kicking: `kick` puts a marker beside each of the user's session files (SESSIONID.kick) and sends
the worker SIGUSR2; the worker's handler (`deliver_kicks`) ends each of its own sessions that has
a marker, as Dovecot's kick does: IMAP says `* BYE`, POP3 `-ERR`, and the connection closes. A
process only registers sessions once it handles SIGUSR2 (`install_kick_handler`), so a kick can
never terminate a process that did not expect the signal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "DIRECTORY",
    "LiveSession",
    "Registration",
    "clear",
    "deliver_kicks",
    "install_kick_handler",
    "kick",
    "list_sessions",
    "register",
    "registry_directory",
    "sweep_pid",
]

DIRECTORY = "proc"
KICK_SUFFIX = ".kick"
KICK_SIGNAL = signal.SIGUSR2
log = logging.getLogger("sealmail.sessions")


@dataclass(frozen=True, slots=True)
class LiveSession:
    session_id: str
    user: str
    service: str  # cyrus.conf's service name (imap, imaps, pop3, ...)
    protocol: str  # imap, pop3
    remote: str  # the client's IP address ("" over a UNIX socket)
    login_time: float
    pid: int
    mailbox: str = ""  # selected (IMAP) or the maildrop (POP3); "" when none

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LiveSession:
        return cls(str(data["session_id"]), str(data["user"]), str(data["service"]),
                   str(data["protocol"]), str(data.get("remote", "")),
                   float(data["login_time"]), int(data["pid"]), str(data.get("mailbox", "")))


def registry_directory(configdirectory: Path | str) -> Path:
    return Path(configdirectory) / DIRECTORY


def _write(path: Path, session: LiveSession) -> None:
    temporary = path.with_name(f".{path.name}.{os.getpid()}")
    temporary.write_text(json.dumps(session.to_json()))
    os.replace(temporary, path)


class Registration:
    """This process's entry for one session; `kick` ends the session (called on the loop)."""

    def __init__(self, directory: Path, session: LiveSession, kick: Callable[[], None]) -> None:
        self.directory = directory
        self.session = session
        self.kick = kick
        self.path = directory / session.session_id

    def update(self, mailbox: str) -> None:
        """The selected mailbox changed (or not: then nothing is written)."""
        if mailbox == self.session.mailbox:
            return
        self.session = replace(self.session, mailbox=mailbox)
        try:
            _write(self.path, self.session)
        except OSError as exc:
            log.warning("%s: cannot update %s: %s", self.session.session_id, self.path, exc)

    def remove(self) -> None:
        _local.pop(self.session.session_id, None)
        for path in (self.path, self.path.with_name(self.path.name + KICK_SUFFIX)):
            with contextlib.suppress(OSError):
                path.unlink()


_local: dict[str, Registration] = {}
_kick_ready = False


def install_kick_handler(add_signal_handler: Callable[[int, Callable[[], None]], object]
                         ) -> None:
    """In a worker, on its event loop (`loop.add_signal_handler`): SIGUSR2 delivers kicks."""
    global _kick_ready

    def on_signal() -> None:
        deliver_kicks()

    add_signal_handler(KICK_SIGNAL, on_signal)
    _kick_ready = True


def register(directory: Path, session: LiveSession, kick: Callable[[], None]
             ) -> Registration | None:
    """File the session; None (nothing filed) in a process that cannot be kicked, or when the
    directory cannot be written (logged: a login never fails for the registry's sake)."""
    if not _kick_ready:
        return None
    registration = Registration(directory, session, kick)
    try:
        directory.mkdir(mode=0o700, exist_ok=True)
        _write(registration.path, session)
    except OSError as exc:
        log.warning("%s: cannot register the session in %s: %s", session.session_id,
                    directory, exc)
        return None
    _local[session.session_id] = registration
    return registration


def deliver_kicks() -> int:
    """SIGUSR2: end each of this process's sessions that has a kick marker. Returns how many."""
    kicked = 0
    for registration in list(_local.values()):
        marker = registration.path.with_name(registration.path.name + KICK_SUFFIX)
        if marker.exists():
            registration.remove()
            try:
                registration.kick()
            except Exception:
                log.exception("%s: kick failed", registration.session.session_id)
            kicked += 1
    return kicked


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive
    return True


def list_sessions(directory: Path, user: str | None = None) -> list[LiveSession]:
    """The sessions filed (of `user`), by login time; files of dead processes are removed."""
    found: list[LiveSession] = []
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    for name in names:
        if name.startswith(".") or name.endswith(KICK_SUFFIX):
            continue
        path = directory / name
        try:
            session = LiveSession.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            continue  # logged out meanwhile
        except (OSError, ValueError, KeyError, TypeError):
            log.warning("%s: not a session file; removed", path)
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if not _alive(session.pid):
            with contextlib.suppress(OSError):
                path.unlink()
            continue
        if user is None or session.user == user:
            found.append(session)
    return sorted(found, key=lambda s: (s.login_time, s.session_id))


def kick(directory: Path, user: str) -> list[LiveSession]:
    """Ask the workers to end `user`'s sessions; returns those asked about."""
    asked: list[LiveSession] = []
    for session in list_sessions(directory, user):
        marker = directory / (session.session_id + KICK_SUFFIX)
        try:
            marker.write_text(str(time.time()))
            os.kill(session.pid, KICK_SIGNAL)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                marker.unlink()
            continue
        except OSError as exc:
            log.warning("%s: cannot kick: %s", session.session_id, exc)
            continue
        asked.append(session)
    return asked


def sweep_pid(directory: Path, pid: int) -> None:
    """master reaped worker `pid`: its sessions are gone."""
    for session in _read_all(directory):
        if session.pid == pid:
            for path in (directory / session.session_id,
                         directory / (session.session_id + KICK_SUFFIX)):
                with contextlib.suppress(OSError):
                    path.unlink()


def _read_all(directory: Path) -> list[LiveSession]:
    out = []
    with contextlib.suppress(OSError):
        for path in directory.iterdir():
            if path.name.startswith(".") or path.name.endswith(KICK_SUFFIX):
                continue
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                out.append(LiveSession.from_json(json.loads(path.read_text())))
    return out


def clear(directory: Path, owner: tuple[int, int] | None = None) -> None:
    """master's start: no session survives a restart; the directory belongs to the workers'
    account."""
    with contextlib.suppress(FileNotFoundError):
        for path in directory.iterdir():
            with contextlib.suppress(OSError):
                path.unlink()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if owner is not None:
        os.chown(directory, *owner)
