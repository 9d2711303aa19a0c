"""The web console's test helpers: a private store config with an admin and a user in its
sasldb, an MTA config whose queue the console shows."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tests.support.instance import store_root_opt_in
from tests.support.loops import new_event_loop
from tests.support.peers import free_tcp_port

from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.mta.queue import Envelope, Queue, RecipientRecord
from sealmail.proto.sasl import split_identity

if TYPE_CHECKING:
    from sealmail.server.http import HttpLimits

ADMIN, ADMIN_PASSWORD = "admin", "admin-secret"
USER, USER_PASSWORD = "alice", "alice-secret"


@dataclass
class ConsoleServer:
    port: int
    queue: Queue
    root: Path
    mta_dir: Path
    imapd_conf: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def enqueue(self, sender: str = "bob@example.org", *recipients: str) -> str:
        rcpts = recipients or ("carol@example.com",)
        envelope = Envelope(sender, tuple(RecipientRecord(r, r) for r in rcpts),
                            arrival=1_700_000_000.0, size=12, message_id="m1@example.org")
        return self.queue.enqueue(envelope, b"Subject: x\r\n\r\nhi\r\n")


def write_instance(root: Path, extra: str = "") -> tuple[Path, Path]:
    """imapd.conf (admins: admin) with two sasldb users, and main.cf + master.cf."""
    (root / "config").mkdir(parents=True)
    conf = root / "imapd.conf"
    conf.write_text(
        f"configdirectory: {root / 'config'}\npartition-default: {root / 'spool'}\n"
        f"servername: console.example\nadmins: {ADMIN}\nauth_failure_delay: 0\n{extra}"
        + store_root_opt_in())
    config = load_imapd_conf(conf)
    sasldb = SaslDB.from_config(config)
    for user, password in ((ADMIN, ADMIN_PASSWORD), (USER, USER_PASSWORD)):
        sasldb.set_password(split_identity(user, config.servername), password)
    mta = root / "mta"
    mta.mkdir()
    (mta / "main.cf").write_text(
        f"myhostname = mx.example.com\nqueue_directory = {root / 'queue'}\n"
        f"data_directory = {root / 'data'}\n")
    (mta / "master.cf").write_text("")
    return conf, mta


@contextlib.contextmanager
def serving(root: Path, tls: ssl.SSLContext | None = None,
            limits: HttpLimits | None = None) -> Iterator[ConsoleServer]:
    """A console on a new private instance under `root`, served from a thread."""
    from sealmail.auth.authenticator import Authenticator
    from sealmail.config.cyrus_conf import InetAddress
    from sealmail.console.app import Console
    from sealmail.console.login import ConsoleLogin
    from sealmail.console.store_helper import StoreHelper
    from sealmail.console.views import Sources
    from sealmail.mta.config import load_mta_config
    from sealmail.privileges import store_account
    from sealmail.server.http import HttpLimits, serve_http
    from sealmail.server.listeners import bind_inet

    conf, mta = write_instance(root)
    queue = Queue.from_config(load_mta_config(mta).main)
    queue.create_directories()
    config = load_imapd_conf(conf)
    store = StoreHelper.start(str(conf), store_account(config))
    login = ConsoleLogin(config, Authenticator(config, credentials=store))  # as the command's
    app = Console(queue, Sources(config, str(conf), str(mta)), login, store)
    port = free_tcp_port()
    sockets = bind_inet(InetAddress("127.0.0.1", port, socket.AF_INET))
    loop = new_event_loop()
    ready = threading.Event()
    stop: list[asyncio.Event] = []

    async def main() -> None:
        service = await serve_http(app.handle, sockets, tls=tls,
                                   limits=limits or HttpLimits(idle=10.0))
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        await service.close()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield ConsoleServer(port, queue, root, mta, conf)
    finally:
        loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()
        store.close()
