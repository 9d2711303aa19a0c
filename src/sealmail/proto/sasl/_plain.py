"""PLAIN (RFC 4616) and LOGIN (draft-murchison-sasl-login): the cleartext mechanisms.

Both hand the password to `Credentials.check_password`, so they work with sasldb and with
saslauthd. The authenticator offers them only under TLS or with allowplaintext.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sealmail.proto.sasl._core import (
    Challenge,
    CredentialsUnavailable,
    FailureReason,
    Identity,
    MechanismContext,
    ServerMechanism,
    StepResult,
    Verdict,
    decode_text,
    split_identity,
)

__all__ = [
    "MAX_CLIENT_MESSAGE",
    "LoginMechanism",
    "PlainMechanism",
    "PlainMessage",
    "PlainSyntaxError",
    "parse_plain",
]

MAX_CLIENT_MESSAGE = 8192
"""Longest client message any mechanism accepts (RFC 4616 fields are at most 255 octets)."""


class PlainSyntaxError(ValueError):
    """A PLAIN message that does not follow RFC 4616 2; the text never holds the password."""


@dataclass(frozen=True, slots=True)
class PlainMessage:
    authzid: str
    authcid: str
    password: str = field(repr=False)


def parse_plain(message: bytes) -> PlainMessage:
    """Split `[authzid] NUL authcid NUL passwd` (RFC 4616 2).

    RFC 4616 2: message = [authzid] UTF8NUL authcid UTF8NUL passwd, with authcid and passwd
    of 1*SAFE (no NUL); so exactly two NULs, non-empty authcid and password, all UTF-8.
    """
    if len(message) > MAX_CLIENT_MESSAGE:
        raise PlainSyntaxError("message too long")
    parts = message.split(b"\x00")
    if len(parts) != 3:
        raise PlainSyntaxError(f"expected 3 NUL-separated fields, got {len(parts)}")
    raw_authzid, raw_authcid, raw_password = parts
    if not raw_authcid:
        raise PlainSyntaxError("empty authentication identity")
    if not raw_password:
        raise PlainSyntaxError("empty password")
    try:
        return PlainMessage(
            decode_text(raw_authzid, "authorization identity"),
            decode_text(raw_authcid, "authentication identity"),
            decode_text(raw_password, "password"),
        )
    except ValueError as exc:
        raise PlainSyntaxError(str(exc)) from None


class _PasswordMechanism(ServerMechanism):
    def _verify(self, login: str, password: str, authzid: str) -> StepResult:
        identity = split_identity(login, self._context.default_realm)
        if not identity.user:
            return self._fail(FailureReason.MALFORMED, "empty user name")
        try:
            verdict = self._context.credentials.check_password(identity, password)
        except CredentialsUnavailable as exc:
            return self._fail(FailureReason.TEMPORARY, f"password check unavailable: {exc}")
        if verdict is not Verdict.OK:
            return self._fail(FailureReason.BAD_CREDENTIALS, f"bad password for {_named(identity)}")
        return self._succeed(identity, authzid)


def _named(identity: Identity) -> str:
    return f"{identity.user}@{identity.realm}"


class PlainMechanism(_PasswordMechanism):
    """Client-first: the initial response, or the answer to an empty challenge, is the message."""

    name = "PLAIN"

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        if client_data is None:
            return Challenge(b"")  # RFC 4422 5 (d): an empty challenge asks for the message
        try:
            message = parse_plain(client_data)
        except PlainSyntaxError as exc:
            return self._fail(FailureReason.MALFORMED, f"PLAIN: {exc}")
        return self._verify(message.authcid, message.password, message.authzid)


class LoginMechanism(_PasswordMechanism):
    """`Username:` then `Password:`, the challenges Cyrus SASL and Postfix's client expect.

    An initial response is taken as the user name, as Cyrus SASL's LOGIN plugin does. LOGIN has
    no authorization identity.
    """

    name = "LOGIN"

    def __init__(self, context: MechanismContext) -> None:
        super().__init__(context)
        self._login: str | None = None

    def _step(self, client_data: bytes | None, first: bool) -> StepResult:
        if client_data is None:
            return Challenge(b"Username:")
        if len(client_data) > MAX_CLIENT_MESSAGE:
            return self._fail(FailureReason.MALFORMED, "LOGIN: message too long")
        if self._login is None:
            try:
                login = decode_text(client_data, "user name")
            except ValueError as exc:
                return self._fail(FailureReason.MALFORMED, f"LOGIN: {exc}")
            if not login or "\x00" in login:
                return self._fail(FailureReason.MALFORMED, "LOGIN: bad user name")
            self._login = login
            return Challenge(b"Password:")
        try:
            password = decode_text(client_data, "password")
        except ValueError as exc:
            return self._fail(FailureReason.MALFORMED, f"LOGIN: {exc}")
        if not password:
            return self._fail(FailureReason.MALFORMED, "LOGIN: empty password")
        return self._verify(self._login, password, "")
