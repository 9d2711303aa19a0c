"""Debian's master.cf `submission` (587, STARTTLS required) and `submissions` (465, implicit TLS)
entries, copied as written, on a running master: swaks --tls/--tlsc --auth and smtplib."""

from __future__ import annotations

import smtplib
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port

from sealmail.auth.sasldb import SaslDB
from sealmail.mta.config import checks, load_mta_config
from sealmail.mta.queue import Queue, QueueName
from sealmail.proto.sasl import Identity

MESSAGE = b"From: alice@example.com\r\nSubject: submitted\r\n\r\nhello\r\n"

# /usr/share/postfix/master.cf.dist (Debian's postfix 3.7), uncommented, the ports made free
# ones, the restriction lists written the way its comment suggests ($mua_*_restrictions).
SUBMISSION = """\
127.0.0.1:{smtp} inet n - y - - smtpd
127.0.0.1:{submission} inet n       -       y       -       -       smtpd
  -o syslog_name=postfix/submission
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=$mua_client_restrictions
  -o smtpd_helo_restrictions=$mua_helo_restrictions
  -o smtpd_sender_restrictions=$mua_sender_restrictions
  -o smtpd_recipient_restrictions=
  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
127.0.0.1:{submissions}     inet  n       -       y       -       -       smtpd
  -o syslog_name=postfix/submissions
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_reject_unlisted_recipient=no
  -o smtpd_client_restrictions=
  -o smtpd_helo_restrictions=
  -o smtpd_sender_restrictions=
  -o smtpd_relay_restrictions=
  -o smtpd_recipient_restrictions=permit_sasl_authenticated,reject
  -o milter_macro_daemon_name=ORIGINATING
127.0.0.1:{limited} inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_client_new_tls_session_rate_limit=1
  -o smtpd_client_event_limit_exceptions=
error     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
"""


@dataclass
class Site:
    root: Path
    smtp: int
    submission: int
    submissions: int
    limited: int  # implicit TLS, one new TLS session per client and hour
    ca: trustme.CA
    queue: Queue

    def maillog(self) -> str:
        return (self.root / "maillog").read_text()

    def queued(self) -> int:
        return len(self.queue.ids(QueueName.INCOMING)) + len(self.queue.ids(QueueName.ACTIVE)) \
            + len(self.queue.ids(QueueName.DEFERRED))

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        return context


def sasl_store(root: Path) -> Path:
    root.mkdir()
    sasldb = root / "sasldb2"
    SaslDB(sasldb).set_password(Identity("alice", "mx.example.com"), "alice-pw")
    conf = root / "imapd.conf"
    conf.write_text(f"configdirectory: {root / 'lib'}\npartition-default: {root / 'spool'}\n"
                    f"servername: mx.example.com\nsasl_sasldb_path: {sasldb}\n"
                    "allowplaintext: yes\nauth_failure_delay: 0\n")
    return conf


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("submission")
    ca = trustme.CA()
    pem = root / "smtpd.pem"
    ca.issue_cert("mx.example.com", "localhost", "127.0.0.1") \
        .private_key_and_cert_chain_pem.write_to_path(str(pem))
    config = root / "etc"
    config.mkdir()
    ports = {"smtp": free_tcp_port(), "submission": free_tcp_port(),
             "submissions": free_tcp_port(), "limited": free_tcp_port()}
    (config / "main.cf").write_text(
        "myhostname = mx.example.com\nmydestination = example.com\n"
        f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
        f"maillog_file = {root / 'maillog'}\n"
        "local_transport = discard:\ndefault_transport = discard:\n"
        "smtpd_tls_security_level = may\n"
        f"smtpd_tls_cert_file = {pem}\n"
        f"smtpd_sasl_imapd_conf = {sasl_store(root / 'store')}\n"
        "mua_client_restrictions =\nanvil_rate_time_unit = 1h\n" + mail_owner_opt_in())
    (config / "master.cf").write_text(SUBMISSION.format(**ports))
    with RunningMta(config, smtpd_processes=1) as mta:
        assert mta.master.queue is not None
        yield Site(root, ports["smtp"], ports["submission"], ports["submissions"],
                   ports["limited"], ca, mta.master.queue)


def swaks(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--helo", "client.test",
                           "--from", "alice@example.com", *args],
                          capture_output=True, text=True, timeout=30)


def test_submission_with_starttls_and_auth_relays(site: Site) -> None:
    result = swaks("--port", str(site.submission), "--to", "far@elsewhere.test", "--tls",
                   "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-pw")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ok: queued as" in result.stdout
    wait_for(lambda: "sasl_username=alice" in site.maillog())
    log = site.maillog()
    assert " postfix/submission/smtpd[" in log
    assert "sasl_method=PLAIN, sasl_username=alice" in log
    assert "Anonymous TLS connection established from" in log


def test_submission_needs_starttls_before_auth_and_mail(site: Site) -> None:
    with smtplib.SMTP("127.0.0.1", site.submission, timeout=10) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")  # smtpd_tls_auth_only
        assert client.mail("alice@example.com") == (
            530, b"5.7.0 Must issue a STARTTLS command first")
        client.starttls(context=site.client_context())
        client.ehlo("client.test")
        assert "PLAIN" in client.esmtp_features["auth"]
        client.mail("alice@example.com")
        code, text = client.rcpt("far@elsewhere.test")  # not authenticated: reject
        assert (code, text.split(b" ")[0]) == (554, b"5.7.1")
        client.rset()
        client.login("alice", "alice-pw")
        assert client.sendmail("alice@example.com", ["far@elsewhere.test"], MESSAGE) == {}


def test_submissions_is_implicit_tls(site: Site) -> None:
    result = swaks("--port", str(site.submissions), "--to", "far@elsewhere.test", "--tlsc",
                   "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "alice-pw")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Ok: queued as" in result.stdout
    with smtplib.SMTP_SSL("127.0.0.1", site.submissions, timeout=10,
                          context=site.client_context()) as client:
        client.ehlo("client.test")
        assert not client.has_extn("starttls")
        client.mail("alice@example.com")
        assert client.rcpt("far@elsewhere.test")[0] == 554
        client.rset()
        client.login("alice", "alice-pw")
        assert client.sendmail("alice@example.com", ["far@elsewhere.test"], MESSAGE) == {}
    wait_for(lambda: " postfix/submissions/smtpd[" in site.maillog())


def test_submissions_refuses_a_plaintext_client(site: Site) -> None:
    with socket.create_connection(("127.0.0.1", site.submissions), timeout=10) as sock:
        sock.sendall(b"EHLO client.test\r\n")  # no 220 comes first: TLS is
        assert not sock.recv(100).startswith(b"220")  # a TLS alert, or the end
    # Logged in Postfix's lines (tls_server.c, smtpd.c), one after the other.
    wait_for(lambda: "lost connection after CONNECT from unknown[127.0.0.1]" in site.maillog())
    lines = [line.split("]: ", 1)[1] for line in site.maillog().splitlines()
             if " postfix/submissions/smtpd[" in line]
    failed = max(i for i, line in enumerate(lines)
                 if line == "SSL_accept error from unknown[127.0.0.1]: -1")
    assert lines[failed + 1].startswith("warning: TLS library problem: ")
    assert lines[failed + 2:failed + 4] == ["lost connection after CONNECT from unknown[127.0.0.1]",
                                            "disconnect from unknown[127.0.0.1]"]


def test_submissions_logs_a_client_gone_before_the_handshake(site: Site) -> None:
    socket.create_connection(("127.0.0.1", site.submissions), timeout=10).close()
    wait_for(lambda: "SSL_accept error from unknown[127.0.0.1]: lost connection"
             in site.maillog())
    # The server goes on: a TLS client after them both is served.
    with smtplib.SMTP_SSL("127.0.0.1", site.submissions, timeout=10,
                          context=site.client_context()) as client:
        assert client.noop()[0] == 250


def test_port_25_offers_no_auth(site: Site) -> None:
    with smtplib.SMTP("127.0.0.1", site.smtp, timeout=10) as client:
        client.ehlo("client.test")
        assert not client.has_extn("auth")
        assert client.has_extn("starttls")



def test_the_entries_pass_the_configuration_audit(site: Site) -> None:
    audit = checks.audit(load_mta_config(site.root / "etc"))
    assert not audit.refusals
    # Debian's -o milter_macro_daemon_name=ORIGINATING is honoured (the {daemon_name} macro).
    assert not any("wrappermode" in w or "unlisted" in w or "milter_macro_daemon_name" in w
                   for w in audit.warnings)


def test_new_tls_session_rate_limit_in_wrapper_mode(site: Site) -> None:
    with smtplib.SMTP_SSL("127.0.0.1", site.limited, timeout=10,
                          context=site.client_context()) as client:
        assert client.noop()[0] == 250
    # The session that goes over the rate is made, then refused under TLS (smtpd.c: rate >
    # limit after the handshake, 421 instead of the greeting).
    with pytest.raises(smtplib.SMTPConnectError) as refused:
        smtplib.SMTP_SSL("127.0.0.1", site.limited, timeout=10, context=site.client_context())
    assert (refused.value.smtp_code, refused.value.smtp_error) == (
        421, b"4.7.0 mx.example.com Error: too many new TLS sessions from unknown[127.0.0.1]")
    wait_for(lambda: "warning: New TLS session rate limit exceeded: 2 from unknown[127.0.0.1] "
             f"for service 127.0.0.1:{site.limited}" in site.maillog())
    # Over the limit, Postfix's smtpd refuses before the handshake, without a word (smtpd.c:
    # no handshake only to say no; a reply in clear would mean nothing to a TLS client).
    with socket.create_connection(("127.0.0.1", site.limited), timeout=10) as raw, \
            pytest.raises((ssl.SSLError, OSError)):
        site.client_context().wrap_socket(raw, server_hostname="mx.example.com").recv(200)
    wait_for(lambda: "warning: Refusing TLS service request from unknown[127.0.0.1] "
             f"for service 127.0.0.1:{site.limited}" in site.maillog())
