"""The `local` delivery agent: aliases, .forward, then the mailbox, as Postfix's local(8).

For each recipient (`user[+ext]@domain`, domain one of mydestination):

1. Delivered-To loop check: a message that already carries `Delivered-To: <this address>` is
   returned (5.4.6 "mail forwarding loop").
2. alias_maps, trying `user+ext` then `user` (recipient_delimiter). The owner-NAME companion alias
   becomes the envelope sender of the expansion (owner_request_special). Members are delivered in
   turn: local addresses recursively (steps 1-4), other addresses go back into the queue through
   the injected `resubmit`, `|command` and `/file` destinations only where allow_mail_to_commands
   and allow_mail_to_files allow them (classes alias, forward, include). A destination is
   delivered once per expansion (duplicate elimination).
3. `.forward` of a UNIX account (forward_path, home from passwd); `\\user` or the user's own
   address inside it means "my mailbox".
4. The mailbox: `mailbox_transport` gets every remaining recipient (through the injected
   `pass_to`, which is how the queue manager hands it to e.g. `cyrus:unix:/var/imap/socket/lmtp`
   or `cyrus-deliver`); else `mailbox_command`; else, for a UNIX account, the mbox file
   `mail_spool_directory/user` (or `$home/home_mailbox`); a recipient without an account goes to
   `fallback_transport`, else `luser_relay`, else bounces 5.1.1 "unknown user".

The mbox is appended to under an flock and a `user.lock` dot-lock, with a `From ` line,
Return-Path:, Delivered-To:, `>From ` quoting and a blank line at the end, fsync'd; a failed write
truncates the file back to its old size, so a mailbox never holds half a message.

Commands run as the owner of the alias database, :include: file or .forward, except that
root-owned sources run as default_privs (never root). One queued recipient gives one result:
deferred when any destination of its expansion deferred, else bounced when any bounced.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import fcntl
import logging
import os
import pwd
import re
import stat
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, RecipientResult, Status
from sealmail.mta.agents.pipe import (
    command_environment,
    header_values,
    judge_exit,
    render_copy,
    split_address,
    split_extension,
)
from sealmail.mta.agents.privileges import DeliveryPrivileges, current
from sealmail.mta.aliases import (
    MAX_INCLUDE_SIZE,
    AliasError,
    Destination,
    DestinationKind,
    ExpansionState,
    find_alias,
    include_members,
    parse_destinations,
)
from sealmail.mta.config import MainConfig, TableError, open_table
from sealmail.mta.config.parameters import MAIN, Parameter
from sealmail.mta.config.tables import LookupTable

log = logging.getLogger("sealmail.mta.local")

# The queue manager's hand-off to another master.cf transport: a request naming that transport,
# its nexthop, the recipient and the envelope sender (owner-NAME may have replaced it); the
# queue manager gives it to the transport's agent with that transport's settings.
PassTo = Callable[[DeliveryRequest], Awaitable[list[RecipientResult]]]
Resubmit = Callable[[str, Sequence[str], bytes], Awaitable[str]]
MAX_NESTING = 20  # alias/.forward levels before we call it a loop
SHELL = "/bin/sh"


@dataclass(frozen=True, slots=True)
class Account:
    """The passwd entry local(8) needs."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str = "/bin/sh"


def passwd_account(name: str) -> Account | None:
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        return None
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_shell)


AccountLookup = Callable[[str], Account | None]


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    dsn: str
    text: str
    relay: str = "local"


SENT_ORDER = {Status.SENT: 0, Status.BOUNCED: 1, Status.DEFERRED: 2}


def combine(outcomes: Sequence[Outcome]) -> Outcome:
    """The recipient's result: the worst outcome of its destinations (defer > bounce > sent)."""
    if not outcomes:
        return Outcome(Status.SENT, "2.0.0", "delivered (empty alias expansion)")
    worst = max(outcomes, key=lambda o: SENT_ORDER[o.status])
    return worst


@dataclass
class _Context:
    """One queued recipient's delivery: its envelope and what its expansion has seen."""

    request: DeliveryRequest
    recipient: QueuedRecipient
    content: bytes
    state: ExpansionState
    sender: str
    delivered: str  # the address in Delivered-To: (the recipient as local(8) got it)
    forwards: set[str] = field(default_factory=set)  # users whose .forward is being expanded
    aliases: set[str] = field(default_factory=set)  # aliases being expanded (loop detection)
    outcomes: list[Outcome] = field(default_factory=list)
    # non-local addresses to resubmit, per envelope sender
    remote: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (sender, delivered)


@dataclass(frozen=True, slots=True)
class Privileges:
    uid: int
    gid: int
    home: str = "/"
    user: str = "nobody"


class MailboxError(Exception):
    def __init__(self, dsn: str, text: str) -> None:
        super().__init__(text)
        self.dsn = dsn
        self.text = text


# --------------------------------------------------------------------------------------------
# mbox files

def writable_by(path: Path, uid: int, gid: int) -> bool:
    """Whether uid/gid could write `path` (we may be root; the user may not)."""
    if uid == 0:
        return True
    st = path.stat()
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IWUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IWGRP)
    return bool(st.st_mode & stat.S_IWOTH)


@contextlib.contextmanager
def dot_lock(path: Path, *, attempts: int, delay: float, stale_after: float):  # type: ignore[no-untyped-def]
    """`path.lock` made with O_EXCL; a lock older than stale_after is removed (Postfix's
    stale_lock_time), so a crashed writer cannot block a mailbox forever."""
    lock = path.with_name(path.name + ".lock")
    for attempt in range(attempts):
        try:
            fd = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - lock.stat().st_mtime > stale_after:
                    lock.unlink()
                    continue
            if attempt + 1 < attempts:
                time.sleep(delay)
            continue
        os.close(fd)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        return
    raise MailboxError("4.2.0", f"cannot create lock file {lock}: file exists")


def append_mbox(path: Path, data: bytes, *, owner: tuple[int, int] | None, size_limit: int = 0,
                lock_attempts: int = 20, lock_delay: float = 1.0,
                stale_lock_time: float = 500.0, spool: bool = False) -> None:
    """Append one message to an mbox file: flock + dot-lock, fsync, all or nothing.

    `owner` (uid, gid) creates a missing file for that account (mode 0600) and refuses a file
    that account may not write, or a new file in a directory it may not write - except in the
    mail spool (`spool`), where the system creates each user's mbox, as local(8) does.
    A symlink or a file with several links is refused: delivering
    through one would write where the account owner never agreed to.
    """
    with dot_lock(path, attempts=lock_attempts, delay=lock_delay, stale_after=stale_lock_time):
        flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            # The account must be allowed to create it, not just us (we may be root).
            if owner is not None and not spool and not writable_by(path.parent, *owner):
                raise MailboxError("5.2.0", f"cannot create {path}: permission denied") from None
            fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise MailboxError("5.2.0",
                                   f"cannot append to {path}: is a symbolic link") from None
            raise
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise MailboxError("5.2.0", f"cannot append to {path}: not a regular file")
            if st.st_nlink > 1:
                raise MailboxError("5.2.0",
                                   f"cannot append to {path}: file has {st.st_nlink} links")
            if owner is not None and not writable_by(path, *owner):
                raise MailboxError("5.2.0", f"cannot append to {path}: permission denied")
            if size_limit and st.st_size + len(data) > size_limit:
                raise MailboxError("5.2.2", f"cannot append message to file {path}: "
                                            "exceeds mailbox_size_limit")
            fcntl.flock(fd, fcntl.LOCK_EX)
            start = os.lseek(fd, 0, os.SEEK_END)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, start)  # never leave half a message behind
                raise
        finally:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# The agent

class LocalAgent:
    """local(8). `pass_to` and `resubmit` come from the queue manager; `accounts` looks up
    UNIX accounts (passwd by default; tests give their own); commands, mbox and file appends
    and reading .forward and :include: files go through `privileges` (default: the master's,
    see sealmail.mta.agents.privileges)."""

    def __init__(self, settings: MainConfig, *, pass_to: PassTo | None = None,
                 resubmit: Resubmit | None = None, accounts: AccountLookup = passwd_account,
                 clock: Callable[[], float] = time.time, lock_delay: float | None = None,
                 privileges: DeliveryPrivileges | None = None) -> None:
        self.settings = settings
        self.privileges = privileges or current()
        self.pass_to = pass_to
        self.resubmit = resubmit
        self.accounts = accounts
        self.clock = clock
        self.lock_delay = lock_delay
        self._tables: list[tuple[str, LookupTable]] | None = None

    async def close(self) -> None:
        for _, table in self._tables or []:
            closer = getattr(table, "close", None)
            if closer is not None:
                closer()
        self._tables = None

    # -- configuration ------------------------------------------------------------------------

    def alias_tables(self) -> list[tuple[str, LookupTable]]:
        if self._tables is None:
            self._tables = [(spec, open_table(spec)) for spec in self.settings.get(MAIN.alias_maps)]
        return self._tables

    def _delimiter(self) -> str:
        return self.settings.get(MAIN.recipient_delimiter)

    def _local_domains(self) -> set[str]:
        return {d.lower() for d in self.settings.get(MAIN.mydestination)}

    def _allowed(self, parameter: Parameter[tuple[str, ...]], origin: str) -> bool:
        return origin in {w.lower() for w in self.settings.get(parameter)}

    def _default_privs(self) -> Privileges:
        name = self.settings.get(MAIN.default_privs)
        account = self.accounts(name)
        if account is None or account.uid == 0:
            raise MailboxError("4.3.5", f"default_privs {name!r} is not an unprivileged account")
        return Privileges(account.uid, account.gid, account.home, account.name)

    def _privileges_of(self, path: str | None, fallback: Account | None = None) -> Privileges:
        """The owner of a source file (or `fallback`), default_privs for root."""
        if fallback is not None and fallback.uid != 0:
            return Privileges(fallback.uid, fallback.gid, fallback.home, fallback.name)
        if path is not None and fallback is None:
            with contextlib.suppress(OSError):
                st = os.stat(path)
                if st.st_uid != 0:
                    owner = pwd.getpwuid(st.st_uid).pw_name if _has_uid(st.st_uid) else "?"
                    return Privileges(st.st_uid, st.st_gid, "/", owner)
        return self._default_privs()

    # -- entry point --------------------------------------------------------------------------

    async def deliver(self, request: DeliveryRequest) -> list[RecipientResult]:
        try:
            content = await asyncio.to_thread(request.message.read)
        except OSError as exc:
            return [RecipientResult(r.index, Status.DEFERRED, "4.3.0",
                                    f"cannot read message content: {exc.strerror}", "local")
                    for r in request.recipients]
        delivered_to = frozenset(v.decode("utf-8", "replace").strip().lower()
                                 for v in header_values(content, b"Delivered-To"))
        results = []
        for recipient in request.recipients:
            context = _Context(request, recipient, content,
                               ExpansionState(delivered_to,
                                              limit=self.settings.get(MAIN.virtual_alias_expansion_limit)),
                               request.sender, recipient.address)
            try:
                await self._recipient(context, recipient.address, 0, literal=False)
                await self._flush_remote(context)
            except (AliasError, TableError) as exc:
                context.outcomes.append(Outcome(Status.DEFERRED, "4.3.0", f"alias database: {exc}"))
            except MailboxError as exc:
                status = Status.DEFERRED if exc.dsn.startswith("4") else Status.BOUNCED
                context.outcomes.append(Outcome(status, exc.dsn, exc.text))
            final = combine(context.outcomes)
            results.append(RecipientResult(recipient.index, final.status, final.dsn, final.text,
                                           final.relay))
        return results

    # -- one address --------------------------------------------------------------------------

    async def _recipient(self, ctx: _Context, address: str, level: int, *, literal: bool,
                         ) -> None:
        saved = ctx.delivered
        if not self.settings.get(MAIN.frozen_delivered_to):
            # Delivered-To names the address being expanded now, not the one local(8) got.
            ctx.delivered = address
        try:
            await self._recipient_at(ctx, address, level, literal=literal)
        finally:
            ctx.delivered = saved

    async def _recipient_at(self, ctx: _Context, address: str, level: int, *, literal: bool,
                            ) -> None:
        if ctx.state.is_loop(address):
            ctx.outcomes.append(Outcome(Status.BOUNCED, "5.4.6",
                                        f"mail forwarding loop for {address}"))
            return
        if level > MAX_NESTING:
            ctx.outcomes.append(Outcome(Status.BOUNCED, "5.4.6",
                                        f"unreasonable alias or .forward nesting for {address}"))
            return
        local, domain = split_address(address)
        delimiter = self._delimiter()
        special = self.settings.get(MAIN.owner_request_special)
        if not literal:
            hit = await asyncio.to_thread(find_alias, self.alias_tables(), local, delimiter,
                                          owner_request_special=special)
            if hit is not None:
                if hit.key in ctx.aliases:  # a -> b -> a: no delivery would ever happen
                    ctx.outcomes.append(Outcome(Status.BOUNCED, "5.4.6",
                                                f"mail forwarding loop for {address}"))
                    return
                sender = ctx.sender
                if hit.owner is not None:
                    sender = f"{hit.owner}@{self.settings.get(MAIN.myorigin)}"
                source = _table_file(hit.table)
                members = parse_destinations(hit.value, hit.table, 0)
                ctx.aliases.add(hit.key)
                try:
                    await self._members(ctx, members, level, origin="alias", sender=sender,
                                        privileges_source=source, owner=None)
                finally:
                    ctx.aliases.discard(hit.key)
                return
        user, extension = split_extension(local, delimiter)
        if special and "-" in delimiter and (local.lower().startswith("owner-")
                                             or local.lower().endswith("-request")):
            user, extension = local, None
        user = user.lower()
        account = self.accounts(user)
        if account is not None and not literal and user not in ctx.forwards:
            forwarded = await self._forward(ctx, account, address, extension, domain, level)
            if forwarded:
                return
        await self._mailbox(ctx, address, user, account)

    async def _members(self, ctx: _Context, members: Sequence[Destination], level: int, *,
                       origin: str, sender: str, privileges_source: str | None,
                       owner: Account | None) -> None:
        for member in members:
            if member.kind is not DestinationKind.ADDRESS and not ctx.state.first_time(member):
                continue  # duplicate elimination within one expansion (addresses: once qualified)
            if ctx.state.too_many():
                ctx.outcomes.append(Outcome(Status.BOUNCED, "5.3.0",
                                            "alias expansion produces too many destinations"))
                return
            kind = member.kind
            if kind is DestinationKind.ADDRESS:
                await self._address(ctx, member, level, sender)
            elif kind is DestinationKind.INCLUDE:
                # :include: itself is never restricted; what it holds is judged as "include".
                # It is read as the account whose source names it (never as root).
                reader = self._privileges_of(privileges_source, owner)
                try:
                    _, raw = await self.privileges.read_file(
                        member.text, uid=reader.uid, gid=reader.gid, limit=MAX_INCLUDE_SIZE + 1)
                    included = include_members(raw, member.text)
                except OSError as exc:
                    ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.0",
                                                f"cannot open include file {member.text}: "
                                                f"{exc.strerror}"))
                    continue
                await self._members(ctx, included, level + 1, origin="include", sender=sender,
                                    privileges_source=member.text, owner=None)
            elif kind is DestinationKind.COMMAND:
                if not self._allowed(MAIN.allow_mail_to_commands, origin):
                    ctx.outcomes.append(Outcome(
                        Status.BOUNCED, "5.7.1",
                        f"mail to command is restricted (allow_mail_to_commands): {member.text}"))
                    continue
                ctx.outcomes.append(await self._command(
                    ctx, member.text, self._privileges_of(privileges_source, owner), sender))
            elif kind is DestinationKind.FILE:
                if not self._allowed(MAIN.allow_mail_to_files, origin):
                    ctx.outcomes.append(Outcome(
                        Status.BOUNCED, "5.7.1",
                        f"mail to file is restricted (allow_mail_to_files): {member.text}"))
                    continue
                ctx.outcomes.append(await self._file(
                    ctx, member.text, self._privileges_of(privileges_source, owner), sender))

    async def _address(self, ctx: _Context, member: Destination, level: int, sender: str) -> None:
        local, domain = split_address(member.text)
        if not local:
            ctx.outcomes.append(Outcome(Status.BOUNCED, "5.1.3", f"bad address {member.text!r}"))
            return
        qualified = f"{local}@{domain or self.settings.get(MAIN.myorigin)}"
        if not ctx.state.first_time(Destination(DestinationKind.ADDRESS, qualified,
                                                member.literal)):
            return  # duplicate elimination: `alice` and `alice@example.com` are one address
        if not domain or domain.lower() in self._local_domains():
            address = qualified
            saved = ctx.sender
            ctx.sender = sender
            try:
                await self._recipient(ctx, address, level + 1, literal=member.literal)
            finally:
                ctx.sender = saved
            return
        ctx.remote.setdefault((sender, ctx.delivered), []).append(member.text)

    # -- .forward -----------------------------------------------------------------------------

    def forward_files(self, account: Account, address: str, extension: str | None,
                      domain: str) -> list[Path]:
        """forward_path expanded; an entry naming an empty macro is skipped (local(8))."""
        local, _ = split_address(address)
        values = {"user": account.name, "home": account.home, "shell": account.shell,
                  "recipient": address, "extension": extension or "", "domain": domain,
                  "local": local, "recipient_delimiter": self._delimiter(),
                  "mailbox": local}
        raw = self.settings.raw(MAIN.forward_path) or ""
        paths = []
        for item in raw.replace(",", " ").split():
            expanded = expand_local_macros(item, values)
            if expanded is not None:
                paths.append(Path(expanded))
        return paths

    async def _forward(self, ctx: _Context, account: Account, address: str,
                       extension: str | None, domain: str, level: int) -> bool:
        for path in self.forward_files(account, address, extension, domain):
            try:
                # Read as its account: a home that mail_owner cannot enter is no obstacle.
                owner, raw = await self.privileges.read_file(
                    str(path), uid=account.uid, gid=account.gid, limit=MAX_INCLUDE_SIZE + 1)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.EINVAL, errno.EACCES, errno.EPERM):
                    ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.0",
                                                f"cannot read {path}: {exc.strerror}"))
                    return True
                owner = -1
            if owner not in (account.uid, 0):
                log.warning("%s: not a regular file owned by %s; ignored", path, account.name)
                continue
            try:
                members = include_members(raw, str(path))
            except AliasError as exc:
                ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.0",
                                            f"cannot read {path}: {exc}"))
                return True
            if not members:
                continue
            ctx.forwards.add(account.name)
            try:
                await self._members(ctx, members, level, origin="forward", sender=ctx.sender,
                                    privileges_source=str(path), owner=account)
            finally:
                ctx.forwards.discard(account.name)
            return True
        return False

    # -- mailbox ------------------------------------------------------------------------------

    async def _pass(self, ctx: _Context, spec: str, address: str) -> Outcome:
        transport, _, nexthop = spec.partition(":")
        if self.pass_to is None:
            return Outcome(Status.DEFERRED, "4.3.0",
                           f"mail transport unavailable: no way to reach {transport}")
        recipient = QueuedRecipient(address, ctx.recipient.original, ctx.recipient.index,
                                    ctx.recipient.notify)
        handed = dataclasses.replace(ctx.request, transport=transport,
                                     nexthop=nexthop or ctx.request.nexthop,
                                     recipients=(recipient,), sender=ctx.sender)
        results = await self.pass_to(handed)
        if not results:
            return Outcome(Status.DEFERRED, "4.3.0", f"{transport} gave no result")
        first = results[0]
        return Outcome(first.status, first.dsn, first.text, first.relay)

    async def _mailbox(self, ctx: _Context, address: str, user: str,
                       account: Account | None) -> None:
        settings = self.settings
        mailbox_key = Destination(DestinationKind.FILE, f"mailbox of {address.lower()}")
        if not ctx.state.first_time(mailbox_key):
            return  # `alice` and `\\alice` in one expansion: one copy in the mailbox
        transport = settings.get(MAIN.mailbox_transport).strip()
        if transport:
            ctx.outcomes.append(await self._pass(ctx, transport, address))
            return
        if account is None:
            fallback = settings.get(MAIN.fallback_transport).strip()
            if fallback:
                ctx.outcomes.append(await self._pass(ctx, fallback, address))
                return
            # luser_relay takes local(8)'s macros ($user, $local, $extension, ...), not main.cf's.
            local, domain = split_address(address)
            _, extension = split_extension(local, self._delimiter())
            relay = expand_local_macros(
                (settings.raw(MAIN.luser_relay) or "").strip(),
                {"user": user, "local": local, "extension": extension or "", "domain": domain,
                 "recipient": address, "recipient_delimiter": self._delimiter()},
                allow_empty=True)
            if relay:
                await self._address(ctx, Destination(DestinationKind.ADDRESS, relay), 0,
                                    ctx.sender)
                return
            ctx.outcomes.append(Outcome(Status.BOUNCED, "5.1.1", f'unknown user: "{user}"'))
            return
        command = settings.get(MAIN.mailbox_command).strip()
        privileges = self._privileges_of(None, account)
        if command:
            ctx.outcomes.append(await self._command(ctx, command, privileges, ctx.sender))
            return
        home_mailbox = settings.get(MAIN.home_mailbox).strip()
        if home_mailbox:
            if home_mailbox.endswith("/"):
                ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.5",
                                            "maildir delivery (home_mailbox ending in /) is "
                                            "not supported; use mailbox_transport"))
                return
            path, spool = Path(account.home) / home_mailbox, False
        else:
            path, spool = Path(settings.get(MAIN.mail_spool_directory)) / account.name, True
        ctx.outcomes.append(await self._append(ctx, path, (account.uid, account.gid), ctx.sender,
                                               relay="local", what="mailbox", spool=spool))

    async def _append(self, ctx: _Context, path: Path, owner: tuple[int, int], sender: str, *,
                      relay: str, what: str, spool: bool = False) -> Outcome:
        data = render_copy(ctx.content, flags="FRD>B", sender=sender, null_sender="",
                           delivered_to=ctx.delivered, original_recipient=None,
                           now=self.clock())
        try:
            await self.privileges.append_mbox(
                path, data, owner=owner,
                size_limit=self.settings.get(MAIN.mailbox_size_limit),
                lock_attempts=self.settings.get(MAIN.deliver_lock_attempts),
                lock_delay=(self.settings.get(MAIN.deliver_lock_delay)
                            if self.lock_delay is None else self.lock_delay),
                stale_lock_time=self.settings.get(MAIN.stale_lock_time), spool=spool)
        except MailboxError as exc:
            status = Status.DEFERRED if exc.dsn.startswith("4") else Status.BOUNCED
            return Outcome(status, exc.dsn, exc.text, relay)
        except OSError as exc:
            return Outcome(Status.DEFERRED, "4.2.0",
                           f"cannot update {what} {path}: {exc.strerror}", relay)
        return Outcome(Status.SENT, "2.0.0", f"delivered to {what}", relay)

    async def _file(self, ctx: _Context, path: str, privileges: Privileges,
                    sender: str) -> Outcome:
        return await self._append(ctx, Path(path), (privileges.uid, privileges.gid), sender,
                                  relay="local", what="file")

    async def _command(self, ctx: _Context, command: str, privileges: Privileges,
                       sender: str) -> Outcome:
        local, domain = split_address(ctx.recipient.address)
        _, extension = split_extension(local, self._delimiter())
        env = command_environment(self.settings, {
            "HOME": privileges.home, "LOGNAME": privileges.user, "USER": privileges.user,
            "SHELL": SHELL, "SENDER": sender, "RECIPIENT": ctx.recipient.address,
            "LOCAL": local, "DOMAIN": domain, "EXTENSION": extension or "",
            "ORIGINAL_RECIPIENT": ctx.recipient.original})
        data = render_copy(ctx.content, flags="FRD", sender=sender, null_sender="",
                           delivered_to=ctx.delivered, original_recipient=None, now=self.clock())
        cwd = privileges.home if os.path.isdir(privileges.home) else "/"
        try:
            run = await self.privileges.run_command(
                [SHELL, "-c", command], data, uid=privileges.uid, gid=privileges.gid,
                time_limit=self.settings.get(MAIN.command_time_limit), cwd=cwd, env=env)
        except OSError as exc:
            return Outcome(Status.DEFERRED, "4.3.0", f"cannot run command: {exc}", "local")
        outcome = judge_exit(returncode=run.returncode, output=run.output, command=command,
                             timed_out=run.timed_out, service="local")
        text = "delivered to command: " + command if outcome.status is Status.SENT \
            else outcome.text
        return Outcome(outcome.status, outcome.dsn, text, "local")

    # -- back into the queue ------------------------------------------------------------------

    async def _flush_remote(self, ctx: _Context) -> None:
        """Addresses that are not ours go back into the queue, one submission per sender,
        with Delivered-To: so a loop back to us is caught (step 1)."""
        for (sender, delivered), addresses in ctx.remote.items():
            if self.resubmit is None:
                ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.0",
                                            "cannot forward: no resubmission into the queue"))
                continue
            header = f"Delivered-To: {delivered}\r\n".encode()
            try:
                queue_id = await self.resubmit(sender, list(addresses), header + ctx.content)
            except OSError as exc:
                ctx.outcomes.append(Outcome(Status.DEFERRED, "4.3.0",
                                            f"cannot forward: {exc.strerror}"))
                continue
            ctx.outcomes.append(Outcome(Status.SENT, "2.0.0", f"forwarded as {queue_id}"))


_LOCAL_MACRO = re.compile(r"\$(?:([A-Za-z_]+)|\{([A-Za-z_]+)(?:([?:])([^}]*))?\}|\(([A-Za-z_]+)\))")


def expand_local_macros(text: str, values: dict[str, str], *, allow_empty: bool = False,
                        ) -> str | None:
    """local(8)'s forward_path expansion; None when a plain macro is empty (the entry is then
    skipped: `.forward${recipient_delimiter}${extension}` only exists with an extension)."""
    missing = False

    def one(match: re.Match[str]) -> str:
        nonlocal missing
        name = match.group(1) or match.group(2) or match.group(5)
        value = values.get(name, "")
        if match.group(3) == "?":
            return match.group(4) if value else ""
        if match.group(3) == ":":
            return "" if value else match.group(4)
        if not value:
            missing = True
        return value

    result = _LOCAL_MACRO.sub(one, text)
    return None if missing and not allow_empty else result


def _table_file(spec: str) -> str | None:
    type_, _, name = spec.partition(":")
    return name if type_ in ("hash", "texthash", "proxy") and name.startswith("/") else None


def _has_uid(uid: int) -> bool:
    try:
        pwd.getpwuid(uid)
    except KeyError:
        return False
    return True
