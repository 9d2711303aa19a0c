"""`sealmail saslpasswd2` and `sasldblistusers2`: manage the sasldb like Cyrus SASL's tools.

Same options and exit codes as saslpasswd2(8) and sasldblistusers2(8): 0 on success, 1 for usage
and database errors, 7 (libsasl's SASL_BADPARAM) for an empty password. Unlike the original,
sasldblistusers2 exits 1 when it cannot read the database (the original prints "listusers
failed" and exits 0). -a is accepted for compatibility: Cyrus uses it to pick
/etc/sasl2/APPNAME.conf, sealmail takes its settings from -C IMAPD_CONF.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from sealmail.auth.sasldb import SaslDB, SaslDBError, sasldb_path
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.proto.sasl import Identity

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BADPARAM = 7


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", dest="sasldb", metavar="SASLDB", help="use SASLDB as the sasldb")
    parser.add_argument(
        "-C",
        dest="config",
        metavar="IMAPD_CONF",
        help=f"take sasl_sasldb_path, servername from IMAPD_CONF (default {DEFAULT_CONFIG_PATH})",
    )


def add_saslpasswd2_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-p",
        dest="pipe",
        action="store_true",
        help="pipe mode: read one line from stdin, no prompt",
    )
    parser.add_argument("-c", dest="create", action="store_true", help="create the entry")
    parser.add_argument("-d", dest="delete", action="store_true", help="delete the entry")
    parser.add_argument(
        "-n",
        dest="no_plaintext",
        action="store_true",
        help="set no userPassword (PLAIN/LOGIN) verifier, only CRAM-MD5/SCRAM",
    )
    parser.add_argument(
        "-u", dest="realm", metavar="REALM", help="the user's realm (default: servername)"
    )
    parser.add_argument(
        "-a",
        dest="appname",
        metavar="APPNAME",
        help="application name (accepted for compatibility)",
    )
    parser.add_argument(
        "--group", metavar="GROUP", help="create a new sasldb 0640 owned by GROUP (default 0600)"
    )
    _add_common(parser)
    parser.add_argument("user", nargs="?", metavar="USER")


def add_sasldblistusers2_arguments(parser: argparse.ArgumentParser) -> None:
    _add_common(parser)


def _config(path: str | None) -> ImapdConfig:
    if path is not None:
        return load_imapd_conf(path)
    if Path(DEFAULT_CONFIG_PATH).exists():
        return load_imapd_conf(DEFAULT_CONFIG_PATH)
    return ImapdConfig()


def _database(args: argparse.Namespace, config: ImapdConfig) -> SaslDB:
    return SaslDB(args.sasldb if args.sasldb else sasldb_path(config))


def _read_password(pipe: bool) -> str | None:
    """One line from stdin in pipe mode (or when stdin is no terminal), else asked twice."""
    if pipe or not sys.stdin.isatty():
        return sys.stdin.readline().removesuffix("\n").removesuffix("\r")
    first = getpass.getpass("Password: ")
    again = getpass.getpass("Again (for verification): ")
    return first if first == again else None


def run_saslpasswd2(args: argparse.Namespace) -> int:
    if args.create and args.delete:
        print("saslpasswd2: -c and -d are mutually exclusive", file=sys.stderr)
        return EXIT_FAILURE
    if not args.user:
        print("saslpasswd2: a user name is required", file=sys.stderr)
        return EXIT_FAILURE
    config = _config(args.config)
    database = _database(args, config)
    # Like Cyrus SASL, a realm in the user name (user@realm) wins over -u.
    user, at, own_realm = args.user.partition("@")
    realm = own_realm if at and own_realm else (args.realm or config.servername)
    if not user:
        print("saslpasswd2: invalid user name", file=sys.stderr)
        return EXIT_BADPARAM
    identity = Identity(user, realm)
    try:
        if args.delete:
            if not database.delete(identity):
                print(f"saslpasswd2: no entry for {user}@{realm}", file=sys.stderr)
            return EXIT_OK
        password = _read_password(args.pipe)
        if password is None:
            print("saslpasswd2: passwords don't match", file=sys.stderr)
            return EXIT_FAILURE
        if not password:
            print("saslpasswd2: empty password", file=sys.stderr)
            return EXIT_BADPARAM
        database.set_password(
            identity, password, plaintext_verifier=not args.no_plaintext, group=args.group
        )
    except SaslDBError as exc:
        print(f"saslpasswd2: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def run_sasldblistusers2(args: argparse.Namespace) -> int:
    config = _config(args.config)
    database = _database(args, config)
    try:
        entries = database.entries()
    except SaslDBError as exc:
        print(f"sasldblistusers2: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    for entry in entries:
        for prop in entry.properties:
            print(f"{entry.identity.user}@{entry.identity.realm}: {prop}")
    return EXIT_OK
