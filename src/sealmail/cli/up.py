"""`sealmail up`: a self-contained instance under one local directory, loopback only.

On first use it writes `etc/imapd.conf` and `etc/cyrus.conf` (kept afterwards, so an operator can
edit them), creates the demo user's mailbox and SASL secrets, and then runs `sealmail master` in
the foreground until Ctrl-C, exactly as an operator would run it from those two files.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sealmail.config.imapd_conf import load_imapd_conf, render_imapd_conf

DEMO_USER = "demo"
DEMO_PASSWORD = "demo"  # documented in README.md; a loopback-only demonstration instance


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
        help="loopback port of LMTP over TCP (default 2003, the seed's)",
    )
    parser.add_argument(
        "--pop3-port", type=int, default=1110, help="loopback port of POP3 (default 1110)"
    )
    parser.add_argument(
        "--sieve-port", type=int, default=4190, help="loopback port of ManageSieve (default 4190)"
    )
    parser.add_argument(
        "--smtp-port", type=int, default=2525, help="loopback port of SMTP in (default 2525)"
    )
    parser.add_argument(
        "--imap-port", type=int, default=1143, help="loopback port of IMAP (default 1143)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")


def cyrus_conf_text(
    instance: Path, lmtp_port: int, pop3_port: int, sieve_port: int, imap_port: int
) -> str:
    return f"""# sealmail instance made by `sealmail up`; edit freely, it is kept.
# The seed's cyrus.conf entries, on loopback only.
START {{
  recover   cmd="reconstruct"
}}

SERVICES {{
  lmtpunix  cmd="lmtpd" listen="{instance}/lib/socket/lmtp" prefork=1
  lmtp      cmd="lmtpd" listen="127.0.0.1:{lmtp_port}" prefork=1 maxchild=20
  imap      cmd="imapd" listen="127.0.0.1:{imap_port}" prefork=1 maxchild=100
  pop3      cmd="pop3d" listen="127.0.0.1:{pop3_port}" prefork=1 maxchild=50
  sieve     cmd="sieved" listen="127.0.0.1:{sieve_port}" prefork=1 maxchild=20
}}

EVENTS {{
  duplicates cmd="expire -E 3" at=0400
}}
"""


def prepare(
    instance: Path,
    lmtp_port: int = 2003,
    pop3_port: int = 1110,
    sieve_port: int = 4190,
    imap_port: int = 1143,
) -> tuple[Path, Path]:
    """Create the instance's files once; return the paths of imapd.conf and cyrus.conf."""
    instance = instance.resolve()
    etc = instance / "etc"
    imapd_conf, cyrus_conf = etc / "imapd.conf", etc / "cyrus.conf"
    etc.mkdir(parents=True, exist_ok=True)
    if not imapd_conf.exists():
        imapd_conf.write_text(
            "# sealmail instance made by `sealmail up`; edit freely, it is kept.\n"
            "# allowplaintext: the demo has no certificate; set tls_server_cert and remove it.\n"
            + render_imapd_conf(
                {
                    "configdirectory": instance / "lib",
                    "partition-default": instance / "spool",
                    "servername": "localhost",
                    "admins": "admin",
                    "lmtp_admins": "lmtpuser",
                    "postuser": "bb",
                    "allowplaintext": True,
                    "unix_socket_mode": 0o600,
                    "hosts_allow": etc / "hosts.allow",
                    "hosts_deny": etc / "hosts.deny",
                }
            )
        )
    if not cyrus_conf.exists():
        cyrus_conf.write_text(
            cyrus_conf_text(instance, lmtp_port, pop3_port, sieve_port, imap_port)
        )
    return imapd_conf, cyrus_conf


def mta_config(instance: Path, smtp_port: int) -> Path:
    """The MTA's main.cf and master.cf (kept once written): SMTP in on loopback, local mail to
    the store over LMTP with local_transport, as the seed's section 6 does it."""
    instance = instance.resolve()
    directory = instance / "etc" / "mta"
    directory.mkdir(parents=True, exist_ok=True)
    if not (directory / "main.cf").exists():
        (directory / "main.cf").write_text(
            "# sealmail's MTA for the instance made by `sealmail up`; edit freely, it is kept.\n"
            f"queue_directory = {instance}/mta/spool\n"
            f"data_directory = {instance}/mta/data\n"
            "myhostname = localhost\n"
            "mydestination = localhost, $myhostname\n"
            "inet_interfaces = loopback-only\n"
            "mynetworks = 127.0.0.0/8\n"
            f"local_transport = cyrus:unix:{instance}/lib/socket/lmtp\n"
            "cyrus_destination_recipient_limit = 300\n"
            + (
                # A private instance made by root lies where mail_owner (postfix) may not
                # reach: a single-user set-up, which allow_root_services is for.
                "mail_owner = root\nallow_root_services = yes\n" if os.geteuid() == 0 else ""
            )
        )
    if not (directory / "master.cf").exists():
        (directory / "master.cf").write_text(
            f"127.0.0.1:{smtp_port} inet n - n - - smtpd\n"
            "# the seed's section 9.1 entry, for LMTP over the store's UNIX socket\n"
            "cyrus     unix  -       n       n       -       -       lmtp\n"
            "  -o lmtp_cache_connection=yes\n"
            "error     unix  -       -       n       -       -       error\n"
        )
    return directory


def create_demo_user(imapd_conf: Path) -> None:
    from sealmail.auth.sasldb import SaslDB
    from sealmail.proto.sasl import Identity
    from sealmail.store.disk import DiskStore

    config = load_imapd_conf(imapd_conf)
    with DiskStore(config) as store:
        if store.mailbox(f"user.{DEMO_USER}") is not None:
            return
        store.create_mailbox(f"user.{DEMO_USER}")
    SaslDB.from_config(config).set_password(Identity(DEMO_USER, config.servername), DEMO_PASSWORD)


def run(args: argparse.Namespace) -> int:
    import subprocess

    from sealmail.cli import master

    imapd_conf, cyrus_conf = prepare(
        args.dir, args.lmtp_port, args.pop3_port, args.sieve_port, args.imap_port
    )
    mta = mta_config(args.dir, args.smtp_port)
    create_demo_user(imapd_conf)
    config = load_imapd_conf(imapd_conf)
    socket_path = config.configdirectory / "socket" / "lmtp"
    print(
        f"sealmail instance in {args.dir.resolve()} (loopback only)\n"
        f"  imapd.conf : {imapd_conf}\n"
        f"  cyrus.conf : {cyrus_conf}\n"
        f"  LMTP       : {socket_path} (UNIX socket, trusted as postman)\n"
        f"               127.0.0.1:{args.lmtp_port} (TCP, SASL as lmtpuser: set its password with\n"
        f"               sealmail saslpasswd2 -C {imapd_conf} -c lmtpuser)\n"
        f"  IMAP       : 127.0.0.1:{args.imap_port}\n"
        f"  POP3       : 127.0.0.1:{args.pop3_port}\n"
        f"  ManageSieve: 127.0.0.1:{args.sieve_port} (Sieve runs at every delivery)\n"
        f"  SMTP in    : 127.0.0.1:{args.smtp_port} (the MTA: {mta}/main.cf, master.cf)\n"
        f"  demo user  : {DEMO_USER} / password {DEMO_PASSWORD} (mailbox user.{DEMO_USER})\n"
        f"Try: python3 -c \"import smtplib; s = smtplib.LMTP('{socket_path}'); "
        f"print(s.sendmail('me@localhost', ['{DEMO_USER}@localhost'], "
        f"'Subject: hello\\r\\n\\r\\nhi\\r\\n'))\"\n"
        f"     swaks --server 127.0.0.1:{args.smtp_port} --to {DEMO_USER}@localhost\n"
        f"     curl pop3://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{args.pop3_port}/1\n"
        f"     curl 'imap://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{args.imap_port}/INBOX;UID=1'\n"
        f"Stop with Ctrl-C.",
        file=sys.stderr,
    )
    master_args = argparse.Namespace(
        config=str(imapd_conf),
        cyrus_conf=str(cyrus_conf),
        pidfile=None,
        foreground=True,
        log_file=None,
        services_file="/etc/services",
        shutdown_timeout=30.0,
    )
    # The MTA runs beside the store's master, as Postfix beside Cyrus; both stop together.
    mta_process = subprocess.Popen(
        [sys.executable, "-m", "sealmail", "postfix", "-c", str(mta), "start-fg"],
        stdin=subprocess.DEVNULL,
    )
    try:
        return master.run(master_args)
    finally:
        mta_process.terminate()
        try:
            mta_process.wait(30)
        except subprocess.TimeoutExpired:
            mta_process.kill()
