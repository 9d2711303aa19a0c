"""smtpd as a worker process of the MTA master (one per CPU, sharing the listening
sockets)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Sequence

from sealmail import metrics
from sealmail.config.imapd_conf import ConfigError
from sealmail.maillog import SERVICE_SYSLOG_NAME
from sealmail.mta.anvil import AnvilClient, anvil_socket
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.queue import Queue
from sealmail.mta.smtpd.service import SmtpdService


class QueueManagerNudge:
    """Tells the master's queue manager about new mail over the control socket, coalescing:
    while one `wake` is on its way, later ones fold into a single follow-up."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path
        self._busy = False
        self._again = False
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, queue_id: str) -> None:
        if self._busy:
            self._again = True
            return
        self._busy = True
        task = asyncio.get_running_loop().create_task(self._send())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self) -> None:
        try:
            while True:
                self._again = False
                with contextlib.suppress(OSError):
                    reader, writer = await asyncio.open_unix_connection(self.socket_path)
                    writer.write(b"wake\n")
                    await writer.drain()
                    await reader.readline()
                    writer.close()
                if not self._again:
                    break
        finally:
            self._busy = False


async def serve_worker(
    config_directory: str,
    service_name: str,
    fds: Sequence[int],
    parent_fd: int,
    hostname: str | None = None,
) -> None:
    """Serve SMTP on inherited listening sockets until SIGTERM or the master's death (its end of
    the pipe `parent_fd` closes), then let sessions under way finish."""
    import signal

    from sealmail.mta.cleanup import cleanup_from_config
    from sealmail.mta.config import load_mta_config

    config = load_mta_config(config_directory, hostname=hostname)
    entry = config.master_cf.get(service_name, "inet")
    if entry is None:
        raise ConfigError(config.master_cf.path, 0, service_name, "no such inet service")
    settings = entry.effective(config.main)
    # Every line of this process under the service's syslog_name (postfix/submission/smtpd).
    SERVICE_SYSLOG_NAME.set(settings.get(MAIN.syslog_name))
    queue = Queue.from_config(config.main)
    anvil = AnvilClient(anvil_socket(queue.directory))
    service = SmtpdService.from_config(
        settings,
        queue,
        cleanup_from_config(config.main),
        on_queued=QueueManagerNudge(str(queue.control_socket)),
        service_name=service_name,
        anvil=anvil,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_reader(parent_fd, stop.set)  # readable only at EOF: the master is gone
    servers = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        servers.append(await service.serve(sock))
    await stop.wait()
    loop.remove_reader(parent_fd)
    for server in servers:
        server.close()
    service.drain()
    if service.sessions:
        await asyncio.wait(set(service.sessions), timeout=30)
    service.commits.close()
    await anvil.close()


def worker_main(argv: Sequence[str] | None = None) -> int:
    """`python -m sealmail.mta.smtpd --config DIR --service NAME --fds 3,4 --parent-fd 5`,
    started by sealmail.mta.master only."""
    import argparse

    from sealmail.maillog import lean_log_records
    from sealmail.mta.config import load_mta_config
    from sealmail.mta.master import open_maillog
    from sealmail.server import runtime

    parser = argparse.ArgumentParser(prog="sealmail-smtpd")
    parser.add_argument("--config", required=True)
    parser.add_argument("--service", required=True)
    parser.add_argument("--fds", required=True)
    parser.add_argument("--parent-fd", type=int, required=True)
    parser.add_argument("--hostname", default=None)
    parser.add_argument("--log-fd", type=int, default=None)
    args = parser.parse_args(argv)
    # The master's log file, open on --log-fd (we may run as mail_owner, and the file be
    # root's), else what main.cf says.
    handler = open_maillog(load_mta_config(args.config, hostname=args.hostname).main,
                           args.log_fd)
    lean_log_records()
    root = logging.getLogger("sealmail")
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    fds = [int(fd) for fd in args.fds.split(",") if fd]
    metrics.enable()  # when the master serves metrics_listen (PROMETHEUS_MULTIPROC_DIR)
    runtime.run(serve_worker(args.config, args.service, fds, args.parent_fd, args.hostname))
    return 0
