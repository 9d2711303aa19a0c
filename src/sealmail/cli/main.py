"""The `sealmail` command: every tool of the MTA and the store as a subcommand.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`, and is
imported only when used, so `sealmail deliver` (run per message by a pipe transport) starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import logging.handlers
import os
import socket
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from sealmail import __version__
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ConfigError
from sealmail.maillog import BatchingStreamHandler, SecondsFormatter, lean_log_records

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "up": ("sealmail.cli.up", "run a self-contained instance under a local directory"),
    "master": ("sealmail.cli.master", "run the store's services from cyrus.conf"),
    "lmtpd": ("sealmail.cli.lmtpd", "the LMTP delivery server of the store"),
    "pop3d": ("sealmail.cli.pop3d", "the POP3 server of the store (POP3 with STLS, pop3s)"),
    "imapd": ("sealmail.cli.imapd", "the IMAP server of the store (IMAP with STARTTLS, imaps)"),
    "sieved": ("sealmail.cli.sieved", "the ManageSieve server for users' Sieve scripts"),
    "deliver": ("sealmail.cli.deliver", "deliver stdin through lmtpd; LMTP on stdin (-l)"),
    "mailbox": ("sealmail.cli.mailbox", "create, delete, rename, list mailboxes; quotas and ACLs"),
    "mbpath": ("sealmail.cli.mailbox", "print the directory of a mailbox"),
    "reconstruct": ("sealmail.cli.mailbox", "check and repair mailboxes from their files"),
    "expire": ("sealmail.cli.mailbox", "expire old entries of the duplicate delivery database"),
    "sweep": ("sealmail.cli.sweep", "remove unnamed messages and blobs of a PostgreSQL store"),
    "migrate": ("sealmail.cli.migrate", "copy an embedded (disk) store into a PostgreSQL store"),
    "admin": ("sealmail.cli.admin", "doveadm's search, fetch, expunge, quota for -u USER or -A"),
    "cyradm": ("sealmail.cli.cyradm", "administer mailboxes, ACLs and quotas over IMAP (Cyrus's)"),
    "quota": ("sealmail.cli.quota", "report quota roots' usage and limits; repair usage (-f)"),
    "imapd-conf": ("sealmail.cli.imapd_conf", "show imapd.conf options and defaults (-d, -n)"),
    "postconf": ("sealmail.cli.postconf", "show or edit the MTA's main.cf and master.cf"),
    "postmap": ("sealmail.cli.postmap", "build or query MTA lookup tables"),
    "newaliases": ("sealmail.cli.newaliases", "rebuild the alias database (alias_database)"),
    "postalias": ("sealmail.cli.newaliases", "build or query an aliases(5) database"),
    "postfix": ("sealmail.cli.postfix", "start, stop, reload or check the MTA"),
    "sendmail": ("sealmail.cli.sendmail", "post a message to the MTA from standard input"),
    "postqueue": ("sealmail.cli.postqueue", "list (-p, -j) or flush (-f, -i) the MTA's queue"),
    "mailq": ("sealmail.cli.postqueue", "list the MTA's queue (postqueue -p)"),
    "postsuper": ("sealmail.cli.postsuper", "delete, hold or release queued mail"),
    "postcat": ("sealmail.cli.postcat", "show a queued message: envelope, header, body"),
    "qshape": ("sealmail.cli.qshape", "the MTA's queue by domain and age (Postfix's qshape)"),
    "saslpasswd2": ("sealmail.cli.saslpasswd2", "set or delete a user's password in the sasldb"),
    "sasldblistusers2": ("sealmail.cli.saslpasswd2", "list the users in the sasldb"),
    "sieve-test": ("sealmail.cli.sieve_test", "show what a Sieve script would do with a message"),
    "check": ("sealmail.cli.check", "report what CYRUS_README warns about, across both halves"),
    "trace": ("sealmail.cli.trace", "follow one message through both halves' logs"),
    "console": ("sealmail.cli.console", "the web console: queue, trace, quotas, failed logins"),
}


# Store programs that, started by root, go on as imapd.conf's cyrus_user as soon as they have read
# it (Cyrus's become_cyrus()), so every file they make in the store belongs to the account the
# services run as. The daemons switch after binding their listeners (cli/daemon.py); master keeps
# root to bind and runs its children as the account (server/master.py).
STORE_TOOLS = frozenset(
    {"mailbox", "mbpath", "reconstruct", "expire", "quota", "admin", "saslpasswd2",
     "sasldblistusers2", "deliver", "sweep", "migrate"}
)


def become_store_account(args: argparse.Namespace) -> None:
    """Switch a store tool to cyrus_user when root; say once which account it runs as.

    `saslpasswd2 -f FILE` names a file of the operator's choice, not the store's: it stays as is.
    deliver in pipe mode says it only with -v: its standard error is what pipe(8) reports.
    """
    from sealmail.config.imapd_conf import ImapdConfig, load_imapd_conf
    from sealmail.privileges import announce, store_account, switch_to

    if getattr(args, "sasldb", None):
        return
    path = getattr(args, "config", None)
    if path is None and not Path(DEFAULT_CONFIG_PATH).exists():
        config = ImapdConfig()  # saslpasswd2 without -C: the defaults, as it reads them
    else:
        config = load_imapd_conf(path or DEFAULT_CONFIG_PATH)
    quiet = args.command == "deliver" and not args.lmtp
    account = store_account(config, warn_level=logging.DEBUG if quiet else logging.WARNING)
    if account is not None:
        try:
            switch_to(account)
        except OSError as exc:
            print(f"sealmail {args.command}: {exc}", file=sys.stderr)
            raise SystemExit(71) from None  # EX_OSERR
    announce(f"sealmail {args.command}", account, level=logging.DEBUG if quiet else logging.INFO)


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser; with `only`, just that subcommand's module is imported."""
    parser = argparse.ArgumentParser(prog="sealmail", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"sealmail {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        command = sub.add_parser(name, help=help_text, description=help_text)
        if only is not None and name != only:
            continue
        module = importlib.import_module(module_name)
        add = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
        add(command)
        command.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run,
                             _config_failed=getattr(module, "config_failed", None))
    return parser


LOG_FORMAT = "%(asctime)s %(name)s[%(process)d]: %(message)s"
LOG_DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
SYSLOG_SOCKET = "/dev/log"


class HeldLogs(logging.handlers.BufferingHandler):
    """Records kept until the program knows where to log (see `log_off_the_wire`)."""

    def __init__(self) -> None:
        super().__init__(capacity=10_000)

    def shouldFlush(self, record: logging.LogRecord) -> bool:
        return False


def stderr_is_a_socket() -> bool:
    """Under inetd, standard error is the client's connection: nothing may be logged there."""
    try:
        return stat.S_ISSOCK(os.fstat(2).st_mode)
    except OSError:
        return False


def configure_logging(verbose: bool = False) -> None:
    """Log lines go to standard error; when that is a socket (inetd), they are held until
    `log_off_the_wire` has chosen a place."""
    lean_log_records()
    handler: logging.Handler
    if stderr_is_a_socket():
        handler = HeldLogs()
        logging.raiseExceptions = False  # logging's own errors go to stderr: the client's
    else:
        handler = BatchingStreamHandler(sys.stderr)
        handler.setFormatter(SecondsFormatter(LOG_FORMAT, LOG_DATE_FORMAT))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])


def syslog_listening(path: str) -> bool:
    """Whether a syslog daemon takes lines at `path` (SysLogHandler does not say: it ignores a
    failed connection and then loses every line)."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_UNIX, kind) as probe:
            try:
                probe.connect(path)
            except OSError:
                continue
            return True
    return False


def log_off_the_wire(configdirectory: Path, program: str) -> str:
    """Where a program whose standard error is a client's socket logs, and the switch to it:
    syslog (facility mail) when there is a syslog socket, else `configdirectory/PROGRAM.log`, so
    its refusals and errors never vanish; what was held meanwhile goes there first. With
    standard error no socket it stays there. Returns the place, for the start-up line."""
    root = logging.getLogger()
    held = [h for h in root.handlers if isinstance(h, HeldLogs)]
    if not held:
        return "standard error"
    handler: logging.Handler
    if syslog_listening(SYSLOG_SOCKET):
        handler = logging.handlers.SysLogHandler(
            SYSLOG_SOCKET, facility=logging.handlers.SysLogHandler.LOG_MAIL
        )
        handler.setFormatter(logging.Formatter(f"sealmail/{program}[%(process)d]: %(message)s"))
        where = f"syslog ({SYSLOG_SOCKET}, facility mail)"
    else:
        path = configdirectory / f"{program}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(SecondsFormatter(LOG_FORMAT, LOG_DATE_FORMAT))
        where = f"{path} (no syslog socket at {SYSLOG_SOCKET}; standard error is the client's)"
    for old in held:
        root.removeHandler(old)
        for record in old.buffer:
            handler.handle(record)
        old.close()
    root.addHandler(handler)
    return where


def main(argv: Sequence[str] | None = None, *, switch_account: bool | None = None) -> int:
    """The `sealmail` program. Only the process's own command line (`argv` None, or
    `switch_account=True`) may switch the process to another account: a caller that runs a
    subcommand in-process with its own argv (tests do) keeps its account."""
    if switch_account is None:
        switch_account = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    args.switch_account = switch_account
    configure_logging(getattr(args, "verbose", False))
    try:
        if switch_account and args.command in STORE_TOOLS:
            become_store_account(args)
        result: int = args._run(args)
    except ConfigError as exc:
        # A command whose standard error may be a client's socket answers in its protocol.
        answer = getattr(args, "_config_failed", None)
        status = None if answer is None else answer(args, exc)
        if status is not None:
            return int(status)
        print(f"sealmail {args.command}: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
