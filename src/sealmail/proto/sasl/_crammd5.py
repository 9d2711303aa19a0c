"""CRAM-MD5 (RFC 2195): a challenge, and the answer `user SP hex(HMAC-MD5(password, challenge))`.

The server keeps no password: it finishes the saved HMAC-MD5 key states (see _md5) over the
challenge it sent.
"""

from __future__ import annotations

import hmac

from sealmail.proto.sasl._core import (
    Challenge,
    CramMD5Secret,
    CredentialsUnavailable,
    FailureReason,
    MechanismContext,
    ServerMechanism,
    StepResult,
    decode_text,
    split_identity,
)
from sealmail.proto.sasl._md5 import hmac_md5_from_states, hmac_md5_key_states
from sealmail.proto.sasl._plain import MAX_CLIENT_MESSAGE

__all__ = ["CramMD5Mechanism", "cram_md5_secret"]

_HEX = frozenset("0123456789abcdef")


def cram_md5_secret(password: bytes) -> CramMD5Secret:
    """The stored form of a password for CRAM-MD5 (not reversible to the password)."""
    inner, outer = hmac_md5_key_states(password)
    return CramMD5Secret(inner, outer)


class CramMD5Mechanism(ServerMechanism):
    """Server-first. The challenge is `<random.random@servername>` like Cyrus SASL's.

    RFC 2195 2: the challenge is a "presumptively arbitrary string of random digits, a
    timestamp, and the fully-qualified primary host name of the server" in msg-id form; the
    second random number stands in for the timestamp, which a sans-I/O core cannot read.
    """

    name = "CRAM-MD5"

    def __init__(self, context: MechanismContext) -> None:
        super().__init__(context)
        first = int.from_bytes(context.entropy(8), "big")
        second = int.from_bytes(context.entropy(4), "big")
        self._challenge = f"<{first}.{second}@{context.default_realm}>".encode("ascii", "replace")

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        if first:
            if client_data:
                return self._fail(FailureReason.MALFORMED, "CRAM-MD5 takes no initial response")
            return Challenge(self._challenge)
        assert client_data is not None
        if len(client_data) > MAX_CLIENT_MESSAGE:
            return self._fail(FailureReason.MALFORMED, "CRAM-MD5: message too long")
        try:
            text = decode_text(client_data, "response")
        except ValueError as exc:
            return self._fail(FailureReason.MALFORMED, f"CRAM-MD5: {exc}")
        # The digest follows the last space: user names may hold spaces, hex digits cannot.
        login, space, digest = text.rpartition(" ")
        digest = digest.lower()
        if not space or not login or len(digest) != 32 or not set(digest) <= _HEX:
            return self._fail(FailureReason.MALFORMED, "CRAM-MD5: expected 'user digest'")
        identity = split_identity(login, self._context.default_realm)
        try:
            secret = self._context.credentials.cram_md5_secret(identity)
        except CredentialsUnavailable as exc:
            return self._fail(FailureReason.TEMPORARY, f"secret unavailable: {exc}")
        if secret is None:
            return self._fail(FailureReason.BAD_CREDENTIALS, f"no CRAM-MD5 secret for {login}")
        expected = hmac_md5_from_states(secret.inner, secret.outer, self._challenge).hex()
        if not hmac.compare_digest(expected, digest):
            return self._fail(FailureReason.BAD_CREDENTIALS, f"bad CRAM-MD5 digest for {login}")
        return self._succeed(identity, "")
