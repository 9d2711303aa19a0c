"""`sealmail sweep [-C IMAPD_CONF] [--grace SECONDS]`: remove what nothing names any more from a
PostgreSQL store (message rows and blobs), once older than store_blob_grace.

Run it from cron on any node or on all of them: one sweeps at a time (a leader lease in the
database), the others say so and exit 0. The disk store needs no sweep (its files go with their
last link).
"""

from __future__ import annotations

import argparse
import sys

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.store.errors import StoreError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-C", dest="config", metavar="IMAPD_CONF", default=DEFAULT_CONFIG_PATH,
        help=f"imapd.conf to use (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "--grace", type=float, default=None, metavar="SECONDS",
        help="keep what became unnamed less than SECONDS ago (default: store_blob_grace)",
    )


def run(args: argparse.Namespace) -> int:
    config = load_imapd_conf(args.config)
    if config.get(IMAPD.store_backend) != "postgresql":
        print("sealmail sweep: only a store_backend: postgresql store needs sweeping",
              file=sys.stderr)
        return 2
    if args.grace is not None and args.grace < 0:
        print("sealmail sweep: --grace must not be negative", file=sys.stderr)
        return 2
    from sealmail.store.postgres import PostgresStore

    try:
        with PostgresStore.from_config(config) as store:
            result = store.sweep(args.grace)
    except StoreError as exc:
        print(f"sealmail sweep: {exc}", file=sys.stderr)
        return 1
    if result is None:
        print("another node is sweeping")
    else:
        print(f"removed {result.messages} messages and {result.blobs} blobs"
              f" ({result.blob_bytes} bytes)")
    return 0
