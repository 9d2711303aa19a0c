"""Authentication for sealmail's servers: the sasldb, saslauthd, and the Authenticator.

`Authenticator` ties imapd.conf (sasl_* options, admins, allowplaintext) to the sans-I/O
mechanisms of sealmail.proto.sasl and to the password backends (SaslDB, SaslauthdClient).
"""

from __future__ import annotations

from sealmail.auth.authenticator import (
    Authenticator,
    MechanismUnavailable,
    identity_from_certificate,
)
from sealmail.auth.saslauthd import SaslauthdClient, SaslauthdError
from sealmail.auth.sasldb import SaslDB, SaslDBError

__all__ = [
    "Authenticator",
    "MechanismUnavailable",
    "SaslDB",
    "SaslDBError",
    "SaslauthdClient",
    "SaslauthdError",
    "identity_from_certificate",
]
