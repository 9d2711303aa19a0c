"""smtpd's postmaster notices (notify_classes resource, software, policy, protocol, bounce).

When an SMTP session had errors of a class main.cf's notify_classes names, the postmaster gets
the session's transcript when it ends, as from Postfix's smtpd_chat_notify(): to
error_notice_recipient (bounce_notice_recipient when the error was of class bounce, a message
too big), from double_bounce_sender so that the notice cannot loop, with the subject
"<mail_name> SMTP server: errors from <client>". The transcript (kept by the SMTP core) is made
printable and wrapped at 78 columns with every line indented one space, as Postfix writes
untrusted text into a message. The session's classes come from the core (protocol errors it
answered itself) and from smtpd (`note_error`: refused recipients, queue file write errors).
"""

from __future__ import annotations

import secrets
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from sealmail.mta.cleanup import format_date
from sealmail.mta.notify import NotifySettings
from sealmail.mta.queue import Envelope, Queue, RecipientRecord

__all__ = ["SESSION_CLASSES", "SessionNotice", "session_notice"]

# The classes an SMTP session's errors can have (Postfix's smtpd sets these in error_mask).
SESSION_CLASSES = frozenset({"bounce", "policy", "protocol", "resource", "software"})
_WIDTH = 78
_INDENT = 4


@dataclass(frozen=True, slots=True)
class SessionNotice:
    envelope: Envelope
    content: bytes

    def queue(self, queue: Queue) -> str:
        """Queue it durably (blocking); its queue id."""
        return queue.enqueue(self.envelope, self.content)


def _printable(text: str) -> str:
    """Postfix's printable(): anything but printable ASCII becomes '?'."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def _wrapped(line: str) -> list[str]:
    """Postfix's line_wrap(..., 78, 4): long lines go on indented, each line led by a space."""
    pieces = textwrap.wrap(line, _WIDTH, subsequent_indent=" " * _INDENT,
                           break_long_words=True, drop_whitespace=False) or [""]
    return [" " + piece for piece in pieces]


def session_notice(settings: NotifySettings, classes: set[str], history: Iterable[str],
                   client: str, reason: str, now: float) -> SessionNotice | None:
    """The notice for a session with errors of `classes`, or None when notify_classes asks
    for none of them."""
    wanted = classes & settings.classes & SESSION_CLASSES
    if not wanted:
        return None
    recipient = settings.bounce_recipient if "bounce" in wanted else settings.error_recipient
    host = settings.myhostname
    stamp = datetime.fromtimestamp(now).strftime("%Y%m%d%H%M%S")
    lines = [
        f"From: MAILER-DAEMON@{host} (Mail Delivery System)",
        f"To: {recipient} (Postmaster)",
        f"Subject: {settings.mail_name} SMTP server: errors from {client}",
        "Auto-Submitted: auto-generated",
        f"Message-Id: <{stamp}.{secrets.token_hex(4).upper()}@{host}>",
        f"Date: {format_date(now)}",
        "",
        "Transcript of session follows.",
        "",
    ]
    for entry in history:
        lines += _wrapped(_printable(entry))
    lines.append("")
    if reason:
        lines.append(f"Session aborted, reason: {reason}")
        lines.append("")
    lines.append("For other details, see the local mail logfile")
    content = ("\r\n".join(lines) + "\r\n").encode("ascii")
    envelope = Envelope(sender=settings.double_bounce_address,
                        recipients=(RecipientRecord(recipient),), arrival=now,
                        size=len(content), client="local", protocol="local")
    return SessionNotice(envelope, content)
