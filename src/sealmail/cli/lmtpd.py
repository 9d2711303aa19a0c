"""`sealmail lmtpd`: the store's LMTP server, standalone (master runs it from cyrus.conf later)."""

from __future__ import annotations

import argparse
import logging
import sys

from sealmail.config.cyrus_conf import DEFAULT_SERVICES_FILE, UnixAddress, resolve_listen
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.server.listeners import ListenError, bind, describe

log = logging.getLogger("sealmail.lmtpd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="as cyrus.conf's listen=: /socket/path, host:port, [addr]:port, port or a service "
        "name (repeatable; default: lmtpsocket)",
    )
    parser.add_argument(
        "-a",
        dest="no_auth",
        action="store_true",
        help="TCP clients need no authentication (the seed's section 2.3; trusted networks only)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sealmail.server import runtime
    from sealmail.server.lmtpd import build_service, serve

    config = load_imapd_conf(args.config)
    texts = args.listen or [config.string("lmtpsocket") or ""]
    addresses = [
        address
        for text in texts
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
    try:
        sockets = [sock for address in addresses for sock in bind(address)]
    except (ListenError, OSError) as exc:
        print(f"sealmail lmtpd: {exc}", file=sys.stderr)
        return 71  # EX_OSERR
    for address in addresses:
        log.info("lmtpd: listening on %s", describe(address))
    service = build_service(config, ["-a"] if args.no_auth else [])
    try:
        runtime.run(serve(service, sockets))
    finally:
        for address in addresses:
            if isinstance(address, UnixAddress):
                address.path.unlink(missing_ok=True)
    return 0
