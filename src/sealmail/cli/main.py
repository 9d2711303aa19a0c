"""The `sealmail` command: every tool of the MTA and the store as a subcommand.

Each subcommand lives in its own module with `add_arguments(parser)` and `run(args) -> int`, and is
imported only when used, so `sealmail deliver` (run per message by a pipe transport) starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from sealmail import __version__
from sealmail.config.imapd_conf import ConfigError

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
    "postconf": ("sealmail.cli.postconf", "show or edit the MTA's main.cf and master.cf"),
    "postmap": ("sealmail.cli.postmap", "build or query MTA lookup tables"),
    "newaliases": ("sealmail.cli.newaliases", "rebuild the alias database (alias_database)"),
    "postalias": ("sealmail.cli.newaliases", "build or query an aliases(5) database"),
    "postfix": ("sealmail.cli.postfix", "start, stop, reload or check the MTA"),
    "sendmail": ("sealmail.cli.sendmail", "post a message to the MTA from standard input"),
    "postqueue": ("sealmail.cli.postqueue", "list (-p) or flush (-f) the MTA's queue"),
    "mailq": ("sealmail.cli.postqueue", "list the MTA's queue (postqueue -p)"),
    "postsuper": ("sealmail.cli.postsuper", "delete, hold or release queued mail"),
    "saslpasswd2": ("sealmail.cli.saslpasswd2", "set or delete a user's password in the sasldb"),
    "sasldblistusers2": ("sealmail.cli.saslpasswd2", "list the users in the sasldb"),
    "sieve-test": ("sealmail.cli.sieve_test", "show what a Sieve script would do with a message"),
}


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
        command.set_defaults(_run=getattr(module, f"run_{name}", None) or module.run)
    return parser


def lean_log_records() -> None:
    """Log records without what sealmail's lines never show: the calling frame, thread and
    multiprocessing names (the logging HOWTO's optimizations; a busy smtpd logs four lines a
    message)."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logMultiprocessing = False


def configure_logging(verbose: bool = False) -> None:
    lean_log_records()
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s[%(process)d]: %(message)s",
        datefmt="%Y-%m-%dT%H:%M:%S",
        stream=sys.stderr,
    )


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = argv[0] if argv and argv[0] in SUBCOMMANDS else None
    args = build_parser(chosen).parse_args(argv)
    configure_logging(getattr(args, "verbose", False))
    try:
        result: int = args._run(args)
    except ConfigError as exc:
        print(f"sealmail {args.command}: {exc}", file=sys.stderr)
        return 78  # EX_CONFIG
    except KeyboardInterrupt:
        return 130
    return result


if __name__ == "__main__":
    sys.exit(main())
