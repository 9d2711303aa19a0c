"""Non-delivery notices: RFC 3464 delivery status notifications, built as bytes. Pure.

RFC 3464 2: a DSN is a multipart/report (RFC 6522) with report-type=delivery-status and three
parts: a human-readable explanation, a message/delivery-status part (per-message fields, then
one block of per-recipient fields for each recipient), and the returned message
(message/rfc822, or text/rfc822-headers when RET=HDRS was asked or the message is larger than
bounce_size_limit, as Postfix does).

The notice goes from the null sender (RFC 5321 4.5.5: "notification messages ... MUST be sent
with a null return path") so that it can never bounce back in a loop.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sealmail.mta.cleanup import format_date, normalize_line_ends


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str  # the final recipient
    original: str  # as the sender wrote it
    status: str  # RFC 3463 code, e.g. "5.1.1"; a 4.x.x code for expired mail
    diagnostic: str  # the remote reply or our explanation
    remote_mta: str = ""  # e.g. "lmtp.example.com" (dns type), "" when none
    action: str = "failed"  # RFC 3464 2.3.3
    orcpt: str = ""  # the DSN ORCPT value as given (addr-type;xtext)


@dataclass(frozen=True, slots=True)
class BounceRequest:
    queue_id: str
    sender: str  # who gets the notice
    arrival: float
    reporting_mta: str  # our myhostname
    failed: tuple[FailedRecipient, ...]
    original: bytes  # the original message (CRLF)
    mail_name: str = "sealmail"
    return_headers_only: bool = False  # RET=HDRS
    size_limit: int = 50000  # bounce_size_limit
    envid: str = ""
    postmaster: str = "postmaster"


def _headers_of(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_bounce(request: BounceRequest, now: float) -> bytes:
    """The notice as a complete message (headers and body, CRLF)."""
    host = request.reporting_mta
    boundary = f"{request.queue_id}.{int(now)}/{host}"
    date = format_date(now)
    expired = any(f.status.startswith("4") for f in request.failed)
    subject = "Undelivered Mail Returned to Sender"
    stamp = datetime.fromtimestamp(now).strftime("%Y%m%d%H%M%S")
    message_id = f"<{stamp}.{secrets.token_hex(4).upper()}@{host}>"
    lines: list[str] = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"Subject: {subject}",
        f"To: {request.sender}",
        "Auto-Submitted: auto-replied",  # RFC 3834 5
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        f"Message-Id: {message_id}",
        f"Date: {date}",
        "",
        "This is a MIME-encapsulated message.",
        "",
        f"--{boundary}",
        "Content-Description: Notification",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
        "",
        f"This is the mail system at host {host}.",
        "",
        "I'm sorry to have to inform you that your message could not",
        "be delivered to one or more recipients. It's attached below.",
        "",
        "For further assistance, please send mail to " + request.postmaster + ".",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        f"                   The {request.mail_name} program",
        "",
    ]
    for failed in request.failed:
        why = failed.diagnostic
        if expired and failed.status.startswith("4"):
            why = f"message expired in the queue: {why}"
        lines.append(f"<{failed.address}>: {why}")
    lines += [
        "",
        f"--{boundary}",
        "Content-Description: Delivery report",
        "Content-Type: message/delivery-status",
        "",
        # RFC 3464 2.2: per-message fields.
        f"Reporting-MTA: dns; {host}",
        f"X-Postfix-Queue-ID: {request.queue_id}",
        f"X-Postfix-Sender: rfc822; {request.sender}",
    ]
    if request.envid:
        lines.append(f"Original-Envelope-Id: {request.envid}")
    lines.append(f"Arrival-Date: {format_date(request.arrival)}")
    for failed in request.failed:
        # RFC 3464 2.3: per-recipient fields, each block preceded by a blank line.
        lines.append("")
        lines.append(f"Final-Recipient: rfc822; {failed.address}")
        if failed.orcpt:
            lines.append(f"Original-Recipient: {failed.orcpt}")
        elif failed.original and failed.original != failed.address:
            lines.append(f"Original-Recipient: rfc822; {failed.original}")
        lines.append(f"Action: {failed.action}")
        lines.append(f"Status: {failed.status}")
        if failed.remote_mta:
            lines.append(f"Remote-MTA: dns; {failed.remote_mta}")
        diagnostic = " ".join(failed.diagnostic.split())
        # RFC 3464 2.3.6: diagnostic-type "smtp"; our own texts are written as SMTP replies too.
        lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    lines.append("")
    original = normalize_line_ends(request.original)
    headers_only = request.return_headers_only or (
        request.size_limit > 0 and len(original) > request.size_limit)
    lines += [f"--{boundary}"]
    if headers_only:
        lines += ["Content-Description: Undelivered Message Headers",
                  "Content-Type: text/rfc822-headers", "Content-Transfer-Encoding: 8bit", ""]
        returned = _headers_of(original)
    else:
        lines += ["Content-Description: Undelivered Message", "Content-Type: message/rfc822",
                  "Content-Transfer-Encoding: 8bit", ""]
        returned = original
    head = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if returned and not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    tail = f"\r\n--{boundary}--\r\n".encode()
    return head + returned + tail
