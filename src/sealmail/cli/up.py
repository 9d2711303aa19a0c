"""`sealmail up`: a self-contained instance under one local directory, loopback only.

Writes an imapd.conf on first use (kept afterwards, so an operator can edit it), creates the demo
user's mailbox, and runs the store's services in the foreground until Ctrl-C. Services join here as
they land.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sealmail.config.imapd_conf import load_imapd_conf, render_imapd_conf

DEMO_USER = "demo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dir",
        default="sealmail-instance",
        type=Path,
        help="instance directory (default: ./sealmail-instance)",
    )
    parser.add_argument(
        "--lmtp-port",
        type=int,
        default=2003,
        help="loopback TCP port of lmtpd (default: 2003, the seed's lmtp port)",
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def prepare(instance: Path) -> Path:
    """Create the instance's files once; return its imapd.conf path."""
    instance = instance.resolve()
    conf = instance / "etc" / "imapd.conf"
    if not conf.exists():
        conf.parent.mkdir(parents=True, exist_ok=True)
        conf.write_text(
            "# sealmail instance made by `sealmail up`; edit freely, it is kept.\n"
            + render_imapd_conf(
                {
                    "configdirectory": instance / "lib",
                    "partition-default": instance / "spool",
                    "servername": "localhost",
                    "admins": "admin",
                    "lmtp_admins": "lmtpuser",
                    "postuser": "bb",
                    "unix_socket_mode": 0o600,
                }
            )
        )
    return conf


def run(args: argparse.Namespace) -> int:
    from sealmail.cli import lmtpd
    from sealmail.store.disk import DiskStore

    conf_path = prepare(args.dir)
    config = load_imapd_conf(conf_path)
    store = DiskStore(config)
    try:
        if store.mailbox(f"user.{DEMO_USER}") is None:
            store.create_mailbox(f"user.{DEMO_USER}")
    finally:
        store.close()
    socket_path = config.string("lmtpsocket")
    print(
        f"sealmail instance in {args.dir.resolve()}\n"
        f"  imapd.conf : {conf_path}\n"
        f"  LMTP       : {socket_path} (UNIX socket, trusted as postman)\n"
        f"               127.0.0.1:{args.lmtp_port} (TCP, loopback only)\n"
        f"  demo user  : {DEMO_USER} (mailbox user.{DEMO_USER})\n"
        f"Try: python3 -c \"import smtplib; s = smtplib.LMTP('{socket_path}'); "
        f"print(s.sendmail('me@localhost', ['{DEMO_USER}@localhost'], "
        f"'Subject: hello\\r\\n\\r\\nhi\\r\\n'))\"\n"
        f"Then: sealmail mailbox -C {conf_path} list",
        file=sys.stderr,
    )
    lmtpd_args = argparse.Namespace(
        config=str(conf_path),
        listen=[socket_path, f"127.0.0.1:{args.lmtp_port}"],
        no_auth=True,
        verbose=args.verbose,
    )
    return lmtpd.run(lmtpd_args)
