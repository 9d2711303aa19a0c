"""TLS for sealmail's servers: the one `ssl.SSLContext` builder, and what a session learns.

Two entry points read the two configuration files and build the same hardened context (TLS 1.2
and up unless told otherwise, no compression, no renegotiation, the server's cipher order;
certificate and key checked apart, so an error says which file is wrong; an encrypted key refused
instead of prompting):

* `server_context(config)`, from imapd.conf, for lmtpd, imapd, pop3d and sieved (Cyrus's names):

  * ``tls_server_cert``: PEM certificate, chain after it. Unset: no TLS (None).
  * ``tls_server_key``: PEM private key; unset means the key is in the certificate file, as in
    Cyrus.
  * ``tls_client_ca_file``: when set, a client certificate is *requested*, not required, and one
    that does not verify against these CAs fails the handshake. A verified certificate gives the
    identity that SASL EXTERNAL uses (`peer_identity`).
  * ``tls_versions``: the versions offered, default ``tls1_2 tls1_3``; they must form a range.

* `smtpd_context(config)`, from main.cf (with a master.cf entry's -o overrides), for smtpd
  (Postfix's names):

  * ``smtpd_tls_security_level``: none (or empty): no TLS (None); may or encrypt: TLS, which
    needs a certificate.
  * ``smtpd_tls_chain_files``: PEM files, each a private key followed by its certificate chain;
    when set, ``smtpd_tls_cert_file`` and ``smtpd_tls_key_file`` are ignored, as in Postfix.
  * ``smtpd_tls_cert_file``, ``smtpd_tls_key_file`` (default: the certificate file).
  * ``smtpd_tls_protocols`` (level may) or ``smtpd_tls_mandatory_protocols`` (level encrypt):
    Postfix's syntax, ``>=TLSv1.2``, ``<=TLSv1.3``, ``!TLSv1.1`` or a list of names; the versions
    left must form a range. No client certificate is asked for (smtpd_tls_ask_ccert is not
    supported), and the cipher grades are not: Python's default list is stronger than Postfix's
    "medium" and "high" alike.

Every problem is a `TLSConfigError` naming the file (and line, for main.cf), the option and the
certificate or key file, raised when the daemon starts, not at the first STARTTLS.
"""

from __future__ import annotations

import re
import ssl
import warnings
from collections.abc import Callable
from typing import Protocol

from sealmail.config.imapd_conf import ConfigError, ImapdConfig

# Cyrus's spellings, oldest first.
_VERSIONS: dict[str, ssl.TLSVersion] = {
    "tls1_0": ssl.TLSVersion.TLSv1,
    "tls1_1": ssl.TLSVersion.TLSv1_1,
    "tls1_2": ssl.TLSVersion.TLSv1_2,
    "tls1_3": ssl.TLSVersion.TLSv1_3,
}
_ORDER = list(_VERSIONS)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


class TLSConfigError(ConfigError):
    """A TLS option cannot be used; names the configuration file, the option and the file."""

    def __init__(
        self, config_path: str, option: str, file: str | None, message: str, line: int = 0
    ) -> None:
        super().__init__(config_path, line, option, f"{file}: {message}" if file else message)
        self.option = option
        self.file = file


Problem = Callable[[str, "str | None", str], TLSConfigError]
"""Makes the error for (option, file, message), knowing which configuration file says so."""


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: OpenSSL asks only when the key is encrypted."""


def _passphrase() -> str:
    raise _EncryptedKey


def tls_versions(config: ImapdConfig) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """The lowest and highest version from ``tls_versions``."""
    text = config.string("tls_versions") or ""
    words = [w.lower() for w in re.split(r"[\s,]+", text) if w]
    if not words:
        raise TLSConfigError(config.path, "tls_versions", None, "no TLS version listed")
    for word in words:
        if word == "ssl3":
            raise TLSConfigError(config.path, "tls_versions", None, "ssl3 is not supported")
        if word not in _VERSIONS:
            raise TLSConfigError(
                config.path,
                "tls_versions",
                None,
                f"{word!r} is not one of {', '.join(_ORDER)}",
            )
    positions = sorted({_ORDER.index(w) for w in words})
    if positions != list(range(positions[0], positions[-1] + 1)):
        raise TLSConfigError(
            config.path,
            "tls_versions",
            None,
            f"{text!r} leaves a gap; list a range of versions such as 'tls1_2 tls1_3'",
        )
    return _VERSIONS[_ORDER[positions[0]]], _VERSIONS[_ORDER[positions[-1]]]


def _hardened(lowest: ssl.TLSVersion, highest: ssl.TLSVersion) -> ssl.SSLContext:
    """A server context offering `lowest` to `highest`, whichever file configured it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # TLS 1.0 and 1.1 are deprecated in Python; an administrator may still list them.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = lowest
        context.maximum_version = highest
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION
    # Until a client CA is loaded: ask for no certificate (server_context may ask for one).
    context.verify_mode = ssl.CERT_NONE
    return context


def _readable(problem: Problem, option: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise problem(option, path, f"cannot read: {exc.strerror}") from None


def _load_keys(
    context: ssl.SSLContext,
    problem: Problem,
    cert: tuple[str, str],
    key: tuple[str, str] | None,
    no_key: str,
) -> None:
    """Load a certificate chain and its key, each an (option, file); a None `key` means the
    key is in the certificate file, and `no_key` says what to do when it is not there. Checked
    apart, so the error names the file at fault."""
    cert_option, cert_file = cert
    _readable(problem, cert_option, cert_file)
    try:
        # A scratch context reads the certificates alone, so a bad certificate file is told
        # apart from a bad key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert_file)
    except ssl.SSLError:
        raise problem(cert_option, cert_file, "no PEM certificate in this file") from None
    key_option, key_file = key or cert
    _readable(problem, key_option, key_file)
    try:
        context.load_cert_chain(cert_file, key_file, password=_passphrase)
    except _EncryptedKey:
        raise problem(
            key_option, key_file, "the private key is encrypted; store it unencrypted"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"the private key does not match the certificate in {cert_file}"
        elif key is not None:
            message = "no usable PEM private key in this file"
        else:
            message = no_key
        raise problem(key_option, key_file, message) from None


def server_context(config: ImapdConfig) -> ssl.SSLContext | None:
    """A server context from imapd.conf's TLS options, or None when no certificate is set."""
    cert = config.string("tls_server_cert")
    key = config.string("tls_server_key")
    client_ca = config.string("tls_client_ca_file")
    if not cert:
        for option, value in (("tls_server_key", key), ("tls_client_ca_file", client_ca)):
            if value:
                raise TLSConfigError(
                    config.path, option, value, "set, but tls_server_cert is not: TLS needs both"
                )
        return None
    lowest, highest = tls_versions(config)

    def problem(option: str, file: str | None, message: str) -> TLSConfigError:
        return TLSConfigError(config.path, option, file, message)

    context = _hardened(lowest, highest)
    _load_keys(
        context,
        problem,
        ("tls_server_cert", cert),
        ("tls_server_key", key) if key else None,
        "no private key in the certificate file, and tls_server_key is not set",
    )
    if client_ca:
        _readable(problem, "tls_client_ca_file", client_ca)
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError:
            raise TLSConfigError(
                config.path, "tls_client_ca_file", client_ca, "no PEM CA certificate in this file"
            ) from None
        # Request, do not require: clients without a certificate still use passwords.
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


# -- main.cf ------------------------------------------------------------------------------------


class Setting(Protocol):
    """Where a main.cf parameter was set (a main.cf or master.cf line)."""

    @property
    def path(self) -> str: ...

    @property
    def line(self) -> int: ...


class PostfixParameters(Protocol):
    """What `smtpd_context` reads of main.cf: sealmail.mta.config.MainConfig, named by its shape
    since server/ does not import the MTA. `value` expands; `entry` says where a value was set."""

    @property
    def path(self) -> str: ...

    def value(self, name: str) -> str: ...

    def entry(self, name: str) -> Setting | None: ...


# Postfix's protocol names (tls_protocol_names), oldest first; SSLv2 and SSLv3 are gone from
# OpenSSL and only ever excluded. Hexadecimal versions (">=0303") as Postfix 3.6 reads them.
_POSTFIX_VERSIONS: dict[str, ssl.TLSVersion | None] = {
    "sslv2": None,
    "sslv3": None,
    "tlsv1": ssl.TLSVersion.TLSv1,
    "tlsv1.1": ssl.TLSVersion.TLSv1_1,
    "tlsv1.2": ssl.TLSVersion.TLSv1_2,
    "tlsv1.3": ssl.TLSVersion.TLSv1_3,
}
_POSTFIX_HEX = {"0301": "tlsv1", "0302": "tlsv1.1", "0303": "tlsv1.2", "0304": "tlsv1.3"}
_TLS_ORDER = [v for v in _POSTFIX_VERSIONS.values() if v is not None]


def _postfix_version(word: str) -> str:
    name = _POSTFIX_HEX.get(word, word.lower())
    if name not in _POSTFIX_VERSIONS:
        raise ValueError(f"{word!r} is not one of SSLv2, SSLv3, TLSv1, TLSv1.1, TLSv1.2, TLSv1.3")
    return name


def postfix_protocols(text: str) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """The lowest and highest version a smtpd_tls_protocols value allows; ValueError if none or
    not a range.

    postconf(5): ">=version" and "<=version" bound the range (Postfix 3.6); the older forms list
    names to enable ("TLSv1.2 TLSv1.3") or to exclude ("!SSLv2, !TLSv1"); elements are separated
    by whitespace, commas or colons.
    """
    low, high = 0, len(_TLS_ORDER) - 1
    included: set[int] = set()
    excluded: set[int] = set()
    for word in (w for w in re.split(r"[\s,:]+", text) if w):
        bound, name = (word[:2], word[2:]) if word.startswith((">=", "<=")) else ("", word)
        negated = not bound and name.startswith("!")
        version = _POSTFIX_VERSIONS[_postfix_version(name[1:] if negated else name)]
        if version is None:  # SSLv2, SSLv3: gone from OpenSSL
            if bound == "<=":
                raise ValueError(f"{word!r} leaves no TLS version")
            if not bound and not negated:
                raise ValueError(f"{name} is not supported")
            continue  # excluded, or below every TLS version anyway
        position = _TLS_ORDER.index(version)
        if bound == ">=":
            low = max(low, position)
        elif bound == "<=":
            high = min(high, position)
        elif negated:
            excluded.add(position)
        else:
            included.add(position)
    allowed = sorted(
        p for p in (included or set(range(len(_TLS_ORDER)))) - excluded if low <= p <= high
    )
    if not allowed:
        raise ValueError(f"{text!r} leaves no TLS version")
    if allowed != list(range(allowed[0], allowed[-1] + 1)):
        raise ValueError(f"{text!r} leaves a gap; allow a range of versions such as '>=TLSv1.2'")
    return _TLS_ORDER[allowed[0]], _TLS_ORDER[allowed[-1]]


def smtpd_context(config: PostfixParameters) -> ssl.SSLContext | None:
    """smtpd's server context from main.cf, or None when smtpd_tls_security_level offers no TLS."""

    def problem(option: str, file: str | None, message: str) -> TLSConfigError:
        where = config.entry(option)
        path, line = (where.path, where.line) if where is not None else (config.path, 0)
        return TLSConfigError(path, option, file, message, line)

    level = config.value("smtpd_tls_security_level").strip().lower()
    if level in ("", "none"):
        return None
    if level not in ("may", "encrypt"):
        raise problem("smtpd_tls_security_level", None, f"{level!r}: choose none, may or encrypt")
    # Postfix: the mandatory protocols apply where TLS is mandatory, the others where it is not.
    protocols = "smtpd_tls_mandatory_protocols" if level == "encrypt" else "smtpd_tls_protocols"
    try:
        lowest, highest = postfix_protocols(config.value(protocols))
    except ValueError as exc:
        raise problem(protocols, None, str(exc)) from None
    context = _hardened(lowest, highest)
    chain_files = config.value("smtpd_tls_chain_files").replace(",", " ").split()
    if chain_files:
        for path in chain_files:  # one per key type (RSA, ECDSA), as Postfix loads them
            _load_keys(
                context,
                problem,
                ("smtpd_tls_chain_files", path),
                None,
                "no private key in this file (a chain file holds a key, then its certificates)",
            )
        return context
    cert = config.value("smtpd_tls_cert_file").strip()
    key = config.value("smtpd_tls_key_file").strip()
    if not cert:
        raise problem(
            "smtpd_tls_cert_file",
            None,
            f"smtpd_tls_security_level = {level} needs a certificate "
            "(smtpd_tls_cert_file or smtpd_tls_chain_files)",
        )
    separate_key = ("smtpd_tls_key_file", key) if key and key != cert else None
    _load_keys(
        context,
        problem,
        ("smtpd_tls_cert_file", cert),
        separate_key,
        "no private key in the certificate file, and smtpd_tls_key_file names no other file",
    )
    return context


def _pairs(value: object) -> list[tuple[str, str]]:
    """(name, value) pairs from getpeercert()'s nested tuples, whatever their depth."""
    if not isinstance(value, tuple):
        return []
    if len(value) == 2 and all(isinstance(v, str) for v in value):
        return [(value[0], value[1])]
    return [pair for item in value for pair in _pairs(item)]


def peer_identity(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> str | None:
    """The verified client certificate's identity, or None.

    The subject's commonName, as Cyrus takes it for EXTERNAL; without one, the first email
    subjectAltName, then the first DNS subjectAltName. A subject with several different commonNames,
    or a name with spaces or control characters, gives None: an identity must not be ambiguous.
    """
    if ssl_object.context.verify_mode == ssl.CERT_NONE:
        return None
    # getpeercert() returns a non-empty dict only for a certificate that verified.
    cert = ssl_object.getpeercert()
    if not cert:
        return None
    common_names = {value for name, value in _pairs(cert.get("subject")) if name == "commonName"}
    if len(common_names) > 1:
        return None
    candidates = list(common_names)
    alt_names = _pairs(cert.get("subjectAltName"))
    candidates += [value for kind, value in alt_names if kind == "email"][:1]
    candidates += [value for kind, value in alt_names if kind == "DNS"][:1]
    if not candidates:
        return None
    identity = candidates[0]
    return None if not identity or _CONTROL.search(identity) else identity


def cipher_bits(ssl_object: ssl.SSLObject | ssl.SSLSocket) -> int:
    """Secret bits of the cipher, which sasl_minimum_layer counts; 0 before a handshake."""
    cipher = ssl_object.cipher()
    return cipher[2] if cipher else 0
