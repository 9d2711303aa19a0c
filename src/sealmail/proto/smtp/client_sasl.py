"""SASL client mechanisms for the MTA's SMTP/LMTP client (RFC 4954): PLAIN, LOGIN, CRAM-MD5, SCRAM.

Theory of operation: a mechanism object is made per AUTH exchange and knows the credentials; the
client core (client.py) asks it for the initial response, then feeds it each 334 challenge
(base64-decoded) and sends back what `respond` returns. A mechanism that cannot go on raises
`SaslClientError`; the core then cancels the exchange with "*" (RFC 4954 4). `complete` says the
mechanism saw everything it needs: for SCRAM that is the server's signature, so a 235 from a
server that never proved it knows the password is not trusted.

`choose_mechanism` applies Postfix's `*_sasl_security_options` and `*_sasl_mechanism_filter` to
what the server offers and picks the strongest mechanism left.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from typing import Protocol

__all__ = [
    "MECHANISM_STRENGTH",
    "PLAINTEXT_MECHANISMS",
    "CramMD5Client",
    "LoginClient",
    "PlainClient",
    "SaslClient",
    "SaslClientError",
    "ScramClient",
    "choose_mechanism",
    "new_client_mechanism",
]

MECHANISM_STRENGTH: tuple[str, ...] = ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5", "PLAIN", "LOGIN")
"""The mechanisms this client speaks, strongest first."""

PLAINTEXT_MECHANISMS = frozenset({"PLAIN", "LOGIN"})
"""Mechanisms that send the password itself (excluded by the `noplaintext` security option)."""

_DICTIONARY_ATTACKABLE = frozenset({"PLAIN", "LOGIN", "CRAM-MD5"})


class SaslClientError(Exception):
    """The mechanism cannot go on (a malformed challenge, a server that failed to prove itself)."""


class SaslClient(Protocol):
    """One client side of one AUTH exchange."""

    @property
    def name(self) -> str: ...

    @property
    def complete(self) -> bool: ...

    def initial_response(self) -> bytes | None:
        """The response sent with the AUTH command itself, or None for none (RFC 4954 4)."""
        ...

    def respond(self, challenge: bytes) -> bytes: ...


class PlainClient:
    """RFC 4616: one message, `authzid NUL authcid NUL passwd`, sent as the initial response."""

    name = "PLAIN"

    def __init__(self, authcid: str, password: str, authzid: str = "") -> None:
        if "\0" in authcid or "\0" in password or "\0" in authzid:
            raise SaslClientError("PLAIN credentials must not contain NUL")
        self._message = f"{authzid}\0{authcid}\0{password}".encode()
        self.complete = False

    def initial_response(self) -> bytes | None:
        self.complete = True
        return self._message

    def respond(self, challenge: bytes) -> bytes:
        # RFC 4616 2: a server that sends an empty challenge wants the message now.
        if self.complete or challenge:
            raise SaslClientError("PLAIN takes no challenge after its message")
        self.complete = True
        return self._message


class LoginClient:
    """The LOGIN mechanism (draft-murchison-sasl-login): user name, then password, on prompts."""

    name = "LOGIN"

    def __init__(self, user: str, password: str) -> None:
        self._answers = [user.encode(), password.encode()]
        self.complete = False

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        # The prompts ("Username:", "Password:") are advisory; the order is what counts.
        if not self._answers:
            raise SaslClientError("LOGIN got a third challenge")
        answer = self._answers.pop(0)
        self.complete = not self._answers
        return answer


class CramMD5Client:
    """RFC 2195: the reply is `user SP hex(HMAC-MD5(password, challenge))`."""

    name = "CRAM-MD5"

    def __init__(self, user: str, password: str) -> None:
        self._user = user
        self._password = password.encode()
        self.complete = False

    def initial_response(self) -> bytes | None:
        return None

    def respond(self, challenge: bytes) -> bytes:
        if self.complete:
            raise SaslClientError("CRAM-MD5 got a second challenge")
        if not challenge:
            raise SaslClientError("CRAM-MD5 challenge is empty")
        digest = hmac.new(self._password, challenge, hashlib.md5).hexdigest()
        self.complete = True
        return f"{self._user} {digest}".encode()


class ScramClient:
    """RFC 5802 SCRAM-SHA-1 / RFC 7677 SCRAM-SHA-256 without channel binding ("n,,").

    The server's final message (v=signature) arrives as a last 334 challenge, since a 235 carries
    no data in SMTP (RFC 4954 4); the empty answer to it finishes the exchange. A server whose
    signature does not match is refused: it does not know the password.
    """

    def __init__(self, name: str, user: str, password: str) -> None:
        # scramp (and the ssl and email packages it loads) is imported for a SCRAM exchange
        # only: the client core stays cheap to import for `sealmail deliver`.
        import scramp

        self.name = name.upper()
        try:
            self._scram = scramp.ScramClient([self.name], user, password)
        except scramp.ScramException as exc:
            raise SaslClientError(f"{self.name}: {exc}") from None
        self._step = 0
        self.complete = False

    def initial_response(self) -> bytes | None:
        self._step = 1
        first: str = self._scram.get_client_first()
        return first.encode()

    def respond(self, challenge: bytes) -> bytes:
        import scramp

        try:
            text = challenge.decode("utf-8")
        except UnicodeDecodeError:
            raise SaslClientError(f"{self.name}: challenge is not UTF-8") from None
        try:
            if self._step == 1:
                self._scram.set_server_first(text)
                self._step = 2
                final: str = self._scram.get_client_final()
                return final.encode()
            if self._step == 2:
                self._scram.set_server_final(text)
                self._step = 3
                self.complete = True
                return b""
        except (scramp.ScramException, KeyError, ValueError) as exc:
            raise SaslClientError(f"{self.name}: {exc}") from None
        raise SaslClientError(f"{self.name}: unexpected challenge after the server's final message")


def new_client_mechanism(name: str, user: str, password: str) -> SaslClient:
    """The client for mechanism `name` (case-insensitive); KeyError when we do not speak it."""
    upper = name.upper()
    if upper == "PLAIN":
        return PlainClient(user, password)
    if upper == "LOGIN":
        return LoginClient(user, password)
    if upper == "CRAM-MD5":
        return CramMD5Client(user, password)
    if upper in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        return ScramClient(upper, user, password)
    raise KeyError(name)


def choose_mechanism(
    offered: Iterable[str],
    security_options: Iterable[str] = ("noplaintext", "noanonymous"),
    mechanism_filter: Iterable[str] = (),
) -> str | None:
    """The strongest offered mechanism that the options and filter allow, or None.

    Security options as Cyrus SASL's (Postfix passes them on): `noplaintext` drops PLAIN and
    LOGIN, `noactive`/`nodictionary` drop those open to dictionary attacks, `noanonymous` drops
    ANONYMOUS (never chosen anyway), `mutual_auth` keeps only SCRAM. The filter (Postfix's
    `*_sasl_mechanism_filter`) keeps only the listed names; `!NAME` removes one.
    """
    options = {option.lower() for option in security_options}
    unknown = options - {"noplaintext", "noanonymous", "noactive", "nodictionary", "mutual_auth"}
    if unknown:
        raise ValueError(f"unknown SASL security option(s): {', '.join(sorted(unknown))}")
    allowed = {name.upper() for name in offered}
    wanted = [name.upper() for name in mechanism_filter if not name.startswith("!")]
    refused = {name[1:].upper() for name in mechanism_filter if name.startswith("!")}
    if wanted:
        allowed &= set(wanted)
    allowed -= refused
    if "noplaintext" in options:
        allowed -= PLAINTEXT_MECHANISMS
    if options & {"noactive", "nodictionary"}:
        allowed -= _DICTIONARY_ATTACKABLE
    if "mutual_auth" in options:
        allowed &= {"SCRAM-SHA-256", "SCRAM-SHA-1"}
    for name in MECHANISM_STRENGTH:
        if name in allowed:
            return name
    return None
