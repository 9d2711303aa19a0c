"""`sealmail postmap`: build and query lookup tables, as Postfix's postmap(1).

`sealmail postmap FILE` (type from main.cf's default_database_type, hash unless changed) builds
FILE.sqlite atomically; `-q KEY` prints the value (exit 1 when no table has the key; `-q -` reads
keys from standard input and prints `key<TAB>value`); `-s` prints every entry. `-N`/`-n` (null
byte in keys) are accepted for command-line compatibility and change nothing: the index stores
keys with their length.
"""

from __future__ import annotations

import argparse
import os
import sys

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY
from sealmail.mta.config.main_cf import MainConfig, load_main_cf
from sealmail.mta.config.parameters import MAIN
from sealmail.mta.config.tables import (
    HashTable,
    LookupTable,
    MemoryTable,
    TableError,
    build_hash,
    open_table,
    split_spec,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help=f"configuration directory (default {DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-f", dest="no_fold", action="store_true",
                        help="do not fold keys to lower case (building and querying)")
    parser.add_argument("-q", dest="query", metavar="KEY",
                        help="look KEY up ('-' reads keys from standard input)")
    parser.add_argument("-s", dest="show", action="store_true", help="print every entry")
    nul = parser.add_mutually_exclusive_group()
    nul.add_argument("-N", dest="nul", action="store_true",
                     help="include a null byte in keys (no effect here)")
    nul.add_argument("-n", dest="no_nul", action="store_true",
                     help="no null byte in keys (no effect here)")
    parser.add_argument("tables", nargs="+", metavar="[TYPE:]FILE")


def _default_type(args: argparse.Namespace) -> str:
    directory = args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY
    document = load_main_cf(os.path.join(directory, "main.cf"), missing_ok=True)
    config = MainConfig.from_document(document)
    return config.get(MAIN.default_database_type).strip() or "hash"


def run(args: argparse.Namespace) -> int:
    default_type = _default_type(args)
    fold = not args.no_fold
    specs = [_qualified(spec, default_type) for spec in args.tables]
    if args.query is not None:
        tables = [open_table(spec, fold=fold, default_type=default_type) for spec in specs]
        if args.query == "-":
            return _query_stream(tables)
        for table in tables:
            value = table.lookup(args.query)
            if value is not None:
                print(value)
                return 0
        return 1
    if args.show:
        for spec in specs:
            table = open_table(spec, fold=fold, default_type=default_type)
            if not isinstance(table, (HashTable, MemoryTable)):
                raise TableError(spec, 0, None, "cannot list the entries of this table type")
            for key, value in table.items():
                print(f"{key}\t{value}")
        return 0
    for spec in specs:
        type_, name = split_spec(spec, default_type)
        if type_ != "hash":
            raise TableError(spec, 0, None,
                             f"{type_}: tables are read as they are; only hash: is built")
        try:
            build_hash(name, fold=fold)
        except FileNotFoundError:
            raise TableError(name, 0, None, "cannot open: no such file") from None
        except OSError as exc:
            raise ConfigError(name, 0, None, f"cannot build: {exc.strerror}") from None
    return 0


def _qualified(spec: str, default_type: str) -> str:
    type_, name = split_spec(spec, default_type)
    return f"{type_}:{name}"


def _query_stream(tables: list[LookupTable]) -> int:
    found_any = False
    for line in sys.stdin:
        key = line.rstrip("\r\n")
        if not key:
            continue
        for table in tables:
            value = table.lookup(key)
            if value is not None:
                print(f"{key}\t{value}")
                found_any = True
                break
    return 0 if found_any else 1
