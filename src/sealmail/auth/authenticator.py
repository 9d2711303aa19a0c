"""The one object a server asks about SASL: which mechanisms to offer, and a mechanism to run.

It reads imapd.conf once: `sasl_pwcheck_method` (auxprop = our sasldb, saslauthd, tried in the
order given), `sasl_mech_list`, `sasl_minimum_layer`, `allowplaintext` / `lmtp_allowplaintext`,
`admins` / `lmtp_admins` and `servername` (the default realm, as Cyrus passes it to
sasl_server_new). See docs/authentication.md.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from sealmail.auth.cache import VerificationCache
from sealmail.auth.saslauthd import DEFAULT_SASLAUTHD_PATH, SaslauthdClient
from sealmail.auth.sasldb import SaslDB
from sealmail.auth.throttle import FailurePenalty
from sealmail.config.imapd_conf import ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.proto.sasl import (
    MECHANISMS,
    PLAINTEXT_MECHANISMS,
    CramMD5Secret,
    Credentials,
    CredentialsUnavailable,
    FailureReason,
    Identity,
    MechanismContext,
    ScramSecret,
    ServerMechanism,
    Verdict,
    new_mechanism,
    split_identity,
)

__all__ = ["PWCHECK_METHODS", "Authenticator", "MechanismUnavailable", "identity_from_certificate"]

log = logging.getLogger("sealmail.auth")

PWCHECK_METHODS = ("auxprop", "saslauthd")
_SECRET_MECHANISMS = frozenset({"CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256"})


class MechanismUnavailable(Exception):
    """AUTH asked for a mechanism this session may not use; `reason` picks the reply.

    UNKNOWN_MECHANISM (not served or not in sasl_mech_list), ENCRYPTION_REQUIRED (plaintext
    outside TLS), TOO_WEAK (below sasl_minimum_layer).
    """

    def __init__(self, mechanism: str, reason: FailureReason) -> None:
        super().__init__(f"{mechanism}: {reason.value}")
        self.mechanism = mechanism
        self.reason = reason


class _PasswordBackends:
    """proto.sasl.Credentials over the configured methods, tried in order like libsasl does."""

    def __init__(self, sasldb: SaslDB | None, saslauthd: SaslauthdClient | None,
                 cache: VerificationCache | None = None, service: str = "") -> None:
        self._sasldb = sasldb
        self._saslauthd = saslauthd
        self._cache = cache
        self._service = service
        self._order: list[SaslDB | SaslauthdClient] = [
            b for b in (sasldb, saslauthd) if b is not None
        ]

    def ordered(self, methods: tuple[str, ...]) -> None:
        backends = {"auxprop": self._sasldb, "saslauthd": self._saslauthd}
        self._order = [b for m in methods if (b := backends[m]) is not None]

    def check_password(self, identity: Identity, password: str) -> Verdict:
        unavailable: CredentialsUnavailable | None = None
        for backend in self._order:
            try:
                if self._verify(backend, identity, password) is Verdict.OK:
                    return Verdict.OK
            except CredentialsUnavailable as exc:
                log.error("%s", exc)
                unavailable = exc
        if unavailable is not None:
            raise unavailable
        return Verdict.NO

    def _verify(self, backend: SaslDB | SaslauthdClient, identity: Identity,
                password: str) -> Verdict:
        """One backend's check, through the authentication cache when it is on. The sasldb
        entry is part of the cache key (a changed password misses); saslauthd's is not ours
        to read, so its answers last the TTL."""
        cache = self._cache
        if cache is None or not cache.enabled:
            return backend.check_password(identity, password)
        if isinstance(backend, SaslDB):
            entry = "auxprop:" + (backend.password_entry(identity) or "")
        else:
            entry = "saslauthd"
        return cache.check(self._service, identity, entry, password,
                           lambda: backend.check_password(identity, password))

    def cram_md5_secret(self, identity: Identity) -> CramMD5Secret | None:
        return self._sasldb.cram_md5_secret(identity) if self._sasldb else None

    def scram_secret(self, mechanism: str, identity: Identity) -> ScramSecret | None:
        return self._sasldb.scram_secret(mechanism, identity) if self._sasldb else None


class Authenticator:
    """Mechanism policy and factory for every service of one configuration.

    `service` is the SASL service name (lmtp, imap, pop, sieve): it picks lmtp_admins and
    lmtp_allowplaintext for lmtp and is what saslauthd is told. Build one per process.
    """

    def __init__(
        self,
        config: ImapdConfig,
        *,
        sasldb: SaslDB | None = None,
        entropy: Callable[[int], bytes] = secrets.token_bytes,
        credentials: Credentials | None = None,
    ) -> None:
        """`credentials`, when given, answers every password check instead of the configured
        backends (the web console's, asked of a helper that runs as the store's account)."""
        self.config = config
        self._delegate = credentials
        self.default_realm = config.servername
        methods = tuple(m.lower() for m in (config.get(IMAPD.sasl_pwcheck_method) or ()))
        unknown = [m for m in methods if m not in PWCHECK_METHODS]
        if unknown or not methods:
            raise config.error(
                IMAPD.sasl_pwcheck_method,
                f"{' '.join(unknown) or 'empty'}: choose from {', '.join(PWCHECK_METHODS)}",
            )
        self.pwcheck_methods = methods
        self._sasldb = (
            (sasldb or SaslDB.from_config(config))
            if "auxprop" in methods and credentials is None else None
        )
        self._saslauthd_path = Path(
            config.get(IMAPD.sasl_saslauthd_path) or DEFAULT_SASLAUTHD_PATH
        )
        self._entropy = entropy
        self.penalty = FailurePenalty()  # failed logins per client and user, across sessions
        cache_options = (IMAPD.auth_cache_size, IMAPD.auth_cache_ttl,
                         IMAPD.auth_cache_negative_ttl)
        for option in cache_options:
            if config.get(option) < 0:
                raise config.error(option, "must not be negative")
        size, ttl, negative_ttl = (config.get(option) for option in cache_options)
        self.cache = VerificationCache(size, ttl, negative_ttl)  # per process and service
        listed = config.get(IMAPD.sasl_mech_list)
        if listed is None:
            self._allowed = MECHANISMS
        else:
            wanted = {m.upper() for m in listed}
            ignored = sorted(wanted - set(MECHANISMS))
            if ignored:
                log.warning("%s: sasl_mech_list: not served, ignored: %s", config.path, ignored)
            self._allowed = tuple(m for m in MECHANISMS if m in wanted)
        self._minimum_layer = config.get(IMAPD.sasl_minimum_layer)

    def credentials(self, service: str) -> Credentials:
        """The password backends of `service` (sasl_pwcheck_method), in their order."""
        if self._delegate is not None:
            return self._delegate
        saslauthd = (
            SaslauthdClient(self._saslauthd_path, service)
            if "saslauthd" in self.pwcheck_methods
            else None
        )
        backends = _PasswordBackends(self._sasldb, saslauthd, self.cache, service)
        backends.ordered(self.pwcheck_methods)
        return backends

    def allows_plaintext(self, secure: bool, service: str) -> bool:
        """PLAIN/LOGIN (and IMAP LOGIN): under TLS, or when allowplaintext says so."""
        if secure:
            return True
        lmtp = self.config.get(IMAPD.lmtp_allowplaintext) if service == "lmtp" else None
        return self.config.get(IMAPD.allowplaintext) if lmtp is None else lmtp

    def admins(self, service: str) -> frozenset[str]:
        """Canonical admin identities; lmtp uses lmtp_admins (default: admins) like Cyrus."""
        general = self.config.get(IMAPD.admins) or ()
        names = self.config.lmtp_admins if service == "lmtp" else general
        realm = self.default_realm
        return frozenset(split_identity(name, realm).canonical(realm) for name in names)

    def _refusal(
        self,
        mechanism: str,
        secure: bool,
        service: str,
        tls_bits: int | None,
        tls_peer_identity: str | None,
    ) -> FailureReason | None:
        """Why `mechanism` may not run in this session, or None when it may."""
        if mechanism not in self._allowed:
            return FailureReason.UNKNOWN_MECHANISM
        # sasl_minimum_layer: TLS cipher bits are the session's only protection layer.
        if self._minimum_layer > ((tls_bits or 0) if secure else 0):
            return FailureReason.TOO_WEAK
        if mechanism == "EXTERNAL" and not (secure and tls_peer_identity):
            return FailureReason.UNKNOWN_MECHANISM
        if mechanism in _SECRET_MECHANISMS and self._sasldb is None:
            return FailureReason.UNKNOWN_MECHANISM  # saslauthd alone cannot serve them
        if mechanism in PLAINTEXT_MECHANISMS and not self.allows_plaintext(secure, service):
            return FailureReason.ENCRYPTION_REQUIRED
        return None

    def available_mechanisms(
        self,
        secure: bool,
        service: str,
        *,
        tls_bits: int | None = None,
        tls_peer_identity: str | None = None,
    ) -> tuple[str, ...]:
        """Mechanisms to advertise (EHLO AUTH, CAPABILITY AUTH=, CAPA SASL), strongest first.

        `tls_bits` is the cipher strength (ssl_object.cipher()[2]); when unknown a TLS session
        counts as 0 bits, which only matters if sasl_minimum_layer is set.
        """
        return tuple(
            m
            for m in self._allowed
            if self._refusal(m, secure, service, tls_bits, tls_peer_identity) is None
        )

    def start(
        self,
        mechanism: str,
        secure: bool,
        tls_peer_identity: str | None = None,
        *,
        service: str,
        tls_bits: int | None = None,
        success_data: bool = False,
    ) -> ServerMechanism:
        """A mechanism for one AUTH exchange; MechanismUnavailable if this session may not."""
        name = mechanism.upper()
        reason = self._refusal(name, secure, service, tls_bits, tls_peer_identity)
        if reason is not None:
            raise MechanismUnavailable(name, reason)
        admins = self.admins(service)
        context = MechanismContext(
            credentials=self.credentials(service),
            default_realm=self.default_realm,
            authorize=lambda authcid, _authzid: authcid in admins,
            entropy=self._entropy,
            success_data=success_data,
            tls_peer_identity=tls_peer_identity if secure else None,
        )
        return new_mechanism(name, context)


def identity_from_certificate(peercert: Mapping[str, object]) -> str | None:
    """The EXTERNAL identity of a verified client certificate (ssl getpeercert() form).

    The first rfc822Name (email) subjectAltName wins, since it names a user and realm the way
    a login does (lmtpuser@cyrus.example.com); without one, the subject's first commonName.
    Only pass certificates the TLS layer verified against tls_client_ca_file.
    """
    alt_names = peercert.get("subjectAltName", ())
    if isinstance(alt_names, tuple):
        for entry in alt_names:
            if isinstance(entry, tuple) and len(entry) == 2 and entry[0] == "email" and entry[1]:
                return str(entry[1])
    subject = peercert.get("subject", ())
    if isinstance(subject, tuple):
        for rdn in subject:
            if not isinstance(rdn, tuple):
                continue
            for attribute in rdn:
                if (
                    isinstance(attribute, tuple)
                    and len(attribute) == 2
                    and attribute[0] == "commonName"
                    and attribute[1]
                ):
                    return str(attribute[1])
    return None
