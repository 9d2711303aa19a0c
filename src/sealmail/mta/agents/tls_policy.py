"""Outbound TLS of the smtp and lmtp clients: a next hop's policy, and what a handshake proved.

Levels (Postfix's TLS_README, `*_tls_security_level`):

    none     no STARTTLS
    may      STARTTLS when offered; a failed handshake is retried in plaintext; any certificate
    encrypt  STARTTLS required; any certificate (mandatory encryption, no authentication)
    verify   STARTTLS required; the chain must be trusted (`*_tls_CAfile`, `*_tls_CApath`,
             plus the system's CAs only with `tls_append_default_CA = yes`, as Postfix) and a
             name must match `*_tls_verify_cert_match` (default: the MX host name)
    secure   as verify, matching `*_tls_secure_cert_match` (default: the next-hop domain and
             its subdomains), so a forged MX record cannot redirect mail

`dane`, `dane-only` and `fingerprint` are refused by name (the schema's refusal): sealmail's
resolver does not validate DNSSEC, so it never has validated TLSA records to use.

`*_tls_policy_maps` (any table type) give a next hop its own policy, looked up as Postfix does:
the next hop as written (`example.com`, `[mx.example.com]:587`), then, for a domain, each parent
as `.parent` (`.example.com`, `.com`). A value is `LEVEL [match=a:b] [protocols=...]
[servername=...]`; anything else in it (an unknown level, `ciphers=`, `exclude=`, a malformed
pair) defers the mail with Postfix's "4.7.5 client TLS configuration problem" and a warning that
names the table and the entry, because guessing could weaken what the operator asked for.

Name checks are Postfix's `match_servername`: a certificate's DNS subjectAltNames (its CommonName
only when it has none); `hostname`, `nexthop`, `dot-nexthop` (a proper subdomain of the next
hop), a literal name, or `.domain` for its subdomains; a `*.` wildcard stands for one left-most
label. An address literal also matches an IP subjectAltName.

What a handshake proved goes in the log as Postfix writes it, with `*_tls_loglevel` >= 1:
`Verified` (trusted chain and a matching name), `Trusted` (trusted chain), `Untrusted`, or
`Anonymous` (no certificate). At `may` and `encrypt` the chain is only looked at for that line,
and Python checks a chain only by failing the handshake: so when the line is wanted and trust
anchors are configured, the first handshake asks for a trusted chain and an untrusted server is
connected to again without the check (one more connection, only for untrusted servers).
"""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from sealmail.mta.config.parameters import refuse_client_tls_level

__all__ = [
    "LEVELS",
    "Defaults",
    "TlsPolicy",
    "TlsPolicyError",
    "certificate_names",
    "client_context",
    "global_policy",
    "lookup_policy",
    "matches",
    "mta_sts_policy",
    "name_mismatch",
    "parse_policy",
    "policy_keys",
    "protocol_range",
    "summary",
    "verification_failure",
]

LEVELS = ("none", "may", "encrypt", "verify", "secure")
MANDATORY = ("encrypt", "verify", "secure")  # STARTTLS must succeed
AUTHENTICATED = ("verify", "secure")  # the certificate must be trusted and match a name

_VERSIONS = {
    "sslv3": ssl.TLSVersion.SSLv3,
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = list(_VERSIONS.values())


class TlsPolicyError(ValueError):
    """A policy sealmail cannot apply as written; `str()` is the warning for the log."""


@dataclass(frozen=True, slots=True)
class TlsPolicy:
    """The TLS policy of one next hop. Hashable: it is part of a cached session's key."""

    level: str
    match: tuple[str, ...] = ()  # verify/secure: what a certificate name must match
    protocols: tuple[str, ...] = ()  # Postfix's protocol words, e.g. (">=TLSv1.2",)
    servername: str = ""  # SNI: "" (none), "hostname", "nexthop" or a name

    @property
    def mandatory(self) -> bool:
        return self.level in MANDATORY

    @property
    def authenticated(self) -> bool:
        return self.level in AUTHENTICATED


@dataclass(frozen=True, slots=True)
class Defaults:
    """main.cf's TLS settings of one client (`smtp_` or `lmtp_`), what a policy entry omits."""

    verify_match: tuple[str, ...] = ("hostname",)
    secure_match: tuple[str, ...] = ("nexthop", "dot-nexthop")
    protocols: tuple[str, ...] = (">=TLSv1",)  # at "may"
    mandatory_protocols: tuple[str, ...] = (">=TLSv1",)  # at encrypt and above
    servername: str = ""

    def policy(self, level: str, match: Sequence[str] = (), protocols: Sequence[str] = (),
               servername: str | None = None) -> TlsPolicy:
        if level == "none":
            return TlsPolicy("none")
        default_match = self.verify_match if level == "verify" else \
            self.secure_match if level == "secure" else ()
        default_protocols = self.protocols if level == "may" else self.mandatory_protocols
        return TlsPolicy(level, tuple(match or default_match),
                         tuple(protocols or default_protocols),
                         self.servername if servername is None else servername)


def global_policy(level: str, defaults: Defaults) -> TlsPolicy:
    """The main.cf policy, for next hops no policy table names."""
    level = level.strip().lower() or "none"
    reason = refuse_client_tls_level(level)
    if reason is not None:
        raise TlsPolicyError(reason)
    policy = defaults.policy(level)
    protocol_range(policy.protocols)
    return policy


def mta_sts_policy(current: TlsPolicy, defaults: Defaults) -> TlsPolicy:
    """An MTA-STS policy in enforce mode (RFC 8461 4.2, sealmail.mta.agents.mta_sts): TLS
    required, the chain trusted and valid for the MX host name, sent as SNI. A policy already
    as strict (verify or secure, from a policy table) is kept."""
    if current.authenticated:
        return current
    return TlsPolicy("verify", ("hostname",), tuple(defaults.mandatory_protocols), "hostname")


def parse_policy(text: str, where: str, defaults: Defaults) -> TlsPolicy:
    """A policy table value: `LEVEL [name=value ...]`, words separated by spaces or commas."""
    words = text.replace(",", " ").split()
    if not words:
        raise TlsPolicyError(f"{where}: invalid empty policy")
    level = words[0].lower()
    if level not in LEVELS:
        reason = refuse_client_tls_level(level) or f"invalid security level {words[0]!r}"
        raise TlsPolicyError(f"{where}: {reason}")
    if level == "none":
        return TlsPolicy("none")
    match: list[str] = []
    protocols: list[str] = []
    servername: str | None = None
    for word in words[1:]:
        name, sep, value = word.partition("=")
        name = name.lower()
        if not sep or not value:
            raise TlsPolicyError(f"{where}: malformed attribute/value pair {word!r}")
        if name == "match":
            if level not in AUTHENTICATED:
                raise TlsPolicyError(f"{where}: attribute \"match\" invalid at security level "
                                     f"\"{level}\"")
            match += [m for m in value.split(":") if m]
        elif name == "protocols":
            protocols += value.split(":")
        elif name == "servername":
            servername = value
        else:
            raise TlsPolicyError(f"{where}: attribute {name!r} is not implemented by sealmail "
                                 "(match, protocols and servername are)")
    try:
        protocol_range(protocols)  # a bad protocol name is refused here, not at connect time
    except TlsPolicyError as exc:
        raise TlsPolicyError(f"{where}: {exc}") from None
    return defaults.policy(level, match, protocols, servername)


def policy_keys(nexthop: str) -> list[str]:
    """Policy table keys for a next hop: as written, then `.parent` domains of a plain domain
    (an explicit `[host]` or `host:port` next hop matches only its own entry)."""
    keys = [nexthop]
    if "[" in nexthop or ":" in nexthop or "/" in nexthop:
        return keys
    labels = nexthop.split(".")
    keys += ["." + ".".join(labels[index:]) for index in range(1, len(labels))]
    return keys


def lookup_policy(nexthop: str, tables: Sequence[tuple[str, Callable[[str], str | None]]],
                  default: TlsPolicy, defaults: Defaults) -> TlsPolicy:
    """The first table entry for the next hop's keys, parsed; else the main.cf policy. Tables
    are (spec, lookup function) pairs."""
    for key in policy_keys(nexthop):
        for spec, lookup in tables:
            found = lookup(key)
            if found is not None:
                return parse_policy(found, f"{spec}, next-hop destination \"{key}\"", defaults)
    return default


def protocol_range(words: Iterable[str]) -> tuple[ssl.TLSVersion | None, ssl.TLSVersion | None]:
    """Postfix's protocol list as a version range: `>=TLSv1.2`, `<=TLSv1.2`, exclusions
    (`!SSLv2, !SSLv3`) or inclusions (`TLSv1.2 TLSv1.3`); (None, None) means no limit."""
    words = list(words)
    low: ssl.TLSVersion | None = None
    high: ssl.TLSVersion | None = None
    allowed = set(_ORDER)
    included: set[ssl.TLSVersion] = set()
    for raw in words:
        for word in raw.replace(",", " ").replace(":", " ").split():
            op = ">=" if word.startswith(">=") else "<=" if word.startswith("<=") else \
                "!" if word.startswith("!") else ""
            name = word[len(op):].lower()
            if name == "sslv2":
                continue  # long gone from OpenSSL: excluding or naming it changes nothing
            if name not in _VERSIONS:
                raise TlsPolicyError(f"unknown TLS protocol {word!r} (SSLv3, TLSv1, TLSv1.1, "
                                     "TLSv1.2, TLSv1.3)")
            version = _VERSIONS[name]
            if op == ">=":
                low = version
            elif op == "<=":
                high = version
            elif op == "!":
                allowed.discard(version)
            else:
                included.add(version)
    if included:
        allowed &= included
    allowed = {v for v in allowed if (low is None or _ORDER.index(v) >= _ORDER.index(low))
               and (high is None or _ORDER.index(v) <= _ORDER.index(high))}
    if not allowed:
        raise TlsPolicyError(f"the TLS protocols {' '.join(words)} leave no version")
    ordered = sorted(allowed, key=_ORDER.index)
    first = None if ordered[0] == _ORDER[0] and low is None else ordered[0]
    last = None if ordered[-1] == _ORDER[-1] and high is None else ordered[-1]
    return first, last


def client_context(*, verify: bool, cafile: str, capath: str, append_default_ca: bool,
                   protocols: Sequence[str], cert_file: str = "",
                   key_file: str = "") -> ssl.SSLContext:
    """A client context. With `verify`, the handshake fails unless the chain is trusted; the
    name is checked afterwards by `matches` (Postfix's strategies, not only the SNI name)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    if cafile or capath:
        context.load_verify_locations(cafile=cafile or None, capath=capath or None)
    if append_default_ca:
        context.load_default_certs()
    context.verify_mode = ssl.CERT_REQUIRED if verify else ssl.CERT_NONE
    low, high = protocol_range(protocols)
    # Python's floor is TLSv1.2 (and OpenSSL 3 refuses the older ones at its default security
    # level): a list allowing SSLv3, TLSv1 or TLSv1.1 gets TLSv1.2 as its lowest, and one that
    # allows nothing newer is refused.
    if high is not None and high < ssl.TLSVersion.TLSv1_2:
        raise TlsPolicyError(f"the TLS protocols {' '.join(protocols)} allow nothing from "
                             "TLSv1.2 on, the oldest this system offers")
    if low is not None and low > ssl.TLSVersion.TLSv1_2:
        context.minimum_version = low
    if high is not None:
        context.maximum_version = high
    if cert_file:
        context.load_cert_chain(cert_file, key_file or None)
    return context


def has_trust_anchors(cafile: str, capath: str, append_default_ca: bool) -> bool:
    return bool(cafile or capath or append_default_ca)


def certificate_names(peercert: dict[str, object]) -> tuple[list[str], list[str]]:
    """(DNS names, IP addresses) a verified certificate is for: its subjectAltNames, or its
    CommonName when it has no DNS subjectAltName (Postfix's rule)."""
    dns_names: list[str] = []
    addresses: list[str] = []
    for kind, value in peercert.get("subjectAltName", ()):  # type: ignore[attr-defined]
        if kind == "DNS":
            dns_names.append(str(value))
        elif kind == "IP Address":
            addresses.append(str(value).strip())
    if not dns_names:
        for rdn in peercert.get("subject", ()):  # type: ignore[attr-defined]
            for key, value in rdn:
                if key == "commonName":
                    dns_names.append(str(value))
    return dns_names, addresses


def _name_matches(certid: str, domain: str, subdomain: bool) -> bool:
    certid, domain = certid.lower().rstrip("."), domain.lower().rstrip(".")
    if subdomain:
        return certid.endswith("." + domain) and len(certid) > len(domain) + 1
    if certid == domain:
        return True
    # "*.example.com" stands for one label: a.example.com, not example.com or a.b.example.com.
    _, dot, parent = domain.partition(".")
    return certid.startswith("*.") and len(certid) > 2 and bool(dot) and certid[1:] == "." + parent


def matches(strategies: Sequence[str], peercert: dict[str, object], *, hostname: str,
            nexthop: str) -> bool:
    """Whether a certificate names what the strategies ask (module docstring)."""
    dns_names, addresses = certificate_names(peercert)
    for strategy in strategies:
        lowered = strategy.lower()
        subdomain = False
        if lowered == "nexthop":
            domain = nexthop
        elif lowered == "dot-nexthop":
            domain, subdomain = nexthop, True
        elif lowered == "hostname":
            domain = hostname
        elif strategy.startswith(".") and len(strategy) > 1:
            domain, subdomain = strategy[1:], True
        else:
            domain = strategy
        if any(_name_matches(name, domain, subdomain) for name in dns_names):
            return True
        if not subdomain and _same_address(domain, addresses):
            return True
    return False


def _same_address(name: str, addresses: Sequence[str]) -> bool:
    try:
        wanted = ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    for text in addresses:
        try:
            if ipaddress.ip_address(text) == wanted:
                return True
        except ValueError:
            continue
    return False


def summary(trust: str, namaddr: str, ssl_object: ssl.SSLObject | ssl.SSLSocket,
            context: ssl.SSLContext) -> str:
    """`Trusted TLS connection established to mx.example[192.0.2.1]:25: TLSv1.3 with cipher
    TLS_AES_256_GCM_SHA384 (256/256 bits)` (Postfix's tls_log_summary; Python does not tell
    the key exchange or signature, which Postfix appends when OpenSSL does)."""
    cipher = ssl_object.cipher()
    name, version, bits = cipher if cipher else ("unknown", "unknown", 0)
    algbits = next((c.get("alg_bits", bits) for c in context.get_ciphers()
                    if c.get("name") == name), bits)
    protocol = ssl_object.version() or version
    return (f"{trust} TLS connection established to {namaddr}: {protocol} with cipher {name} "
            f"({bits}/{algbits} bits)")


def verification_failure(error: ssl.SSLCertVerificationError, namaddr: str) -> str:
    """Postfix's tls_log_verify_error line for a chain that failed."""
    code = error.verify_code
    if code == 18:  # X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT
        return f"certificate verification failed for {namaddr}: self-signed certificate"
    if code in (19, 20):  # SELF_SIGNED_CERT_IN_CHAIN, UNABLE_TO_GET_ISSUER_CERT_LOCALLY
        return f"certificate verification failed for {namaddr}: untrusted issuer"
    if code == 10:
        return f"server certificate verification failed for {namaddr}: certificate has expired"
    if code == 9:
        return (f"server certificate verification failed for {namaddr}: certificate not yet "
                "valid")
    return (f"server certificate verification failed for {namaddr}: num={code}:"
            f"{error.verify_message}")


def name_mismatch(namaddr: str) -> str:
    """The line Postfix (through OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH) logs for a trusted
    certificate that names no host the policy accepts."""
    return f"server certificate verification failed for {namaddr}: num=62:hostname mismatch"
