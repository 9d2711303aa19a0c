"""What a script decided: typed actions for the host to carry out, in the order they were taken.

Flags are normalised as RFC 5232 section 3 compares them: case-insensitively, so they are kept
lower-cased, sorted and without duplicates. `message` is the message as editheader (RFC 5293) left
it when the action was taken, or None when the script changed no header.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keep:
    """Store in INBOX: an explicit `keep`, `fileinto "INBOX"`, or the implicit keep.

    `fallback_from` names the folder of a `fileinto` that became this keep because the folder
    does not exist and `:create` was not given (RFC 5490 section 3.2: deliver to INBOX instead).
    """

    flags: tuple[str, ...] = ()
    implicit: bool = False
    message: bytes | None = None
    fallback_from: str | None = None


@dataclass(frozen=True, slots=True)
class FileInto:
    """Store in `mailbox` (a UTF-8 name, RFC 5228 section 4.1; the host converts it)."""

    mailbox: str
    flags: tuple[str, ...] = ()
    copy: bool = False
    create: bool = False
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Redirect:
    """Resend to `address` (bare, no angle brackets) with the original envelope sender."""

    address: str
    copy: bool = False
    message: bytes | None = None


@dataclass(frozen=True, slots=True)
class Discard:
    """Silently drop: cancels the implicit keep and nothing else (RFC 5228 section 4.4)."""


@dataclass(frozen=True, slots=True)
class Reject:
    """Refuse with a DSN/MDN carrying `reason` (RFC 5429 section 2.2)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ereject:
    """Refuse at the protocol level, an LMTP 550 with `reason` (RFC 5429 section 2.1)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Vacation:
    """An RFC 5230 auto-reply. `sent` tells whether the section 4.5/4.6 rules and the response
    database let it go; `to` is the recipient of the reply when it is sent.

    `tracking_key` identifies the response for the vacation database (RFC 5230 section 4.2: the
    handle, or one derived from the reason, subject, from and mime); after sending, the host
    records (`tracking_key`, `to`) for `seconds`.
    """

    reason: str
    subject: str | None
    from_address: str | None
    addresses: tuple[str, ...]
    mime: bool
    handle: str | None
    seconds: int
    sent: bool
    to: str | None
    tracking_key: str
    original_subject: str
    original_message_id: str | None
    why_not_sent: str | None = None


@dataclass(frozen=True, slots=True)
class Notify:
    """An RFC 5435 notification; `method` is a URI such as "mailto:x@example.com"."""

    method: str
    from_address: str | None
    importance: int
    options: tuple[str, ...]
    message: str


@dataclass(frozen=True, slots=True)
class DuplicateMark:
    """RFC 7352 section 3: after delivery succeeds, the host records `key` for `seconds`."""

    key: str
    seconds: int


Action = Keep | FileInto | Redirect | Discard | Reject | Ereject | Vacation | Notify
