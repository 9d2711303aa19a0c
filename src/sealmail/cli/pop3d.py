"""`sealmail pop3d`: POP3 (and pop3s) access to the store's INBOXes, standalone.

Under `sealmail master` the same daemon runs from cyrus.conf (`pop3 cmd="pop3d"`, `pop3s
cmd="pop3d -s"`) through `sealmail.server.pop3d.build_service`.
"""

from __future__ import annotations

import argparse

from sealmail.cli.daemon import add_daemon_arguments, run_daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "POP3 with STLS", tls_name="pop3s")


def run(args: argparse.Namespace) -> int:
    from sealmail.server.pop3d import build_service

    return run_daemon(args, "pop3d", build_service, tls_name="pop3s")
