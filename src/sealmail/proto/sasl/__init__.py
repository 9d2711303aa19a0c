"""SASL server mechanisms without I/O (RFC 4422): PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/256, EXTERNAL.

Theory of operation. A host (the LMTP, IMAP or POP3 core's driver) gets a mechanism object per
AUTH exchange, normally from `sealmail.auth.Authenticator.start`, and drives it:

    mech = new_mechanism("SCRAM-SHA-256", context)
    result = mech.step(initial_response)   # None: the client sent no initial response
    while isinstance(result, Challenge):
        send(result.data)                   # the protocol core base64-encodes it
        result = mech.step(client_answer)   # bytes, already base64-decoded
    # result is Success(authcid, authzid, data) or Failure(reason, detail)

A mechanism reads secrets only through the `Credentials` object in its `MechanismContext` and
never touches files, sockets or clocks itself; a credentials call may block (scrypt, saslauthd),
so an asyncio host runs `step` in a worker thread. Stepping a finished mechanism raises
SaslUsageError. Identities are split Cyrus-style (`user@realm`, default realm = servername) and
reported in canonical form: the bare user in the default realm, `user@realm` elsewhere.

SCRAM's server signature: with `success_data=False` (SMTP/LMTP 235, IMAP OK, POP3 +OK carry no
data) it is sent as a last Challenge and the empty answer yields Success, as Cyrus SASL does.
"""

from __future__ import annotations

from sealmail.proto.sasl._core import (
    Challenge,
    CramMD5Secret,
    Credentials,
    CredentialsUnavailable,
    Failure,
    FailureReason,
    Identity,
    MechanismContext,
    SaslUsageError,
    ScramSecret,
    ServerMechanism,
    StepResult,
    Success,
    Verdict,
    split_identity,
)
from sealmail.proto.sasl._crammd5 import CramMD5Mechanism, cram_md5_secret
from sealmail.proto.sasl._external import ExternalMechanism
from sealmail.proto.sasl._plain import (
    LoginMechanism,
    PlainMechanism,
    PlainMessage,
    PlainSyntaxError,
    parse_plain,
)
from sealmail.proto.sasl._scram import (
    ScramMechanism,
    ScramSyntaxError,
    parse_client_final,
    parse_client_first,
    parse_scram_attributes,
    scram_secret_from_salted_password,
)

__all__ = [
    "MECHANISMS",
    "PLAINTEXT_MECHANISMS",
    "Challenge",
    "CramMD5Mechanism",
    "CramMD5Secret",
    "Credentials",
    "CredentialsUnavailable",
    "ExternalMechanism",
    "Failure",
    "FailureReason",
    "Identity",
    "LoginMechanism",
    "MechanismContext",
    "PlainMechanism",
    "PlainMessage",
    "PlainSyntaxError",
    "SaslUsageError",
    "ScramMechanism",
    "ScramSecret",
    "ScramSyntaxError",
    "ServerMechanism",
    "StepResult",
    "Success",
    "Verdict",
    "cram_md5_secret",
    "new_mechanism",
    "parse_client_final",
    "parse_client_first",
    "parse_plain",
    "parse_scram_attributes",
    "scram_secret_from_salted_password",
    "split_identity",
]

MECHANISMS: tuple[str, ...] = (
    "EXTERNAL",
    "SCRAM-SHA-256",
    "SCRAM-SHA-1",
    "CRAM-MD5",
    "PLAIN",
    "LOGIN",
)
"""Every mechanism sealmail serves, strongest first (the order they are advertised in)."""

PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
"""Mechanisms that carry the password itself: only under TLS unless allowplaintext says yes."""


def new_mechanism(name: str, context: MechanismContext) -> ServerMechanism:
    """A fresh server mechanism; `name` is case-insensitive (RFC 4422 3.1). KeyError if unknown."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainMechanism(context)
    if upper == "LOGIN":
        return LoginMechanism(context)
    if upper == "CRAM-MD5":
        return CramMD5Mechanism(context)
    if upper in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        return ScramMechanism(context, upper)
    if upper == "EXTERNAL":
        return ExternalMechanism(context)
    raise KeyError(name)
