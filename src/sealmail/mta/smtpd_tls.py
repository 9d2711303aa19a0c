"""smtpd's TLS server context, from main.cf (with a master.cf entry's -o overrides).

The context is sealmail.server.tls's hardened one; what is the MTA's is reading Postfix's
parameters (postconf(5)):

* ``smtpd_tls_security_level``: none (or empty): no TLS (None); may or encrypt: TLS, which needs a
  certificate.
* ``smtpd_tls_chain_files``: PEM files, each a private key followed by its certificate chain; when
  set, ``smtpd_tls_cert_file`` and ``smtpd_tls_key_file`` are ignored, as in Postfix.
* ``smtpd_tls_cert_file``, ``smtpd_tls_key_file`` (default: the certificate file).
* ``smtpd_tls_protocols`` (level may) or ``smtpd_tls_mandatory_protocols`` (level encrypt):
  Postfix's syntax, ``>=TLSv1.2``, ``<=TLSv1.3``, ``!TLSv1.1`` or a list of names; the versions
  left must form a range. No client certificate is asked for (smtpd_tls_ask_ccert is not
  supported), and the cipher grades are not: Python's default list is stronger than Postfix's
  "medium" and "high" alike.

Every problem is a `TLSConfigError` naming the main.cf (or master.cf) file and line that set the
parameter, the parameter and the certificate or key file, raised when smtpd starts.
"""

from __future__ import annotations

import re
import ssl

from sealmail.mta.config import MainConfig
from sealmail.mta.config.parameters import MAIN
from sealmail.server.tls import hardened_context, load_keys, problems

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


def smtpd_context(config: MainConfig) -> ssl.SSLContext | None:
    """smtpd's server context from main.cf, or None when smtpd_tls_security_level offers no TLS."""
    problem = problems(config)
    level = config.get(MAIN.smtpd_tls_security_level).strip().lower()
    if config.get(MAIN.smtpd_tls_wrappermode):
        level = "encrypt"  # as Postfix's smtpd: wrapper mode implies enforced TLS
    if level in ("", "none"):
        return None
    if level not in ("may", "encrypt"):
        raise problem(
            MAIN.smtpd_tls_security_level, None, f"{level!r}: choose none, may or encrypt"
        )
    # Postfix: the mandatory protocols apply where TLS is mandatory, the others where it is not.
    protocols = (
        MAIN.smtpd_tls_mandatory_protocols if level == "encrypt" else MAIN.smtpd_tls_protocols
    )
    try:
        lowest, highest = postfix_protocols(" ".join(config.get(protocols)))
    except ValueError as exc:
        raise problem(protocols, None, str(exc)) from None
    context = hardened_context(lowest, highest)
    chain_files = config.get(MAIN.smtpd_tls_chain_files)
    if chain_files:
        for path in chain_files:  # one per key type (RSA, ECDSA), as Postfix loads them
            load_keys(
                context,
                problem,
                (MAIN.smtpd_tls_chain_files, path),
                None,
                "no private key in this file (a chain file holds a key, then its certificates)",
            )
        return context
    cert = config.get(MAIN.smtpd_tls_cert_file).strip()
    key = config.get(MAIN.smtpd_tls_key_file).strip()
    if not cert:
        raise problem(
            MAIN.smtpd_tls_cert_file,
            None,
            f"smtpd_tls_security_level = {level} needs a certificate "
            "(smtpd_tls_cert_file or smtpd_tls_chain_files)",
        )
    separate_key = (MAIN.smtpd_tls_key_file, key) if key and key != cert else None
    load_keys(
        context,
        problem,
        (MAIN.smtpd_tls_cert_file, cert),
        separate_key,
        "no private key in the certificate file, and smtpd_tls_key_file names no other file",
    )
    return context
