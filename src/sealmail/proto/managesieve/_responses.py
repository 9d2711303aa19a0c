"""ManageSieve responses (RFC 5804 section 1.3, 4) and the one mapping from failures to them.

    response-ok   = "OK" [SP "(" resp-code ")"] [SP string] CRLF
    response-nobye = ("NO" / "BYE") [SP "(" resp-code ")"] [SP string] CRLF

SASL failure reasons become responses here and nowhere else; script-store errors become them in
sealmail.managesieve.errors, the glue between this core and the store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sealmail.proto.managesieve._syntax import render_string
from sealmail.proto.sasl import FailureReason

__all__ = [
    "Response",
    "ResponseCode",
    "Status",
    "sasl_failure",
]


class Status(enum.Enum):
    OK = "OK"
    NO = "NO"
    BYE = "BYE"


class ResponseCode(enum.Enum):
    """RFC 5804 1.3 response codes (the hierarchical QUOTA ones spelled out)."""

    AUTH_TOO_WEAK = "AUTH-TOO-WEAK"  # the mechanism is below sasl_minimum_layer
    ENCRYPT_NEEDED = "ENCRYPT-NEEDED"  # plaintext mechanism outside TLS
    QUOTA = "QUOTA"
    QUOTA_MAXSCRIPTS = "QUOTA/MAXSCRIPTS"  # sieve_maxscripts reached
    QUOTA_MAXSIZE = "QUOTA/MAXSIZE"  # script over sieve_maxscriptsize
    SASL = "SASL"  # carries the mechanism's additional data with success (RFC 5804 2.1)
    # The mechanism needs a password the server cannot derive its secrets from; sealmail's
    # sasldb keeps every mechanism's secret from the moment a password is set, so this code is
    # only ever parsed by clients of other servers, never sent here.
    TRANSITION_NEEDED = "TRANSITION-NEEDED"
    TRYLATER = "TRYLATER"  # a temporary failure (the password backend, a full disk)
    ACTIVE = "ACTIVE"  # DELETESCRIPT of the active script
    NONEXISTENT = "NONEXISTENT"  # no script of that name
    ALREADYEXISTS = "ALREADYEXISTS"  # RENAMESCRIPT onto a name in use
    TAG = "TAG"  # NOOP's echo (RFC 5804 2.13)
    WARNINGS = "WARNINGS"  # PUTSCRIPT/CHECKSCRIPT accepted a script with warnings


_CARRIES_STRING = frozenset({ResponseCode.SASL, ResponseCode.TAG})


@dataclass(frozen=True, slots=True)
class Response:
    """One status response; `code_data` is the string a SASL or TAG code carries."""

    status: Status
    text: str = ""
    code: ResponseCode | None = None
    code_data: bytes | None = None

    def __post_init__(self) -> None:
        if (self.code in _CARRIES_STRING) != (self.code_data is not None):
            raise ValueError(f"{self.code} and code data go together (SASL, TAG only)")

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def render(self) -> bytes:
        out = bytearray(self.status.value.encode("ascii"))
        if self.code is not None:
            out += b" (" + self.code.value.encode("ascii")
            if self.code_data is not None:
                out += b" " + render_string(self.code_data)
            out += b")"
        if self.text:
            out += b" " + render_string(self.text)
        return bytes(out) + b"\r\n"


def OK(text: str = "", code: ResponseCode | None = None, data: bytes | None = None) -> Response:
    return Response(Status.OK, text, code, data)


def NO(text: str, code: ResponseCode | None = None) -> Response:
    return Response(Status.NO, text, code)


def BYE(text: str, code: ResponseCode | None = None) -> Response:
    return Response(Status.BYE, text, code)


_SASL_RESPONSES: dict[FailureReason, Response] = {
    FailureReason.MALFORMED: NO("Authentication error: malformed client response"),
    # Unknown user and wrong password read the same: no probing for user names.
    FailureReason.BAD_CREDENTIALS: NO("Authentication error"),
    FailureReason.AUTHZ_DENIED: NO("Authorization failure"),
    FailureReason.TEMPORARY: NO(
        "Authentication backend temporarily unavailable", ResponseCode.TRYLATER
    ),
    FailureReason.ENCRYPTION_REQUIRED: NO(
        "This mechanism needs an encrypted connection (use STARTTLS)", ResponseCode.ENCRYPT_NEEDED
    ),
    FailureReason.UNKNOWN_MECHANISM: NO("Authentication mechanism not available"),
    FailureReason.TOO_WEAK: NO("Encryption too weak", ResponseCode.AUTH_TOO_WEAK),
}


def sasl_failure(reason: FailureReason) -> Response:
    """The NO that ends a failed AUTHENTICATE (RFC 5804 2.1)."""
    return _SASL_RESPONSES[reason]
