"""Issue 20's end-to-end test: sealmail's MTA facing the Internet, with the parts Postfix sites
plug in, all real and private to this module.

Inbound: swaks, as a client on the Internet, -> sealmail smtpd on port "25" (a loopback port)
with reject_unauth_destination and check_policy_service to Debian's policyd-spf, and opendkim
verifying as smtpd_milters -> the LMTP agent -> sealmail's lmtpd and store.

Outbound: a user submits on "587" (STARTTLS required, SASL, smtpd_sender_login_maps with
reject_sender_login_mismatch) -> opendkim signing (-o smtpd_milters on the submission service)
-> the smtp agent's MX lookup in the test zone (a private nsd) -> STARTTLS, verified with a
trustme CA, to a private Debian Postfix on 127.x.y.z:25, which has the same opendkim verify the
signature and holds the message, so that its copy can be read back and checked with dkimpy too.

One set of peers for the module; root only (ports 25 and 53, daemons as other accounts).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from tests.mta.restrictions.test_peers import DEBIAN_PYTHON, POLICYD_SPF, SPF_WRAPPER, SpawnServer
from tests.mta.test_mta_milter_peers import OPENDKIM, OPENDKIM_GENKEY, MilterDaemon
from tests.mta.test_mta_submission import sasl_store
from tests.support.instance import SealmailInstance
from tests.support.loops import new_event_loop
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import (
    NsdInstance,
    PeerUnavailable,
    PostfixInstance,
    free_loopback_address,
    free_tcp_port,
    require_binaries,
    traversable_tmpdir,
)
from tests.support.pipe_user import ensure_pipe_user

dkim = pytest.importorskip("dkim")

pytestmark = pytest.mark.peer

DOMAIN = "example.test"  # the senders' domain: its SPF record and DKIM key are in the test zone
SELECTOR = "sel"
REMOTE = "remote.test"  # the outbound recipient's domain: its MX is the private Postfix
POSTCAT = "/usr/sbin/postcat"


@dataclass
class Site:
    root: Path
    nsd: NsdInstance
    store: SealmailInstance
    postfix: PostfixInstance
    mta: RunningMta
    smtp: int
    submission: int
    private_key: bytes
    public_txt: str

    def maillog(self) -> str:
        path = self.root / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def dns(self, name: bytes, timeout: int = 5) -> bytes:
        assert name.decode().rstrip(".") == f"{SELECTOR}._domainkey.{DOMAIN}"
        return self.public_txt.encode()


def zone_for(record: str) -> str:
    """The senders' zone: the DKIM key opendkim-genkey made, SPF for a good and a forged
    domain."""
    return (record.split("; -----", 1)[0] + "\n"
            + '@ IN TXT "v=spf1 ip4:127.0.0.1 -all"\n'
            + 'forged IN TXT "v=spf1 -all"\n')


def opendkim(root: Path, mode: str, keys: Path, nsd: NsdInstance, user: str) -> MilterDaemon:
    """As tests/mta/test_mta_milter_peers.py runs it: libunbound stubbed onto our nsd; no host
    is internal, so the signer signs only for authenticated clients ({auth_type})."""
    port = free_tcp_port()
    unbound = root / f"unbound-{mode}.conf"
    unbound.write_text('server:\n    do-not-query-localhost: no\n'
                       '    module-config: "iterator"\n    local-zone: "test." nodefault\n'
                       f'stub-zone:\n    name: "{DOMAIN}."\n    stub-addr: {nsd.address}\n')
    conf = root / f"opendkim-{mode}.conf"
    conf.write_text(
        f"Mode {mode}\nSocket inet:{port}@127.0.0.1\nUserID {user}\n"
        f"PidFile {root}/opendkim-{mode}.pid\nSyslog no\nBackground no\n"
        f"Domain {DOMAIN}\nSelector {SELECTOR}\nKeyFile {keys}/{SELECTOR}.private\n"
        "Canonicalization relaxed/simple\nAuthservID mx.example.com\n"
        f"ResolverConfiguration {unbound}\nRequireSafeKeys no\nInternalHosts 192.0.2.1\n")
    return MilterDaemon([OPENDKIM, "-f", "-x", str(conf)], port, root / f"opendkim-{mode}.log")


def policyd_spf(root: Path, nsd: NsdInstance) -> SpawnServer:
    """Debian's policyd-spf behind a spawn(8)-like socket, resolving through our nsd."""
    config = root / "policyd-spf.conf"
    config.write_text("debugLevel = 0\nTestOnly = 1\nHELO_reject = Fail\n"
                      "Mail_From_reject = Fail\nPermError_reject = False\n"
                      "TempError_Defer = False\nskip_addresses = 192.0.2.0/24\n")
    resolv = root / "spf-resolv.conf"
    resolv.write_text(nsd.resolv_conf.read_text())
    wrapper = root / "run_policyd_spf.py"
    wrapper.write_text(SPF_WRAPPER)
    for path in (config, resolv, wrapper):
        path.chmod(0o644)
    return SpawnServer(root / "policyd-spf.sock",
                       [str(DEBIAN_PYTHON), str(wrapper), str(resolv), str(config)], "nobody")


def sealmail_config(root: Path, *, store: SealmailInstance, nsd: NsdInstance, smtp: int,
                    submission: int, verifier: MilterDaemon, signer: MilterDaemon,
                    spf_socket: Path, ca: trustme.CA) -> Path:
    pem = root / "smtpd.pem"
    ca.issue_cert("mx.example.com").private_key_and_cert_chain_pem.write_to_path(str(pem))
    ca_file = root / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    logins = root / "sender_logins"
    logins.write_text(f"alice@{DOMAIN} alice\n")
    config = root / "etc"
    config.mkdir()
    (config / "main.cf").write_text(
        f"myhostname = mx.example.com\nmydestination = example.com\n"
        f"queue_directory = {root / 'spool'}\ndata_directory = {root / 'data'}\n"
        f"maillog_file = {root / 'maillog'}\n"
        "inet_interfaces = loopback-only\nmynetworks = 10.0.0.0/8\n"
        "smtpd_peername_lookup = no\n"
        f"sealmail_resolv_conf = {nsd.resolv_conf}\n"
        f"local_transport = cyrus:unix:{store.socket_path}\n"
        # As pre-2.10 sites write it: relay control in the recipient stage only (an empty
        # smtpd_relay_restrictions), so reject_unauth_destination is what refuses relaying.
        "smtpd_relay_restrictions =\n"
        "smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination, "
        f"check_policy_service unix:{spf_socket}\n"
        "smtpd_policy_service_timeout = 20s\n"
        f"smtpd_milters = {verifier.spec}\n"
        f"smtpd_tls_security_level = may\nsmtpd_tls_cert_file = {pem}\n"
        f"smtpd_sasl_imapd_conf = {sasl_store(root / 'sasl')}\n"
        f"smtpd_sender_login_maps = texthash:{logins}\n"
        f"smtp_tls_security_level = encrypt\nsmtp_tls_CAfile = {ca_file}\n"
        "smtp_tls_loglevel = 1\n" + mail_owner_opt_in())
    (config / "master.cf").write_text(
        f"127.0.0.1:{smtp} inet n - n - - smtpd\n"
        f"127.0.0.1:{submission} inet n - n - - smtpd\n"
        "  -o syslog_name=postfix/submission\n"
        "  -o smtpd_tls_security_level=encrypt\n"
        "  -o smtpd_sasl_auth_enable=yes\n"
        "  -o smtpd_tls_auth_only=yes\n"
        "  -o smtpd_sender_restrictions=reject_sender_login_mismatch\n"
        "  -o smtpd_recipient_restrictions=\n"
        "  -o smtpd_relay_restrictions=permit_sasl_authenticated,reject\n"
        f"  -o smtpd_milters={signer.spec}\n"
        "  -o milter_macro_daemon_name=ORIGINATING\n"
        "cyrus     unix  -       n       n       -       -       lmtp\n"
        "smtp      unix  -       -       n       -       -       smtp\n"
        "error     unix  -       -       n       -       -       error\n")
    return config


def receiving_postfix(root: Path, address: str, ca: trustme.CA,
                      verifier: MilterDaemon) -> PostfixInstance:
    """Debian's Postfix as the remote MX: STARTTLS with a certificate from the CA, opendkim
    verifying, and every message held (HOLD) so the test reads Postfix's copy with postcat."""
    pem = root / "remote.pem"
    ca.issue_cert(f"mx.{REMOTE}").private_key_and_cert_chain_pem.write_to_path(str(pem))
    return PostfixInstance(root, {
        "smtpd_tls_cert_file": str(pem), "smtpd_tls_key_file": str(pem),
        "smtpd_tls_security_level": "may", "smtpd_tls_loglevel": "1",
        "mydestination": f"$myhostname, localhost, {REMOTE}",
        "local_transport": "discard:delivered",
        "smtpd_milters": verifier.spec, "milter_default_action": "tempfail",
        "smtpd_recipient_restrictions": "check_recipient_access static:HOLD",
    }, f"{address}:25 inet n - n - - smtpd\ntlsmgr unix - - n 1000? 1 tlsmgr\n",
        hostname=f"mx.{REMOTE}", domain=REMOTE)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    try:
        require_binaries("opendkim", OPENDKIM)
        require_binaries("opendkim-tools", OPENDKIM_GENKEY)
        require_binaries("postfix-policyd-spf-python", POLICYD_SPF)
        require_binaries("swaks", "/usr/bin/swaks")
    except PeerUnavailable as exc:
        if os.geteuid() == 0:
            pytest.fail(str(exc))  # CI installs them (scripts/test.sh)
        pytest.skip(str(exc))
    if os.geteuid() != 0:
        pytest.skip("ports 25 and 53 and the peers' own accounts need root")
    with traversable_tmpdir("sme2e-") as root:
        user = ensure_pipe_user()
        keys = root / "keys"
        keys.mkdir()
        subprocess.run([OPENDKIM_GENKEY, "-D", str(keys), "-d", DOMAIN, "-s", SELECTOR,
                        "-b", "1024"], check=True, capture_output=True)
        private_key = (keys / f"{SELECTOR}.private").read_bytes()
        record = (keys / f"{SELECTOR}.txt").read_text()
        public_txt = "".join(re.findall(r'"([^"]*)"', record))
        shutil.chown(keys / f"{SELECTOR}.private", user)
        postfix_address = free_loopback_address(25)
        nsd = NsdInstance(root, {DOMAIN: zone_for(record),
                                 REMOTE: f"@ IN MX 10 mx.{REMOTE}.\nmx IN A {postfix_address}\n"})
        with contextlib.ExitStack() as stack:
            nsd.start()
            stack.callback(nsd.stop)
            verifier = opendkim(root, "v", keys, nsd, user)
            stack.callback(verifier.stop)
            signer = opendkim(root, "s", keys, nsd, user)
            stack.callback(signer.stop)
            spf = policyd_spf(root, nsd)
            stack.callback(spf.close)
            store = stack.enter_context(SealmailInstance(root / "store", users=("bob",)))
            ca = trustme.CA()
            postfix = stack.enter_context(receiving_postfix(root, postfix_address, ca, verifier))
            smtp, submission = free_tcp_port(), free_tcp_port()
            config = sealmail_config(root, store=store, nsd=nsd, smtp=smtp,
                                     submission=submission, verifier=verifier, signer=signer,
                                     spf_socket=spf.path, ca=ca)
            # The loop the daemon picks: uvloop, or the stdlib's with SEALMAIL_EVENT_LOOP=asyncio.
            with RunningMta(config, smtpd_processes=1, loop=new_event_loop()) as mta:
                yield Site(root, nsd, store, postfix, mta, smtp, submission, private_key,
                           public_txt)


def swaks(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["swaks", "--server", "127.0.0.1", "--port", str(port),
                           "--helo", "client.example.net", *args],
                          capture_output=True, text=True, timeout=60)


def message(sender: str, recipient: str, subject: str) -> bytes:
    return (f"From: Alice <{sender}>\r\nTo: <{recipient}>\r\nSubject: {subject}\r\n"
            f"Date: Sun, 06 Dec 2026 10:00:00 +0000\r\nMessage-ID: <{subject}@{DOMAIN}>\r\n"
            "\r\nHello,\r\nthis crossed the Internet.\r\n").encode()


def headers_of(content: bytes) -> list[bytes]:
    head = content.split(b"\r\n\r\n", 1)[0].replace(b"\r\n\t", b" ").replace(b"\r\n ", b" ")
    return head.split(b"\r\n")


def test_inbound_spf_and_dkim_into_the_store(site: Site) -> None:
    raw = message(f"alice@{DOMAIN}", "bob@example.com", "inbound")
    signed = dkim.sign(raw, SELECTOR.encode(), DOMAIN.encode(), site.private_key,
                       include_headers=[b"from", b"to", b"subject", b"date", b"message-id"])
    data = site.root / "inbound.eml"
    data.write_bytes(signed + raw)
    result = swaks(site.smtp, "--from", f"alice@{DOMAIN}", "--to", "bob@example.com",
                   "--data", str(data))
    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: site.store.message_count("bob") == 1, what="delivery into the store")
    with site.store.store() as disk:
        [record] = disk.messages("user.bob")
        content = disk.message_bytes("user.bob", record.uid)
    headers = headers_of(content)
    [spf] = [h for h in headers if h.startswith(b"Received-SPF:")]
    assert spf.startswith(b"Received-SPF: Pass (mailfrom) identity=mailfrom; client-ip=127.0.0.1;")
    [results] = [h for h in headers if h.startswith(b"Authentication-Results:")]
    assert b"mx.example.com;" in results
    assert b"dkim=pass" in results and b"header.d=example.test" in results, results
    assert dkim.verify(content, dnsfunc=site.dns)  # the signature survived the trip
    # The store shows the message at its COMMIT, a moment before the 250 the lmtp agent logs.
    sent = re.compile(r"to=<bob@example\.com>, relay=\S+\[\S+/socket/lmtp\], .*dsn=2\.1\.5, "
                      r"status=sent")
    wait_for(lambda: bool(sent.search(site.maillog())), what="the LMTP delivery's log line")


def test_inbound_spf_fail_is_refused_and_relaying_denied(site: Site) -> None:
    result = swaks(site.smtp, "--from", f"eve@forged.{DOMAIN}", "--to", "bob@example.com")
    assert result.returncode != 0
    assert re.search(r"<\*\* 550 5\.7\.23 <bob@example\.com>: Recipient address rejected: "
                     r"Message rejected due to: SPF fail", result.stdout), result.stdout
    result = swaks(site.smtp, "--from", f"alice@{DOMAIN}", "--to", f"carol@{REMOTE}")
    assert result.returncode != 0
    assert "554 5.7.1 <carol@remote.test>: Relay access denied" in result.stdout, result.stdout


def postfix_copy(site: Site, queue_id: str) -> bytes:
    out = subprocess.run([POSTCAT, "-c", str(site.postfix.config_dir), "-bh", "-q", queue_id],
                         capture_output=True, check=True, timeout=30).stdout
    return out.replace(b"\n", b"\r\n")


def test_submission_signs_and_sends_by_mx_over_starttls(site: Site) -> None:
    auth = ["--tls", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "alice-pw"]
    refused = swaks(site.submission, "--from", f"mallory@{DOMAIN}", "--to", f"carol@{REMOTE}",
                    *auth)
    assert refused.returncode != 0
    assert f"553 5.7.1 <mallory@{DOMAIN}>: Sender address rejected: not owned by user alice" \
        in refused.stdout, refused.stdout
    data = site.root / "outbound.eml"
    data.write_bytes(message(f"alice@{DOMAIN}", f"carol@{REMOTE}", "outbound"))
    result = swaks(site.submission, "--from", f"alice@{DOMAIN}", "--to", f"carol@{REMOTE}",
                   "--data", str(data), *auth)
    assert result.returncode == 0, result.stdout + result.stderr
    sent = re.compile(rf"to=<carol@{REMOTE}>, relay=mx\.{REMOTE}\[[0-9.]+\]:25, .*"
                      r"status=sent \(250 2\.0\.0 Ok: queued as (\w+)\)")
    wait_for(lambda: bool(sent.search(site.maillog())), what="the MX delivery")
    log = site.maillog()
    assert f"Trusted TLS connection established to mx.{REMOTE}[" in log
    found = sent.search(log)
    assert found is not None
    copy = postfix_copy(site, found.group(1))
    assert re.search(r"postfix/smtpd\[\d+\]: Anonymous TLS connection established from "
                     r"\S+\[127\.0\.0\.1\]: TLSv1\.3", site.postfix.log_text())
    headers = headers_of(copy)
    assert any(h.startswith(b"DKIM-Signature: v=1; a=rsa-sha256;") and b"d=example.test" in h
               for h in headers), copy
    [results] = [h for h in headers if h.startswith(b"Authentication-Results:")]
    assert b"dkim=pass" in results, results  # Postfix's opendkim
    assert dkim.verify(copy, dnsfunc=site.dns)  # and dkimpy against the key
