"""Checks of what happens to each recipient: delimiters, case, pipes, posting rights and
recipient limits (seed 3, 6, 8.1-8.3, 9.1)."""

from __future__ import annotations

import json
import os
import pwd
from collections.abc import Iterable, Iterator
from pathlib import Path

from sealmail.cli.check.model import Finding, Halves, next_hops
from sealmail.cli.check.sockets import blocked_directory, describe_mode, permits
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.mta.config.parameters import MAIN, transport_recipient_limit

# What one recipient may cost lmtpd in the worst case: a Sieve run, the quota check and its part
# of the index commit on a slow disk under load. lmtpd answers a transaction's recipients after
# all of them are stored (one commit), so the MTA waits for the last before it reads the first.
WORST_SECONDS_PER_RECIPIENT = 0.25

# Folders a user keeps for themselves: plus-addressing them is not expected.
PRIVATE_FOLDERS = frozenset({"sent", "drafts", "trash", "junk", "spam", "archive", "templates"})


def check_delimiter(halves: Halves) -> Iterator[Finding]:
    mta, imapd = halves.mta, halves.imapd
    if mta is None or imapd is None:
        return
    ours = mta.main.get(MAIN.recipient_delimiter).strip()
    theirs = imapd.get(IMAPD.recipient_delimiter) or ""
    entry = mta.main.entry(MAIN.recipient_delimiter)
    if ours and ours != theirs and entry is not None:
        yield Finding(entry.path, entry.line, "delimiter",
                      f"recipient_delimiter = {ours} here, but the store's is "
                      f"{theirs or '(none)'} ({imapd.where(IMAPD.recipient_delimiter)})")
    elif not ours and "recipient_delimiter" in imapd.lines:
        yield Finding(imapd.path, imapd.lines["recipient_delimiter"], "delimiter",
                      f"recipient_delimiter: {theirs} in the store, but not in "
                      f"{mta.directory}/main.cf (seed 8.1)")
    elif not ours and imapd.get(IMAPD.postuser):
        yield Finding(imapd.path, imapd.lines.get("postuser", 0), "delimiter",
                      f"postuser: {imapd.get(IMAPD.postuser)} needs recipient_delimiter in "
                      f"{mta.directory}/main.cf (seed 8.2)")


def check_downcase(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is not None and not imapd.get(IMAPD.lmtp_downcase_rcpt):
        yield Finding(imapd.path, imapd.lines.get("lmtp_downcase_rcpt", 0), "downcase",
                      "lmtp_downcase_rcpt is off: mail for User@domain is refused while the MTA "
                      "accepts it (seed 8.3)")


def check_recipient_limits(halves: Halves) -> Iterator[Finding]:
    """Seed 6: a recipient limit "too big" makes the MTA time out before lmtpd answers, and one
    above lmtpd's own limit has the excess answered 452 and sent again later."""
    mta = halves.mta
    if mta is None:
        return
    transports = {hop.transport for hop in next_hops(mta)}
    for service in mta.master_cf:
        if service.command != "lmtp" or service.service not in transports:
            continue
        view = mta.service(service.service, service.type)
        parameter = transport_recipient_limit(service.service)
        limit = view.get(parameter)
        entry = view.entry(parameter)
        path, line = (entry.path, entry.line) if entry else (service.path, service.line)
        timeout = view.get(MAIN.lmtp_data_done_timeout)
        worst = limit * WORST_SECONDS_PER_RECIPIENT
        if worst > timeout:
            yield Finding(path, line, "recipient-limit",
                          f"{parameter.name} = {limit}: lmtpd may take up to {worst:.0f}s to "
                          f"answer the last recipient (at {WORST_SECONDS_PER_RECIPIENT}s each), "
                          f"longer than lmtp_data_done_timeout ({timeout}s): the MTA gives up "
                          "and delivers the whole batch again (seed 6)")
        stored = halves.imapd.get(IMAPD.lmtp_max_recipients) if halves.imapd else None
        if stored is not None and limit > stored:
            yield Finding(path, line, "recipient-limit",
                          f"{parameter.name} = {limit} is above lmtpd's lmtp_max_recipients "
                          f"({stored}): each delivery's recipients past {stored} are answered "
                          "452 and sent again in a later transaction (seed 6)")


def check_pipes(halves: Halves) -> Iterator[Finding]:
    if halves.mta is None:
        return
    for service in halves.mta.master_cf:
        if service.command != "pipe":
            continue
        attributes, argv = pipe_arguments(service.args)
        reason = pipe_problem(attributes.get("user", ""), argv)
        if reason:
            yield Finding(service.path, service.line, "pipe", f"{service.service}: {reason}")


def pipe_arguments(args: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    attributes: dict[str, str] = {}
    argv: list[str] = []
    for arg in args:
        if argv:
            argv.append(arg)
        elif arg.startswith("argv="):
            argv.append(arg[len("argv="):])
        else:
            name, _, value = arg.partition("=")
            attributes[name] = value
    return attributes, argv


def pipe_problem(user: str, argv: list[str]) -> str | None:
    if not argv or not argv[0]:
        return "no argv="
    name = user.partition(":")[0]
    if not name:
        return "no user= (pipe(8) needs one)"
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        return f"user={name}: no such account"
    if account.pw_uid == 0:
        return f"user={name}: pipe(8) refuses to run commands as root"
    program = Path(argv[0])
    if not program.is_absolute() or not program.exists():
        return (f"argv={argv[0]}: no such file (the seed's /usr/cyrus/bin/deliver is "
                "`sealmail deliver -C IMAPD_CONF`)")
    for path in runnable_chain(program):
        why = cannot_run(path, account)
        if why:
            return f"user={name} cannot run {argv[0]}: {why}"
    return None


def runnable_chain(program: Path) -> list[Path]:
    """The program, and the interpreter its #! line names (a console script's Python)."""
    chain = [program]
    try:
        with program.open("rb") as handle:
            first = handle.readline(512)
    except OSError:
        return chain
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words:
            chain.append(Path(words[0]))
    return chain


def cannot_run(path: Path, account: pwd.struct_passwd) -> str | None:
    blocked = blocked_directory(path, account)
    if blocked is not None:
        st = blocked.stat()
        return f"it cannot enter {blocked} ({describe_mode(st.st_uid, st.st_gid, st.st_mode)})"
    real = path.resolve()
    blocked = blocked_directory(real, account)
    if blocked is not None:
        return f"{path} is {real}, and it cannot enter {blocked}"
    try:
        st = real.stat()
    except OSError:
        return f"{path} does not exist"
    if not permits(account, st.st_uid, st.st_gid, st.st_mode, 0o1):
        return f"{real} is not executable by it ({describe_mode(st.st_uid, st.st_gid, st.st_mode)})"
    return None


def check_post_rights(halves: Halves) -> Iterator[Finding]:
    imapd = halves.imapd
    if imapd is None or not imapd.configdirectory.is_dir():
        return
    postuser = imapd.get(IMAPD.postuser) or ""
    separator = "."  # internal names, whatever unixhierarchysep shows clients
    for name, rights in folder_rights(imapd):
        parts = name.split(separator)
        if parts[0] == "user":
            if len(parts) < 3 or parts[-1].lower() in PRIVATE_FOLDERS or "p" in rights:
                continue
            plus = f"{parts[1]}+{separator.join(parts[2:])}"
            yield Finding(imapd.path, 0, "post-right",
                          f"mailbox {name}: no p right for anyone: mail to {plus} goes to the "
                          f"INBOX (sealmail mailbox setacl {name} anyone p)")
        elif postuser and "p" not in rights:
            yield Finding(imapd.path, imapd.lines.get("postuser", 0), "post-right",
                          f"mailbox {name}: no p right for anyone: mail to {postuser}+{name} "
                          f"is refused (sealmail mailbox setacl {name} anyone p)")


def folder_rights(imapd: ImapdConfig) -> list[tuple[str, str]]:
    """(mailbox, rights of anonymous) for every mailbox, read as the store's account: the store
    must not get files owned by root (a child switches when we are root)."""
    from sealmail.privileges import store_account

    account = store_account(imapd)
    if account is None or account.uid == os.geteuid():
        return list_rights(imapd)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.close(read)
        code = 0
        try:
            from sealmail.privileges import switch_to

            switch_to(account)
            os.write(write, json.dumps(list_rights(imapd)).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    try:
        return [(str(name), str(rights)) for name, rights in json.loads(data or b"[]")]
    except ValueError:
        return []


def list_rights(imapd: ImapdConfig) -> list[tuple[str, str]]:
    from sealmail.store.acl import rights_of
    from sealmail.store.backends import open_store

    try:
        store = open_store(imapd)
    except Exception:  # an unreadable store: nothing to say about its folders
        return []
    try:
        return [(info.name, rights_of(info.acl, "anonymous", is_admin=False))
                for info in store.list_mailboxes()]
    finally:
        store.close()
