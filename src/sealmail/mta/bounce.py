"""Delivery status notices: RFC 3464 DSNs, built as bytes, in the wording of Postfix's bounce(8)
templates. Pure.

RFC 3464 2: a DSN is a multipart/report (RFC 6522) with report-type=delivery-status and three
parts: a human-readable explanation, a message/delivery-status part (per-message fields, then
one block of per-recipient fields for each recipient), and the returned message
(message/rfc822, or text/rfc822-headers when RET=HDRS was asked, the message is larger than
bounce_size_limit, or the notice is a delay warning or a postmaster's copy of a bounce, as
Postfix does).

Two templates, as Postfix's: `failure` ("Undelivered Mail Returned to Sender", Action: failed)
and `delay` ("Delayed Mail (still being retried)", Action: delayed, with Will-Retry-Until:, sent
once when mail has waited delay_warning_time). A postmaster's copy (notify_classes) has the
template's postmaster subject, no boiler-plate text, and Auto-Submitted: auto-generated.

A notice to a sender goes from the null sender (RFC 5321 4.5.5: "notification messages ... MUST
be sent with a null return path") and one to the postmaster from double_bounce_sender, so that
neither can bounce back in a loop (sealmail.mta.notify decides who gets which).
"""

from __future__ import annotations

import enum
import secrets
from dataclasses import dataclass
from datetime import datetime

from sealmail.mta.cleanup import format_date, normalize_line_ends


class Template(enum.Enum):
    FAILURE = "failure"
    DELAY = "delay"


_SUBJECTS = {
    Template.FAILURE: ("Undelivered Mail Returned to Sender", "Postmaster Copy: Undelivered Mail"),
    Template.DELAY: ("Delayed Mail (still being retried)", "Postmaster Warning: Delayed Mail"),
}


@dataclass(frozen=True, slots=True)
class FailedRecipient:
    address: str  # the final recipient
    original: str  # as the sender wrote it
    status: str  # RFC 3463 code, e.g. "5.1.1"; a 4.x.x code for expired or delayed mail
    diagnostic: str  # the remote reply or our explanation
    remote_mta: str = ""  # e.g. "lmtp.example.com" (dns type), "" when none
    action: str = "failed"  # RFC 3464 2.3.3
    orcpt: str = ""  # the DSN ORCPT value as given (addr-type;xtext)


@dataclass(frozen=True, slots=True)
class BounceRequest:
    queue_id: str
    sender: str  # the original message's envelope sender
    arrival: float
    reporting_mta: str  # our myhostname
    failed: tuple[FailedRecipient, ...]
    original: bytes  # the original message (CRLF)
    mail_name: str = "sealmail"
    return_headers_only: bool = False  # RET=HDRS, delay warnings, postmaster copies of bounces
    size_limit: int = 50000  # bounce_size_limit
    envid: str = ""
    postmaster: str = "postmaster"
    template: Template = Template.FAILURE
    to: str = ""  # the To: header: the notice's recipient ("" = the sender)
    postmaster_copy: bool = False
    retry_until: float = 0.0  # delay: arrival + maximal_queue_lifetime (Will-Retry-Until:)
    warning_hours: int = 0  # delay: delay_warning_time in hours, as Postfix's template says
    lifetime_days: int = 0  # delay: maximal_queue_lifetime in days
    smtputf8: bool = False  # the original declared SMTPUTF8: the RFC 6532 "global" types


def _headers_of(message: bytes) -> bytes:
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_bounce(request: BounceRequest, now: float) -> bytes:
    """The notice as a complete message (headers and body, CRLF)."""
    host = request.reporting_mta
    boundary = f"{request.queue_id}.{int(now)}/{host}"
    lines = _headers(request, boundary, now)
    lines += ["", "This is a MIME-encapsulated message.", "",
              f"--{boundary}",
              "Content-Description: Notification",
              "Content-Type: text/plain; charset=utf-8",
              "Content-Transfer-Encoding: 8bit",
              ""]
    if not request.postmaster_copy:
        lines += _boilerplate(request)
    lines += _explanations(request)
    # RFC 6533 6.1: message/global-delivery-status where addresses may be UTF-8 (Postfix sends
    # it when the original declared SMTPUTF8).
    kind = "global-delivery-status" if request.smtputf8 else "delivery-status"
    lines += ["", f"--{boundary}", "Content-Description: Delivery report",
              f"Content-Type: message/{kind}", ""]
    lines += _per_message(request)
    for failed in request.failed:
        lines += _per_recipient(request, failed)
    lines.append("")
    head, returned = _returned(request, boundary)
    lines += head
    body = ("\r\n".join(lines) + "\r\n").encode("utf-8")
    if returned and not returned.endswith(b"\r\n"):
        returned += b"\r\n"
    return body + returned + f"\r\n--{boundary}--\r\n".encode()


def _headers(request: BounceRequest, boundary: str, now: float) -> list[str]:
    host = request.reporting_mta
    stamp = datetime.fromtimestamp(now).strftime("%Y%m%d%H%M%S")
    subject, postmaster_subject = _SUBJECTS[request.template]
    return [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"Subject: {postmaster_subject if request.postmaster_copy else subject}",
        f"To: {request.to or request.sender}",
        # RFC 3834 5; Postfix marks a postmaster's copy auto-generated.
        f"Auto-Submitted: {'auto-generated' if request.postmaster_copy else 'auto-replied'}",
        "MIME-Version: 1.0",
        "Content-Type: multipart/report; report-type=delivery-status;",
        f'\tboundary="{boundary}"',
        "Content-Transfer-Encoding: 8bit",
        f"Message-Id: <{stamp}.{secrets.token_hex(4).upper()}@{host}>",
        f"Date: {format_date(now)}",
    ]


def _boilerplate(request: BounceRequest) -> list[str]:
    host = request.reporting_mta
    if request.template is Template.DELAY:
        middle = [
            "####################################################################",
            "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
            "####################################################################",
            "",
            f"Your message could not be delivered for more than {request.warning_hours} "
            "hour(s).",
            f"It will be retried until it is {request.lifetime_days} day(s) old.",
        ]
    else:
        middle = ["I'm sorry to have to inform you that your message could not",
                  "be delivered to one or more recipients. It's attached below."]
    return [
        f"This is the mail system at host {host}.",
        "",
        *middle,
        "",
        "For further assistance, please send mail to " + request.postmaster + ".",
        "",
        "If you do so, please include this problem report. You can",
        "delete your own text from the attached returned message.",
        "",
        f"                   The {request.mail_name} program",
        "",
    ]


def _explanations(request: BounceRequest) -> list[str]:
    """`<address>: reason`, one per recipient (Postfix's bounce_diagnostic_log)."""
    lines = []
    expired = request.template is Template.FAILURE and any(
        f.status.startswith("4") for f in request.failed)
    for failed in request.failed:
        why = failed.diagnostic
        if expired and failed.status.startswith("4"):
            why = f"message expired in the queue: {why}"
        if failed.original and failed.original != failed.address:
            lines.append(f"<{failed.address}> (expanded from <{failed.original}>): {why}")
        else:
            lines.append(f"<{failed.address}>: {why}")
    return lines


def _per_message(request: BounceRequest) -> list[str]:
    """RFC 3464 2.2: per-message fields."""
    lines = [
        f"Reporting-MTA: dns; {request.reporting_mta}",
        f"X-Postfix-Queue-ID: {request.queue_id}",
        f"X-Postfix-Sender: {_address_type(request, request.sender)}; {request.sender}",
    ]
    if request.envid:
        lines.append(f"Original-Envelope-Id: {request.envid}")
    lines.append(f"Arrival-Date: {format_date(request.arrival)}")
    return lines


def _per_recipient(request: BounceRequest, failed: FailedRecipient) -> list[str]:
    """RFC 3464 2.3: per-recipient fields, each block preceded by a blank line."""
    lines = ["", f"Final-Recipient: {_address_type(request, failed.address)}; {failed.address}"]
    if failed.orcpt:
        lines.append(f"Original-Recipient: {failed.orcpt}")
    elif failed.original and failed.original != failed.address:
        kind = _address_type(request, failed.original)
        lines.append(f"Original-Recipient: {kind}; {failed.original}")
    action = "delayed" if request.template is Template.DELAY else failed.action
    lines += [f"Action: {action}", f"Status: {failed.status}"]
    if failed.remote_mta:
        lines.append(f"Remote-MTA: dns; {failed.remote_mta}")
    diagnostic = " ".join(failed.diagnostic.split())
    # RFC 3464 2.3.6: diagnostic-type "smtp"; our own texts are written as SMTP replies too.
    lines.append(f"Diagnostic-Code: smtp; {diagnostic}")
    if request.template is Template.DELAY and request.retry_until:
        lines.append(f"Will-Retry-Until: {format_date(request.retry_until)}")  # RFC 3464 2.3.8
    return lines


def _address_type(request: BounceRequest, address: str) -> str:
    """RFC 6533 3: "utf-8" for a UTF-8 address of a message that declared SMTPUTF8."""
    return "utf-8" if request.smtputf8 and not address.isascii() else "rfc822"


def _returned(request: BounceRequest, boundary: str) -> tuple[list[str], bytes]:
    """The third part's headers, and the message (or its headers) it returns."""
    original = normalize_line_ends(request.original)
    headers_only = request.return_headers_only or (
        request.size_limit > 0 and len(original) > request.size_limit)
    if headers_only:
        kind = "message/global-headers" if request.smtputf8 else "text/rfc822-headers"
        return ([f"--{boundary}", "Content-Description: Undelivered Message Headers",
                 f"Content-Type: {kind}", "Content-Transfer-Encoding: 8bit", ""],
                _headers_of(original))
    kind = "message/global" if request.smtputf8 else "message/rfc822"
    return ([f"--{boundary}", "Content-Description: Undelivered Message",
             f"Content-Type: {kind}", "Content-Transfer-Encoding: 8bit", ""], original)
