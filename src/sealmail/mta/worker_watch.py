"""The MTA master's watch over its smtpd processes: one that dies (a crash, the OOM killer, a
kill -9) is replaced at once, as Postfix's master(8) replaces a service process, so the shared
listening sockets always have a process accepting on them. Without it every smtpd killed left
one acceptor fewer until the port took connections that nobody ever answered.

A service that crash-loops (more than CRASH_BURST deaths within CRASH_WINDOW seconds) waits
THROTTLE seconds between replacements, logs it, and is replaced at once again when the burst
is over: a bad config must not spin the CPU, and a lone crash must not leave the port deaf.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import subprocess
import time
from collections import deque
from collections.abc import Callable

log = logging.getLogger("sealmail.mta.master")

CHECK_INTERVAL = 0.5  # seconds between looks at the workers
CRASH_BURST = 5
CRASH_WINDOW = 10.0
THROTTLE = 1.0


def exit_text(status: int) -> str:
    """How a process ended, in master(8)'s words."""
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by signal {-status} ({signal.Signals(-status).name})"
        return f"killed by signal {-status}"
    return f"exit status {status}"


async def replace_dead_workers(
    workers: list[subprocess.Popen[bytes]],
    spawn: Callable[[int], subprocess.Popen[bytes]],
    stop: asyncio.Event,
    *,
    name: str = "smtpd",
    reaped: Callable[[int], None] = lambda pid: None,
    clock: Callable[[], float] = time.monotonic,
    interval: float = CHECK_INTERVAL,
) -> None:
    """Until `stop`: replace `workers[i]` by `spawn(i)` when it has exited (the list is changed
    in place, so whoever stops the workers later stops the replacements); `reaped(pid)` clears
    up after the dead one first."""
    deaths: deque[float] = deque(maxlen=CRASH_BURST + 1)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
        for index, worker in enumerate(workers):
            if stop.is_set():
                return
            status = worker.poll()
            if status is None:
                continue
            log.warning("process %s pid %d %s", name, worker.pid, exit_text(status))
            reaped(worker.pid)
            deaths.append(clock())
            if len(deaths) == deaths.maxlen and deaths[-1] - deaths[0] < CRASH_WINDOW:
                log.warning("%s: %d processes died within %.0f s; throttling: %.0f s between "
                            "replacements", name, len(deaths), CRASH_WINDOW, THROTTLE)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), THROTTLE)
                if stop.is_set():
                    return
            workers[index] = spawn(index)
