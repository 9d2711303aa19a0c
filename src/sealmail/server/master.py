"""master: runs the store's services from cyrus.conf, as Cyrus 2.x's master does.

Theory of operation. master reads imapd.conf and cyrus.conf completely before it starts anything
(a bad line stops it, naming file and line). It runs the START entries once, binds every
service's sockets itself, and starts `max(prefork, 1)` worker processes per service
(sealmail.server.worker), which inherit the sockets and accept on them with asyncio; `maxchild`
is enforced by the workers through shared lock-file slots.

Started by root, master keeps root only to bind sockets (at start and on SIGHUP) and to watch its
children: every worker, START and EVENT command runs as imapd.conf's `cyrus_user`/`cyrus_group`
with that account's supplementary groups (set between fork and exec, sealmail.privileges), and the
store's directories it creates (configdirectory, partitions, sievedir) and its UNIX sockets belong
to that account, the sockets keeping `unix_socket_mode` and `unix_socket_group` so the MTA can
connect. An account that is root is refused unless `allow_root_services` is set. Not started by
root, master and all its children run as whoever started it.

master then only watches:

- a worker that exits is logged and replaced at once; a service whose workers keep dying (more
  than RESPAWN_BURST exits within RESPAWN_WINDOW seconds) is throttled: its next start waits,
  doubling from THROTTLE_START up to THROTTLE_MAX seconds (seconds, not minutes: a service
  without a worker refuses mail), so a broken service never spins in a hot loop; once it has
  run a whole RESPAWN_WINDOW without an exit the throttle is forgotten (logged), so a later
  crash is again replaced at once;
- EVENTS run on their period (minutes) or daily at their time, one run at a time per entry;
- SIGHUP re-reads cyrus.conf AND imapd.conf; either one that no longer parses is reported (file
  and line) and the running configuration kept. Services whose entry (or listen addresses)
  changed or vanished are stopped (their workers drain), new or changed ones are started.
  When imapd.conf changed, every other service is recycled: its sockets stay open (no client is
  refused), its workers are told to retire (SIGUSR1: stop accepting, finish their sessions
  however long, then exit) and new workers, which read the new imapd.conf, take the new
  connections. Cyrus's master does not restart anything on an imapd.conf change because each of
  its processes serves a few sessions and the next one reads the file; sealmail's prefork workers
  live as long as master, so without this they would never see the change. When nothing changed
  for a service, it and its sessions are not touched. START entries are not run again; EVENTS
  read imapd.conf each time they run;
- SIGTERM/SIGINT: workers are told to stop (they finish deliveries in progress), master waits up
  to `shutdown_timeout`, kills what is left, removes its UNIX sockets and the pidfile.

The loop is plain and synchronous (signals arrive through a wakeup pipe), so master holds no
event loop that forked workers could inherit. The one thread is metrics_listen's HTTP server
(sealmail.metrics): children are started with fork+exec, so they inherit none of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sealmail import metrics
from sealmail import sessions as live_sessions
from sealmail.config.cyrus_conf import (
    DEFAULT_SERVICES_FILE,
    CyrusConf,
    Entry,
    Event,
    ListenAddress,
    Service,
    UnixAddress,
    load_cyrus_conf,
    service_addresses,
)
from sealmail.config.imapd_conf import ConfigError, ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.privileges import Account, announce, make_store_directories, store_account
from sealmail.server.listeners import ListenError, bind, describe

log = logging.getLogger("sealmail.master")

RESPAWN_WINDOW = 10.0
RESPAWN_BURST = 5
THROTTLE_START = 1.0
THROTTLE_MAX = 8.0


def sealmail_argv(subcommand_argv: tuple[str, ...], imapd_conf: str) -> list[str]:
    """`sealmail SUBCOMMAND -C IMAPD_CONF ARGS`: master's -C is passed on (Cyrus's is not,
    which surprises operators)."""
    head, *rest = subcommand_argv
    config_args = [] if "-C" in rest else ["-C", imapd_conf]
    return [sys.executable, "-m", "sealmail", head, *config_args, *rest]


@dataclass
class RunningService:
    """A service's sockets and its worker processes."""

    entry: Service
    addresses: list[ListenAddress]
    sockets: list[socket.socket]
    workers: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    exits: list[float] = field(default_factory=list)
    throttle: float = 0.0
    next_start: float = 0.0

    def wanted(self) -> int:
        return max(self.entry.prefork, 1)


@dataclass
class ScheduledEvent:
    entry: Event
    next_run: float
    process: subprocess.Popen[bytes] | None = None


class Master:
    def __init__(
        self,
        imapd_conf: str,
        cyrus_conf: str,
        *,
        services_file: str = DEFAULT_SERVICES_FILE,
        shutdown_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.imapd_conf_path = str(Path(imapd_conf).resolve())
        self.cyrus_conf_path = cyrus_conf
        self.services_file = services_file
        self.shutdown_timeout = shutdown_timeout
        self.clock = clock
        self.config: ImapdConfig = load_imapd_conf(self.imapd_conf_path)
        self.conf: CyrusConf = load_cyrus_conf(cyrus_conf)
        self.account: Account | None = None  # who the children run as, when master is root
        self._checked = self._store_prepared = False
        self.services: dict[str, RunningService] = {}
        self.retiring: list[RunningService] = []  # stopped by SIGHUP, workers still draining
        self.events: dict[str, ScheduledEvent] = {}
        self._signals: list[int] = []
        self._metrics_server: Any = None  # metrics_listen's HTTP server (a thread)
        self._wakeup_r, self._wakeup_w = os.pipe()

    # ---------------------------------------------------------------- start-up

    def check(self) -> None:
        """Resolve the services' account and every listen= now, so nothing starts
        half-configured (a refused account names its option). Once is enough."""
        if self._checked:
            return
        self.account = store_account(self.config)
        for entry in self.conf.services:
            service_addresses(entry, self.config, self.services_file)
        self._checked = True

    def prepare_store(self) -> None:
        """The store's top directories, made by root for the account its services run as."""
        self.check()
        if self._store_prepared:
            return
        self._store_prepared = True
        make_store_directories(self.config, self.account)

    def _credentials(self) -> dict[str, Any]:
        return self.account.credentials() if self.account is not None else {}

    def start(self) -> None:
        self.check()
        if self.account is None:
            announce("master", None)
        else:
            log.info(
                "master keeps root only to bind sockets and watch its workers; services, "
                "START and EVENT commands run as %s",
                self.account.describe(),
            )
        self.prepare_store()
        account = self.account
        live_sessions.clear(self._sessions_directory(),
                            (account.uid, account.gid) if account is not None else None)
        self._metrics_server = self._start_metrics()
        for start_entry in self.conf.start:
            self._run_start_entry(start_entry)
        for service in self.conf.services:
            for text in unhonoured(service):
                log.warning("%s:%d: %s: %s", service.path, service.line, service.name, text)
            self._start_service(service)
        now = self.clock()
        for event in self.conf.events:
            self.events[event.name] = ScheduledEvent(event, self._first_run(event, now))
        log.info("master ready: %d service(s), %d event(s)", len(self.services), len(self.events))

    def _sessions_directory(self) -> Path:
        """Where logged-in sessions are filed (sealmail.sessions: admin who, kick)."""
        return live_sessions.registry_directory(self.config.configdirectory)

    def _worker_gone(self, pid: int) -> None:
        metrics.process_exited(pid)
        live_sessions.sweep_pid(self._sessions_directory(), pid)

    def _start_metrics(self) -> Any:
        """metrics_listen: the workers' metrics files under configdirectory/metrics (see
        sealmail.metrics), summed on each scrape by a thread of this process."""
        listen = self.config.get(IMAPD.metrics_listen)
        if not listen:
            return None
        account = self.account
        owner = (account.uid, account.gid) if account is not None else None
        if not metrics.prepare(self.config.configdirectory / "metrics", owner):
            return None
        return metrics.serve(listen)

    def _run_start_entry(self, entry: Entry) -> None:
        argv = sealmail_argv(entry.command.argv, self.imapd_conf_path)
        log.info("START %s: %s", entry.name, " ".join(entry.cmd))
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, check=False, **self._credentials()
        )
        if done.returncode != 0:
            raise ConfigError(
                entry.path,
                entry.line,
                None,
                f"START entry {entry.name!r} exited with status {done.returncode}",
            )

    def _start_service(self, entry: Service, bind_wait: float = 0.0) -> None:
        """Bind and start workers; `bind_wait` allows retiring workers time to let go of a port."""
        addresses = service_addresses(entry, self.config, self.services_file)
        sockets: list[socket.socket] = []
        deadline = time.monotonic() + bind_wait
        try:
            for address in addresses:
                while True:
                    try:
                        sockets.extend(bind(address, self.account))
                        break
                    except ListenError:
                        if time.monotonic() >= deadline:
                            raise
                        time.sleep(0.1)
        except BaseException:
            for sock in sockets:
                sock.close()
            raise
        running = RunningService(entry, addresses, sockets)
        self.services[entry.name] = running
        log.info(
            "service %s: %s on %s (prefork=%d maxchild=%s)",
            entry.name,
            " ".join(entry.cmd),
            ", ".join(describe(a) for a in addresses),
            entry.prefork,
            entry.maxchild if entry.maxchild > 0 else "unlimited",
        )
        self._top_up(running)

    def _spawn(self, running: RunningService) -> None:
        entry = running.entry
        fds = [sock.fileno() for sock in running.sockets]
        argv = [
            sys.executable,
            "-m",
            "sealmail.server.worker",
            "--service",
            entry.name,
            "--imapd-conf",
            self.imapd_conf_path,
            "--fds",
            ",".join(str(fd) for fd in fds),
            "--maxchild",
            str(entry.maxchild),
            "--master-pid",
            str(os.getpid()),
            "--",
            *entry.command.argv,
        ]
        process = subprocess.Popen(
            argv, pass_fds=fds, stdin=subprocess.DEVNULL, **self._credentials()
        )
        running.workers[process.pid] = process
        log.info("service %s: started worker %d", entry.name, process.pid)

    def _top_up(self, running: RunningService) -> None:
        if self.clock() < running.next_start:
            return
        while len(running.workers) < running.wanted():
            self._spawn(running)

    # ---------------------------------------------------------------- the loop

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals.append(signum)
        with contextlib.suppress(BlockingIOError):
            os.write(self._wakeup_w, b"\0")

    def catch_signals(self) -> None:
        """From before `start`: a SIGTERM while services start is then taken at the loop's
        first turn, after which master stops its workers, instead of killing master by the
        default action and leaving them serving as orphans."""
        os.set_blocking(self._wakeup_r, False)
        os.set_blocking(self._wakeup_w, False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD):
            signal.signal(signum, self._on_signal)

    def run(self) -> None:
        self.catch_signals()  # again, harmless: for a caller that did not
        try:
            while True:
                with contextlib.suppress(InterruptedError):
                    select.select([self._wakeup_r], [], [], 1.0)
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wakeup_r, 4096)
                pending, self._signals = self._signals, []
                if signal.SIGTERM in pending or signal.SIGINT in pending:
                    break
                if signal.SIGHUP in pending:
                    self.reload()
                self._reap()
                for running in self.services.values():
                    self._top_up(running)
                self._run_due_events()
        finally:
            self.shutdown()

    def _reap(self) -> None:
        now = self.clock()
        for running in self.retiring:
            for pid, process in list(running.workers.items()):
                if process.poll() is not None:
                    del running.workers[pid]
                    self._worker_gone(pid)
        self.retiring = [running for running in self.retiring if running.workers]
        for name, running in self.services.items():
            for pid, process in list(running.workers.items()):
                status = process.poll()
                if status is None:
                    continue
                del running.workers[pid]
                self._worker_gone(pid)
                log.warning(
                    "service %s: worker %d exited with status %d; replacing it", name, pid, status
                )
                recent = [t for t in running.exits if now - t < RESPAWN_WINDOW]
                if not recent and running.throttle:
                    log.info("service %s: no exit for %ds, throttle reset", name, RESPAWN_WINDOW)
                    running.throttle = 0.0
                running.exits = [*recent, now]
                if len(running.exits) > RESPAWN_BURST:
                    running.throttle = min(max(running.throttle * 2, THROTTLE_START), THROTTLE_MAX)
                    running.next_start = now + running.throttle
                    log.error(
                        "service %s: %d exits in %ds, throttled for %.0fs",
                        name,
                        len(running.exits),
                        RESPAWN_WINDOW,
                        running.throttle,
                    )
        for scheduled in self.events.values():
            if scheduled.process is not None and scheduled.process.poll() is not None:
                status = scheduled.process.returncode
                (log.info if status == 0 else log.warning)(
                    "EVENT %s: exited with status %d", scheduled.entry.name, status
                )
                scheduled.process = None

    # ---------------------------------------------------------------- events

    def _first_run(self, event: Event, now: float) -> float:
        if event.period is not None:
            return now  # Cyrus runs a periodic event once at start, then every period
        return self._next_daily(event, now)

    def _next_daily(self, event: Event, now: float) -> float:
        assert event.at is not None
        today = dt.datetime.fromtimestamp(now)
        when = today.replace(hour=event.at.hour, minute=event.at.minute, second=0, microsecond=0)
        if when.timestamp() <= now:
            when += dt.timedelta(days=1)
        return when.timestamp()

    def _run_due_events(self) -> None:
        now = self.clock()
        for scheduled in self.events.values():
            if now < scheduled.next_run or scheduled.process is not None:
                continue
            event = scheduled.entry
            argv = sealmail_argv(event.command.argv, self.imapd_conf_path)
            log.info("EVENT %s: %s", event.name, " ".join(event.cmd))
            scheduled.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, **self._credentials()
            )
            scheduled.next_run = (
                now + event.period * 60 if event.period else self._next_daily(event, now)
            )

    # ---------------------------------------------------------------- reload and stop

    def reload(self) -> None:
        """SIGHUP: both files again; see the module docstring for what each change does."""
        try:
            config = load_imapd_conf(self.imapd_conf_path)
            account = store_account(config)
            new = load_cyrus_conf(self.cyrus_conf_path)
            addresses = {
                entry.name: service_addresses(entry, config, self.services_file)
                for entry in new.services
            }
        except ConfigError as exc:
            log.error("SIGHUP: %s; keeping the running configuration", exc)
            return
        config_changed = config != self.config
        rebind_all = account != self.account  # the sockets belong to the account
        self.config, self.account = config, account
        if config_changed:
            log.info("SIGHUP: %s changed: new workers of every service read it", config.path)
            self._store_prepared = False
            self.prepare_store()
        wanted = {entry.name: entry for entry in new.services}
        for name, running in list(self.services.items()):
            if (
                rebind_all
                or wanted.get(name) != running.entry
                or addresses[name] != running.addresses
            ):
                log.info("SIGHUP: stopping service %s", name)
                self._stop_service(running)
                self.retiring.append(self.services.pop(name))
            elif config_changed:
                self._recycle(running)
        for name, entry in wanted.items():
            if name not in self.services:
                log.info("SIGHUP: starting service %s", name)
                try:
                    self._start_service(entry, bind_wait=5.0)
                except (ConfigError, ListenError, OSError) as exc:
                    log.error("SIGHUP: service %s: %s", name, exc)
        now = self.clock()
        events: dict[str, ScheduledEvent] = {}
        for event in new.events:
            kept = self.events.get(event.name)
            events[event.name] = (
                kept
                if kept is not None and kept.entry == event
                else ScheduledEvent(event, self._first_run(event, now))
            )
        self.events = events
        self.conf = new

    def _recycle(self, running: RunningService) -> None:
        """Retire a service's workers, keeping its sockets: new workers start at once (next
        loop turn), the old ones stop accepting and exit when their sessions have ended."""
        if not running.workers:
            return
        log.info(
            "SIGHUP: service %s: retiring worker(s) %s; new workers take the new connections",
            running.entry.name,
            ", ".join(str(pid) for pid in running.workers),
        )
        old = RunningService(running.entry, [], [], workers=running.workers)
        running.workers = {}
        running.exits, running.throttle, running.next_start = [], 0.0, 0.0
        for process in old.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGUSR1)
        self.retiring.append(old)

    def _stop_service(self, running: RunningService) -> None:
        self._close_sockets(running)
        for process in running.workers.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    def _close_sockets(self, running: RunningService) -> None:
        for sock in running.sockets:
            sock.close()
        running.sockets = []
        for address in running.addresses:
            if isinstance(address, UnixAddress):
                address.path.unlink(missing_ok=True)
        running.addresses = []

    def shutdown(self) -> None:
        log.info("master stopping")
        self.retiring.extend(self.services.values())
        self.services.clear()
        for running in self.retiring:
            self._stop_service(running)
        for scheduled in self.events.values():
            if scheduled.process is not None:
                with contextlib.suppress(ProcessLookupError):
                    scheduled.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.shutdown_timeout
        processes = [p for r in self.retiring for p in r.workers.values()] + [
            s.process for s in self.events.values() if s.process is not None
        ]
        for process in processes:
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("process %d did not stop in time; killing it", process.pid)
                process.kill()
                process.wait()
        self.retiring.clear()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
            self._metrics_server = None
        log.info("master stopped")


def unhonoured(service: Service) -> list[str]:
    """What a cyrus.conf service entry sets that master does not apply: said by name at start,
    never accepted silently."""
    said = []
    if service.maxfds != 256:
        said.append(f"maxfds={service.maxfds} is not honoured: each worker raises its open-files "
                    "limit to the hard limit (it serves many sessions)")
    if service.maxforkrate:
        said.append(f"maxforkrate={service.maxforkrate} is not honoured: workers are preforked "
                    "and replaced at once, with a back-off when they keep dying")
    if service.babysit:
        said.append("babysit=1 is not honoured: prefork= keeps workers running")
    return said
