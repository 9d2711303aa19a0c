"""`sealmail lmtpd`: the store's LMTP server, standalone (master runs it from cyrus.conf later)."""

from __future__ import annotations

import argparse
import logging
import sys

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.server.listeners import ListenError, bind, parse_listen

log = logging.getLogger("sealmail.lmtpd")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help="UNIX socket path, host:port, [addr]:port or port (repeatable; default: lmtpsocket)",
    )
    parser.add_argument(
        "-a",
        dest="no_auth",
        action="store_true",
        help="TCP clients need no authentication (the seed's section 2.3; trusted networks only)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def run(args: argparse.Namespace) -> int:
    from sealmail.delivery.engine import DeliveryEngine
    from sealmail.server import runtime
    from sealmail.server.lmtpd import LmtpService, serve
    from sealmail.store.disk import DiskStore

    config = load_imapd_conf(args.config)
    specs = [parse_listen(text) for text in args.listen] or [
        parse_listen(config.string("lmtpsocket") or "")
    ]
    if args.no_auth and any(not spec.is_unix for spec in specs):
        log.warning(
            "lmtpd: -a given: TCP clients are not authenticated (protect the port with "
            "hosts.allow or a firewall)"
        )
    store = DiskStore(config)
    engine = DeliveryEngine(config, store, store.duplicates())
    try:
        sockets = [
            sock
            for spec in specs
            for sock in bind(
                spec, config.integer("unix_socket_mode"), config.string("unix_socket_group")
            )
        ]
    except (ListenError, OSError) as exc:
        print(f"sealmail lmtpd: {exc}", file=sys.stderr)
        return 71  # EX_OSERR
    for spec in specs:
        log.info("lmtpd: listening on %s", spec)
    service = LmtpService(config, engine, trust_tcp=args.no_auth)
    try:
        runtime.run(serve(service, sockets))
    finally:
        for spec in specs:
            if spec.path is not None:
                spec.path.unlink(missing_ok=True)
        store.close()
    return 0
