"""TLS for the store's servers: an `ssl.SSLContext` from imapd.conf, and what a session learns.

Options (the names Cyrus uses):

* ``tls_server_cert``: PEM certificate, chain after it. Unset: no TLS (`server_context` is None).
* ``tls_server_key``: PEM private key; unset means the key is in the certificate file, as in Cyrus.
  Encrypted keys are refused (a daemon has nobody to type the passphrase).
* ``tls_client_ca_file``: when set, a client certificate is *requested*, not required, and one that
  does not verify against these CAs fails the handshake. A verified certificate gives the identity
  that SASL EXTERNAL uses (`peer_identity`).
* ``tls_versions``: the versions offered, default ``tls1_2 tls1_3``; they must form a range.

Every problem is a `TLSConfigError` naming the option and the file, raised when the daemon starts,
not at the first STARTTLS.
"""

from __future__ import annotations

import re
import ssl
import warnings

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
    """A TLS option cannot be used; names imapd.conf, the option and the file."""

    def __init__(self, config_path: str, option: str, file: str | None, message: str) -> None:
        super().__init__(config_path, 0, option, f"{file}: {message}" if file else message)
        self.option = option
        self.file = file


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


def _readable(config: ImapdConfig, option: str, path: str) -> None:
    try:
        with open(path, "rb") as handle:
            handle.read(1)
    except OSError as exc:
        raise TLSConfigError(config.path, option, path, f"cannot read: {exc.strerror}") from None


def server_context(config: ImapdConfig) -> ssl.SSLContext | None:
    """A server context from the TLS options, or None when no certificate is configured."""
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

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with warnings.catch_warnings():
        # TLS 1.0 and 1.1 are deprecated in Python; an administrator may still list them.
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = lowest
        context.maximum_version = highest
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
    context.options |= ssl.OP_NO_RENEGOTIATION

    _readable(config, "tls_server_cert", cert)
    try:
        # A scratch context reads the certificates alone, so a bad certificate file is told
        # apart from a bad key.
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=cert)
    except ssl.SSLError:
        raise TLSConfigError(
            config.path, "tls_server_cert", cert, "no PEM certificate in this file"
        ) from None
    key_option, key_file = ("tls_server_key", key) if key else ("tls_server_cert", cert)
    _readable(config, key_option, key_file)
    try:
        context.load_cert_chain(cert, key_file, password=_passphrase)
    except _EncryptedKey:
        raise TLSConfigError(
            config.path, key_option, key_file, "the private key is encrypted; store it unencrypted"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            message = f"the private key does not match the certificate in {cert}"
        elif key:
            message = "no usable PEM private key in this file"
        else:
            message = "no private key in the certificate file, and tls_server_key is not set"
        raise TLSConfigError(config.path, key_option, key_file, message) from None

    if client_ca:
        _readable(config, "tls_client_ca_file", client_ca)
        try:
            context.load_verify_locations(cafile=client_ca)
        except ssl.SSLError:
            raise TLSConfigError(
                config.path, "tls_client_ca_file", client_ca, "no PEM CA certificate in this file"
            ) from None
        # Request, do not require: clients without a certificate still use passwords.
        context.verify_mode = ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
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
