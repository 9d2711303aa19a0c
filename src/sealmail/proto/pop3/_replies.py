"""POP3 replies: a status indicator, an optional RFC 2449 response code, and text.

This module is also the ONE place where SASL failures become POP3 replies; store errors become
them in sealmail.pop3.errors, the glue between this core and the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sealmail.proto.sasl import FailureReason

__all__ = ["Reply", "ResponseCode", "sasl_failure"]


class ResponseCode(enum.Enum):
    """Extended response codes (RFC 2449 8, RFC 3206) sent inside brackets after -ERR."""

    IN_USE = "IN-USE"  # RFC 2449 8.1.1: the maildrop is locked by another POP session
    LOGIN_DELAY = "LOGIN-DELAY"  # RFC 2449 8.1.2: logged in too soon after the last login
    AUTH = "AUTH"  # RFC 3206 4: the failure is about the credentials
    SYS_TEMP = "SYS/TEMP"  # RFC 3206 5: a temporary system problem; try later
    SYS_PERM = "SYS/PERM"  # RFC 3206 5: a system problem that needs an administrator


@dataclass(frozen=True, slots=True)
class Reply:
    """One status line: "+OK text" or "-ERR [CODE] text" (RFC 1939 3, RFC 2449 8)."""

    ok: bool
    text: str = ""
    code: ResponseCode | None = None

    def __post_init__(self) -> None:
        if "\r" in self.text or "\n" in self.text:
            # A line end inside the text would let it forge further replies.
            raise ValueError("reply text must not hold CR or LF")
        if self.ok and self.code is not None:
            raise ValueError("response codes go with -ERR only")

    def render(self) -> bytes:
        indicator = "+OK" if self.ok else "-ERR"
        parts = [indicator]
        if self.code is not None:
            parts.append(f"[{self.code.value}]")
        if self.text:
            parts.append(self.text)
        # RFC 1939 3: responses are "up to 512 characters long, including the terminating
        # CRLF"; texts here are short, and exceptions' details are clipped by their callers.
        return (" ".join(parts) + "\r\n").encode("utf-8")


def OK(text: str = "") -> Reply:
    return Reply(True, text)


def ERR(text: str, code: ResponseCode | None = None) -> Reply:
    return Reply(False, text, code)


_SASL_REPLIES: dict[FailureReason, Reply] = {
    FailureReason.MALFORMED: ERR("authenticating: malformed client response", ResponseCode.AUTH),
    # Unknown user and wrong password read the same: no probing for user names.
    FailureReason.BAD_CREDENTIALS: ERR("authenticating: authentication failure", ResponseCode.AUTH),
    FailureReason.AUTHZ_DENIED: ERR("authenticating: authorization failure", ResponseCode.AUTH),
    # RFC 3206 5 / RFC 5034 6: a backend that cannot answer is not the user's fault.
    FailureReason.TEMPORARY: ERR(
        "authentication backend temporarily unavailable", ResponseCode.SYS_TEMP
    ),
    FailureReason.ENCRYPTION_REQUIRED: ERR(
        "mechanism only available under a layer (use STLS)", ResponseCode.AUTH
    ),
    FailureReason.UNKNOWN_MECHANISM: ERR(
        "authenticating: no mechanism available", ResponseCode.AUTH
    ),
    FailureReason.TOO_WEAK: ERR("authenticating: encryption too weak", ResponseCode.AUTH),
}


def sasl_failure(reason: FailureReason) -> Reply:
    """The reply to a failed AUTH (RFC 5034 4: "-ERR" ends the exchange) or USER/PASS."""
    return _SASL_REPLIES[reason]
