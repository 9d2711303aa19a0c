"""TLS for sealmail's servers: the one `ssl.SSLContext` builder, and what a session learns.

The hardened context (TLS 1.2 and up unless told otherwise, no compression, no renegotiation, the
server's cipher order; certificate and key checked apart, so an error says which file is wrong; an
encrypted key refused instead of prompting) is built here for both configuration files:

* `server_context(config)`, from imapd.conf, for lmtpd, imapd, pop3d and sieved (Cyrus's names):

  * ``tls_server_cert``: PEM certificate, chain after it. Unset: no TLS (None).
  * ``tls_server_key``: PEM private key; unset means the key is in the certificate file, as in
    Cyrus.
  * ``tls_client_ca_file``: when set, a client certificate is *requested*, not required, and one
    that does not verify against these CAs fails the handshake. A verified certificate gives the
    identity that SASL EXTERNAL uses (`peer_identity`).
  * ``tls_versions``: the versions offered, default ``tls1_2 tls1_3``; they must form a range.

* smtpd's, from main.cf (Postfix's names), by sealmail.mta.smtpd_tls with `hardened_context` and
  `load_keys`: server/ reads no main.cf, whose parameters the MTA declares.

Every problem is a `TLSConfigError` naming the configuration file and the line that set the
option (none for a default), the option and the certificate or key file, raised when the daemon
starts, not at the first STARTTLS.
"""

from __future__ import annotations

import re
import ssl
import warnings
from collections.abc import Callable
from typing import Any, Protocol

from sealmail.config.imapd_conf import ConfigError, ImapdConfig
from sealmail.config.options import IMAPD
from sealmail.config.schema import Option

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


class Options(Protocol):
    """A configuration that says where an option's value was written: ImapdConfig, or the MTA's
    MainConfig (named by its shape, since server/ does not import the MTA)."""

    def error(self, option: Option[Any], message: str) -> ConfigError: ...


Problem = Callable[[Option[Any], "str | None", str], TLSConfigError]
"""Makes the error for (option, file, message), knowing which configuration file says so."""


def problems(config: Options) -> Problem:
    """The `Problem` of `config`: its file and the line that set the option (a main.cf or a
    master.cf -o line for main.cf), or the file alone for a default."""

    def problem(option: Option[Any], file: str | None, message: str) -> TLSConfigError:
        where = config.error(option, message)
        return TLSConfigError(where.path, option.name, file, message, where.line)

    return problem


class _EncryptedKey(Exception):
    """Raised from the passphrase callback: OpenSSL asks only when the key is encrypted."""


def _passphrase() -> str:
    raise _EncryptedKey


def tls_versions(config: ImapdConfig) -> tuple[ssl.TLSVersion, ssl.TLSVersion]:
    """The lowest and highest version from ``tls_versions``."""
    problem = problems(config)
    text = config.get(IMAPD.tls_versions) or ""
    words = [w.lower() for w in re.split(r"[\s,]+", text) if w]
    if not words:
        raise problem(IMAPD.tls_versions, None, "no TLS version listed")
    for word in words:
        if word == "ssl3":
            raise problem(IMAPD.tls_versions, None, "ssl3 is not supported")
        if word not in _VERSIONS:
            raise problem(
                IMAPD.tls_versions, None, f"{word!r} is not one of {', '.join(_ORDER)}"
            )
    positions = sorted({_ORDER.index(w) for w in words})
    if positions != list(range(positions[0], positions[-1] + 1)):
        raise problem(
            IMAPD.tls_versions,
            None,
            f"{text!r} leaves a gap; list a range of versions such as 'tls1_2 tls1_3'",
        )
    return _VERSIONS[_ORDER[positions[0]]], _VERSIONS[_ORDER[positions[-1]]]


def hardened_context(lowest: ssl.TLSVersion, highest: ssl.TLSVersion) -> ssl.SSLContext:
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


def _readable(problem: Problem, option: Option[Any], path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise problem(option, path, f"cannot read: {exc.strerror}") from None


def load_keys(
    context: ssl.SSLContext,
    problem: Problem,
    cert: tuple[Option[Any], str],
    key: tuple[Option[Any], str] | None,
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
    problem = problems(config)
    cert = config.get(IMAPD.tls_server_cert)
    key = config.get(IMAPD.tls_server_key)
    client_ca = config.get(IMAPD.tls_client_ca_file)
    if not cert:
        for option, value in ((IMAPD.tls_server_key, key), (IMAPD.tls_client_ca_file, client_ca)):
            if value:
                raise problem(option, value, "set, but tls_server_cert is not: TLS needs both")
        return None
    lowest, highest = tls_versions(config)
    context = hardened_context(lowest, highest)
    load_keys(
        context,
        problem,
        (IMAPD.tls_server_cert, cert),
        (IMAPD.tls_server_key, key) if key else None,
        "no private key in the certificate file, and tls_server_key is not set",
    )
    if client_ca:
        _readable(problem, IMAPD.tls_client_ca_file, client_ca)
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError:
            raise problem(
                IMAPD.tls_client_ca_file, client_ca, "no PEM CA certificate in this file"
            ) from None
        # Request, do not require: clients without a certificate still use passwords.
        context.verify_mode = ssl.CERT_OPTIONAL
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
