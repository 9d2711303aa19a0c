"""Rights and quotas over IMAP: ACL (RFC 4314) and QUOTA (RFC 9208), with Cyrus's rules:
the "a" right administers a mailbox's ACL, `admins` hold "l" and "a" everywhere, and only
admins set quotas (a user may read the quota of mailboxes they can read).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sealmail.imap.errors import CommandFailed
from sealmail.proto.imap import (
    DeleteAcl,
    GetAcl,
    GetQuota,
    GetQuotaRoot,
    ListRights,
    MyRights,
    Response,
    SetAcl,
    SetQuota,
)
from sealmail.proto.imap import response as replies
from sealmail.store import auditlog
from sealmail.store.acl import owner_rights
from sealmail.store.api import ALL_RIGHTS, QuotaUsage
from sealmail.store.errors import MailboxNotFound

if TYPE_CHECKING:
    from sealmail.imap.session import ImapSession

__all__ = ["deleteacl", "getacl", "getquota", "getquotaroot", "listrights", "myrights",
           "setacl", "setquota"]


def getacl(session: ImapSession, command: GetAcl) -> list[Response]:
    name = session.internal(command.mailbox)
    session.require_rights(name, "a")
    info = session.store.mailbox(name)
    assert info is not None
    return [replies.acl(session.external(name), sorted(info.acl.items()))]


def setacl(session: ImapSession, command: SetAcl) -> list[Response]:
    name = session.internal(command.mailbox)
    session.require_rights(name, "a")
    auditlog.set_acl(session.store, name, command.identifier, command.rights, session.audit)
    return []


def deleteacl(session: ImapSession, command: DeleteAcl) -> list[Response]:
    name = session.internal(command.mailbox)
    session.require_rights(name, "a")
    auditlog.set_acl(session.store, name, command.identifier, "", session.audit)
    return []


def listrights(session: ImapSession, command: ListRights) -> list[Response]:
    """RFC 4314 3.4: the owner always holds implicit_owner_rights (Cyrus's rule, so no SETACL
    locks them out); every other right may be granted one by one."""
    name = session.internal(command.mailbox)
    session.require_rights(name, "a")
    required = owner_rights(name, command.identifier, session.implicit_owner_rights)
    optional = [r for r in ALL_RIGHTS if r not in required] + list("0123456789")
    return [replies.listrights(session.external(name), command.identifier, required, optional)]


def myrights(session: ImapSession, command: MyRights) -> list[Response]:
    name = session.internal(command.mailbox)
    rights = session.rights(name)
    if not rights:
        raise MailboxNotFound(f"mailbox {command.mailbox} does not exist")  # RFC 4314 6
    return [replies.myrights(session.external(name), rights)]


def _resources(usage: QuotaUsage) -> list[tuple[str, int, int]]:
    out = []
    if usage.storage_limit is not None:
        out.append(("STORAGE", usage.storage_used // 1024, usage.storage_limit))
    if usage.messages_limit is not None:
        out.append(("MESSAGE", usage.messages_used, usage.messages_limit))
    return out


def getquotaroot(session: ImapSession, command: GetQuotaRoot) -> list[Response]:
    name = session.internal(command.mailbox)
    session.require_rights(name, "" if session.is_admin else "r")
    usage = session.store.quota_for(name)
    external = session.external(name)
    if usage is None:
        return [replies.quotaroot(external, [])]
    root = session.external(usage.root)
    return [replies.quotaroot(external, [root]), replies.quota(root, _resources(usage))]


def getquota(session: ImapSession, command: GetQuota) -> list[Response]:
    name = session.internal(command.root)
    usage = session.store.quota_for(name)
    if usage is None or usage.root != name:
        raise CommandFailed(f"{command.root} is not a quota root", "NONEXISTENT")
    if not session.is_admin:
        session.require_rights(name, "r")
    return [replies.quota(session.external(name), _resources(usage))]


def setquota(session: ImapSession, command: SetQuota) -> list[Response]:
    if not session.is_admin:
        raise CommandFailed("Only an administrator may set quotas", "NOPERM")
    name = session.internal(command.root)
    storage: int | None = None
    messages: int | None = None
    for resource, limit in command.limits:
        if resource == "STORAGE":
            storage = limit
        elif resource == "MESSAGE":
            messages = limit
        else:
            # RFC 9208 4.3.3: an unsupported resource makes the command fail.
            raise CommandFailed(f"Unsupported quota resource {resource}", status="NO")
    session.store.set_quota(name, storage, messages)
    usage = session.store.quota_for(name)
    return [replies.quota(session.external(name), _resources(usage))] if usage else []
