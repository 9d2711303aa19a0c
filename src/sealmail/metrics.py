"""Prometheus metrics of the daemons, with the names operators' dashboards already use.

Off unless a master is told where to serve them (imapd.conf `metrics_listen: ADDR:PORT` for the
store's master, main.cf `metrics_listen = ADDR:PORT` for the MTA); prometheus-client is an
optional extra (`pip install sealmail[metrics]`): without it the daemons run and the master warns,
naming metrics_listen, that nothing is served. Every hook below is a no-op until `enable` ran.

Aggregating preforked workers. The store's master runs imapd, pop3d, lmtpd and sieved as many
worker processes, the MTA's master its smtpd processes: a scrape must see their sum. We use
prometheus-client's multiprocess mode: the master empties a directory under its instance's state
(configdirectory/metrics, data_directory/metrics) and sets PROMETHEUS_MULTIPROC_DIR before any
worker starts; each worker writes its values to its own memory-mapped files there, and the
master's /metrics sums the files at scrape time. Chosen over workers pushing to the master
because nothing is lost or double counted when a worker crashes (its counters stay in its files,
and the master removes its live gauges when it reaps it, `process_exited`), the workers need no
channel, timer or buffering of their own, and histograms aggregate bucket by bucket for free.
A reaped worker's counters and histograms must keep counting, or totals would go down; but with
workers recycled (service limits, respawns) one file per pid would pile up without bound, and
every scrape reads them all. So the master folds them, at reaping, into one archive file per
type (`counter_archive.db`, in the same mmap format, which MultiProcessCollector sums as any
worker's) and removes them; a lock keeps a scrape from reading between the two.

What is counted where. postfix_exporter derives its metrics from Postfix's log lines, and
sealmail's MTA writes those lines in Postfix's shape: `LogMetrics` reads the same lines (connect
and disconnect, `client=`, `NOQUEUE: reject`, SASL failures, qmgr's `(queue active)` and
`removed`, the agents' `status=` lines with their delays) and the store's Cyrus lines (badlogin),
so the numbers mean exactly what the exporter's mean. What no log line says is measured where it
happens: connections per store service, end-of-data latency (smtpd, lmtpd) and IMAP command
latency. Queue length and age come from reading the queue at scrape time (sealmail.mta.metrics).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import shutil
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ENVIRONMENT",
    "LogMetrics",
    "WorkerFiles",
    "available",
    "connection",
    "enable",
    "enabled",
    "fold_process",
    "observe_command",
    "observe_end_of_data",
    "parse_listen",
    "prepare",
    "process_exited",
    "serve",
]

ENVIRONMENT = "PROMETHEUS_MULTIPROC_DIR"
ARCHIVE = "archive"  # counter_archive.db ...: the reaped workers' values, folded
FOLDED_TYPES = ("counter", "histogram", "summary")
log = logging.getLogger("sealmail.metrics")

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                   30.0, 60.0)
DELAY_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0, 1800.0, 3600.0, 14400.0, 86400.0)
RECIPIENT_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
SIZE_BUCKETS = (1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9)
STORE_PROTOCOLS = ("imap", "pop3", "lmtp", "sieve")
# An IMAP command is a label only when it is one of these: a client cannot grow the series.
IMAP_COMMANDS = frozenset((
    "APPEND", "AUTHENTICATE", "CAPABILITY", "CHECK", "CLOSE", "COMPRESS", "COPY", "CREATE",
    "DELETE", "ENABLE", "EXAMINE", "EXPUNGE", "FETCH", "GETACL", "GETMETADATA", "GETQUOTA",
    "GETQUOTAROOT", "ID", "IDLE", "LIST", "LISTRIGHTS", "LOGIN", "LOGOUT", "LSUB", "MOVE",
    "MYRIGHTS", "NAMESPACE", "NOOP", "RENAME", "SEARCH", "SELECT", "SETACL", "SETMETADATA",
    "SETQUOTA", "SORT", "STARTTLS", "STATUS", "STORE", "SUBSCRIBE", "THREAD", "UNAUTHENTICATE",
    "UNSELECT", "UNSUBSCRIBE", "XLIST",
))


def available() -> bool:
    """Whether prometheus-client is installed (the `metrics` extra)."""
    return importlib.util.find_spec("prometheus_client") is not None


def parse_listen(value: str) -> tuple[str, int]:
    """ADDR:PORT ([v6]:PORT too); ValueError names what is wrong."""
    host, sep, port = value.strip().rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r}: not ADDR:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Instruments:
    """The metric objects of this process; made only once multiprocess mode is set up."""

    def __init__(self, registry: Any = None) -> None:
        """`registry`: prometheus-client's default (None), or a test's own."""
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        where = registry if registry is not None else REGISTRY

        def counter(name: str, doc: str, *labels: str) -> Any:
            return Counter(name, doc, labels, registry=where)

        def histogram(name: str, doc: str, buckets: tuple[float, ...], *labels: str) -> Any:
            return Histogram(name, doc, labels, buckets=buckets, registry=where)

        self.smtpd_connects = counter("postfix_smtpd_connects", "SMTP connections accepted.")
        self.smtpd_disconnects = counter("postfix_smtpd_disconnects", "SMTP connections ended.")
        self.smtpd_processed = counter("postfix_smtpd_messages_processed",
                                       "Messages smtpd queued.", "sasl_method")
        self.smtpd_rejected = counter("postfix_smtpd_messages_rejected",
                                      "NOQUEUE rejects by SMTP reply code.", "code")
        self.smtpd_sasl_failures = counter("postfix_smtpd_sasl_authentication_failures",
                                           "Failed SASL logins at smtpd.")
        self.qmgr_inserted_recipients = histogram(
            "postfix_qmgr_messages_inserted_recipients",
            "Recipients of messages entering the active queue.", RECIPIENT_BUCKETS)
        self.qmgr_inserted_size = histogram(
            "postfix_qmgr_messages_inserted_size_bytes",
            "Size of messages entering the active queue.", SIZE_BUCKETS)
        self.qmgr_removed = counter("postfix_qmgr_messages_removed", "Messages removed.")
        self.delivery_delay = {
            program: histogram(
                f"postfix_{program}_delivery_delay_seconds",
                f"Delays of {program} deliveries by stage (Postfix's delays=a/b/c/d).",
                DELAY_BUCKETS, "stage")
            for program in ("smtp", "lmtp")
        }
        self.deliveries = counter("sealmail_mta_deliveries",
                                  "Delivery results by transport and status.",
                                  "transport", "status")
        self.delivery_seconds = histogram(
            "sealmail_mta_delivery_delay_seconds",
            "Time from arrival to a recipient's result, by transport and status.",
            DELAY_BUCKETS, "transport", "status")
        self.auth_failures = counter("sealmail_auth_failures",
                                     "Failed logins by service and SASL mechanism.",
                                     "service", "mechanism")
        self.end_of_data = histogram(
            "sealmail_end_of_data_seconds",
            "From the end of DATA to the reply (the message durable), smtpd and lmtpd.",
            LATENCY_BUCKETS, "service")
        self.imap_command = histogram("sealmail_imap_command_seconds",
                                      "IMAP command latency by command.", LATENCY_BUCKETS,
                                      "command")
        self.connections = {
            protocol: counter(f"cyrus_{protocol}_connections", f"{protocol} connections.",
                              "service")
            for protocol in STORE_PROTOCOLS
        }
        self.active = {
            protocol: Gauge(f"cyrus_{protocol}_active_connections",
                            f"{protocol} sessions open now.", ["service"],
                            multiprocess_mode="livesum", registry=where)
            for protocol in STORE_PROTOCOLS
        }


_instruments: _Instruments | None = None
_lock = threading.Lock()
_files_lock = threading.Lock()  # the files' scrape against a reaped worker's fold


def enabled() -> bool:
    return _instruments is not None


def enable() -> bool:
    """In a daemon process: when its master prepared the directory (PROMETHEUS_MULTIPROC_DIR),
    make the instruments and read the log lines. Idempotent; False when off."""
    global _instruments
    with _lock:
        if _instruments is not None:
            return True
        if not os.environ.get(ENVIRONMENT) or not available():
            return False
        _instruments = _Instruments()
        logging.getLogger("sealmail").addHandler(LogMetrics())
        return True


def prepare(directory: Path, owner: tuple[int, int] | None = None) -> bool:
    """In a master, before its workers start: an empty directory for the workers' files (owned
    by the account they run as), named in the environment they inherit; then `enable` here.
    False (with a warning naming metrics_listen) when prometheus-client is missing."""
    if not available():
        log.warning("metrics_listen is set but the Python package prometheus-client is not "
                    "installed (pip install 'sealmail[metrics]'): no metrics are served")
        return False
    if directory.exists():
        shutil.rmtree(directory)  # values of a previous run: counters start again, as a restart
    directory.mkdir(mode=0o700, parents=True)
    if owner is not None:
        os.chown(directory, *owner)
    os.environ[ENVIRONMENT] = str(directory)
    return enable()


class WorkerFiles:
    """The workers' files summed (MultiProcessCollector), read while no reaped worker's values
    are being moved into the archive (`fold_process`): a scrape in between would count them
    twice, or miss a file."""

    def __init__(self, directory: Path | str | None = None) -> None:
        from prometheus_client.multiprocess import MultiProcessCollector

        self.collector = MultiProcessCollector(  # type: ignore[no-untyped-call]
            None, None if directory is None else str(directory))

    def collect(self) -> list[Any]:
        with _files_lock:
            return list(self.collector.collect())  # type: ignore[no-untyped-call]


def serve(address: str, collectors: Iterable[Any] = ()) -> Any:
    """Serve /metrics on ADDR:PORT in a thread: the workers' files summed, plus `collectors`
    (read at scrape time). Returns the HTTP server (its `shutdown()` stops it)."""
    from prometheus_client import CollectorRegistry, start_http_server

    host, port = parse_listen(address)
    registry = CollectorRegistry()
    registry.register(WorkerFiles())
    for collector in collectors:
        registry.register(collector)
    server, _thread = start_http_server(port, host, registry)
    log.info("metrics: serving /metrics on %s:%d", host, server.server_address[1])
    return server


def process_exited(pid: int) -> None:
    """A worker is gone: its live gauges (open sessions) no longer count; its counters and
    histograms go on counting, from the archive (`fold_process`)."""
    directory = os.environ.get(ENVIRONMENT)
    if _instruments is None or not directory:
        return
    from prometheus_client import multiprocess

    with _files_lock, contextlib.suppress(OSError):
        multiprocess.mark_process_dead(pid, directory)  # type: ignore[no-untyped-call]
    fold_process(Path(directory), pid)


def fold_process(directory: Path, pid: int) -> None:
    """Add a reaped worker's counter, histogram and summary values to the archive file of each
    type, then remove its files. Raw values add up: a histogram's buckets are kept per bucket
    in the files (MultiProcessCollector accumulates them at scrape time)."""
    from prometheus_client.mmap_dict import MmapedDict

    for kind in FOLDED_TYPES:
        dead = directory / f"{kind}_{pid}.db"
        with _files_lock:
            try:
                values = list(MmapedDict.read_all_values_from_file(  # type: ignore[no-untyped-call]
                    str(dead)))
                archive: Any = MmapedDict(  # type: ignore[no-untyped-call]
                    str(directory / f"{kind}_{ARCHIVE}.db"))
                try:
                    for key, value, timestamp, _position in values:
                        total, _ = archive.read_value(key)
                        archive.write_value(key, total + value, timestamp)
                finally:
                    archive.close()
                dead.unlink()
            except FileNotFoundError:
                continue  # this worker counted nothing of the kind
            except (OSError, ValueError) as exc:
                log.warning("metrics: cannot fold %s into the archive: %s", dead, exc)


# -- hooks (no-ops when off) ------------------------------------------------------------------

def store_protocol(subcommand: str) -> str:
    """The protocol of a cyrus.conf program: imapd -> imap, lmtpd/deliver -> lmtp, ..."""
    return {"imapd": "imap", "pop3d": "pop3", "lmtpd": "lmtp", "deliver": "lmtp",
            "sieved": "sieve"}.get(subcommand, "")


@contextlib.contextmanager
def connection(protocol: str, service: str) -> Iterator[None]:
    """One store session: cyrus_PROTOCOL_connections_total and _active_connections."""
    instruments = _instruments
    if instruments is None or protocol not in instruments.connections:
        yield
        return
    instruments.connections[protocol].labels(service).inc()
    active = instruments.active[protocol].labels(service)
    active.inc()
    try:
        yield
    finally:
        active.dec()


def observe_end_of_data(service: str, seconds: float) -> None:
    if _instruments is not None:
        _instruments.end_of_data.labels(service).observe(seconds)


def observe_command(command: str, seconds: float) -> None:
    """An IMAP command's latency; unknown command names count as OTHER."""
    if _instruments is not None:
        name = command.upper()
        _instruments.imap_command.labels(name if name in IMAP_COMMANDS else "OTHER").observe(
            seconds)


# -- counting log lines, as postfix_exporter does ---------------------------------------------

_CLIENT = re.compile(r"^[0-9A-Z]+: client=\S+?(?:, sasl_method=([^,\s]+))?(?:,|$)")
_REJECT = re.compile(r"^NOQUEUE: reject: \S+ from \S+: (\d{3}) ")
_SASL_FAILED = re.compile(r"^\S+: SASL (\S+) authentication failed")
_INSERTED = re.compile(r"^[0-9A-Z]+: from=<.*>, size=(\d+), nrcpt=(\d+) \(queue active\)$")
_REMOVED = re.compile(r"^[0-9A-Z]+: removed$")
_RESULT = re.compile(
    r"^[0-9A-Z]+: to=<.*?>, .*delay=([\d.]+), delays=([\d.]+)/([\d.]+)/([\d.]+)/([\d.]+), "
    r"dsn=\S+, status=(\w+)")
_BADLOGIN = re.compile(r"^badlogin: .*?\] (\S+)")
_STAGES = ("before_queue_manager", "queue_manager", "connection_setup", "transmission")
_STORE_SERVICES = {"sealmail.imapd": "imap", "sealmail.pop3d": "pop3",
                   "sealmail.sieved": "sieve", "sealmail.lmtpd": "lmtp"}


class LogMetrics(logging.Handler):
    """Counts the log lines postfix_exporter counts (and Cyrus's badlogin) as they are logged."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        instruments = _instruments
        if instruments is None:
            return
        try:
            message = record.getMessage()
            count_line(instruments, record.name, message)
        except Exception:  # a metric must never break logging
            return


def count_line(m: _Instruments, logger: str, message: str) -> None:
    if logger == "sealmail.mta.smtpd":
        _count_smtpd(m, message)
    elif logger == "sealmail.mta.qmgr":
        if (found := _INSERTED.match(message)) is not None:
            m.qmgr_inserted_size.observe(int(found.group(1)))
            m.qmgr_inserted_recipients.observe(int(found.group(2)))
        elif _REMOVED.match(message):
            m.qmgr_removed.inc()
    elif logger.startswith("sealmail.mta.agents."):
        if (found := _RESULT.match(message)) is not None:
            program = logger.rsplit(".", 1)[1]
            status = found.group(6)
            m.deliveries.labels(program, status).inc()
            m.delivery_seconds.labels(program, status).observe(float(found.group(1)))
            stages = m.delivery_delay.get(program)
            if stages is not None:
                for stage, value in zip(_STAGES, found.groups()[1:5], strict=True):
                    stages.labels(stage).observe(float(value))
    elif (service := _STORE_SERVICES.get(logger)) is not None and (
            found := _BADLOGIN.match(message)) is not None:
        m.auth_failures.labels(service, found.group(1).upper()).inc()


def _count_smtpd(m: _Instruments, message: str) -> None:
    if message.startswith("connect from "):
        m.smtpd_connects.inc()
    elif message.startswith("disconnect from "):
        m.smtpd_disconnects.inc()
    elif (found := _CLIENT.match(message)) is not None:
        m.smtpd_processed.labels(found.group(1) or "").inc()
    elif (found := _REJECT.match(message)) is not None:
        m.smtpd_rejected.labels(found.group(1)).inc()
    elif (found := _SASL_FAILED.match(message)) is not None:
        m.smtpd_sasl_failures.inc()
        m.auth_failures.labels("smtpd", found.group(1).upper()).inc()
