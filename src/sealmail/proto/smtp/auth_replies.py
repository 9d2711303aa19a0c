"""SASL outcomes as SMTP/LMTP replies (RFC 4954 6): the one table for this protocol family."""

from __future__ import annotations

from sealmail.proto.sasl import FailureReason
from sealmail.proto.smtp.replies import Reply

AUTH_FAILURE_REPLIES: dict[FailureReason, Reply] = {
    FailureReason.MALFORMED: Reply(501, "5.5.2", "Cannot decode AUTH response"),
    FailureReason.BAD_CREDENTIALS: Reply(535, "5.7.8", "Authentication credentials invalid"),
    FailureReason.AUTHZ_DENIED: Reply(535, "5.7.8", "Authentication credentials invalid"),
    FailureReason.TEMPORARY: Reply(454, "4.7.0", "Temporary authentication failure"),
    FailureReason.ENCRYPTION_REQUIRED: Reply(
        538, "5.7.11", "Encryption required for requested authentication mechanism"
    ),
    FailureReason.UNKNOWN_MECHANISM: Reply(504, "5.5.4", "Unrecognized authentication type"),
    FailureReason.TOO_WEAK: Reply(534, "5.7.9", "Authentication mechanism is too weak"),
}
AUTH_ABORTED = Reply(501, "5.0.0", "AUTH aborted")
AUTH_NOT_PERMITTED = Reply(535, "5.7.8", "Authenticated identity may not use this service")
TOO_MANY_AUTH_FAILURES = Reply(421, "4.7.0", "Too many authentication failures, closing")
