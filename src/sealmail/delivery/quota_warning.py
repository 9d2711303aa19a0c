"""The quota warning a user finds in their INBOX (imapd.conf quotawarn).

The store decides when a warning is due (sealmail.store.quota: once per crossing, remembered with
the root's limits); this module writes the message and files it. The warning is an RFC 5322
message from the postmaster, plain text saying the usage and the limit, delivered with
ignore_quota (it must reach a nearly full mailbox) and without asking for another warning.
"""

from __future__ import annotations

import logging
import secrets
import time
from email.utils import formatdate

from sealmail.store.api import AppendedMessage, Appending, DeliveryTarget, QuotaUsage
from sealmail.store.auditlog import AuditLog, message_id_of
from sealmail.store.errors import StoreError
from sealmail.store.names import owner_of, user_inbox

log = logging.getLogger("sealmail.delivery")


def _percent(used: int, limit: int) -> int:
    return used * 100 // limit if limit else 100


def usage_lines(usage: QuotaUsage) -> list[str]:
    """One line per limited resource: what is used, of what, in percent."""
    lines = []
    if usage.storage_limit is not None:
        used_kb = (usage.storage_used + 1023) // 1024
        lines.append(
            f"Storage: {used_kb} KiB used of {usage.storage_limit} KiB"
            f" ({_percent(usage.storage_used, usage.storage_limit * 1024)}%)"
        )
    if usage.messages_limit is not None:
        lines.append(
            f"Messages: {usage.messages_used} of {usage.messages_limit}"
            f" ({_percent(usage.messages_used, usage.messages_limit)}%)"
        )
    return lines


def warning_message(
    usage: QuotaUsage,
    *,
    recipient: str,
    postmaster: str,
    servername: str,
    now: float | None = None,
) -> bytes:
    """The warning as RFC 5322 bytes (CRLF, 7-bit)."""
    when = time.time() if now is None else now
    body = [
        f"Your mailbox {usage.root} is nearly full:",
        "",
        *(f"    {line}" for line in usage_lines(usage)),
        "",
        "When it is full, new mail to you will be refused and returned to its senders.",
        "Please delete messages you no longer need, or ask your administrator for more space.",
        "",
        "You get this warning once; it comes again only after your usage has gone down",
        "and risen to this level again.",
    ]
    headers = [
        f"From: Mail Delivery System <{postmaster}@{servername}>",
        f"To: <{recipient}>",
        f"Subject: Quota warning: mailbox {usage.root} is nearly full",
        f"Date: {formatdate(when, localtime=False, usegmt=True)}",
        f"Message-ID: <quotawarn.{int(when)}.{secrets.token_hex(8)}@{servername}>",
        "Auto-Submitted: auto-generated",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Transfer-Encoding: 7bit",
    ]
    return ("\r\n".join([*headers, "", *body]) + "\r\n").encode("ascii", "replace")


def send_warning(
    store: Appending,
    usage: QuotaUsage,
    *,
    postmaster: str,
    servername: str,
    audit: AuditLog | None = None,
) -> AppendedMessage | StoreError | None:
    """File the warning for `usage` in its owner's INBOX; None when the root has no owner."""
    owner = owner_of(usage.root)
    if owner is None:
        log.info("quota root %s reached its warning level; shared, no one to warn", usage.root)
        return None
    inbox = user_inbox(owner.user, owner.domain)
    address = f"{owner.user}@{owner.domain or servername}"  # RFC 5322 3.4.1: addr-spec has a domain
    content = warning_message(
        usage, recipient=address, postmaster=postmaster, servername=servername
    )
    [result] = store.deliver(content, [DeliveryTarget(inbox, ignore_quota=True)])
    if isinstance(result, AppendedMessage):
        log.info(
            "quota warning: root=%s, %s, delivered to %s uid=%d",
            usage.root, "; ".join(usage_lines(usage)), inbox, result.uid,
        )
        if audit is not None:
            audit.appended([result], message_id_of(content))
    else:
        log.warning("quota warning for %s not delivered: %s", usage.root, result)
    return result
