"""`sealmail admin -u USER|-A COMMAND ...`: doveadm's mail commands on the store.

    sealmail admin [-C IMAPD_CONF] -u USER|-A search QUERY
    sealmail admin [-C IMAPD_CONF] -u USER|-A fetch 'FIELDS' QUERY
    sealmail admin [-C IMAPD_CONF] -u USER|-A expunge QUERY     (QUERY must name a mailbox)
    sealmail admin [-C IMAPD_CONF] -u USER|-A quota get|recalc
    sealmail admin [-C IMAPD_CONF] [-u USER] who
    sealmail admin [-C IMAPD_CONF] -u USER kick

Like doveadm, it works on the storage directly (every change an ordinary store transaction, so
running imapd sessions see it as another client's), for one user (-u) or every user with an
INBOX (-A). Mailbox names are the user's own view (INBOX, INBOX.Sent). QUERY is doveadm's search
query language (sealmail.cli.admin_query); output is doveadm's: `search` prints
`MAILBOX-GUID UID`, `fetch` its pager form (`field: value`, records ended by a form feed),
`quota get` a table. `who` and `kick` are about live sessions, not the storage
(sealmail.cli.admin_sessions).
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

from sealmail.cli.admin_query import (
    HeaderSearch,
    Query,
    QueryError,
    header_contains,
    matches,
    parse_query,
)
from sealmail.config.imapd_conf import DEFAULT_CONFIG_PATH, ImapdConfig, load_imapd_conf
from sealmail.config.options import IMAPD
from sealmail.imap.namespace import UserNamespace
from sealmail.store import auditlog
from sealmail.store.api import MessageRecord, MessageStore, QuotaAdmin
from sealmail.store.backends import open_store
from sealmail.store.errors import StoreError
from sealmail.store.names import owner_of, user_inbox, wildcard_pattern

FETCH_FIELDS = ("uid", "mailbox", "guid", "mailbox-guid", "flags", "size.physical",
                "date.received", "date.saved", "hdr", "body", "text")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-C", dest="config", metavar="IMAPD_CONF", default=DEFAULT_CONFIG_PATH,
                        help=f"imapd.conf to use (default {DEFAULT_CONFIG_PATH})")
    who = parser.add_mutually_exclusive_group()
    who.add_argument("-u", dest="user", help="the user to act for")
    who.add_argument("-A", dest="all_users", action="store_true", help="every user")
    parser.add_argument("action", choices=("search", "fetch", "expunge", "quota", "who", "kick"))
    parser.add_argument("words", nargs=argparse.REMAINDER, metavar="ARGS",
                        help="search query; fetch: 'FIELDS' first; quota: get or recalc")


class AdminRun:
    """One run: the store, the users, and what each action prints."""

    def __init__(
        self,
        store: MessageStore,
        separator: str,
        out: Callable[[str], None],
        all_users: bool,
        audit: auditlog.AuditLog | None = None,
    ) -> None:
        self.store = store
        self.audit = audit  # imapd.conf auditlog: an expunge line for each message removed
        self.separator = separator
        self.out = out
        self.all_users = all_users  # -A: every line says whose it is, as doveadm's

    def users(self, one: str | None) -> list[str]:
        if one is not None:
            return [one]
        found = []
        for info in self.store.list_mailboxes("user."):
            owner = owner_of(info.name)
            if owner is not None and user_inbox(owner.user, owner.domain) == info.name:
                found.append(owner.user if owner.domain is None else f"{owner.user}@{owner.domain}")
        return found

    def mailboxes(self, user: str, query: Query) -> Iterator[tuple[str, str]]:
        """(internal, as the user sees it) of the user's mailboxes the query names."""
        local, _, domain = user.partition("@")
        inbox = user_inbox(local, domain or None)
        view = UserNamespace(inbox, self.separator)
        patterns = [_pattern(p, self.separator) for p in query.mailboxes]
        for info in self.store.list_mailboxes(inbox):
            if info.name != inbox and not info.name.startswith(inbox + "."):
                continue
            shown = view.to_external(info.name, utf8=True)
            if not patterns or any(p.fullmatch(shown) for p in patterns):
                yield info.name, shown

    def matching(self, user: str, query: Query) -> Iterator[tuple[str, str, MessageRecord]]:
        now = datetime.now(UTC)
        reader = user.partition("@")[0]
        for name, shown in self.mailboxes(user, query):
            headers = self._header_search(name)
            for record in self.store.messages(name, reader=reader):
                if all(matches(term, record, headers, now) for term in query.terms):
                    yield name, shown, record

    def _header_search(self, name: str) -> HeaderSearch:
        """Header keys from the header index, with the messages it cannot answer for read and
        checked one by one; each (field, needle) once per mailbox."""
        cache: dict[tuple[str, str], set[int]] = {}

        def search(field: str, needle: str) -> set[int]:
            if (field, needle) not in cache:
                found = self.store.search_header(name, field, needle)
                cache[field, needle] = set(found.matched) | {
                    uid for uid in found.unanswered
                    if header_contains(self.store.message_bytes(name, uid), field, needle)
                }
            return cache[field, needle]

        return search

    # ------------------------------------------------------------------ actions

    def search(self, users: list[str], query: Query) -> None:
        for user in users:
            for name, _, record in self.matching(user, query):
                info = self.store.mailbox(name)
                guid = info.uniqueid if info is not None else "-"
                self.out(f"{user} {guid} {record.uid}" if self.all_users
                         else f"{guid} {record.uid}")

    def fetch(self, users: list[str], fields: list[str], query: Query) -> None:
        for user in users:
            for name, shown, record in self.matching(user, query):
                lines = [f"username: {user}"] if self.all_users else []
                for field in fields:
                    lines.append(self._field(field, name, shown, record))
                self.out("\n".join(lines) + "\n\f")

    def _field(self, field: str, name: str, shown: str, record: MessageRecord) -> str:
        if field in ("hdr", "body", "text"):
            raw = self.store.message_bytes(name, record.uid)
            head, _, body = raw.partition(b"\r\n\r\n")
            part = {"hdr": head + b"\r\n", "body": body, "text": raw}[field]
            return f"{field}:\n{part.decode('utf-8', 'replace')}"
        info = self.store.mailbox(name)
        values = {
            "uid": str(record.uid),
            "mailbox": shown,
            "guid": record.guid,
            "mailbox-guid": info.uniqueid if info is not None else "",
            "flags": " ".join(record.flags),
            "size.physical": str(record.size),
            "date.received": _date(record.internaldate),
            "date.saved": _date(record.internaldate),
        }
        return f"{field}: {values[field]}"

    def expunge(self, users: list[str], query: Query) -> int:
        if not query.mailboxes:
            raise QueryError("to avoid accidents, the query must name a mailbox (mailbox NAME)")
        removed = 0
        for user in users:
            chosen: dict[str, list[int]] = {}
            for name, _, record in self.matching(user, query):
                chosen.setdefault(name, []).append(record.uid)
            for name, uids in chosen.items():
                removed += len(auditlog.expunge(self.store, name, uids, self.audit))
        return removed

    def quota(self, users: list[str], how: str) -> None:
        """`get`: doveadm's table (STORAGE in KiB); `recalc`: recount as `quota -f` does."""
        table = [(["Username"] if self.all_users else [])
                 + ["Quota name", "Type", "Value", "Limit", "%"]]
        for user in users:
            local, _, domain = user.partition("@")
            usage = self.store.quota_for(user_inbox(local, domain or None))
            if usage is None:
                continue
            if how == "recalc":
                if isinstance(self.store, QuotaAdmin):
                    self.store.repair_quota(usage.root)
                continue
            for kind, value, limit in (
                ("STORAGE", usage.storage_used // 1024, usage.storage_limit),
                ("MESSAGE", usage.messages_used, usage.messages_limit),
            ):
                percent = str(value * 100 // limit) if limit else "0"
                row = ["User quota", kind, str(value), "-" if limit is None else str(limit),
                       percent]
                table.append(([user] if self.all_users else []) + row)
        if how == "get":
            for line in _columns(table):
                self.out(line)


def _columns(table: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return [" ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in table]


def _date(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _pattern(pattern: str, separator: str) -> re.Pattern[str]:
    """doveadm's mailbox masks: '*' anything, '%' one level; INBOX in any case."""
    if pattern[:5].upper() == "INBOX":
        return re.compile("(?i:INBOX)" + wildcard_pattern(pattern[5:], separator).pattern)
    return wildcard_pattern(pattern, separator)


def run(args: argparse.Namespace) -> int:
    config = load_imapd_conf(args.config)
    words = list(args.words)
    if args.action in ("who", "kick"):
        return _sessions(args, config)
    if args.user is None and not args.all_users:
        print(f"sealmail admin: {args.action} needs -u USER or -A", file=sys.stderr)
        return 2
    try:
        store = open_store(config)
    except StoreError as exc:
        print(f"sealmail admin: {exc}", file=sys.stderr)
        return 1
    audit = auditlog.audit_for(config.get(IMAPD.auditlog), auditlog.command_session_id())
    admin = AdminRun(store, config.hierarchy_separator, print, args.all_users, audit)
    try:
        users = admin.users(args.user)
        if args.action == "quota":
            if words not in (["get"], ["recalc"]):
                print("sealmail admin: quota get|recalc", file=sys.stderr)
                return 2
            admin.quota(users, words[0])
        elif args.action == "fetch":
            if not words:
                print("sealmail admin: fetch 'FIELDS' QUERY", file=sys.stderr)
                return 2
            fields = words.pop(0).split()
            unknown = [f for f in fields if f not in FETCH_FIELDS]
            if unknown:
                print(f"sealmail admin: unknown field(s) {' '.join(unknown)}; known:"
                      f" {' '.join(FETCH_FIELDS)}", file=sys.stderr)
                return 2
            admin.fetch(users, fields, parse_query(words))
        elif args.action == "search":
            admin.search(users, parse_query(words))
        else:
            admin.expunge(users, parse_query(words))
        return 0
    except QueryError as exc:
        print(f"sealmail admin: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"sealmail admin: {exc}", file=sys.stderr)
        return 1
    finally:
        store.close()


def _sessions(args: argparse.Namespace, config: ImapdConfig) -> int:
    from sealmail.cli.admin_sessions import kick_user, who
    from sealmail.sessions import registry_directory

    directory = registry_directory(config.configdirectory)
    words = list(args.words)
    if args.user is None and words:  # `who -u USER`, `kick USER` (doveadm's order) too
        words = words[1:] if words[0] == "-u" else words
        args.user = words.pop(0) if words else None
    if words:
        print(f"sealmail admin: {args.action}: unexpected {' '.join(words)}", file=sys.stderr)
        return 2
    if args.action == "who":
        return who(directory, args.user, print, config.hierarchy_separator,
                   config.get(IMAPD.altnamespace))
    if args.user is None:
        print("sealmail admin: kick needs -u USER", file=sys.stderr)
        return 2
    return kick_user(directory, args.user, print, lambda text: print(text, file=sys.stderr))
