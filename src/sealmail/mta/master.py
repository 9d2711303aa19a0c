"""The MTA's master: reads master.cf and runs smtpd, pickup, cleanup, the queue manager and the
delivery agents. The queue manager, pickup and the agents are asyncio tasks of the master (disk
work in worker threads); smtpd runs in one process per CPU (at most the entry's maxproc) that
share the listening sockets, so both cores take mail under load. Each smtpd process queues mail
itself (cleanup runs in it) and nudges the queue manager over the control socket.

- `inet` entries whose command is `smtpd` listen (`service` is `port`, `name`, `host:port` or
  `[addr]:port`; a bare port listens on inet_interfaces) and get their own `-o` overrides. The
  listening sockets stay open across a reload, so no client is refused meanwhile; smtpd
  processes end when the master ends, even by kill -9 (a pipe from the master reads EOF), and
  one that dies is replaced at once, its half-written queue files removed (mta.worker_watch).
- pickup watches maildrop/ (at start, on a `pickup` word on the control socket, and every
  60 seconds, Postfix's pickup wakeup).
- the queue manager gets its agents by master.cf command name (`AGENTS`): lmtp and smtp (the
  client of part A), error, retry, discard. `local`, `pipe` and `virtual` are the next issue:
  their mail is deferred with 4.3.0 "transport not available".
- the control socket `public/qmgr` takes `wake`, `pickup` and `flush` (postqueue -f).
- `data_directory/master.pid` holds the pid under an flock while the master runs: that lock is
  what `sealmail postfix status` tests.
- SIGTERM/SIGINT stop (sessions and deliveries under way finish); SIGHUP reloads main.cf and
  master.cf (listeners are opened again).

Logs go to maillog_file when set, in syslog's shape: `Mon DD HH:MM:SS host postfix/smtpd[pid]:
...`, one program name per component; else to syslog (facility mail) when /dev/log exists; else
to data_directory/maillog, never nowhere. The first line of a start says where.

Started as root (`run_foreground`), the master binds its listeners, then runs as main.cf
mail_owner with a privileged helper for local(8) and pipe(8): see sealmail.mta.privsep.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import importlib
import inspect
import logging
import logging.handlers
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from sealmail import metrics
from sealmail.config.imapd_conf import ConfigError
from sealmail.config.services import DEFAULT_SERVICES_FILE, UnknownService, service_port
from sealmail.maillog import SERVICE_SYSLOG_NAME
from sealmail.mta.agents import DeliveryAgent
from sealmail.mta.anvil import (
    AnvilTable,
    LocalAnvil,
    anvil_socket,
    report_statistics,
    serve_anvil,
)
from sealmail.mta.cleanup import cleanup_from_config
from sealmail.mta.config import MainConfig, MasterService, MtaConfig, load_mta_config
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.milter import MilterSettings
from sealmail.mta.pickup import control_request, pickup_once
from sealmail.mta.qmgr import AgentFactory, QueueManager, TransportUnavailable
from sealmail.mta.queue import Queue
from sealmail.mta.smtpd import SmtpdService
from sealmail.mta.worker_watch import replace_dead_workers
from sealmail.privileges import switch_to

log = logging.getLogger("sealmail.mta.master")

AGENTS: dict[str, str] = {
    "lmtp": "sealmail.mta.agents.lmtp:LmtpAgent",
    "smtp": "sealmail.mta.agents.smtp:SmtpAgent",
    "error": "sealmail.mta.agents.error:ErrorAgent",
    "retry": "sealmail.mta.agents.error:RetryAgent",
    "discard": "sealmail.mta.agents.discard:DiscardAgent",
    "local": "sealmail.mta.agents.local:LocalAgent",
    "pipe": "sealmail.mta.agents.pipe:PipeAgent",
}
NEXT_ISSUE = frozenset({"virtual"})
PICKUP_INTERVAL = 60.0
PID_FILE = "master.pid"
WORKER_THREADS = 64


def load_agent(service: MasterService, settings: MainConfig) -> DeliveryAgent:
    """The agent of a master.cf transport, by its command name. A class whose constructor needs
    an argument is given the transport's effective settings."""
    command = service.command
    if command in NEXT_ISSUE:
        raise TransportUnavailable(
            f"mail transport unavailable: {service.service} ({command}) is not implemented yet")
    spec = AGENTS.get(command)
    if spec is None:
        raise TransportUnavailable(
            f"mail transport unavailable: {service.service}: unknown delivery agent {command!r}")
    module_name, _, class_name = spec.partition(":")
    try:
        agent_class = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise TransportUnavailable(
            f"mail transport unavailable: {service.service}: {exc}") from None
    required = [p.name for p in inspect.signature(agent_class).parameters.values()
                if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        if required[:2] == ["service", "settings"]:  # pipe(8) reads its own master.cf entry
            agent: DeliveryAgent = agent_class(service, settings)
        elif required:
            agent = agent_class(settings)
        else:
            agent = agent_class()
    except ConfigError as exc:
        raise TransportUnavailable(f"mail transport unavailable: {exc}") from None
    return agent


# --------------------------------------------------------------------------------------------
# Logging in syslog's shape


def syslog_time(when: float) -> str:
    """`Dec  6 05:20:20`: syslog's stamp, the day padded with a space (pflogsumm and the other
    tools operators run over a maillog parse it by position; `Dec 06` makes them count nothing)."""
    local = time.localtime(when)
    return f"{time.strftime('%b', local)} {local.tm_mday:2d} {time.strftime('%H:%M:%S', local)}"


class MaillogFormatter(logging.Formatter):
    """`Nov 25 15:52:25 host postfix/smtpd[123]: message` (syslog_name/program)."""

    def __init__(self, hostname: str, syslog_name: str) -> None:
        super().__init__()
        self.hostname = hostname.split(".")[0]
        self.syslog_name = syslog_name

    def format(self, record: logging.LogRecord) -> str:
        program = record.name.rsplit(".", 1)[-1]
        if record.name.startswith("sealmail.mta.config"):
            program = "postconf"
        stamp = syslog_time(record.created)
        level = "" if record.levelno < logging.WARNING else (
            "warning: " if record.levelno == logging.WARNING else "error: ")
        name = SERVICE_SYSLOG_NAME.get() or self.syslog_name
        text = f"{stamp} {self.hostname} {name}/{program}[{record.process}]: " \
               f"{level}{record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class SyslogFormatter(MaillogFormatter):
    """syslog adds the time and host itself: `postfix/smtpd[123]: message`."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).split(" ", 4)[4]


SYSLOG_SOCKET = "/dev/log"
SYSLOG = "syslog"
FALLBACK_MAILLOG = "maillog"  # under data_directory, when there is no syslog and no maillog_file


def maillog_destination(main: MainConfig) -> str:
    """Where the MTA logs: maillog_file; else SYSLOG when its socket exists; else the file
    data_directory/maillog (Postfix would lose these lines without a syslog daemon)."""
    path = main.get(MAIN.maillog_file).strip()
    if path:
        return path
    if Path(SYSLOG_SOCKET).exists():
        return SYSLOG
    return str(Path(main.instance_path(MAIN.data_directory)) / FALLBACK_MAILLOG)


def describe_destination(destination: str) -> str:
    """The destination as the start-up line says it."""
    if destination == SYSLOG:
        return f"syslog ({SYSLOG_SOCKET}, facility mail)"
    return destination


def open_maillog(main: MainConfig, log_fd: int | None = None) -> logging.Handler:
    """A handler for maillog_destination(); `log_fd` is the file already opened by the master
    (an smtpd process runs as mail_owner and may not be able to open it itself)."""
    formatter = MaillogFormatter(main.get(MAIN.myhostname), main.get(MAIN.syslog_name))
    handler: logging.Handler
    if log_fd is not None:
        stream = open(log_fd, "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - kept open
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        return handler
    destination = maillog_destination(main)
    if destination == SYSLOG:
        syslog = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL)
        syslog.setFormatter(SyslogFormatter(main.get(MAIN.myhostname),
                                            main.get(MAIN.syslog_name)))
        return syslog
    if destination == "/dev/stdout":
        handler = logging.StreamHandler()
    else:
        Path(destination).parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(destination, encoding="utf-8")
    handler.setFormatter(formatter)
    return handler


# --------------------------------------------------------------------------------------------
# Listening addresses of inet services


def inet_addresses(
    service: str,
    main: MainConfig,
    services_file: str | os.PathLike[str] = DEFAULT_SERVICES_FILE,
    *,
    path: str = "master.cf",
    line: int = 0,
) -> list[tuple[str, int]]:
    """(host, port) pairs for a master.cf inet service field; a service name is looked up in
    `services_file`, with IANA's port for a mail service the file lacks. An unknown name is a
    ConfigError at the entry's `path` and `line`."""
    host: str | None
    if service.startswith("["):
        host, _, port_text = service[1:].partition("]:")
    elif service.count(":") == 1:
        host, _, port_text = service.partition(":")
    else:
        host, port_text = None, service
    if port_text.isdigit():
        port = int(port_text)
    else:
        try:
            port = service_port(port_text, services_file)
        except UnknownService as exc:
            raise ConfigError(path, line, service, str(exc)) from None
    if host:
        return [(host, port)]
    hosts: list[str] = []
    for word in main.get(MAIN.inet_interfaces):
        lowered = word.lower()
        if lowered == "all":
            hosts.append("0.0.0.0")
        elif lowered == "loopback-only":
            hosts.append("127.0.0.1")
        else:
            hosts.append(word.strip("[]"))
    return [(h, port) for h in hosts]


def bind_inet(host: str, port: int) -> socket.socket:
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = info[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    try:
        sock.bind(address)
        sock.listen(511)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def bind_inet_waiting(host: str, port: int, attempts: int = 50) -> socket.socket:
    """bind_inet, retried for a few seconds: after a crash, the old master's smtpd processes
    may hold the port until they notice (their pipe to the master reads EOF). Blocking."""
    for _ in range(attempts - 1):
        try:
            return bind_inet(host, port)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            time.sleep(0.1)
    return bind_inet(host, port)


async def bind_inet_retrying(host: str, port: int, attempts: int = 50) -> socket.socket:
    return await asyncio.to_thread(bind_inet_waiting, host, port, attempts)


def _remove_temporary(queue: Queue, pid: int) -> None:
    removed = queue.remove_temporary(pid)
    if removed:
        log.info("removed %d half-written queue file(s) of smtpd pid %d", removed, pid)


def _reap(workers: list[subprocess.Popen[bytes]], timeout: float = 35.0) -> None:
    for worker in workers:
        try:
            worker.wait(timeout)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        metrics.process_exited(worker.pid)


# --------------------------------------------------------------------------------------------
# The pid file


def pid_path(main: MainConfig) -> Path:
    return Path(main.instance_path(MAIN.data_directory)) / PID_FILE


def running_pid(main: MainConfig) -> int | None:
    """The pid of a running master for this configuration, or None."""
    path = pid_path(main)
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode("ascii", "replace").strip()
            return int(text) if text.isdigit() else None
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


class AlreadyRunning(Exception):
    pass


def lock_pid_file(main: MainConfig) -> int:
    path = pid_path(main)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AlreadyRunning(f"the mail system is already running ({path})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    os.fsync(fd)
    return fd


# --------------------------------------------------------------------------------------------
# The master


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _: event.set()


@dataclass
class MtaMaster:
    config_directory: Path
    agent_factory: AgentFactory = load_agent
    clock: Callable[[], float] = time.time
    hostname: str | None = None
    config: MtaConfig | None = None
    queue: Queue | None = None
    qmgr: QueueManager | None = None
    smtpd_sockets: list[socket.socket] = field(default_factory=list)
    smtpd_processes: int | None = None  # None: one per CPU (see smtpd_process_count)
    log_fd: int | None = None  # the maillog file, handed to smtpd processes
    dropped_to: str | None = None  # mail_owner, once run_foreground switched to it
    _listeners: dict[tuple[str, int], socket.socket] = field(default_factory=dict)
    _recovered: bool = False
    _reload: bool = False
    _pickup_wakeup: asyncio.Event | None = None

    def load(self) -> MtaConfig:
        self.config = load_mta_config(self.config_directory, hostname=self.hostname)
        return self.config

    def smtpd_addresses(self, config: MtaConfig) -> list[tuple[MasterService, str, int]]:
        """(entry, host, port) of every smtpd listener of master.cf."""
        return [(entry, host, port) for entry in config.master_cf
                if entry.type == "inet" and entry.command == "smtpd"
                for host, port in inet_addresses(entry.service, config.main, path=entry.path,
                                                 line=entry.line)]

    def bind_listeners(self) -> None:
        """Bind every smtpd listener now (blocking): run_foreground does it as root, before
        switching to mail_owner, so ports below 1024 work; a generation reuses them."""
        for _, host, port in self.smtpd_addresses(self.load()):
            if (host, port) not in self._listeners:
                self._listeners[(host, port)] = bind_inet_waiting(host, port)

    async def run(self, stop: asyncio.Event | None = None,
                  ready: Callable[[MtaMaster], None] | None = None) -> None:
        """Run until `stop` is set (or SIGTERM/SIGINT when `stop` is None); SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        # Disk work waits on fsync, not the CPU: enough threads let concurrent sessions share
        # directory fsyncs (DirectorySync) instead of queueing behind a few workers.
        loop.set_default_executor(ThreadPoolExecutor(max_workers=WORKER_THREADS,
                                                     thread_name_prefix="mta-disk"))
        own_signals = stop is None
        stop = stop or asyncio.Event()
        if own_signals:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop.set)
        while True:
            generation_stop = asyncio.Event()
            self._reload = False

            def reload(event: asyncio.Event = generation_stop) -> None:
                self._reload = True
                event.set()

            if own_signals:
                loop.add_signal_handler(signal.SIGHUP, reload)
            relay = asyncio.ensure_future(stop.wait())
            relay.add_done_callback(_setter(generation_stop))
            try:
                await self._generation(generation_stop, ready)
            finally:
                relay.cancel()
            if not self._reload or stop.is_set():
                break
            log.info("reload -- version sealmail, configuration %s", self.config_directory)
            ready = None

    async def _generation(self, stop: asyncio.Event,
                          ready: Callable[[MtaMaster], None] | None) -> None:
        config = self.load()
        main = config.main
        queue = Queue.from_config(main, clock=self.clock)
        self.queue = queue
        await asyncio.to_thread(queue.create_directories)
        if not self._recovered:
            # As `postfix start` runs postsuper -s: files where hash_queue_names and
            # hash_queue_depth no longer put them move (one rename each).
            moved = await asyncio.to_thread(queue.restructure)
            if moved:
                log.info("queue layout: %d queue files moved to match hash_queue_names and "
                         "hash_queue_depth", len(moved))
            # Only at start: on a reload, sessions of the old generation may still be writing,
            # and their half-written files are not debris yet.
            recovered = await asyncio.to_thread(queue.recover)
            self._recovered = True
            for queue_id in recovered:
                log.info("%s: requeued from active after an interrupted delivery", queue_id)
        cleanup = cleanup_from_config(main)
        milters = MilterSettings.from_config(main, MAIN.non_smtpd_milters)
        qmgr = QueueManager(queue, main, config.master_cf, self.agent_factory, clock=self.clock)
        self.qmgr = qmgr
        servers: list[asyncio.Server] = []
        services: list[SmtpdService] = []
        workers: list[subprocess.Popen[bytes]] = []
        specs: list[tuple[MasterService, list[socket.socket]]] = []  # what each worker serves
        self.smtpd_sockets = []
        # One anvil for every smtpd of this generation: the client limits hold across processes.
        anvil_table = AnvilTable(float(main.get(MAIN.anvil_rate_time_unit)))
        anvil_server = await serve_anvil(anvil_table, anvil_socket(queue.directory))
        death_read, death_write = os.pipe()  # workers see EOF when this process dies
        used: set[tuple[str, int]] = set()
        by_entry: dict[str, list[tuple[str, int]]] = {}
        entries: dict[str, MasterService] = {}
        for entry, host, port in self.smtpd_addresses(config):
            by_entry.setdefault(entry.service, []).append((host, port))
            entries[entry.service] = entry
        for name, addresses in by_entry.items():
            entry = entries[name]
            settings = entry.effective(main)
            sockets = []
            for host, port in addresses:
                sock = self._listeners.get((host, port))
                if sock is None:
                    try:
                        sock = await bind_inet_retrying(host, port)
                    except OSError as exc:
                        if self.dropped_to is None:
                            raise
                        # A reload as mail_owner: a new port below 1024 needs root.
                        log.error("smtpd: cannot listen on %s:%d (%s) after a reload: %s; "
                                  "the master runs as %s now: restart the mail system "
                                  "(sealmail postfix stop; start) to bind it",
                                  host, port, entry.service, exc.strerror, self.dropped_to)
                        continue
                self._listeners[(host, port)] = sock
                used.add((host, port))
                sockets.append(sock)
                log.info("smtpd: listening on %s:%d (%s)", host, sock.getsockname()[1],
                         entry.service)
            if not sockets:
                continue
            self.smtpd_sockets += sockets
            count = self.smtpd_process_count(entry)
            if count > 1:
                specs += [(entry, sockets)] * count
                workers += [self._spawn_smtpd(entry, sockets, death_read) for _ in range(count)]
                continue
            service = SmtpdService.from_config(settings, queue, cleanup,
                                               on_queued=lambda _id: qmgr.wake(),
                                               clock=self.clock, service_name=entry.service,
                                               anvil=LocalAnvil(anvil_table))
            services.append(service)
            for sock in sockets:
                # A duplicate: closing the server must not close the listener, which stays
                # open across a reload so that no client is refused meanwhile.
                servers.append(await service.serve(sock.dup()))
        for address in set(self._listeners) - used:
            self._listeners.pop(address).close()
        self._pickup_wakeup = asyncio.Event()
        control = await self._control_server(queue, qmgr)
        tasks = [asyncio.create_task(qmgr.run(stop)),
                 asyncio.create_task(self._pickup(queue, cleanup, qmgr, stop, milters)),
                 asyncio.create_task(report_statistics(
                     anvil_table, float(main.get(MAIN.anvil_status_update_time)), stop))]
        watch = asyncio.create_task(replace_dead_workers(
            workers, lambda i: self._spawn_smtpd(*specs[i], death_read), stop,
            reaped=functools.partial(_remove_temporary, queue)))
        log.info("daemon started -- version sealmail, configuration %s", self.config_directory)
        if ready is not None:
            ready(self)
        try:
            await stop.wait()
        finally:
            log.info("terminating on signal" if not self._reload else "reloading")
            control.close()
            for server in servers:
                server.close()
            for service in services:
                service.drain()
            pending = {t for s in services for t in s.sessions}
            if pending:
                await asyncio.wait(pending, timeout=30)
            for service in services:
                await asyncio.to_thread(service.commits.close)
            self._pickup_wakeup.set()
            watch.cancel()
            await asyncio.gather(watch, return_exceptions=True)
            os.close(death_read)
            for worker in workers:
                with contextlib.suppress(ProcessLookupError):
                    worker.terminate()
            if not self._reload:
                for sock in self._listeners.values():
                    sock.close()
                self._listeners.clear()
            await asyncio.to_thread(_reap, workers)
            os.close(death_write)
            anvil_server.close()
            anvil_socket(queue.directory).unlink(missing_ok=True)
            await asyncio.gather(*tasks, return_exceptions=True)
            await qmgr.close()
            queue.control_socket.unlink(missing_ok=True)

    def smtpd_process_count(self, entry: MasterService) -> int:
        """smtpd processes for an inet entry: one per CPU, at most its maxproc (1 or fewer:
        smtpd runs inside the master)."""
        if self.smtpd_processes is not None:
            return self.smtpd_processes
        assert self.config is not None
        limit = entry.process_limit(self.config.main) or 1_000_000
        return min(limit, os.cpu_count() or 1)

    def _spawn_smtpd(self, entry: MasterService, sockets: list[socket.socket],
                     death_read: int) -> subprocess.Popen[bytes]:
        fds = [sock.fileno() for sock in sockets]
        command = [sys.executable, "-m", "sealmail.mta.smtpd", "--config",
                   str(self.config_directory), "--service", entry.service,
                   "--fds", ",".join(map(str, fds)), "--parent-fd", str(death_read)]
        passed = [*fds, death_read]
        if self.hostname:
            command += ["--hostname", self.hostname]
        if self.log_fd is not None:
            command += ["--log-fd", str(self.log_fd)]
            passed.append(self.log_fd)
        worker = subprocess.Popen(command, pass_fds=passed, stdin=subprocess.DEVNULL)
        log.info("smtpd: started process %d for %s", worker.pid, entry.service)
        return worker

    async def _pickup(self, queue: Queue, cleanup: object, qmgr: QueueManager,
                      stop: asyncio.Event, milters: MilterSettings | None = None) -> None:
        from sealmail.mta.cleanup import Cleanup

        assert isinstance(cleanup, Cleanup)
        wakeup = self._pickup_wakeup
        assert wakeup is not None
        while not stop.is_set():
            wakeup.clear()
            try:
                queued = await asyncio.to_thread(pickup_once, queue, cleanup, milters=milters)
            except OSError as exc:
                log.error("maildrop: %s", exc)
                queued = []
            if queued:
                qmgr.wake()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wakeup.wait(), PICKUP_INTERVAL)

    async def _control_server(self, queue: Queue, qmgr: QueueManager) -> asyncio.Server:
        path = queue.control_socket
        path.unlink(missing_ok=True)

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                line = await asyncio.wait_for(reader.readline(), 10)
                request = control_request(line)
                if request is not None:
                    word, queue_id = request
                    if word == "flush":
                        qmgr.flush()
                    elif word == "retry":
                        qmgr.retry(queue_id)
                    elif word == "pickup" and self._pickup_wakeup is not None:
                        self._pickup_wakeup.set()
                    else:
                        qmgr.wake()
                    writer.write(b"ok\n")
                else:
                    writer.write(b"error unknown request\n")
                await writer.drain()
            except (TimeoutError, OSError):
                pass
            finally:
                writer.close()

        server = await asyncio.start_unix_server(handle, path=str(path))
        os.chmod(path, 0o666)  # any local user may say "pickup" (sendmail), as Postfix's fifo
        return server


DETACHED = "SEALMAIL_MTA_DETACHED"  # set by `postfix start`: standard error is not a terminal


def run_foreground(config_directory: Path, *, agent_factory: AgentFactory = load_agent) -> int:
    """`sealmail postfix start-fg`: lock the pid file, say where the log goes, bind the
    listeners, switch to mail_owner when started as root (sealmail.mta.privsep), run until
    signalled."""
    from sealmail.mta import metrics as mta_metrics
    from sealmail.mta import privsep
    from sealmail.mta.agents import privileges
    from sealmail.mta.config import checks
    from sealmail.server import runtime

    config = load_mta_config(config_directory)
    main = config.main
    destination = maillog_destination(main)
    handler = open_maillog(main)
    root = logging.getLogger("sealmail")
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    log.info("logging to %s", describe_destination(destination))
    try:
        checks.enforce(config, log)  # warnings once; a refused setting stops the start
        owner = privsep.mail_owner_account(main) if os.geteuid() == 0 else None
    except ConfigError as exc:
        log.error("%s", exc)
        root.removeHandler(handler)
        handler.close()
        raise
    if owner is not None:
        privsep.own_instance(main, owner)
    if os.environ.get(DETACHED):
        # `postfix start` reads our standard error only to report a failed start: from here on
        # the log has every line.
        root.propagate = False
    try:
        fd = lock_pid_file(main)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        root.removeHandler(handler)
        handler.close()
        return 1
    helper: privsep.HelperClient | None = None
    metrics_server = None
    master = MtaMaster(config_directory, agent_factory=agent_factory)
    stream = getattr(handler, "stream", None)
    if stream is not None and not stream.isatty():
        master.log_fd = stream.fileno()
    try:
        # Before the switch to mail_owner: the directory is made by root, for mail_owner.
        metrics_server = mta_metrics.start(main, (owner.uid, owner.gid) if owner else None)
        if owner is not None and owner.uid != 0:
            pid, control = privsep.start_helper(
                keep_open=[fd], spool_directory=main.get(MAIN.mail_spool_directory))
            helper = privsep.HelperClient(control, pid)
            master.bind_listeners()
            switch_to(owner)
            log.info("running as %s; commands and mailbox writes go through the privileged "
                     "helper", owner.describe())
            master.dropped_to = owner.name
            privileges.install(helper)
        elif owner is None:
            log.info("running as uid %d (not started as root): every service and command "
                     "runs as this account", os.getuid())
        runtime.run(master.run())
    finally:
        mta_metrics.stop(metrics_server)
        with contextlib.suppress(OSError):
            pid_path(main).unlink()
        os.close(fd)
        if helper is not None:
            helper.close()
        root.removeHandler(handler)
        handler.close()
        root.propagate = True
    return 0
