"""SCRAM-SHA-1 and SCRAM-SHA-256 server (RFC 5802, RFC 7677), without channel binding.

Theory of operation: three client messages, two server messages.

    client-first  gs2-header client-first-bare        -> server-first  r=,s=,i=
    client-final  c=,r=,p=                            -> server-final  v=   (then Success)

scramp's own server refuses a GS2 authzid ("a=..."), which Cyrus SASL accepts and Postfix may
send, so the exchange is kept here while scramp supplies SASLprep and, in sealmail.auth, the
key derivation; tests drive this server with scramp's client and with Cyrus SASL's.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from dataclasses import dataclass

from sealmail.proto.sasl._core import (
    Challenge,
    CredentialsUnavailable,
    FailureReason,
    Identity,
    MechanismContext,
    ScramSecret,
    ServerMechanism,
    StepResult,
    decode_text,
    split_identity,
)
from sealmail.proto.sasl._plain import MAX_CLIENT_MESSAGE

__all__ = [
    "SCRAM_HASHES",
    "ClientFinal",
    "ClientFirst",
    "ScramMechanism",
    "ScramSyntaxError",
    "parse_client_final",
    "parse_client_first",
    "parse_scram_attributes",
    "scram_secret_from_salted_password",
]

SCRAM_HASHES: dict[str, str] = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}
_ALPHA = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class ScramSyntaxError(ValueError):
    """A SCRAM message that breaks RFC 5802 7; `server_error` is the e= value that fits."""

    def __init__(self, message: str, server_error: str = "other-error") -> None:
        super().__init__(message)
        self.server_error = server_error


def parse_scram_attributes(text: str) -> list[tuple[str, str]]:
    """`a=value,b=value` -> pairs. RFC 5802 7: attr-val = ALPHA "=" value; value has no ','."""
    pairs = []
    for item in text.split(","):
        if len(item) < 2 or item[1] != "=" or item[0] not in _ALPHA:
            raise ScramSyntaxError(f"bad attribute {item[:20]!r}")
        pairs.append((item[0], item[2:]))
    return pairs


def _unescape_saslname(value: str) -> str:
    """RFC 5802 7: saslname uses "=2C" for ',' and "=3D" for '='; any other '=' is an error."""
    out = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "=":
            code = value[index + 1 : index + 3]
            if code == "2C":
                out.append(",")
            elif code == "3D":
                out.append("=")
            else:
                raise ScramSyntaxError("bad '=' escape in a name", "invalid-encoding")
            index += 3
        else:
            out.append(char)
            index += 1
    return "".join(out)


def _b64decode(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise ScramSyntaxError(f"{what} is not base64", "invalid-encoding") from None


@dataclass(frozen=True, slots=True)
class ClientFirst:
    gs2_header: str  # "n,," / "y,a=bob," : bound into c= of the client-final
    authzid: str
    username: str
    nonce: str
    bare: str  # client-first-message-bare, part of the AuthMessage


def parse_client_first(text: str) -> ClientFirst:
    """RFC 5802 7: client-first-message = gs2-header client-first-message-bare."""
    flag, comma1, rest = text.partition(",")
    authz, comma2, bare = rest.partition(",")
    if not comma1 or not comma2:
        raise ScramSyntaxError("missing GS2 header")
    if flag.startswith("p="):
        # We offer no -PLUS mechanism, so a client asking for binding must be refused.
        raise ScramSyntaxError("channel binding not supported", "channel-binding-not-supported")
    if flag not in ("n", "y"):
        raise ScramSyntaxError("bad GS2 channel binding flag")
    authzid = ""
    if authz:
        if not authz.startswith("a=") or len(authz) == 2:
            raise ScramSyntaxError("bad GS2 authzid")
        authzid = _unescape_saslname(authz[2:])
    attributes = parse_scram_attributes(bare)
    if attributes[0][0] == "m":
        # RFC 5802 5.1: "m" is reserved; the server MUST fail if it is present.
        raise ScramSyntaxError("mandatory extension not supported", "extensions-not-supported")
    if len(attributes) < 2 or attributes[0][0] != "n" or attributes[1][0] != "r":
        raise ScramSyntaxError("client-first must start with n= and r=")
    username = _unescape_saslname(attributes[0][1])
    nonce = attributes[1][1]
    if not username or not nonce:
        raise ScramSyntaxError("empty user name or nonce")
    if not all("\x21" <= c <= "\x7e" for c in nonce):
        raise ScramSyntaxError("nonce has characters outside printable ASCII")
    return ClientFirst(flag + "," + authz + ",", authzid, username, nonce, bare)


@dataclass(frozen=True, slots=True)
class ClientFinal:
    channel_binding: bytes
    nonce: str
    proof: bytes
    without_proof: str  # client-final-message-without-proof, part of the AuthMessage


def parse_client_final(text: str) -> ClientFinal:
    """RFC 5802 7: c=channel-binding,r=nonce[,extensions],p=proof; the proof comes last."""
    without_proof, sep, proof_text = text.rpartition(",p=")
    if not sep:
        raise ScramSyntaxError("client-final lacks a proof")
    attributes = parse_scram_attributes(without_proof)
    if len(attributes) < 2 or attributes[0][0] != "c" or attributes[1][0] != "r":
        raise ScramSyntaxError("client-final must start with c= and r=")
    return ClientFinal(
        _b64decode(attributes[0][1], "channel binding"),
        attributes[1][1],
        _b64decode(proof_text, "proof"),
        without_proof,
    )


def scram_secret_from_salted_password(
    hash_name: str, salted_password: bytes, salt: bytes, iterations: int
) -> ScramSecret:
    """RFC 5802 3: StoredKey = H(HMAC(SaltedPassword, "Client Key")), ServerKey likewise."""
    client_key = hmac.digest(salted_password, b"Client Key", hash_name)
    stored_key = hashlib.new(hash_name, client_key).digest()
    server_key = hmac.digest(salted_password, b"Server Key", hash_name)
    return ScramSecret(salt, iterations, stored_key, server_key)


class ScramMechanism(ServerMechanism):
    """One SCRAM exchange; `name` is SCRAM-SHA-1 or SCRAM-SHA-256."""

    def __init__(self, context: MechanismContext, name: str) -> None:
        super().__init__(context)
        if name not in SCRAM_HASHES:
            raise ValueError(f"unknown SCRAM mechanism {name!r}")
        self.name = name
        self._hash = SCRAM_HASHES[name]
        self._first_message: ClientFirst | None = None
        self._server_first = ""
        self._nonce = ""
        self._secret: ScramSecret | None = None
        self._identity: Identity | None = None

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        if client_data is None:
            return Challenge(b"")  # client-first mechanism: ask for the first message
        if len(client_data) > MAX_CLIENT_MESSAGE:
            return self._fail(FailureReason.MALFORMED, f"{self.name}: message too long")
        try:
            text = decode_text(client_data, "message")
            if self._first_message is None:
                return self._client_first(text)
            return self._client_final(text)
        except ScramSyntaxError as exc:
            return self._fail(FailureReason.MALFORMED, f"{self.name}: {exc} (e={exc.server_error})")
        except ValueError as exc:
            return self._fail(FailureReason.MALFORMED, f"{self.name}: {exc}")

    def _client_first(self, text: str) -> StepResult:
        # scramp's package loads ssl and email: imported at the first SCRAM exchange, not with
        # the core (tests/test_layering.py checks what importing a core loads).
        from scramp.utils import saslprep

        message = parse_client_first(text)
        try:
            # RFC 5802 5.1: the user name is prepared with SASLprep before lookup.
            username = str(saslprep(message.username))
        except Exception:  # scramp raises its own exception type for prohibited characters
            raise ScramSyntaxError(
                "user name fails SASLprep", "invalid-username-encoding"
            ) from None
        identity = split_identity(username, self._context.default_realm)
        try:
            secret = self._context.credentials.scram_secret(self.name, identity)
        except CredentialsUnavailable as exc:
            return self._fail(FailureReason.TEMPORARY, f"secret unavailable: {exc}")
        if secret is None:
            return self._fail(
                FailureReason.BAD_CREDENTIALS, f"no {self.name} secret for {username}"
            )
        self._identity = identity
        self._first_message = message
        self._secret = secret
        server_nonce = base64.b64encode(self._context.entropy(18)).decode("ascii")
        self._nonce = message.nonce + server_nonce
        salt = base64.b64encode(secret.salt).decode("ascii")
        self._server_first = f"r={self._nonce},s={salt},i={secret.iterations}"
        return Challenge(self._server_first.encode("ascii"))

    def _client_final(self, text: str) -> StepResult:
        final = parse_client_final(text)
        first, secret = self._first_message, self._secret
        identity = self._identity
        assert first is not None and secret is not None and identity is not None
        # RFC 5802 5.1: c= must carry the GS2 header sent in the client-first (no binding data).
        if final.channel_binding != first.gs2_header.encode("utf-8"):
            raise ScramSyntaxError("channel binding does not match", "channel-bindings-dont-match")
        if final.nonce != self._nonce:
            raise ScramSyntaxError("nonce does not match")
        auth_message = f"{first.bare},{self._server_first},{final.without_proof}".encode()
        client_signature = hmac.digest(secret.stored_key, auth_message, self._hash)
        if len(final.proof) != len(client_signature):
            return self._fail(FailureReason.BAD_CREDENTIALS, f"{self.name}: bad proof length")
        client_key = bytes(a ^ b for a, b in zip(final.proof, client_signature, strict=True))
        # RFC 5802 5.1: the server verifies H(ClientKey) == StoredKey.
        if not hmac.compare_digest(hashlib.new(self._hash, client_key).digest(), secret.stored_key):
            return self._fail(
                FailureReason.BAD_CREDENTIALS, f"{self.name}: bad proof for {first.username}"
            )
        server_signature = hmac.digest(secret.server_key, auth_message, self._hash)
        server_final = b"v=" + base64.b64encode(server_signature)
        return self._succeed(identity, first.authzid, server_final)
