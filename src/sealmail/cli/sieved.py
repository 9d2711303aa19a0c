"""`sealmail sieved`: ManageSieve (RFC 5804) for users' Sieve scripts, standalone.

Under `sealmail master` the same daemon runs from cyrus.conf (`sieve cmd="sieved"
listen="127.0.0.1:4190"`) through `sealmail.server.sieved.build_service`.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from sealmail.config.cyrus_conf import DEFAULT_SERVICES_FILE, UnixAddress, resolve_listen
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.server.listeners import ListenError, bind, describe

log = logging.getLogger("sealmail.sieved")

DEFAULT_LISTEN = "127.0.0.1:4190"  # RFC 5804 1.8: the registered port is 4190


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="as cyrus.conf's listen=: host:port, [addr]:port, port, a service name or a UNIX "
        f"socket path (repeatable; default: {DEFAULT_LISTEN})",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sealmail.server import runtime
    from sealmail.server.sieved import build_service, serve

    config = load_imapd_conf(args.config)
    addresses = [
        address
        for text in args.listen or [DEFAULT_LISTEN]
        for address in resolve_listen(
            text,
            "tcp",
            config.configdirectory,
            DEFAULT_SERVICES_FILE,
            unix_mode=config.integer("unix_socket_mode"),
            unix_group=config.string("unix_socket_group"),
            path="--listen",
        )
    ]
    service = build_service(config, [])  # checks the configuration before binding
    sockets: list[socket.socket] = []
    try:
        for address in addresses:
            sockets += bind(address)
    except (ListenError, OSError) as exc:
        for sock in sockets:
            sock.close()
        print(f"sealmail sieved: {exc}", file=sys.stderr)
        return 71  # EX_OSERR
    for address in addresses:
        log.info("sieved: listening on %s", describe(address))
    try:
        runtime.run(serve(service, sockets))
    finally:
        for address in addresses:
            if isinstance(address, UnixAddress):
                address.path.unlink(missing_ok=True)
        service.close()
    return 0
