"""`sealmail imapd`: IMAP (and imaps) access to the store, standalone.

Under `sealmail master` the same daemon runs from cyrus.conf (`imap cmd="imapd"`, `imaps
cmd="imapd -s"`) through `sealmail.server.imapd.build_service`.
"""

from __future__ import annotations

import argparse

from sealmail.cli.daemon import add_daemon_arguments, run_daemon


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_daemon_arguments(parser, "IMAP with STARTTLS", tls_name="imaps")


def run(args: argparse.Namespace) -> int:
    from sealmail.server.imapd import build_service

    return run_daemon(args, "imapd", build_service, tls_name="imaps")
