"""Authenticator: the mechanism list from imapd.conf, and whole exchanges over sasldb/saslauthd."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import scramp

from sealmail.auth import Authenticator, MechanismUnavailable, SaslDB, identity_from_certificate
from sealmail.config.imapd_conf import ConfigError, parse_imapd_conf
from sealmail.proto.sasl import Challenge, Failure, FailureReason, Identity, Success

if TYPE_CHECKING:
    from conftest import RunningSaslauthd

SERVER = "cyrus.example.com"


def authenticator(sasldb: SaslDB, extra: str = "", **kwargs: object) -> Authenticator:
    config = parse_imapd_conf(f"servername: {SERVER}\n{extra}")
    return Authenticator(config, sasldb=sasldb, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def users(sasldb: SaslDB) -> SaslDB:
    sasldb.set_password(Identity("lmtpuser", SERVER), "secret")
    sasldb.set_password(Identity("alice", SERVER), "alicepw")
    return sasldb


def test_plaintext_hidden_without_tls_unless_allowed(sasldb: SaslDB) -> None:
    auth = authenticator(sasldb)
    assert auth.available_mechanisms(False, "imap") == ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5")
    assert auth.available_mechanisms(True, "imap")[-2:] == ("PLAIN", "LOGIN")
    with pytest.raises(MechanismUnavailable) as raised:
        auth.start("PLAIN", False, service="imap")
    assert raised.value.reason is FailureReason.ENCRYPTION_REQUIRED
    allowed = authenticator(sasldb, "allowplaintext: yes\nlmtp_allowplaintext: no\n")
    assert "PLAIN" in allowed.available_mechanisms(False, "imap")
    assert "PLAIN" not in allowed.available_mechanisms(False, "lmtp")
    following = authenticator(sasldb, "allowplaintext: yes\n")  # lmtp_allowplaintext unset
    assert "PLAIN" in following.available_mechanisms(False, "lmtp")
    lmtp_only = authenticator(sasldb, "lmtp_allowplaintext: yes\n")
    assert "PLAIN" in lmtp_only.available_mechanisms(False, "lmtp")
    assert "PLAIN" not in lmtp_only.available_mechanisms(False, "imap")


def test_mech_list_and_minimum_layer(sasldb: SaslDB, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        auth = authenticator(sasldb, "sasl_mech_list: plain cram-md5 DIGEST-MD5\n")
    assert "DIGEST-MD5" in caplog.text
    assert auth.available_mechanisms(True, "lmtp") == ("CRAM-MD5", "PLAIN")
    with pytest.raises(MechanismUnavailable) as raised:
        auth.start("SCRAM-SHA-256", True, service="lmtp")
    assert raised.value.reason is FailureReason.UNKNOWN_MECHANISM
    strict = authenticator(sasldb, "sasl_minimum_layer: 128\n")
    assert strict.available_mechanisms(False, "imap") == ()
    assert strict.available_mechanisms(True, "imap", tls_bits=56) == ()
    assert "PLAIN" in strict.available_mechanisms(True, "imap", tls_bits=256)
    with pytest.raises(MechanismUnavailable) as raised:
        strict.start("CRAM-MD5", False, service="imap")
    assert raised.value.reason is FailureReason.TOO_WEAK


def test_external_needs_tls_and_a_certificate_identity(users: SaslDB) -> None:
    auth = authenticator(users)
    assert "EXTERNAL" not in auth.available_mechanisms(True, "lmtp")
    assert "EXTERNAL" not in auth.available_mechanisms(False, "lmtp", tls_peer_identity="alice")
    assert auth.available_mechanisms(True, "lmtp", tls_peer_identity="alice")[0] == "EXTERNAL"
    mech = auth.start("external", True, "alice@cyrus.example.com", service="lmtp")
    assert mech.step(b"") == Success("alice", "alice")


def test_certificate_identity_prefers_email_san() -> None:
    cert = {
        "subject": ((("countryName", "XX"),), (("commonName", "lmtp client"),)),
        "subjectAltName": (("DNS", "mx.example.com"), ("email", "lmtpuser@cyrus.example.com")),
    }
    assert identity_from_certificate(cert) == "lmtpuser@cyrus.example.com"
    assert identity_from_certificate({"subject": cert["subject"]}) == "lmtp client"
    assert identity_from_certificate({}) is None


def test_lmtp_admins_may_proxy_on_lmtp_only(users: SaslDB) -> None:
    auth = authenticator(users, "admins: root\nlmtp_admins: lmtpuser\n")
    mech = auth.start("PLAIN", True, service="lmtp")
    assert mech.step(b"alice\x00lmtpuser\x00secret") == Success("lmtpuser", "alice")
    result = auth.start("PLAIN", True, service="imap").step(b"alice\x00lmtpuser\x00secret")
    assert isinstance(result, Failure) and result.reason is FailureReason.AUTHZ_DENIED


def test_whole_cram_and_scram_exchanges_over_the_sasldb(users: SaslDB) -> None:
    auth = authenticator(users)
    mech = auth.start("CRAM-MD5", False, service="lmtp")
    challenge = mech.step(None)
    assert isinstance(challenge, Challenge)
    digest = hmac.new(b"secret", challenge.data, "md5").hexdigest()
    assert mech.step(f"lmtpuser {digest}".encode()) == Success("lmtpuser", "lmtpuser")

    client = scramp.ScramClient(["SCRAM-SHA-256"], "lmtpuser@cyrus.example.com", "secret")
    mech = auth.start("SCRAM-SHA-256", False, service="lmtp")
    server_first = mech.step(client.get_client_first().encode())
    assert isinstance(server_first, Challenge)
    client.set_server_first(server_first.data.decode())
    server_final = mech.step(client.get_client_final().encode())
    assert isinstance(server_final, Challenge)
    client.set_server_final(server_final.data.decode())  # raises if the signature is wrong
    assert mech.step(b"") == Success("lmtpuser", "lmtpuser")


def test_nothing_logged_or_returned_holds_the_password(
    users: SaslDB, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    extra = f"sasl_pwcheck_method: auxprop saslauthd\nsasl_saslauthd_path: {tmp_path}/mux\n"
    auth = authenticator(users, extra)
    with caplog.at_level(logging.DEBUG):
        result = auth.start("PLAIN", True, service="imap").step(b"\x00alice\x00Wr0ngPassw0rd")
    assert isinstance(result, Failure) and result.reason is FailureReason.TEMPORARY
    assert "Wr0ngPassw0rd" not in caplog.text + repr(result)
    assert "saslauthd" in caplog.text  # the missing daemon is logged


def test_bad_pwcheck_method_is_a_config_error(sasldb: SaslDB) -> None:
    with pytest.raises(ConfigError, match="sasl_pwcheck_method"):
        authenticator(sasldb, "sasl_pwcheck_method: pwcheck\n")


@pytest.mark.peer
def test_auxprop_then_saslauthd_in_order(users: SaslDB, saslauthd: RunningSaslauthd) -> None:
    extra = (
        f"sasl_pwcheck_method: auxprop saslauthd\nsasl_saslauthd_path: {saslauthd.socket_path}\n"
    )
    auth = authenticator(users, extra)
    # alice is in the sasldb; carol only behind saslauthd (its rimap backend).
    assert auth.start("PLAIN", True, service="imap").step(b"\x00alice\x00alicepw") == Success(
        "alice", "alice"
    )
    login = auth.start("LOGIN", True, service="imap")
    assert login.step(None) == Challenge(b"Username:")
    assert login.step(b"carol") == Challenge(b"Password:")
    assert login.step(b"carolpw") == Success("carol", "carol")
    result = auth.start("PLAIN", True, service="imap").step(b"\x00carol\x00nope")
    assert isinstance(result, Failure) and result.reason is FailureReason.BAD_CREDENTIALS
    only_saslauthd = authenticator(users, extra.replace("auxprop ", ""))
    # saslauthd cannot serve the shared-secret mechanisms, so they are not offered.
    assert only_saslauthd.available_mechanisms(True, "imap") == ("PLAIN", "LOGIN")
