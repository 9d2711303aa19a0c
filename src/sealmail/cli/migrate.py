"""`sealmail migrate [-C IMAPD_CONF] [--dsn DSN]`: copy the embedded (disk) store of an
imapd.conf into a PostgreSQL database (`--dsn`, or the imapd.conf's store_dsn), keeping every
UID, UIDVALIDITY and modseq, so clients need not resynchronise (docs/scale-out.md).

Stop lmtpd, imapd and pop3d first (the copy is of one moment only if nothing writes); run it
again after an interruption: mailboxes already copied are skipped. Then set store_backend:
postgresql and start the nodes.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ConfigError, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.store.errors import StoreError
from sealmail.store.settings import store_settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-C", dest="config", metavar="IMAPD_CONF", default=DEFAULT_CONFIG_PATH,
        help=f"imapd.conf whose disk store to copy (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--dsn", default=None,
        help="the PostgreSQL database to copy into (default: the imapd.conf's store_dsn)",
    )
    parser.add_argument("-q", dest="quiet", action="store_true", help="no line per mailbox")


def run(args: argparse.Namespace) -> int:
    from sealmail.store.disk import DiskStore
    from sealmail.store.migration import migrate_store
    from sealmail.store.postgres import PostgresStore

    try:
        config = load_imapd_conf(args.config)
        dsn = args.dsn or config.get(IMAPD.store_dsn)
        if not dsn:
            print("sealmail migrate: no --dsn and no store_dsn in imapd.conf", file=sys.stderr)
            return 2
        settings = store_settings(config)
        source_settings = dataclasses.replace(settings, backend="disk", dsn=None)
        target_settings = dataclasses.replace(settings, backend="postgresql", dsn=dsn)
    except ConfigError as exc:
        print(f"sealmail migrate: {exc}", file=sys.stderr)
        return 2
    say = (lambda line: None) if args.quiet else print
    try:
        with DiskStore(source_settings) as source, PostgresStore(target_settings) as target:
            report = migrate_store(source, target, say)
    except StoreError as exc:
        print(f"sealmail migrate: {exc}", file=sys.stderr)
        return 1
    print(f"copied {report.mailboxes} mailboxes ({report.messages} messages),"
          f" {len(report.skipped)} already there; {report.quota_roots} quota roots,"
          f" {report.subscriptions} subscriptions")
    return 0
