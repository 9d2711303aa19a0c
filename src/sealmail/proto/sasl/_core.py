"""What every server mechanism shares: the step results, the credential interface, identities.

A mechanism never reads a file or a socket itself. It asks a `Credentials` object (given by the
host, see sealmail.auth) for a password check or for a stored secret, and it asks an
`authorize(authcid, authzid)` callback whether an authorization identity may be assumed.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

__all__ = [
    "Challenge",
    "CramMD5Secret",
    "Credentials",
    "CredentialsUnavailable",
    "Failure",
    "FailureReason",
    "Identity",
    "MechanismContext",
    "SaslUsageError",
    "ScramSecret",
    "ServerMechanism",
    "StepResult",
    "Success",
    "Verdict",
    "split_identity",
]


class FailureReason(enum.Enum):
    """Why an exchange failed; the protocol core maps each to its own reply, once.

    For SMTP/LMTP (RFC 4954 6): MALFORMED -> 501 5.5.2, BAD_CREDENTIALS and AUTHZ_DENIED ->
    535 5.7.8, TEMPORARY -> 454 4.7.0, ENCRYPTION_REQUIRED -> 538 5.7.11, UNKNOWN_MECHANISM ->
    504 5.5.4, TOO_WEAK -> 534 5.7.9.
    """

    MALFORMED = "malformed"  # the client's message does not parse
    BAD_CREDENTIALS = "bad credentials"  # unknown user or wrong password/proof
    AUTHZ_DENIED = "authorization denied"  # authcid may not act as the requested authzid
    TEMPORARY = "temporary"  # the password backend (sasldb, saslauthd) could not answer
    ENCRYPTION_REQUIRED = "encryption required"  # plaintext mechanism outside TLS
    UNKNOWN_MECHANISM = "unknown mechanism"  # not supported or not in sasl_mech_list
    TOO_WEAK = "too weak"  # session below sasl_minimum_layer


@dataclass(frozen=True, slots=True)
class Challenge:
    """Send `data` to the client (the protocol core base64-encodes it) and feed back its answer."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Success:
    """Authenticated as `authcid`, acting as `authzid` (equal unless a proxy login was allowed).

    `data` is the mechanism's additional data with success (SCRAM's server signature); it is only
    set when the mechanism was started with `success_data=True`, otherwise the mechanism sent it
    as a last Challenge already.
    """

    authcid: str
    authzid: str
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Failure:
    """The exchange is over and failed; `detail` is for the log and never holds a password."""

    reason: FailureReason
    detail: str


StepResult = Challenge | Success | Failure


class SaslUsageError(Exception):
    """The host misused a mechanism (stepped it after it finished): a bug, not a client error."""


class CredentialsUnavailable(Exception):
    """The password backend could not give an answer (missing sasldb, saslauthd down)."""


class Verdict(enum.Enum):
    OK = "ok"
    NO = "no"


@dataclass(frozen=True, slots=True)
class ScramSecret:
    """RFC 5802 3: what a server keeps instead of the password."""

    salt: bytes
    iterations: int
    stored_key: bytes = field(repr=False)
    server_key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CramMD5Secret:
    """HMAC-MD5 key state (RFC 2104) after one block of key^ipad and key^opad, as Dovecot keeps it.

    Each is the four 32-bit MD5 chaining words; with them the server computes HMAC-MD5(key, m)
    for any challenge m without knowing the key.
    """

    inner: tuple[int, int, int, int] = field(repr=False)
    outer: tuple[int, int, int, int] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Identity:
    """A SASL user in a realm, as Cyrus SASL's sasldb keys it (user NUL realm)."""

    user: str
    realm: str

    def canonical(self, default_realm: str) -> str:
        """`user` in the default realm, `user@realm` elsewhere (as admins and mailboxes name it)."""
        return self.user if self.realm == default_realm else f"{self.user}@{self.realm}"


def split_identity(name: str, default_realm: str) -> Identity:
    """Split a login name the way Cyrus SASL does: the realm follows the first '@'.

    Without an '@' the user is in the default realm (the server name). `a@b@c` is user `a` in
    realm `b@c`, like Cyrus SASL's _plug_parseuser.
    """
    user, at, realm = name.partition("@")
    return Identity(user, realm if at and realm else default_realm)


class Credentials(Protocol):
    """The secrets a mechanism may ask for; sealmail.auth implements it over sasldb and saslauthd.

    Methods may block (a scrypt check, a saslauthd round trip) and raise CredentialsUnavailable.
    """

    def check_password(self, identity: Identity, password: str) -> Verdict:
        """PLAIN and LOGIN: is this the user's password?"""
        ...

    def cram_md5_secret(self, identity: Identity) -> CramMD5Secret | None:
        """CRAM-MD5's stored HMAC state, or None when the user has none."""
        ...

    def scram_secret(self, mechanism: str, identity: Identity) -> ScramSecret | None:
        """SCRAM-SHA-1 / SCRAM-SHA-256 stored keys, or None when the user has none."""
        ...


@dataclass(frozen=True, slots=True)
class MechanismContext:
    """Everything a mechanism needs from its host for one exchange."""

    credentials: Credentials
    default_realm: str
    authorize: Callable[[str, str], bool]  # (authcid, authzid), both canonical
    entropy: Callable[[int], bytes]  # n random bytes (secrets.token_bytes outside tests)
    success_data: bool = False  # the protocol can carry data with its success reply
    tls_peer_identity: str | None = None  # from a verified client certificate (EXTERNAL)


class ServerMechanism:
    """One server side exchange. `step(None)` means the client sent no initial response.

    Subclasses implement `_step`; this base turns a finished exchange into a usage error so a
    host bug cannot restart it, and keeps the authorization rule in one place.
    """

    name: str = ""

    def __init__(self, context: MechanismContext) -> None:
        self._context = context
        self._done = False
        self._first = True
        self._pending: Success | None = None

    @property
    def done(self) -> bool:
        return self._done

    def step(self, client_data: bytes | None) -> StepResult:
        if self._done:
            raise SaslUsageError(f"{self.name} exchange already finished")
        first, self._first = self._first, False
        if client_data is None and not first:
            client_data = b""
        if self._pending is not None:
            # The answer to the success data sent as a challenge must be empty (RFC 4954 4).
            pending, self._pending = self._pending, None
            result: StepResult = pending
            if client_data:
                result = Failure(FailureReason.MALFORMED, "non-empty answer to the final data")
        else:
            result = self._step(client_data, first)
        if not isinstance(result, Challenge):
            self._done = True
        return result

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        raise NotImplementedError

    def _fail(self, reason: FailureReason, detail: str) -> Failure:
        self._done = True
        return Failure(reason, detail)

    def _succeed(
        self, authcid: Identity, authzid_text: str, data: bytes | None = None
    ) -> StepResult:
        """Apply the authorization rule and finish: an empty authzid means "act as myself".

        RFC 4422 3.4.1: the server "MUST verify that the authorization identity is one that the
        authentication identity may act as"; here that is itself, or anyone when it is an admin.
        """
        realm = self._context.default_realm
        authcid_text = authcid.canonical(realm)
        if authzid_text:
            authzid = split_identity(authzid_text, realm).canonical(realm)
        else:
            authzid = authcid_text
        if authzid != authcid_text and not self._context.authorize(authcid_text, authzid):
            return self._fail(
                FailureReason.AUTHZ_DENIED, f"{authcid_text} may not act as {authzid}"
            )
        if data is not None and not self._context.success_data:
            # The protocol cannot carry data with success (SMTP 235, IMAP OK): send it as a last
            # challenge and succeed on the client's empty answer (RFC 4954 4, RFC 4422 3.6).
            self._pending = Success(authcid_text, authzid)
            return Challenge(data)
        return Success(authcid_text, authzid, data)


def decode_text(data: bytes, what: str) -> str:
    """UTF-8 text from a client message (RFC 4422 3.7 names are UTF-8); ValueError otherwise."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{what} is not UTF-8") from None
