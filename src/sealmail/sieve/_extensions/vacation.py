"""RFC 5230 vacation, with :seconds from RFC 6131 (vacation-seconds).

Whether a reply may go is decided here, from the message and the response database the host
passes (section 4.2); the reply is composed and sent by the host. Section 4.5/4.6 and RFC 3834
section 2: never answer the null sender, mailing lists, bulk or automatic mail, mailer daemons,
the user's own mail, or a message that was not addressed to the user.
"""

from __future__ import annotations

import hashlib

from sealmail.sieve._interpreter import Interpreter
from sealmail.sieve._message import parse_addresses, split_address
from sealmail.sieve._spec import ArgKind, Call, CheckScope, Signature, Tag
from sealmail.sieve.actions import Vacation

_LIST_HEADERS = ("list-id", "list-help", "list-subscribe", "list-unsubscribe", "list-post",
                 "list-owner", "list-archive")
_RECIPIENT_HEADERS = ("to", "cc", "bcc", "resent-to", "resent-cc", "resent-bcc")
_DAEMON_LOCALS = ("mailer-daemon", "listserv", "majordomo", "mailer", "postmaster", "noreply",
                  "no-reply")


def _why_not(interp: Interpreter, user_addresses: set[str], key: str) -> str | None:
    """The reason RFC 5230 forbids the reply, or None when it may be sent."""
    run = interp.run
    sender = run.envelope.sender
    message = run.message
    if not sender:
        return "the message has the null sender"
    if "@" not in sender:
        return "the sender address is not valid"
    if sender.lower() in user_addresses:
        return "the sender is the user"
    local = split_address(sender).local.lower()
    if local in _DAEMON_LOCALS or local.startswith("owner-") or local.endswith(
            ("-request", "-owner", "-bounces")):
        return "the sender is a list or a mailer daemon"
    for value in message.values("auto-submitted"):
        if value.split(";")[0].strip().lower() != "no":
            return "the message was submitted automatically"
    for value in message.values("precedence"):
        if value.strip().lower() in ("bulk", "list", "junk"):
            return "the message is bulk or list mail"
    if any(message.has(name) for name in _LIST_HEADERS):
        return "the message comes from a mailing list"
    addressed = {
        address.full.lower()
        for name in _RECIPIENT_HEADERS
        for value in message.values(name)
        for address in parse_addresses(value)
    }
    if not addressed & user_addresses:
        return "the user is not among the message's recipients"
    tracker = run.context.vacation
    if tracker is not None and tracker.responded(key, sender):
        return "the sender was already answered within the period"
    return None


def _vacation(interp: Interpreter, call: Call) -> None:
    context = interp.run.context
    reason = interp.string(call, 0)
    subject = interp.option_string(call, ":subject")
    from_address = interp.option_string(call, ":from")
    addresses = tuple(interp.option_strings(call, ":addresses") or ())
    handle = interp.option_string(call, ":handle")
    mime = call.has(":mime")
    days = call.option_number(":days")
    seconds = call.option_number(":seconds")
    if seconds is None:
        seconds = context.vacation_default_seconds if days is None else max(days, 1) * 86400
    seconds = min(max(seconds, context.vacation_min_seconds), context.vacation_max_seconds)
    # RFC 5230 section 4.2: without :handle, replies differ when reason, subject, from or mime do
    if handle is not None:
        identity = "handle\0" + handle
    else:
        identity = "\0".join(("reason", reason, subject or "", from_address or "", str(mime)))
    key = hashlib.sha256(identity.encode("utf-8", "surrogateescape")).hexdigest()
    user_addresses = {a.lower() for a in (interp.run.envelope.recipient,
                                          *context.user_addresses, *addresses) if a}
    if interp.run.envelope.original_recipient:
        user_addresses.add(interp.run.envelope.original_recipient.lower())
    why_not = _why_not(interp, user_addresses, key)
    subjects = interp.run.message.values("subject")
    message_ids = interp.run.message.values("message-id")
    interp.add_action(
        Vacation(
            reason=reason, subject=subject, from_address=from_address, addresses=addresses,
            mime=mime, handle=handle, seconds=seconds, sent=why_not is None,
            to=interp.run.envelope.sender if why_not is None else None, tracking_key=key,
            original_subject=subjects[0] if subjects else "",
            original_message_id=message_ids[0] if message_ids else None,
            why_not_sent=why_not,
        ),
        cancels_keep=False,
    )


def _check_vacation(call: Call, scope: CheckScope) -> None:
    variables = "variables" in scope.requires
    values = [call.option_string(":from") or ""]
    values += list(call.option_strings(":addresses") or ())
    for value in values:
        if not value or (variables and "${" in value):
            continue
        found = parse_addresses(value)
        if len(found) != 1 or not found[0].domain:
            scope.error(call, f"vacation: invalid address {value!r}")
    if call.has(":mime"):
        reason = call.arg_string(0)
        if not (variables and "${" in reason) and ":" not in reason.split("\r\n\r\n")[0]:
            scope.error(call, "vacation: with :mime the reason must be a MIME entity")


SIGNATURES = (
    Signature(
        "vacation", "vacation",
        tags=(
            Tag(":days", ArgKind.NUMBER, group="period"),
            Tag(":seconds", ArgKind.NUMBER, group="period", extension="vacation-seconds"),
            Tag(":subject", ArgKind.STRING), Tag(":from", ArgKind.STRING),
            Tag(":addresses", ArgKind.STRINGLIST), Tag(":mime"), Tag(":handle", ArgKind.STRING),
        ),
        positional=(ArgKind.STRING,), check=_check_vacation, run_command=_vacation,
    ),
)


def compose_vacation_reply(
    vacation: Vacation, *, from_address: str, date: str, message_id: str
) -> bytes:
    """The reply message for a sent `Vacation`, per RFC 5230 section 5 and RFC 3834 section 3.

    `from_address` is used when the script gave no :from (the user's address); `date` and
    `message_id` come from the host, which owns the clock and the domain. The reply goes to
    `vacation.to` with a null envelope sender (RFC 3834 section 3.3), which is the host's part.
    """
    if vacation.to is None:
        raise ValueError("this vacation response was not to be sent")
    subject = vacation.subject
    if subject is None:  # section 5.2: "Auto:" and the original subject
        subject = f"Auto: {vacation.original_subject}".rstrip()
    lines = [
        f"From: {vacation.from_address or from_address}",
        f"To: {vacation.to}",
        f"Subject: {_encode_header(subject)}",
        f"Date: {date}",
        f"Message-ID: {message_id}",
        "Auto-Submitted: auto-replied",  # RFC 3834 section 5
        "Precedence: bulk",
    ]
    if vacation.original_message_id:  # section 5.8: In-Reply-To and References
        lines.append(f"In-Reply-To: {vacation.original_message_id}")
        lines.append(f"References: {vacation.original_message_id}")
    head = "\r\n".join(lines) + "\r\n"
    if vacation.mime:
        # section 5.7: with :mime the reason is a MIME part, its own headers included
        reason = vacation.reason.replace("\r\n", "\n").replace("\n", "\r\n")
        return (head + "MIME-Version: 1.0\r\n" + reason).encode("utf-8")
    body = vacation.reason.replace("\r\n", "\n").replace("\n", "\r\n")
    if not body.endswith("\r\n"):
        body += "\r\n"
    head += ("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
             "Content-Transfer-Encoding: 8bit\r\n\r\n")
    return (head + body).encode("utf-8")


def _encode_header(value: str) -> str:
    if value.isascii():
        return value
    import email.header

    return email.header.Header(value, "utf-8").encode()
