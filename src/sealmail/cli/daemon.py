"""What the standalone daemon commands share: -C, --listen (and --tls-listen), bind, serve."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any

from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD

EX_USAGE, EX_OSERR = 64, 71

log = logging.getLogger("sealmail.server")


def add_daemon_arguments(
    parser: argparse.ArgumentParser, what: str, tls_name: str | None = None, default: str = ""
) -> None:
    parser.add_argument("-C", dest="config", default=DEFAULT_CONFIG_PATH, help="imapd.conf")
    parser.add_argument(
        "--listen",
        action="append",
        default=[],
        help=f"{what}, as cyrus.conf's listen=: /socket/path, host:port, [addr]:port, port or a "
        "service name (repeatable" + (f"; default: {default})" if default else ")"),
    )
    if tls_name:
        parser.add_argument(
            "--tls-listen",
            action="append",
            default=[],
            help=f"the same for {tls_name}, TLS from the first byte (needs tls_server_cert)",
        )
    parser.add_argument("-v", "--verbose", action="store_true")


Builder = Callable[..., Any]


def run_daemon(
    args: argparse.Namespace,
    name: str,
    build: Builder,
    *,
    argv: Sequence[str] = (),
    tls_name: str | None = None,
    default_listen: Callable[[ImapdConfig], str] | None = None,
) -> int:
    """Bind every address, then (started by root) become imapd.conf's cyrus_user for good, then
    build the service(s) and serve until SIGTERM; UNIX sockets are removed at the end.

    Nothing from a client is read before the switch, and the service is built after it, so every
    file it opens or creates in the store is the account's, as under master. A bad option or
    certificate still stops the daemon before it serves anyone.
    """
    from sealmail.privileges import announce, make_store_directories, store_account, switch_to
    from sealmail.server import runtime
    from sealmail.server.listeners import ListenError
    from sealmail.server.standalone import bind_all, listen_addresses, remove_sockets, serve

    config = load_imapd_conf(args.config)
    config.warn_without_effect()  # once per option, with file and line
    if config.get(IMAPD.metrics_listen):
        log.warning("metrics_listen is served by sealmail master only: %s started on its own "
                    "serves no metrics", name)
    plain_texts = list(args.listen)
    tls_texts = list(getattr(args, "tls_listen", []) or [])
    if not plain_texts and not tls_texts:
        if default_listen is None:
            print(f"sealmail {name}: give --listen and/or --tls-listen", file=sys.stderr)
            return EX_USAGE
        plain_texts = [default_listen(config)]
    plain_addresses = listen_addresses(config, plain_texts, "--listen")
    tls_addresses = listen_addresses(config, tls_texts, "--tls-listen")
    account = store_account(config) if getattr(args, "switch_account", False) else None
    make_store_directories(config, account)
    try:
        plain_sockets = bind_all(plain_addresses, account)
        tls_sockets = bind_all(tls_addresses, account)
    except (ListenError, OSError) as exc:
        print(f"sealmail {name}: {exc}", file=sys.stderr)
        return EX_OSERR
    sockets = plain_sockets + tls_sockets
    try:
        if account is not None:
            switch_to(account)
        announce(name, account)
        log.info("%s logs to standard error", name)
        plain = build(config, list(argv))
        pairs = [(plain, plain_sockets)]
        if tls_addresses:
            assert tls_name is not None
            pairs.append(
                (build(config, ["-s"], service_name=tls_name, store=plain.store), tls_sockets)
            )
    except BaseException:
        for sock in sockets:
            sock.close()
        remove_sockets(plain_addresses + tls_addresses)
        raise
    try:
        runtime.run(serve(pairs, name))
    finally:
        remove_sockets(plain_addresses + tls_addresses)
    return 0
