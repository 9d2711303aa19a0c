"""A service worker that `sealmail master` starts: one process, one asyncio loop, shared sockets.

master binds each service's sockets once and hands them to its workers (inherited file
descriptors), so every worker accepts on the same sockets and both cores work. `maxchild` bounds
the sessions of a service across ALL its workers: before accepting, a worker takes one of
`maxchild` slots, each a lock file held with flock(2) for the whole session. A slot is released when
the session ends or the process dies (the kernel drops the lock), so a crashed worker never leaks
capacity. While every slot is taken a new client hears its protocol's "too busy" at once (BUSY:
421 4.3.2, * BYE, -ERR, BYE) and is disconnected, rather than hanging in the listen backlog with
no answer (Cyrus and Postfix leave it there); it may retry, and a flood is refused as fast as it
comes.

A worker serves many sessions, each a descriptor or more: it raises its own open-files limit to
the hard limit at start (Cyrus's maxfds is per process of one session, and a Python default of
1,024 would stop a worker near 1,000 idle clients); when accept still finds no descriptor
(EMFILE, ENFILE) it says so and waits a moment instead of dying.

Signals from master: SIGTERM (or SIGINT) stops the worker: it stops accepting, drains its sessions
(idle ones end now, busy ones after their transaction) and exits within SHUTDOWN_SECONDS. SIGUSR1
retires it (imapd.conf changed, the service is recycled): it stops accepting and exits once its
sessions have ended on their own, however long they last; a SIGTERM meanwhile drains them.

A worker runs as the account master gave it; it refuses to serve as root unless imapd.conf's
`allow_root_services` says so, in case it was started some other way.

Run as `python -m sealmail.server.worker --service NAME --imapd-conf PATH --fds 3,4
[--maxchild N] -- SUBCOMMAND [ARGS]`, never by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import fcntl
import importlib
import logging
import os
import resource
import signal
import socket
import ssl
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from sealmail import metrics
from sealmail import sessions as live_sessions
from sealmail.config.imapd_conf import ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.maillog import BatchingStreamHandler, SecondsFormatter
from sealmail.server import session

log = logging.getLogger("sealmail.master")

NO_DESCRIPTOR_PAUSE = 0.1
BUSY_LOG_SECONDS = 60.0
# Accept balancing (docs/master.md): a worker holding sessions waits this long per session, up to
# ACCEPT_DELAY_MOST, before it accepts a waiting client, so that a worker with fewer takes it.
ACCEPT_DELAY_PER_SESSION = 0.001
ACCEPT_DELAY_MOST = 0.02
# lmtpd's workers gather sessions instead, up to this many in the worker holding the gather
# token, since a worker's delivery batches hold only its own sessions' messages (GatherToken).
LMTP_GATHER = 4

# What a client hears when every maxchild slot stays taken, in its own protocol: RFC 5321 3.8 and
# RFC 2033's 421 with RFC 3463 X.3.2 "system not accepting network messages"; an IMAP BYE
# greeting (RFC 9051 7.1.5) with RFC 5530's UNAVAILABLE; POP3's -ERR with RFC 3206 SYS/TEMP;
# ManageSieve's BYE with RFC 5804's TRYLATER.
_LMTP_BUSY = b"421 4.3.2 Service not available: too many sessions, try again later\r\n"
BUSY: dict[str, bytes] = {
    "lmtpd": _LMTP_BUSY,
    "deliver": _LMTP_BUSY,
    "imapd": b"* BYE [UNAVAILABLE] Too many sessions, try again later\r\n",
    "pop3d": b"-ERR [SYS/TEMP] Too many sessions, try again later\r\n",
    "sieved": b'BYE (TRYLATER) "Too many sessions, try again later"\r\n',
}
SHUTDOWN_SECONDS = 30.0


class Service(Protocol):
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None: ...

    def close(self) -> None: ...


Builder = Callable[..., Service]

# cyrus.conf program (as ServiceCommand.subcommand) -> "module:function" building its service.
BUILDERS: dict[str, str] = {
    "lmtpd": "sealmail.server.lmtpd:build_service",
    "deliver": "sealmail.server.lmtpd:build_deliver_service",
    "pop3d": "sealmail.server.pop3d:build_service",
    "imapd": "sealmail.server.imapd:build_service",
    "sieved": "sealmail.server.sieved:build_service",
}


def builder_for(subcommand: str) -> Builder:
    module_name, _, function = BUILDERS[subcommand].partition(":")
    builder: Builder = getattr(importlib.import_module(module_name), function)
    return builder


class SessionSlots:
    """maxchild slots shared by every worker of one service (see the module docstring)."""

    def __init__(self, directory: Path, service: str, count: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.paths = [directory / f"{service}.{n}" for n in range(count)]

    def try_take(self) -> int | None:
        """An fd holding a free slot's lock, or None when all are taken."""
        for path in self.paths:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            return fd
        return None


def raise_descriptor_limit() -> int:
    """The soft open-files limit raised to the hard one (at most 1,048,576); the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if wanted > soft:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            return wanted
    return soft


class GatherToken:
    """Which of lmtpd's workers gathers sessions: the one holding a flock on a file under
    `lock/master/`, while it serves fewer than LMTP_GATHER sessions (it keeps the token when
    idle). Each lmtpd runs its own sessions' deliveries in batches, one COMMIT and fsync round
    each, and the workers take turns to commit (store.locks.CommitTurn): four sessions spread
    2/2 made batches of two that queued on the turn, with 1.28-1.48 ms of lmtpd CPU a message
    against 0.92-1.01 gathered 4/0 (docs/benchmarks.md, lock18). A token rather than delays
    alone: clients connecting at once found every idle worker waiting alike and split. The
    kernel drops the flock of a worker that dies; one that stops accepting lets it go."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._broken = False

    def gathering(self, sessions: int) -> bool | None:
        """For accept_delay: whether this worker gathers (taking the token if it is free);
        None once the token's file cannot be used (the workers spread instead, as imapd's)."""
        if self._broken:
            return None
        if sessions < LMTP_GATHER:
            return self._hold()
        self.release()
        return False

    def _hold(self) -> bool | None:
        if self._fd is not None:
            return True
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            log.warning("cannot open %s (%s): lmtpd's workers spread sessions instead of"
                        " gathering them", self.path, exc.strerror)
            self._broken = True
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # taken (EWOULDBLOCK): another worker gathers
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None


def refuse(connection: socket.socket, busy: bytes) -> None:
    """Tell a client there is no room (one short write to an empty buffer) and hang up."""
    with contextlib.suppress(OSError):
        connection.send(busy)
    connection.close()


async def _readable(
    sockets: Sequence[socket.socket], stopping: asyncio.Event
) -> socket.socket | None:
    """A listening socket with a connection waiting (not yet accepted), or None once stopping.

    Waiting for readiness rather than accepting means a worker never holds a connection it has
    no slot for: it takes a slot first, then accepts, and when another worker was quicker the
    accept finds nothing and the slot goes back.
    """
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[socket.socket | None] = loop.create_future()

    def settle(sock: socket.socket | None) -> None:
        if not ready.done():
            ready.set_result(sock)

    for sock in sockets:
        loop.add_reader(sock.fileno(), settle, sock)
    stop = asyncio.ensure_future(stopping.wait())
    stop.add_done_callback(lambda _: settle(None))
    try:
        return await ready
    finally:
        stop.cancel()
        for sock in sockets:
            loop.remove_reader(sock.fileno())


def accept_delay(sessions: int, gathering: bool | None = None) -> float:
    """How long a worker serving `sessions` waits before it accepts a client.

    Every worker of a service waits on the same listening socket, and the kernel wakes them all
    for a client; the first to call accept(2) has it. The worker already running (the one that
    just accepted) usually wins: 10 clients connecting at once all went to one worker, which
    then did every command on one core while the other idled. A worker that waits in proportion
    to its sessions lets one with fewer (an idle one waits not at all) take the client; should
    none, the client is served after at most ACCEPT_DELAY_MOST, by whichever is still awake.

    lmtpd's workers gather instead (`gathering`, from GatherToken): True, this worker gathers
    and accepts at once; False, it does not (another one may), and it takes the client only
    should no gathering worker have, ACCEPT_DELAY_MOST later, fewest sessions first. (Sooner,
    a worker at LMTP_GATHER took the clients that an idle one, still waiting out its delay from
    an earlier client, should have started gathering.) Once every lmtpd serves LMTP_GATHER
    sessions, a new connection waits 20-40 ms for its greeting; LMTP clients keep theirs.
    """
    if gathering:
        return 0.0
    if gathering is False:
        return ACCEPT_DELAY_MOST + min(sessions * ACCEPT_DELAY_PER_SESSION, ACCEPT_DELAY_MOST)
    return min(sessions * ACCEPT_DELAY_PER_SESSION, ACCEPT_DELAY_MOST)


async def serve(
    service: Service,
    sockets: Sequence[socket.socket],
    slots: SessionSlots | None,
    name: str,
    busy: bytes = b"",
    protocol: str = "",
    gather: GatherToken | None = None,
) -> None:
    """Accept and serve until told to stop; `protocol` (imap, pop3, lmtp, sieve) names the
    connection metrics; `gather`: lmtpd's workers gather sessions (GatherToken)."""
    loop = asyncio.get_running_loop()
    leaving = asyncio.Event()  # accept no more (SIGTERM, SIGINT, SIGUSR1)
    stopping = asyncio.Event()  # and end the sessions soon (SIGTERM, SIGINT)

    def stop() -> None:
        stopping.set()
        leaving.set()

    loop.add_signal_handler(signal.SIGTERM, stop)
    loop.add_signal_handler(signal.SIGINT, stop)
    loop.add_signal_handler(signal.SIGUSR1, leaving.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: None)  # master re-reads; workers go on
    live_sessions.install_kick_handler(loop.add_signal_handler)  # SIGUSR2: admin kick
    sessions: set[asyncio.Task[None]] = set()

    implicit_tls = getattr(service, "implicit_tls_context", None)

    async def run_session(connection: socket.socket, slot: int | None) -> None:
        try:
            with metrics.connection(protocol, name):
                await session.serve_connection(service, connection, implicit_tls)
        except (OSError, ssl.SSLError) as exc:
            log.info("%s: connection failed: %s", name, exc)
            connection.close()
        except Exception:
            log.exception("%s: session failed", name)
        finally:
            if slot is not None:
                os.close(slot)  # releases the flock

    refused = 0
    last_logged = -BUSY_LOG_SECONDS
    while not leaving.is_set():
        sock = await _readable(sockets, leaving)
        if sock is None:
            break
        gathering = None if gather is None else gather.gathering(len(sessions))
        delay = accept_delay(len(sessions), gathering)
        if delay:
            await asyncio.sleep(delay)  # a less busy (lmtpd: a busier) worker may take it
        slot = slots.try_take() if slots is not None else None
        if leaving.is_set():
            if slot is not None:
                os.close(slot)
            break
        try:
            connection, _ = sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            if slot is not None:
                os.close(slot)  # another worker took this client
            continue
        except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: the client stays in the backlog
            if slot is not None:
                os.close(slot)
            log.warning("%s: cannot accept a connection: %s", name, exc.strerror)
            await asyncio.sleep(NO_DESCRIPTOR_PAUSE)
            continue
        if slots is not None and slot is None:
            refuse(connection, b"" if implicit_tls is not None else busy)
            refused += 1
            if loop.time() - last_logged >= BUSY_LOG_SECONDS:
                log.warning("%s: maxchild %d reached: %d client(s) refused", name,
                            len(slots.paths), refused)
                last_logged, refused = loop.time(), 0
            continue
        connection.setblocking(False)
        task = asyncio.ensure_future(run_session(connection, slot))
        sessions.add(task)
        task.add_done_callback(sessions.discard)
    for sock in sockets:
        sock.close()
    if gather is not None:
        gather.release()  # another worker gathers from now on
    if sessions and not stopping.is_set():
        log.info("%s: retiring: %d session(s) to finish", name, len(sessions))
        ended = asyncio.ensure_future(asyncio.wait(set(sessions)))
        stopped = asyncio.ensure_future(stopping.wait())
        await asyncio.wait({ended, stopped}, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        stopped.cancel()
    if sessions:
        drain = getattr(service, "drain", None)
        if drain is not None:
            drain()
        _, pending = await asyncio.wait(set(sessions), timeout=SHUTDOWN_SECONDS)
        for task in pending:
            task.cancel()
    service.close()


PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_master(master_pid: int) -> bool:
    """The kernel sends this worker SIGTERM (its drain) when master goes, so no worker serves
    on as an orphan holding master's sockets; False when master is gone already."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            log.warning("cannot ask for master's death signal: %s",
                        os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError):  # not Linux: master stops its workers itself
        return True
    return os.getppid() == master_pid


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sealmail-worker")
    parser.add_argument("--service", required=True)
    parser.add_argument("--imapd-conf", required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--maxchild", type=int, default=-1)
    parser.add_argument("--master-pid", type=int)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(SecondsFormatter(
        f"%(asctime)s %(name)s/{args.service}[%(process)d]: %(message)s", "%Y-%m-%dT%H:%M:%S"
    ))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    if args.master_pid is not None and not _die_with_master(args.master_pid):
        return 0  # master went before we could watch it: nobody to serve for
    command = [word for word in args.command if word != "--"]
    config: ImapdConfig = load_imapd_conf(args.imapd_conf)
    if os.geteuid() == 0 and not config.get(IMAPD.allow_root_services):
        log.error(
            "%s: refusing to serve as root: master runs its workers as cyrus_user "
            "(allow_root_services: 1 lets root serve, for tests and single-user set-ups only)",
            args.service,
        )
        return 78  # EX_CONFIG
    sockets = [socket.socket(fileno=int(fd)) for fd in args.fds.split(",")]
    for sock in sockets:
        sock.setblocking(False)
    metrics.enable()  # when master serves metrics_listen (PROMETHEUS_MULTIPROC_DIR is set)
    service = builder_for(command[0])(config, command[1:], service_name=args.service)
    slots = (
        SessionSlots(config.configdirectory / "lock" / "master", args.service, args.maxchild)
        if args.maxchild > 0
        else None
    )
    from sealmail.server import runtime

    raise_descriptor_limit()
    protocol = metrics.store_protocol(command[0])
    gather = (GatherToken(config.configdirectory / "lock" / "master" / f"{args.service}.gather")
              if protocol == "lmtp" else None)
    runtime.run(serve(service, sockets, slots, args.service, BUSY.get(command[0], b""),
                      protocol, gather))
    return 0


if __name__ == "__main__":
    sys.exit(main())
