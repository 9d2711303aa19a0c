"""`sealmail console [-c MTA_DIR] [-C IMAPD_CONF] [--listen ADDR:PORT] [--tls-cert FILE
--tls-key FILE] [-L STORE_LOG]...`: the web console (sealmail.console).

It listens on loopback (127.0.0.1:9025) unless told otherwise; admins of imapd.conf log in with
their SASL passwords. Started by root it binds and loads its certificate, starts its store
helper as cyrus_user, and serves as main.cf's mail_owner (sealmail.console.accounts).
Needs the `console` extra (h11): pip install 'sealmail[console]'.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import ssl
import sys
from typing import TYPE_CHECKING

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY

if TYPE_CHECKING:
    from sealmail.console.accounts import ConsoleAccounts
    from sealmail.console.app import Console
    from sealmail.console.views import Sources
    from sealmail.mta.queue import Queue

DEFAULT_LISTEN = "127.0.0.1:9025"
EX_USAGE, EX_UNAVAILABLE, EX_CONFIG = 64, 69, 78

log = logging.getLogger("sealmail.console")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="mta_dir", metavar="MTA_DIR", default=None,
                        help="the MTA's configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-C", dest="config", metavar="IMAPD_CONF", default=DEFAULT_CONFIG_PATH,
                        help=f"the store's imapd.conf (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR:PORT",
                        help=f"where to serve (default {DEFAULT_LISTEN}, loopback only)")
    parser.add_argument("--tls-cert", default=None, metavar="FILE",
                        help="serve HTTPS with this certificate (chain) in PEM")
    parser.add_argument("--tls-key", default=None, metavar="FILE",
                        help="the certificate's private key in PEM")
    parser.add_argument("-L", dest="store_logs", metavar="STORE_LOG", action="append",
                        default=[], help="a file with the store's log lines (repeatable), as "
                                         "sealmail trace -L")
    parser.add_argument("--maillog", default=None, help="the MTA's log file, if not main.cf's")
    parser.add_argument("-v", "--verbose", action="store_true")


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert:
        raise ValueError("--tls-key needs --tls-cert")
    from sealmail.server.tls import hardened_context

    context = hardened_context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED)
    context.load_cert_chain(cert, key)
    return context


def run(args: argparse.Namespace) -> int:
    try:
        import h11  # noqa: F401
    except ImportError:
        print("sealmail console: needs h11: pip install 'sealmail[console]'", file=sys.stderr)
        return EX_UNAVAILABLE
    from sealmail.config.cyrus_conf import InetAddress
    from sealmail.config.imapd_conf import ConfigError, load_imapd_conf
    from sealmail.console.accounts import console_accounts
    from sealmail.console.views import Sources
    from sealmail.mta.config import load_mta_config
    from sealmail.mta.queue import Queue
    from sealmail.server.listeners import ListenError, bind_inet, describe
    from sealmail.server.standalone import listen_addresses

    try:
        config = load_imapd_conf(args.config)
        config.warn_without_effect()  # as the daemons do: nothing accepted silently
        mta_dir = args.mta_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
        main = load_mta_config(mta_dir).main
        queue = Queue.from_config(main)
        accounts = console_accounts(main, config)  # a missing account refuses the start
        tls = tls_context(args.tls_cert, args.tls_key)  # as root: the key may be root's only
    except (ConfigError, ValueError, OSError) as exc:
        print(f"sealmail console: {exc}", file=sys.stderr)
        return EX_CONFIG
    addresses = listen_addresses(config, [args.listen], "--listen")
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            if not isinstance(address, InetAddress):
                print("sealmail console: --listen takes ADDR:PORT", file=sys.stderr)
                return EX_USAGE
            sockets += bind_inet(address)
    except (ListenError, OSError) as exc:
        print(f"sealmail console: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    for address in addresses:
        host = address.host if isinstance(address, InetAddress) else None
        if tls is None and host not in ("127.0.0.1", "::1", "localhost"):
            log.warning("console: %s is not loopback and there is no --tls-cert: passwords "
                        "and session cookies cross the network in clear", describe(address))
        log.info("console: listening on %s://%s", "https" if tls else "http", describe(address))
    sources = Sources(config, args.config, mta_dir, tuple(args.store_logs), args.maillog)
    return _serve_as(accounts, queue, sources, sockets, tls)


def _serve_as(accounts: ConsoleAccounts, queue: Queue, sources: Sources,
              sockets: list[socket.socket], tls: ssl.SSLContext | None) -> int:
    """Start the store helper (as cyrus_user), become mail_owner, serve until signalled."""
    from sealmail.auth.authenticator import Authenticator
    from sealmail.console.accounts import become_http_account, warn_unreadable
    from sealmail.console.app import Console
    from sealmail.console.login import ConsoleLogin
    from sealmail.console.store_helper import StoreHelper
    from sealmail.server import runtime

    helper = StoreHelper.start(sources.config_path, accounts.store)
    try:
        become_http_account(accounts, helper.pid)
        warn_unreadable([sources.maillog_path(), *sources.store_log_paths()])
        login = ConsoleLogin(sources.config, Authenticator(sources.config, credentials=helper))
        runtime.run(_serve(Console(queue, sources, login, helper), sockets, tls))
    finally:
        helper.close()
    return 0


async def _serve(console: Console, sockets: list[socket.socket],
                 tls: ssl.SSLContext | None) -> None:
    from sealmail.server.http import serve_http

    service = await serve_http(console.handle, sockets, tls=tls)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log.info("console ready")
    await stop.wait()
    await service.close()
