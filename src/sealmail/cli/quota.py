"""`sealmail quota [-C IMAPD_CONF] [-f] [ROOT...]`: Cyrus's quota(8).

Reports every quota root (or those whose names start with a ROOT given) with its limits and
usage, in Cyrus's columns; `-f` first recounts each root's usage from its mailboxes' messages and
repairs the counters, saying on standard error what changed (`ROOT: STORAGE usage was X, now Y`,
as Cyrus does). Each root is repaired in its own short transaction, so a running lmtpd goes on
delivering, and deliveries that race the recount are counted exactly once.
"""

from __future__ import annotations

import argparse
import sys

from sealmail.cli.progress import Progress
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.store.api import QuotaAdmin, QuotaUsage
from sealmail.store.backends import open_store
from sealmail.store.errors import StoreError
from sealmail.store.names import Namespace

HEADER = "   Quota   % Used     Used             Resource Root"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-C", dest="config", metavar="IMAPD_CONF", default=DEFAULT_CONFIG_PATH,
        help=f"imapd.conf to use (default {DEFAULT_CONFIG_PATH})",
    )
    parser.add_argument(
        "-f", dest="fix", action="store_true",
        help="recount usage from the mailboxes and repair it first",
    )
    parser.add_argument(
        "roots", nargs="*", metavar="ROOT", help="only quota roots starting with ROOT"
    )


def report_lines(usages: list[QuotaUsage], names: Namespace) -> list[str]:
    """Cyrus 3's report: one line per resource of each root (limit, percent, used, name)."""
    lines = [HEADER]
    for usage in usages:
        root = names.to_external(usage.root)
        resources = (
            ("STORAGE", usage.storage_limit, usage.storage_used // 1024),
            ("MESSAGE", usage.messages_limit, usage.messages_used),
        )
        for resource, limit, used in resources:
            if limit is None:
                head = " " * 17
            elif limit == 0:
                head = "       0         "
            else:
                head = f" {limit:7d} {used * 100 // limit:8d}"
            lines.append(f"{head} {used:8d} {resource:>20} {root}")
    return lines


def selected(usages: list[QuotaUsage], prefixes: list[str]) -> list[QuotaUsage]:
    if not prefixes:
        return usages
    return [u for u in usages if any(u.root.startswith(prefix) for prefix in prefixes)]


def run(args: argparse.Namespace) -> int:
    config = load_imapd_conf(args.config)
    names = Namespace(config.hierarchy_separator)
    try:
        store = open_store(config)
    except StoreError as exc:
        print(f"sealmail quota: {exc}", file=sys.stderr)
        return 1
    try:
        if not isinstance(store, QuotaAdmin):
            print("sealmail quota: this store keeps no quota counters", file=sys.stderr)
            return 1
        prefixes = [names.to_internal(root) for root in args.roots]
        usages = selected(store.quota_roots(), prefixes)
        if args.fix:
            with Progress("quota -f", len(usages)) as progress:
                for usage in usages:
                    for change in store.repair_quota(usage.root):
                        progress.write(
                            f"{names.to_external(change.root)}: {change.resource} usage was"
                            f" {change.was}, now {change.now}"
                        )
                    progress.step(names.to_external(usage.root))
            usages = selected(store.quota_roots(), prefixes)
        for line in report_lines(usages, names):
            print(line)
        return 0
    except StoreError as exc:
        print(f"sealmail quota: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()
