"""sealmail's MTA master in a thread of the test process, stopped cleanly at the end; and the
main.cf opt-in of MTAs that tests start as root on a directory only root can reach."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.loops import new_event_loop

from sealmail.mta.config import load_mta_config
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.master import MtaMaster, open_maillog


class RunningMta:
    """The master, its queue manager and agents in this process; with maillog_file set, their
    lines go there as `sealmail postfix start` sends them (smtpd processes open it themselves)."""

    def __init__(self, config: Path, smtpd_processes: int | None = None, *,
                 loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.master = MtaMaster(config, hostname="mx.example.com", smtpd_processes=smtpd_processes)
        main = load_mta_config(config, hostname="mx.example.com").main
        self.maillog = open_maillog(main) if main.get(MAIN.maillog_file).strip() else None
        # The loop `sealmail postfix start` runs on (uvloop where installed, the stdlib's under
        # SEALMAIL_EVENT_LOOP=asyncio), unless the test passes another.
        self.loop = loop if loop is not None else new_event_loop()
        self.stop = asyncio.Event()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self.master.run(self.stop, lambda _: self.ready.set()))

    def __enter__(self) -> RunningMta:
        if self.maillog is not None:
            logging.getLogger("sealmail").addHandler(self.maillog)
            logging.getLogger("sealmail").setLevel(logging.INFO)
        self.thread.start()
        assert self.ready.wait(20)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(30)
        if self.maillog is not None:
            logging.getLogger("sealmail").removeHandler(self.maillog)
            self.maillog.close()


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what or condition}"
        time.sleep(0.05)


def mail_owner_opt_in() -> str:
    """main.cf lines for an MTA a fixture starts as a subprocess on a config under pytest's
    tmp_path (0700: mail_owner `postfix` could not reach its queue): when the suite runs as
    root, the MTA keeps running as root, by the explicit opt-in the MTA requires. Empty when
    not root (the MTA then runs as the test's own account). Tests of the real switch to
    mail_owner (tests/integration/test_mta_privileges.py) do not use it."""
    if os.geteuid() != 0:
        return ""
    return "mail_owner = root\nallow_root_services = yes\n"


class FakeMaster:
    """The MTA master's control socket (mta/pickup): records each line, answers ok. Mode 0666
    as the master leaves it, so any local account may ask."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        path.chmod(0o666)
        self.sock.listen(4)
        self.lines: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.lines.append(conn.recv(128).decode().strip())
                conn.sendall(b"ok\n")

    def close(self) -> None:
        self.sock.close()
