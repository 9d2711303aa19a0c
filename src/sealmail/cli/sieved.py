"""`sealmail sieved`: ManageSieve (RFC 5804) for users' Sieve scripts, standalone.

Under `sealmail master` the same daemon runs from cyrus.conf (`sieve cmd="sieved"
listen="127.0.0.1:4190"`) through `sealmail.server.sieved.build_service`.
"""

from __future__ import annotations

import argparse

from sealmail.cli.daemon import add_daemon_arguments, run_daemon

DEFAULT_LISTEN = "127.0.0.1:4190"  # RFC 5804 1.8: the registered port is 4190


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "ManageSieve", default=DEFAULT_LISTEN)


def run(args: argparse.Namespace) -> int:
    from sealmail.server.sieved import build_service

    return run_daemon(args, "sieved", build_service, default_listen=lambda _: DEFAULT_LISTEN)
