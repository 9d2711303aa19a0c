"""`sealmail up`: a self-contained instance under one local directory, loopback only.

On first use it writes `etc/imapd.conf` and `etc/cyrus.conf` (kept afterwards, so an operator can
edit them), creates the demo user's mailbox and SASL secrets, and then runs `sealmail master` in
the foreground until Ctrl-C, exactly as an operator would run it from those two files.

One `up` holds an instance at a time (an flock on `up.pid`); a second one says which process
holds it and stops before printing anything else. Started by a normal user, everything runs as
that user. Started by root, the services run as the system account `sealmail` (created on
first use, as a package's install script would), which must be able to reach the instance
directory: a directory under a home of mode 0700 (/root) is refused with the reason.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import grp
import logging
import os
import pwd
import subprocess
import sys
import sysconfig
from pathlib import Path

from sealmail.config.imapd_conf import load_imapd_conf, render_imapd_conf
from sealmail.mta.aliases import build_alias_database

log = logging.getLogger("sealmail.up")

SERVICE_ACCOUNT = "sealmail"  # what the instance's services run as when root starts `up`
EX_TEMPFAIL, EX_CONFIG = 75, 78
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
            + "# The account the services run as when root starts them (a normal user's instance\n"
            + "# runs as that user).\n"
            + f"cyrus_user: {SERVICE_ACCOUNT}\n"
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
            "# Read by local(8) only, i.e. once mailbox_transport replaces local_transport\n"
            "# (seed 2.1); `sealmail newaliases -c` rebuilds it after an edit.\n"
            f"alias_maps = hash:{directory}/aliases\n"
            f"alias_database = hash:{directory}/aliases\n"
            f"maillog_file = {maillog_path(instance)}\n"
            "# The account the MTA runs as when root starts it (a normal user's instance runs\n"
            "# as that user).\n"
            f"mail_owner = {SERVICE_ACCOUNT}\n"
        )
    if not (directory / "master.cf").exists():
        (directory / "master.cf").write_text(
            f"127.0.0.1:{smtp_port} inet n - n - - smtpd\n"
            "# the seed's section 9.1 entry, for LMTP over the store's UNIX socket\n"
            "cyrus     unix  -       n       n       -       -       lmtp\n"
            "  -o lmtp_cache_connection=yes\n"
            "error     unix  -       -       n       -       -       error\n"
            "# local(8): aliases and .forward, then mailbox_transport (seed 2.1, 5.2)\n"
            "local     unix  -       n       n       -       -       local\n"
        )
    aliases = directory / "aliases"
    if not aliases.exists():
        aliases.write_text(
            "# aliases(5) for local(8); `sealmail newaliases -c DIR` after an edit.\n"
            "# postmaster: demo\n"
        )
        build_alias_database(aliases)
    return directory


def maillog_path(instance: Path) -> Path:
    return instance / "mta" / "data" / "maillog"


def hold_instance(instance: Path) -> int | None:
    """The instance's lock (flock on up.pid, our pid written in it), or None when another `up`
    holds it. The descriptor stays open for the life of the process."""
    fd = os.open(instance / "up.pid", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def holder(instance: Path) -> str:
    try:
        return (instance / "up.pid").read_text().strip() or "?"
    except OSError:
        return "?"


def service_account() -> pwd.struct_passwd:
    """The system account the services run as under root, created on first use."""
    try:
        return pwd.getpwnam(SERVICE_ACCOUNT)
    except KeyError:
        pass
    done = subprocess.run(
        ["useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "--no-create-home",
         "--shell", "/usr/sbin/nologin", "--comment", "sealmail services", SERVICE_ACCOUNT],
        check=False,
    )
    try:
        account = pwd.getpwnam(SERVICE_ACCOUNT)  # another `up` may have created it meanwhile
    except KeyError:
        raise subprocess.CalledProcessError(done.returncode, "useradd") from None
    if done.returncode == 0:
        log.info("created the system account %s for the instance's services", SERVICE_ACCOUNT)
    return account


def blocking_directory(path: Path, account: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to `path` that `account` cannot enter, if any."""
    groups = {account.pw_gid} | {
        g.gr_gid for g in grp.getgrall() if account.pw_name in g.gr_mem
    }
    for directory in [*reversed(path.parents), path]:
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            allowed = st.st_mode & 0o100
        elif st.st_gid in groups:
            allowed = st.st_mode & 0o010
        else:
            allowed = st.st_mode & 0o001
        if not allowed:
            return directory
    return None


def unreachable(instance: Path, account: pwd.struct_passwd) -> str | None:
    """Why `account` could not run the instance (its directory, this Python, this sealmail),
    or None."""
    needed = [
        (instance, "give --dir a directory it can reach (e.g. /srv/sealmail-instance)"),
        (Path(sys.executable).resolve(), "install sealmail with a Python it can run (e.g. "
         "Debian's: /usr/bin/python3 -m venv /opt/sealmail)"),
        (Path(sysconfig.get_paths()["stdlib"]).resolve(), "use a Python it can run"),
        (Path(__file__).resolve().parent.parent, "install sealmail where it can read it"),
    ]
    for path, remedy in needed:
        blocked = blocking_directory(path, account)
        if blocked is not None:
            return (f"it cannot enter {blocked} (mode {blocked.stat().st_mode & 0o7777:04o}) "
                    f"to reach {path}: {remedy}, or run sealmail up as a normal user")
    return None


def hand_over(instance: Path, account: pwd.struct_passwd) -> None:
    """What root created for the store (the demo user's mailbox and secrets) becomes the
    service account's; etc/ stays root's and readable."""
    for top in (instance / "lib", instance / "spool"):
        for directory, _, files in os.walk(top):
            for name in [directory, *(os.path.join(directory, f) for f in files)]:
                os.chown(name, account.pw_uid, account.pw_gid)


def create_demo_user(imapd_conf: Path) -> None:
    from sealmail.auth.sasldb import SaslDB
    from sealmail.proto.sasl import Identity
    from sealmail.store.backends import open_store

    config = load_imapd_conf(imapd_conf)
    with contextlib.closing(open_store(config)) as store:
        if store.mailbox(f"user.{DEMO_USER}") is not None:
            return
        store.create_mailbox(f"user.{DEMO_USER}")
    SaslDB.from_config(config).set_password(Identity(DEMO_USER, config.servername), DEMO_PASSWORD)


def banner(args: argparse.Namespace, imapd_conf: Path, cyrus_conf: Path, mta: Path) -> str:
    instance = args.dir.resolve()
    socket_path = load_imapd_conf(imapd_conf).configdirectory / "socket" / "lmtp"
    return (
        f"sealmail instance in {instance} (loopback only)\n"
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
        f"  logs       : the store's on this terminal; the MTA's in the main.cf's maillog_file\n"
        f"               (tail -f {maillog_path(instance)})\n"
        f"Try: python3 -c \"import smtplib; s = smtplib.LMTP('{socket_path}'); "
        f"print(s.sendmail('me@localhost', ['{DEMO_USER}@localhost'], "
        f"'Subject: hello\\r\\n\\r\\nhi\\r\\n'))\"\n"
        f"     swaks --server 127.0.0.1:{args.smtp_port} --to {DEMO_USER}@localhost\n"
        f"     curl pop3://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{args.pop3_port}/1\n"
        f"     curl 'imap://{DEMO_USER}:{DEMO_PASSWORD}@127.0.0.1:{args.imap_port}/INBOX;UID=1'\n"
        f"Stop with Ctrl-C here, or from elsewhere: kill $(cat {instance / 'up.pid'})"
    )


def run(args: argparse.Namespace) -> int:
    from sealmail.cli import master

    instance = args.dir.resolve()
    instance.mkdir(parents=True, exist_ok=True)
    if hold_instance(instance) is None:
        print(f"sealmail up: the instance in {instance} is already running (pid "
              f"{holder(instance)}); stop it with Ctrl-C in its terminal, or kill that pid",
              file=sys.stderr)
        return EX_TEMPFAIL
    account = None
    if os.geteuid() == 0:
        account = service_account()
        refusal = unreachable(instance, account)
        if refusal:
            print(f"sealmail up: started by root, the services run as {account.pw_name}; "
                  f"{refusal}", file=sys.stderr)
            return EX_CONFIG
    imapd_conf, cyrus_conf = prepare(
        args.dir, args.lmtp_port, args.pop3_port, args.sieve_port, args.imap_port
    )
    mta = mta_config(args.dir, args.smtp_port)
    create_demo_user(imapd_conf)
    if account is not None:
        hand_over(instance, account)
    master_args = argparse.Namespace(
        config=str(imapd_conf),
        cyrus_conf=str(cyrus_conf),
        pidfile=None,
        foreground=True,
        log_file=None,
        services_file="/etc/services",
        shutdown_timeout=30.0,
        on_ready=lambda: print(banner(args, imapd_conf, cyrus_conf, mta), file=sys.stderr),
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
