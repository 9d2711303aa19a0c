"""EXTERNAL (RFC 4422 appendix A): the identity comes from the TLS client certificate.

The host gives the identity it took from a *verified* certificate (see
sealmail.auth.authenticator.identity_from_certificate); the client's message is only the
authorization identity it asks for, empty meaning "the certificate's identity".
"""

from __future__ import annotations

from sealmail.proto.sasl._core import (
    Challenge,
    FailureReason,
    ServerMechanism,
    StepResult,
    decode_text,
    split_identity,
)
from sealmail.proto.sasl._plain import MAX_CLIENT_MESSAGE

__all__ = ["ExternalMechanism"]


class ExternalMechanism(ServerMechanism):
    name = "EXTERNAL"

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        peer = self._context.tls_peer_identity
        if peer is None:
            return self._fail(FailureReason.BAD_CREDENTIALS, "no verified client certificate")
        if client_data is None:
            return Challenge(b"")  # RFC 4422 A.1: client-first, an empty challenge asks for it
        if len(client_data) > MAX_CLIENT_MESSAGE:
            return self._fail(FailureReason.MALFORMED, "EXTERNAL: message too long")
        try:
            authzid = decode_text(client_data, "authorization identity")
        except ValueError as exc:
            return self._fail(FailureReason.MALFORMED, f"EXTERNAL: {exc}")
        if "\x00" in authzid:
            return self._fail(FailureReason.MALFORMED, "EXTERNAL: NUL in authorization identity")
        return self._succeed(split_identity(peer, self._context.default_realm), authzid)
