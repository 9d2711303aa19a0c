"""`sealmail imapd-conf`: show imapd.conf options, as `postconf` shows main.cf's.

Cyrus lists its defaults with `cyr_info conf-default`; an operator who knows Postfix reaches for
postconf's flags, so this takes them: `-d` every option with its default, `-n` only the options
imapd.conf sets, no flag every option with its effective value, `NAME...` only those. Options that
sealmail accepts without effect are warned about on standard error, as postconf warns about unused
parameters. The listing comes from the registry (sealmail.config.options).
"""

from __future__ import annotations

import argparse
import sys

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.config.options import OPTIONS, lookup
from sealmail.config.schema import render_value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument("-d", dest="defaults", action="store_true", help="show default values")
    parser.add_argument("-n", dest="non_default", action="store_true",
                        help="show only options set in imapd.conf")
    parser.add_argument("names", nargs="*", metavar="NAME", help="option names")


def _warn(message: str) -> None:
    print(f"sealmail imapd-conf: warning: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    config = ImapdConfig() if args.defaults else load_imapd_conf(args.config)
    if not args.defaults:
        for name, line in config.without_effect():
            _warn(f"{config.path}:{line}: {name}: accepted, but has no effect in sealmail")
    if args.names:
        names = list(args.names)
    elif args.non_default:
        names = sorted(config.values)
    else:
        names = sorted(OPTIONS)
    status = 0
    for name in names:
        option = lookup(name)
        if option is None:
            _warn(f"{name}: unknown option")
            status = 1
            continue
        value = config.values.get(name) if name in config.values else config._value(name, option)
        print(f"{name}: {render_value(option, value)}".rstrip())
    return status
