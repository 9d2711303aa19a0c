"""`sealmail newaliases` and `sealmail postalias`: build and query the alias database.

`newaliases` rebuilds every `hash:` table of main.cf's alias_database (other table types are
read as they are and need no build). `postalias FILE...` builds FILE.sqlite from an aliases(5)
file; `postalias -q KEY FILE...` prints the value of KEY (exit 1 when no table has it), as
Postfix's postalias(1).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.aliases import build_alias_database
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, with_config_directory
from sealmail.mta.config.main_cf import MainConfig, load_main_cf
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.tables import TableError, open_table, split_spec


def _config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help=f"configuration directory (default {DEFAULT_CONFIG_DIRECTORY})")


def add_newaliases_arguments(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser)


def add_postalias_arguments(parser: argparse.ArgumentParser) -> None:
    _config_argument(parser)
    parser.add_argument("-q", dest="query", metavar="KEY",
                        help="print the value of KEY ('-' reads keys from standard input)")
    parser.add_argument("tables", nargs="+", metavar="[TYPE:]FILE")


def _main_config(args: argparse.Namespace) -> MainConfig:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    document = load_main_cf(os.path.join(directory, "main.cf"), missing_ok=True)
    return with_config_directory(MainConfig.from_document(document), Path(directory))


def _build(spec: str, default_type: str) -> None:
    type_, name = split_spec(spec, default_type)
    if type_ != "hash":
        return  # texthash:, inline:, ... are read as they are
    try:
        build_alias_database(name)
    except FileNotFoundError:
        raise TableError(name, 0, None, "cannot open: no such file") from None
    except OSError as exc:
        raise ConfigError(name, 0, None, f"cannot build: {exc.strerror}") from None


def run_newaliases(args: argparse.Namespace) -> int:
    config = _main_config(args)
    default_type = config.get(MAIN.default_database_type).strip() or "hash"
    # Postfix's default (hash:/etc/aliases) is the system's: `-c DIR` must name its own.
    config.instance_path(MAIN.alias_database)
    for spec in config.get(MAIN.alias_database):
        _build(spec, default_type)
    return 0


def run_postalias(args: argparse.Namespace) -> int:
    config = _main_config(args)
    default_type = config.get(MAIN.default_database_type).strip() or "hash"
    if args.query is None:
        for spec in args.tables:
            type_, _ = split_spec(spec, default_type)
            if type_ != "hash":
                raise TableError(spec, 0, None,
                                 f"{type_}: tables are read as they are; only hash: is built")
            _build(spec, default_type)
        return 0
    tables = [open_table(spec, default_type=default_type) for spec in args.tables]
    keys = [line.rstrip("\r\n") for line in sys.stdin] if args.query == "-" else [args.query]
    found = False
    for key in keys:
        if not key:
            continue
        for table in tables:
            value = table.lookup(key)
            if value is not None:
                print(f"{key}:\t{value}" if args.query == "-" else value)
                found = True
                break
    return 0 if found else 1
