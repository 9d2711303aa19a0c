"""`sealmail imapd`: IMAP (and imaps) access to the store, standalone.

Under `sealmail master` the same daemon runs from cyrus.conf (`imap cmd="imapd"`, `imaps
cmd="imapd -s"`) through `sealmail.server.imapd.build_service`.
"""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from sealmail.config.cyrus_conf import (
    DEFAULT_SERVICES_FILE,
    ListenAddress,
    UnixAddress,
    resolve_listen,
)
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.server.listeners import ListenError, bind, describe

log = logging.getLogger("sealmail.imapd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="IMAP with STARTTLS, as cyrus.conf's listen=: host:port, [addr]:port, port, a service "
        "name or a UNIX socket path (repeatable)",
    )
    parser.add_argument(
        "--tls-listen",
        action="append",
        default=[],
        help="the same for imaps, TLS from the first byte (needs tls_server_cert; repeatable)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def _addresses(config: ImapdConfig, texts: list[str], option: str) -> list[ListenAddress]:
    return [
        address
        for text in texts
        for address in resolve_listen(
            text,
            "tcp",
            config.configdirectory,
            DEFAULT_SERVICES_FILE,
            unix_mode=config.integer("unix_socket_mode"),
            unix_group=config.string("unix_socket_group"),
            path=option,
        )
    ]


def run(args: argparse.Namespace) -> int:
    from sealmail.server import runtime
    from sealmail.server.imapd import build_service, serve

    config = load_imapd_conf(args.config)
    if not args.listen and not args.tls_listen:
        print("sealmail.imapd: give --listen and/or --tls-listen", file=sys.stderr)
        return 64  # EX_USAGE
    plain_addresses = _addresses(config, args.listen, "--listen")
    tls_addresses = _addresses(config, args.tls_listen, "--tls-listen")
    # Both services are built (and the certificate checked) before any socket is bound.
    plain = build_service(config, [])
    imaps = (
        build_service(config, ["-s"], service_name="imaps", store=plain.store)
        if tls_addresses
        else None
    )
    plain_sockets: list[socket.socket] = []
    tls_sockets: list[socket.socket] = []
    try:
        for address in plain_addresses:
            plain_sockets += bind(address)
        for address in tls_addresses:
            tls_sockets += bind(address)
    except (ListenError, OSError) as exc:
        for sock in plain_sockets + tls_sockets:
            sock.close()
        plain.close()
        print(f"sealmail.imapd: {exc}", file=sys.stderr)
        return 71  # EX_OSERR
    for address in plain_addresses:
        log.info("imapd: listening on %s", describe(address))
    for address in tls_addresses:
        log.info("imapd: listening on %s (imaps)", describe(address))
    services = [(plain, plain_sockets)]
    if imaps is not None:
        services.append((imaps, tls_sockets))
    try:
        runtime.run(serve(services))
    finally:
        for address in plain_addresses + tls_addresses:
            if isinstance(address, UnixAddress):
                address.path.unlink(missing_ok=True)
        plain.close()  # closes the store both services share
    return 0
