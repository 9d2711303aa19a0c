"""Admin commands of the store: `mailbox`, `mbpath`, `reconstruct`, `expire`.

They open the store the same way the daemons do (imapd.conf from -C, store_backend), so they work
on a stopped store and on a running one alike: every change is an ordinary index transaction.
`mbpath` and `reconstruct` are about the disk store's files and refuse another backend. Names on
the command line and in the output are external (separator per `unixhierarchysep`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from sealmail.cli.progress import Progress
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.store import auditlog
from sealmail.store.api import MessageStore
from sealmail.store.backends import open_store
from sealmail.store.disk import DiskStore
from sealmail.store.duplicates import DUPLICATES_NAME, DuplicateDatabase, ExpireProgress
from sealmail.store.errors import StoreError
from sealmail.store.names import Namespace, wildcard_pattern


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-C",
        dest="config",
        metavar="IMAPD_CONF",
        default=DEFAULT_CONFIG_PATH,
        help=f"imapd.conf to use (default {DEFAULT_CONFIG_PATH})",
    )


def _limit(text: str) -> int | None:
    if text.lower() == "none":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number or 'none'")
    return int(text)


def add_mailbox_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser("create", help="create a mailbox")
    create.add_argument("--partition", help="partition (default: defaultpartition)")
    create.add_argument("name")
    actions.add_parser(
        "delete", help="delete a mailbox (a user's INBOX: the whole user)"
    ).add_argument("name")
    rename = actions.add_parser("rename", help="rename a mailbox and its inferiors")
    rename.add_argument("old")
    rename.add_argument("new")
    listing = actions.add_parser("list", help="list mailboxes matching an IMAP pattern (* and %%)")
    listing.add_argument("pattern", nargs="?", default="*")
    setquota = actions.add_parser("setquota", help="set a quota root's limits ('none' removes)")
    setquota.add_argument("name")
    setquota.add_argument("storage", type=_limit, metavar="STORAGE_KB")
    setquota.add_argument("messages", type=_limit, nargs="?", default=..., metavar="MESSAGES")
    actions.add_parser("getquota", help="show the quota governing a mailbox").add_argument("name")
    setacl = actions.add_parser("setacl", help="set rights: RIGHTS, +RIGHTS, -RIGHTS or ''")
    setacl.add_argument("name")
    setacl.add_argument("identifier")
    setacl.add_argument("rights")
    actions.add_parser("listacl", help="show a mailbox's ACL").add_argument("name")


S = TypeVar("S", bound=MessageStore)


def _disk_store(config: ImapdConfig) -> DiskStore:
    backend = config.get(IMAPD.store_backend)
    if backend != "disk":
        raise StoreError(f"store_backend is {backend}: this command works on the disk store")
    return DiskStore.from_config(config)


def _with_store(
    args: argparse.Namespace,
    action: Callable[[S, ImapdConfig, Namespace], int],
    opener: Callable[[ImapdConfig], S],
) -> int:
    config = load_imapd_conf(args.config)
    try:
        store = opener(config)
        try:
            return action(store, config, Namespace(config.hierarchy_separator))
        finally:
            store.close()
    except StoreError as exc:
        print(f"sealmail {args.command}: {exc}", file=sys.stderr)
        return 1


def run_mailbox(args: argparse.Namespace) -> int:
    def act(store: MessageStore, config: ImapdConfig, names: Namespace) -> int:
        action = args.action
        audit = auditlog.audit_for(config.get(IMAPD.auditlog), auditlog.command_session_id())
        if action == "create":
            auditlog.create_mailbox(store, names.to_internal(args.name), audit, args.partition)
        elif action == "delete":
            auditlog.delete_mailbox(store, names.to_internal(args.name), audit)
        elif action == "rename":
            auditlog.rename_mailbox(
                store, names.to_internal(args.old), names.to_internal(args.new), audit
            )
        elif action == "list":
            wanted = wildcard_pattern(args.pattern, names.separator)
            for info in store.list_mailboxes():
                external = names.to_external(info.name)
                if wanted.fullmatch(external):
                    print(external)
        elif action == "setquota":
            root = names.to_internal(args.name)
            messages = args.messages
            if messages is ...:  # not given: keep the current message limit
                current = store.quota_for(root)
                messages = current.messages_limit if current and current.root == root else None
            store.set_quota(root, args.storage, messages)
        elif action == "getquota":
            usage = store.quota_for(names.to_internal(args.name))
            if usage is None:
                print(f"{args.name}: no quota")
            else:
                storage = "none" if usage.storage_limit is None else str(usage.storage_limit)
                count = "none" if usage.messages_limit is None else str(usage.messages_limit)
                used_kb = (usage.storage_used + 1023) // 1024
                print(
                    f"{names.to_external(usage.root)} STORAGE {used_kb}/{storage}"
                    f" MESSAGE {usage.messages_used}/{count}"
                )
        elif action == "setacl":
            auditlog.set_acl(
                store, names.to_internal(args.name), args.identifier, args.rights, audit
            )
        elif action == "listacl":
            found = store.mailbox(names.to_internal(args.name))
            if found is None:
                print(f"sealmail mailbox: mailbox {args.name!r} does not exist", file=sys.stderr)
                return 1
            for identifier, rights in sorted(found.acl.items()):
                print(f"{identifier} {rights}")
        return 0

    return _with_store(args, act, open_store)


def add_mbpath_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("name", help="external mailbox name")


def run_mbpath(args: argparse.Namespace) -> int:
    def act(store: DiskStore, config: ImapdConfig, names: Namespace) -> int:
        print(store.mailbox_path(names.to_internal(args.name)))
        return 0

    return _with_store(args, act, _disk_store)


def add_reconstruct_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument("names", nargs="*", metavar="NAME", help="mailboxes (default: all)")


def run_reconstruct(args: argparse.Namespace) -> int:
    def act(store: DiskStore, config: ImapdConfig, names: Namespace) -> int:
        with Progress("reconstruct", len(args.names)) as progress:
            if args.names:
                fixes: list[str] = []
                for name in args.names:
                    fixes.extend(store.reconstruct(names.to_internal(name)))
                    progress.step(name)
            else:

                def checked(name: str, of: int) -> None:
                    progress.total = of
                    progress.step(names.to_external(name))

                fixes = store.reconstruct_all(checked)
        for fix in fixes:
            print(fix)
        return 0

    return _with_store(args, act, _disk_store)


def add_expire_arguments(parser: argparse.ArgumentParser) -> None:
    _add_config(parser)
    parser.add_argument(
        "-E", dest="days", type=float, required=True, help="remove entries older than DAYS days"
    )


def _expire_shared(config: ImapdConfig, days: float, progress: ExpireProgress) -> int:
    """On PostgreSQL the duplicate database is the store's table, shared by every node."""
    store = open_store(config)
    try:
        database = store.duplicates()
        return 0 if database is None else database.expire(days, progress)
    finally:
        store.close()


def run_expire(args: argparse.Namespace) -> int:
    config = load_imapd_conf(args.config)
    if args.days < 0:
        print("sealmail expire: -E needs a non-negative number of days", file=sys.stderr)
        return 2
    try:
        with Progress("expire", 0) as progress:

            def batch_done(removed: int, total: int) -> None:
                progress.total = total
                progress.step("entries", removed - progress.done)

            if config.get(IMAPD.store_backend) == "postgresql":
                removed = _expire_shared(config, args.days, batch_done)
            else:
                database = DuplicateDatabase(config.configdirectory / DUPLICATES_NAME)
                try:
                    removed = database.expire(args.days, batch_done)
                finally:
                    database.close()
    except StoreError as exc:
        print(f"sealmail expire: {exc}", file=sys.stderr)
        return 1
    print(f"expired {removed} duplicate delivery entries")
    return 0
