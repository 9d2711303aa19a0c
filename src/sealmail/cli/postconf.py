"""`sealmail postconf`: show and edit the MTA's main.cf and master.cf, as Postfix's postconf(1).

Output formats follow Postfix 3.7: `name = value` sorted by name (whitespace runs printed as one
space), `-h` values only, `-x` expanded, `-M` one normalized master.cf line per service. Editing
with `-e`, `-X` and `-#` keeps comments and order and replaces main.cf atomically. As in Postfix,
`-e` accepts any name (it warns about none); reading warns about "unused parameter"s.
"""

from __future__ import annotations

import argparse
import os
import sys

from sealmail.config.imapd_conf import ConfigError
from sealmail.mta.config import parameters
from sealmail.mta.config.checks import audit
from sealmail.mta.config.instance import DEFAULT_CONFIG_DIRECTORY, MtaConfig, load_mta_config
from sealmail.mta.config.main_cf import (
    MainCfDocument,
    MainConfig,
    load_main_cf,
    split_assignment,
    write_main_cf,
)
from sealmail.mta.config.tables import SUPPORTED_TYPES


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # -h is postconf's "values only"; argparse's help keeps --help. The option groups copied
    # the parser's conflict handler when they were made, so each is told.
    for group in (parser, *parser._action_groups):
        group.conflict_handler = "resolve"
    parser.add_argument("-c", dest="config_dir", metavar="CONFIG_DIR", default=None,
                        help=f"configuration directory (default $MAIL_CONFIG or "
                             f"{DEFAULT_CONFIG_DIRECTORY})")
    parser.add_argument("-n", dest="non_default", action="store_true",
                        help="show only parameters set in main.cf")
    parser.add_argument("-d", dest="defaults", action="store_true", help="show default values")
    parser.add_argument("-m", dest="map_types", action="store_true",
                        help="list the supported lookup table types")
    parser.add_argument("-M", dest="master", action="store_true",
                        help="show master.cf entries (names are service or service/type)")
    parser.add_argument("-h", dest="values_only", action="store_true",
                        help="show values without 'name = '")
    parser.add_argument("-x", dest="expand", action="store_true", help="expand $name in values")
    parser.add_argument("-e", dest="edit", action="store_true",
                        help="edit main.cf: arguments are name=value")
    parser.add_argument("-X", dest="remove", action="store_true",
                        help="remove the named parameters from main.cf")
    parser.add_argument("-#", dest="comment_out", action="store_true",
                        help="comment out the named parameters in main.cf")
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help="parameter names (name=value with -e)")


def _config_dir(args: argparse.Namespace) -> str:
    return str(args.config_dir or os.environ.get("MAIL_CONFIG") or DEFAULT_CONFIG_DIRECTORY)


def _warn(message: str) -> None:
    print(f"sealmail postconf: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.map_types:
        for type_ in sorted(SUPPORTED_TYPES):
            print(type_)
        return 0
    directory = _config_dir(args)
    editing = args.edit or args.remove or args.comment_out
    if not editing and args.names and not (args.master or args.defaults or args.non_default
                                           or args.values_only or args.expand):
        editing = args.edit = all("=" in name for name in args.names)  # postconf name=value
    if editing:
        return _edit(args, directory)
    config = load_mta_config(directory, missing_ok=args.defaults)
    if args.master:
        return _show_master(config, args.names)
    if not args.defaults:
        _warn_unused(config)
    return _show_parameters(config, args, directory)


def _edit(args: argparse.Namespace, directory: str) -> int:
    path = os.path.join(directory, "main.cf")
    document: MainCfDocument = load_main_cf(path, missing_ok=args.edit)
    for item in args.names:
        if args.edit:
            name, value = split_assignment(item, "postconf -e")
            document.set(name, value)
        elif not parameters.is_valid_name(item):
            raise ConfigError("postconf", 0, None, f"bad parameter name: {item!r}")
        elif args.remove:
            document.remove(item)
        else:
            document.comment_out(item)
    write_main_cf(document, path)
    return 0


def _show_master(config: MtaConfig, requests: list[str]) -> int:
    services = config.master_cf.services
    if not requests:
        for service in services:
            print(service.render())
        return 0
    for request in requests:
        name, _, type_ = request.partition("/")
        found = config.master_cf.find(name, type_ or None)
        if not found:
            _warn(f'unmatched request: "{request}"')
        for service in found:
            print(service.render())
    return 0


def _warn_unused(config: MtaConfig) -> None:
    """Postfix's "unused parameter" lines, plus one per parameter sealmail accepts without
    effect and one per value it refuses (postconf only shows; `postfix check` stops on those)."""
    findings = audit(config)
    for warning in findings.warnings:
        _warn(warning)
    for refusal in findings.refusals:
        _warn(f"{refusal}")


def _names_to_show(config: MtaConfig, args: argparse.Namespace, directory: str) -> list[str]:
    if args.non_default:
        names = set(config.main_cf.values())
        known = config.main.known_names()
        names = {name for name in names if name in known}
        if os.path.abspath(directory) != os.path.abspath(DEFAULT_CONFIG_DIRECTORY):
            names.add("config_directory")  # as Postfix shows it for a -c directory
        return sorted(names)
    names = set(parameters.PARAMETERS)
    names |= {t + suffix for t in config.main.transports for suffix in parameters.PER_TRANSPORT}
    if not args.defaults:
        known = config.main.known_names()
        names |= {name for name in config.main.explicit if name in known}
    return sorted(names)


def _raw_value(config: MtaConfig, name: str, defaults: bool) -> str | None:
    main = config.main
    rename = parameters.renamed(name)
    if defaults:
        if rename is not None:
            name = rename.new
        if name == "config_directory":
            return DEFAULT_CONFIG_DIRECTORY
        if name in ("myhostname", "mydomain"):
            return main.default(name)
        declared = parameters.lookup(name, main.transports)
        return None if declared is None else str(declared.default)
    if rename is not None and name not in main.explicit:
        name = rename.new
    if name not in main.explicit and parameters.lookup(name, main.transports) is None \
            and name not in main.known_names() | {"myhostname", "mydomain"}:
        return None
    return main.raw(name)


def _show_parameters(config: MtaConfig, args: argparse.Namespace, directory: str) -> int:
    requested = list(args.names)
    expander = MainConfig(transports=config.main.transports) if args.defaults else config.main
    names = requested or _names_to_show(config, args, directory)
    for name in names:
        value = _raw_value(config, name, args.defaults)
        if value is None or (args.non_default and requested and name not in config.main.explicit):
            if value is None:
                _warn(f"{name}: unknown parameter")
            continue
        if args.expand:
            value = expander.expand_text(value, where=config.main.path)
        value = " ".join(value.split())
        print(value if args.values_only else f"{name} = {value}".rstrip())
    return 0
