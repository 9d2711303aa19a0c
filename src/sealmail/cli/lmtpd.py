"""`sealmail lmtpd`: the store's LMTP server, standalone (master runs it from cyrus.conf)."""

from __future__ import annotations

import argparse

from sealmail.cli.daemon import add_daemon_arguments, run_daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "LMTP", default="lmtpsocket")
    parser.add_argument(
        "-a", dest="no_auth", action="store_true",
        help="TCP clients need no authentication (the seed's section 2.3; trusted networks only)",
    )


def run(args: argparse.Namespace) -> int:
    from sealmail.config.options import IMAPD
    from sealmail.server.lmtpd import build_service

    return run_daemon(
        args, "lmtpd", build_service, argv=["-a"] if args.no_auth else [],
        default_listen=lambda config: config.get(IMAPD.lmtpsocket) or "",
    )
