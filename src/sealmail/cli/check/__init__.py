"""`sealmail check [-c MTA_DIR] [-C IMAPD_CONF] [-M CYRUS_CONF] [--json]`: read both halves and
say, file and line, what Postfix's CYRUS_README (the seed) warns about.

The seed's warnings are about the seam between the MTA and the store, which neither half can see
alone: each check below reads main.cf/master.cf (and the tables they name), imapd.conf and
cyrus.conf together.

- `socket`: a `unix:` next hop of an lmtp transport (mailbox_transport, local_transport,
  fallback_transport, transport_maps) that no cyrus.conf lmtpd service listens on; a relative
  path is under queue_directory (seed 2.1 NOTE, 2.1.1). An `inet:` port no service listens on.
- `socket-access`: mail_owner cannot connect to that socket (seed 2.1: "make sure that both the
  user id that Cyrus runs under and the Postfix user id can access the socket").
- `local`: mailbox_transport or fallback_transport set, but master.cf has no `local` service.
- `open-lmtp`: `lmtpd -a` on TCP with no hosts.allow/hosts.deny rule for its service (seed 2.3).
- `password-map`: a password map entry whose key is no next hop of its transport, whose user is
  not in lmtp_admins or not in the sasldb, or a map mail_owner cannot read (seed 2.2.1.2).
- `plaintext`: PLAIN/LOGIN over TCP without TLS, on either side (seed 2.2.1.2).
- `delimiter`: recipient_delimiter set on one side only, or differently (seed 8.1, 8.2).
- `downcase`: lmtp_downcase_rcpt off (seed 8.3).
- `recipient-limit`: an lmtp transport's `_destination_recipient_limit` so large that lmtpd's
  worst case for the whole batch passes lmtp_data_done_timeout, or above lmtpd's
  lmtp_max_recipients (seed 6).
- `pipe`: a pipe(8) `argv=` program that does not exist, or that `user=` cannot run (seed 3, 9.1).
- `post-right`: a postuser (shared) folder or a user's folder that does not give `anyone` the
  `p` right, so plus-addressed mail goes to the INBOX or is refused (seed 8.1, 8.2).

Exit status 0 when nothing is found, 1 otherwise; 78 when a file cannot be read as configuration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

from sealmail.cli.check.delivery import (
    check_delimiter,
    check_downcase,
    check_pipes,
    check_post_rights,
    check_recipient_limits,
)
from sealmail.cli.check.model import Finding, Halves
from sealmail.cli.check.sasl import check_password_maps, check_plaintext
from sealmail.cli.check.sockets import check_local_service, check_open_lmtp, check_sockets
from sealmail.config.cyrus_conf import DEFAULT_CYRUS_CONF_PATH, load_cyrus_conf
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, load_imapd_conf
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, load_mta_config

CHECKS = (
    check_sockets,
    check_local_service,
    check_open_lmtp,
    check_password_maps,
    check_plaintext,
    check_delimiter,
    check_downcase,
    check_pipes,
    check_post_rights,
    check_recipient_limits,
)


def run_checks(halves: Halves) -> list[Finding]:
    return [finding for check in CHECKS for finding in check(halves)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="mta_dir", metavar="MTA_DIR", default=None,
                        help=f"the MTA's configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-C", dest="config", metavar="IMAPD_CONF", default=None,
                        help=f"the store's imapd.conf (default {DEFAULT_CONFIG_PATH})")
    parser.add_argument("-M", dest="cyrus_conf", metavar="CYRUS_CONF", default=None,
                        help=f"the store's cyrus.conf (default {DEFAULT_CYRUS_CONF_PATH})")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")


def load_halves(args: argparse.Namespace) -> Halves:
    """Each half that is there: a file named on the command line must exist."""
    mta_dir = args.mta_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    imapd_path = args.config or DEFAULT_CONFIG_PATH
    cyrus_path = args.cyrus_conf or DEFAULT_CYRUS_CONF_PATH
    named = {"mta": args.mta_dir, "imapd": args.config, "cyrus": args.cyrus_conf}
    for key, path in (("mta", Path(mta_dir) / "main.cf"), ("imapd", Path(imapd_path)),
                      ("cyrus", Path(cyrus_path))):
        if named[key] and not path.exists():
            raise FileNotFoundError(str(path))
    mta = load_mta_config(mta_dir) if (Path(mta_dir) / "main.cf").exists() else None
    imapd = load_imapd_conf(imapd_path) if Path(imapd_path).exists() else None
    cyrus = load_cyrus_conf(cyrus_path) if Path(cyrus_path).exists() else None
    return Halves(mta, imapd, cyrus)


@contextlib.contextmanager
def only_warnings() -> Iterator[None]:
    """What the loaders log at a daemon's start (old names, and so on) is no finding: keep
    sealmail's loggers to warnings meanwhile, and give the level back (tests run commands
    in-process)."""
    logger = logging.getLogger("sealmail")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def run(args: argparse.Namespace) -> int:
    with only_warnings():
        return check(args)


def check(args: argparse.Namespace) -> int:
    try:
        halves = load_halves(args)
    except FileNotFoundError as exc:
        print(f"sealmail check: {exc}: no such file", file=sys.stderr)
        return 78
    findings = run_checks(halves)
    if args.json:
        print(json.dumps([asdict(f) for f in findings], indent=2))
    else:
        for finding in findings:
            print(finding.render())
    return 1 if findings else 0
