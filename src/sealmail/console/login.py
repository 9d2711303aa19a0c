"""Logging in to the console: the store's SASL users, checked the way imapd checks LOGIN.

A login form's user and password go through `SaslExchange.password`, the exchange every daemon
runs (sealmail.server.session): the same password backends (sasl_pwcheck_method), the same
allowplaintext rule, the same failure delay (auth_failure_delay, longer after recent failures
from the client or for the user, across attempts) and the same Cyrus `badlogin:` line that
fail2ban's cyrus-imap filter reads. Then only identities listed in imapd.conf's `admins` get in;
anyone else's correct password is refused as an authorization failure, with the same delay.

The form is served over TLS or to a loopback client; a password from anywhere else is refused
unless allowplaintext says otherwise, as IMAP LOGIN is without STARTTLS.
"""

from __future__ import annotations

import ipaddress
import logging

from sealmail.auth.authenticator import Authenticator
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.proto.sasl import FailureReason, Success
from sealmail.server.session import SaslExchange, new_session_id

log = logging.getLogger("sealmail.console")

SASL_SERVICE = "imap"  # admins (not lmtp_admins) and what saslauthd is told, as imapd's LOGIN


def is_loopback(client: str) -> bool:
    try:
        return ipaddress.ip_address(client).is_loopback
    except ValueError:
        return client == "unix"


class _Attempt:
    """The SaslHost of one login form: it records what the exchange decided."""

    def __init__(self, client: str, secure: bool) -> None:
        self.secure = secure
        self.tls_bits: int | None = None
        self.tls_peer: str | None = None
        self.session_id = new_session_id()
        self.client = f"[{client}]"
        self.identity: str | None = None
        self.refusal: FailureReason | None = None

    def sasl_challenge(self, data: bytes) -> None:  # PLAIN never challenges
        self.refusal = FailureReason.MALFORMED

    def sasl_refuse(self, reason: FailureReason) -> None:
        self.refusal = reason

    async def sasl_accept(self, result: Success) -> bool:
        self.identity = result.authzid
        return True

    def sasl_give_up(self) -> None:
        pass


class ConsoleLogin:
    def __init__(self, config: ImapdConfig, authenticator: Authenticator | None = None) -> None:
        self.authenticator = authenticator or Authenticator(config)
        self.failure_delay = float(config.get(IMAPD.auth_failure_delay))

    def admins(self) -> frozenset[str]:
        return self.authenticator.admins(SASL_SERVICE)

    async def check(self, user: str, password: str, client: str,
                    tls: bool) -> tuple[str | None, FailureReason | None]:
        """(the admin identity, None) when `user` may use the console, else (None, why)."""
        attempt = _Attempt(client, tls or is_loopback(client))
        exchange = SaslExchange(attempt, self.authenticator, SASL_SERVICE, log=log,
                                command="LOGIN", failure_delay=self.failure_delay,
                                max_failures=1_000_000)
        await exchange.password(user, password, "LOGIN")
        identity = attempt.identity
        if identity is None:
            return None, attempt.refusal or FailureReason.BAD_CREDENTIALS
        if identity not in self.admins():
            log.warning("badlogin: %s plaintext %s [SASL(-14): authorization failure: "
                        "not an admin of the console] SESSIONID=<%s>",
                        attempt.client, user, attempt.session_id)
            await exchange.count_failure(lambda: None, user)
            return None, FailureReason.AUTHZ_DENIED
        log.info("login: %s %s plaintext%s User logged in to the console SESSIONID=<%s>",
                 attempt.client, identity, "+TLS" if tls else "", attempt.session_id)
        return identity, None
