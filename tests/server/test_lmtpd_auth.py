"""lmtpd over TCP as the seed's sections 2.2 and 2.3 set it up: SASL, STARTTLS, hosts.allow."""

from __future__ import annotations

import shutil
import smtplib
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from tests.support.instance import SealmailInstance

MESSAGE = b"From: a@example.org\r\nSubject: over tcp\r\n\r\nhello\r\n"
PASSWORD = "lmtp-secret-9"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def make_instance(
    root: Path, ca: trustme.CA, *, tls: bool = True, **extra: str
) -> SealmailInstance:
    conf: dict[str, str] = {
        "lmtp_admins": "lmtpuser",
        "auth_failure_delay": "0",
        "hosts_allow": str(root / "hosts.allow"),
        "hosts_deny": str(root / "hosts.deny"),
        "sasl_sasldb_path": str(root / "sasldb2"),
    }
    if tls:
        cert = ca.issue_cert("localhost", "127.0.0.1")
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "server.pem"))
        conf["tls_server_cert"] = str(root / "server.pem")
    conf.update(extra)
    root.mkdir(parents=True, exist_ok=True)
    for user, password in (("lmtpuser", PASSWORD), ("alice", "alice-pw")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sealmail",
                "saslpasswd2",
                "-p",
                "-c",
                "-u",
                "sealmail.test.example",
                "-f",
                str(root / "sasldb2"),
                user,
            ],
            input=password + "\n",
            text=True,
            check=True,
            capture_output=True,
        )
    return SealmailInstance(root, users=["alice"], tcp=True, imapd_conf_extra=conf)


@pytest.fixture
def server(tmp_path: Path, ca: trustme.CA) -> Iterator[SealmailInstance]:
    with make_instance(tmp_path, ca, lmtp_allowplaintext="no") as inst:
        yield inst


def tls_client_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


def count(inst: SealmailInstance, user: str = "alice") -> int:
    return inst.message_count(user)


def test_auth_is_required_before_mail(server: SealmailInstance) -> None:
    with smtplib.LMTP(*server.tcp_address) as client:
        client.ehlo()
        assert client.has_extn("auth")
        assert client.mail("a@example.org")[:2] == (530, b"5.7.0 Authentication required")


def test_plaintext_is_refused_without_tls_and_md5_works(server: SealmailInstance) -> None:
    with smtplib.LMTP(*server.tcp_address) as client:
        client.ehlo()
        offered = client.esmtp_features["auth"].split()
        assert "PLAIN" not in offered and "LOGIN" not in offered
        assert "CRAM-MD5" in offered and "SCRAM-SHA-256" in offered
        code, _ = client.docmd("AUTH", "PLAIN AGxtdHB1c2VyAHg=")
        assert code == 538
        client.login("lmtpuser", PASSWORD)  # smtplib picks CRAM-MD5 from the offer
        assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
    assert count(server) == 1
    log = server.log_text()
    assert "authenticated as lmtpuser" in log
    assert PASSWORD not in log


def test_starttls_then_plain(server: SealmailInstance, ca: trustme.CA) -> None:
    with smtplib.LMTP(*server.tcp_address) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=tls_client_context(ca))
        client.ehlo()
        assert not client.has_extn("starttls")
        assert "PLAIN" in client.esmtp_features["auth"].split()
        client.auth("PLAIN", lambda challenge=None: f"\0lmtpuser\0{PASSWORD}")
        assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
    with server.store() as store:
        [record] = store.messages("user.alice")
        content = store.message_bytes("user.alice", record.uid)
    assert b"with LMTPSA id" in content  # RFC 3848: TLS and AUTH


def test_a_user_outside_lmtp_admins_is_refused(server: SealmailInstance) -> None:
    with smtplib.LMTP(*server.tcp_address) as client:
        client.ehlo()
        with pytest.raises(smtplib.SMTPAuthenticationError) as info:
            client.login("alice", "alice-pw")
        assert info.value.smtp_code == 535
        assert client.mail("a@example.org")[0] == 530
    assert "alice authenticated" in server.log_text() and "not in lmtp_admins" in server.log_text()


def test_failures_close_the_session(server: SealmailInstance) -> None:
    client = smtplib.LMTP(*server.tcp_address)
    client.ehlo()
    for _ in range(3):
        with pytest.raises(smtplib.SMTPAuthenticationError):
            client.login("lmtpuser", "wrong")
    assert client.noop()[:2] == (421, b"4.7.0 Too many authentication failures, closing")
    with pytest.raises(smtplib.SMTPServerDisconnected):
        client.noop()
    client.close()
    assert "wrong" not in server.log_text()


def test_dash_a_needs_no_auth(tmp_path: Path, ca: trustme.CA) -> None:
    inst = make_instance(tmp_path, ca)
    inst.authless_tcp = True
    with inst, smtplib.LMTP(*inst.tcp_address) as client:
        assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
    assert count(inst) == 1


def test_hosts_deny_closes_before_the_greeting(tmp_path: Path, ca: trustme.CA) -> None:
    inst = make_instance(tmp_path, ca)
    (tmp_path / "hosts.allow").write_text("lmtp : 10.0.0.0/8 : ALLOW\nlmtp : ALL : DENY\n")
    with inst:
        with socket.create_connection(inst.tcp_address, timeout=5) as sock:
            assert sock.recv(100) == b""
        with smtplib.LMTP(inst.socket_path) as client:  # the UNIX socket is not wrapped
            assert client.noop()[0] == 250
    assert "refused connect from [127.0.0.1]" in inst.log_text()


@pytest.mark.peer
def test_swaks_each_mechanism(server: SealmailInstance, ca: trustme.CA, tmp_path: Path) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed")
    host, port = server.tcp_address
    for mechanism, tls in (("CRAM-MD5", False), ("PLAIN", True), ("LOGIN", True)):
        argv = [
            swaks,
            "--protocol",
            "LMTP",
            "--server",
            host,
            "--port",
            str(port),
            "--from",
            "a@example.org",
            "--to",
            "alice@example.com",
            "--auth",
            mechanism,
            "--auth-user",
            "lmtpuser",
            "--auth-password",
            PASSWORD,
            "--silent",
            "2",
        ]
        if tls:
            argv += ["--tls"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, (mechanism, done.stdout, done.stderr)
    assert count(server) == 3


def test_sasl_mech_list_restricts_the_offer(tmp_path: Path, ca: trustme.CA) -> None:
    inst = make_instance(tmp_path, ca, sasl_mech_list="SCRAM-SHA-256")
    with inst, smtplib.LMTP(*inst.tcp_address) as client:
        client.ehlo()
        assert client.esmtp_features["auth"].split() == ["SCRAM-SHA-256"]
        assert client.docmd("AUTH", "CRAM-MD5")[0] == 504


def test_external_with_a_client_certificate(tmp_path: Path, ca: trustme.CA) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    with make_instance(tmp_path, ca, tls_client_ca_file=str(tmp_path / "ca.pem")) as inst:
        context = tls_client_context(ca)
        ca.issue_cert("lmtpuser").configure_cert(context)
        with smtplib.LMTP(*inst.tcp_address) as client:
            client.ehlo()
            client.starttls(context=context)
            client.ehlo()
            assert "EXTERNAL" in client.esmtp_features["auth"].split()
            assert client.docmd("AUTH", "EXTERNAL =")[0] == 235
            assert client.sendmail("a@example.org", ["alice@example.com"], MESSAGE) == {}
    assert "authenticated as lmtpuser from [127.0.0.1] (EXTERNAL)" in inst.log_text()
    assert count(inst) == 1
