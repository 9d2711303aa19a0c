"""Postfix's own LMTP client authenticating to sealmail's lmtpd over TCP: the seed's 2.2 and 9.1.

The seed's `cyrus-inet` master.cf entry, as written except for the renamed cache parameter
(Postfix 3.7 rejects `lmtp_cache_connection`), with a password map built by Postfix's postmap and
looked up by the next-hop host. Postfix links Cyrus SASL, so this is a real, independent client:
first `noanonymous`, then `noanonymous,noplaintext` (it must pick a non-plaintext mechanism), then
STARTTLS with `lmtp_tls_security_level = encrypt`.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from tests.support.instance import SealmailInstance
from tests.support.peers import (
    POSTFIX,
    POSTMAP,
    POSTQUEUE,
    PeerUnavailable,
    PostfixInstance,
    postfix_config_dir,
    require_binaries,
    traversable_tmpdir,
)

pytestmark = pytest.mark.peer

DOMAIN = "test.example"
SERVERNAME = "sealmail.test.example"
PASSWORD = "lmtp-pass-7"


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    try:
        require_binaries("postfix", POSTFIX, POSTQUEUE)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    with traversable_tmpdir("smsasl-") as path:
        yield path


@pytest.fixture(scope="module")
def sealmail(peer_dir: Path) -> Iterator[SealmailInstance]:
    root = peer_dir / "sealmail"
    root.mkdir()
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").private_key_and_cert_chain_pem.write_to_path(
        str(root / "server.pem")
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sealmail",
            "saslpasswd2",
            "-p",
            "-c",
            "-u",
            SERVERNAME,
            "-f",
            str(root / "sasldb2"),
            "lmtpuser",
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    conf = {
        "servername": SERVERNAME,
        "lmtp_admins": "lmtpuser",
        "sasl_sasldb_path": str(root / "sasldb2"),
        "lmtp_allowplaintext": "yes",  # offered: Postfix must still avoid it under noplaintext
        "tls_server_cert": str(root / "server.pem"),
        "auth_failure_delay": "0",
        "hosts_allow": str(root / "hosts.allow"),
        "hosts_deny": str(root / "hosts.deny"),
    }
    with SealmailInstance(root, ["alice"], tcp=True, imapd_conf_extra=conf) as instance:
        yield instance


def postfix_for(
    peer_dir: Path, sealmail: SealmailInstance, name: str, options: str
) -> PostfixInstance:
    root = peer_dir / name
    root.mkdir()
    host, port = sealmail.tcp_address
    pass_file = root / "cyrus_lmtp_sasl_pass"
    pass_file.write_text(f"{host} lmtpuser:{PASSWORD}\n")
    pass_file.chmod(0o600)
    tools = postfix_config_dir(root / "tools")  # never the host's /etc/postfix
    subprocess.run([POSTMAP, "-c", str(tools), f"hash:{pass_file}"], check=True,
                   capture_output=True)
    master_cf_extra = (
        "cyrus-inet unix - - n - - lmtp\n"
        "  -o lmtp_connection_cache_on_demand=yes\n"
        "  -o lmtp_sasl_auth_enable=yes\n"
        f"  -o lmtp_sasl_password_maps=hash:{pass_file}\n"
        f"  -o lmtp_sasl_security_options={options}\n"
        "tlsmgr unix - - n 1000? 1 tlsmgr\n"  # Postfix's TLS needs its session/entropy manager
    )
    return PostfixInstance(
        root,
        {"local_transport": f"cyrus-inet:inet:{host}:{port}", **TLS.get(name, {})},
        master_cf_extra,
        domain=DOMAIN,
    )


TLS = {"tls": {"lmtp_tls_security_level": "encrypt"}}


def deliver_through(postfix: PostfixInstance, sealmail: SealmailInstance) -> bytes:
    rcpt = f"alice@{DOMAIN}"
    message_id = f"<{uuid.uuid4().hex}@client.test.example>"
    message = f"Subject: sasl\r\nMessage-ID: {message_id}\r\n\r\nbody\r\n".encode()
    queue_id = postfix.send("sender@remote.example", [rcpt], message)
    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]
    assert outcome.status == "sent", (outcome, postfix.log_text()[-2000:])
    with sealmail.store() as store:
        for record in store.messages("user.alice"):
            data = store.message_bytes("user.alice", record.uid)
            if message_id.encode() in data:
                return data
    raise AssertionError("delivered message not found")


def last_mechanism(sealmail: SealmailInstance) -> str:
    found = re.findall(
        r"authenticated as lmtpuser from \[127\.0\.0\.1\] \(([A-Z0-9-]+)\)", sealmail.log_text()
    )
    assert found, sealmail.log_text()[-2000:]
    return found[-1]


def test_noanonymous(peer_dir: Path, sealmail: SealmailInstance) -> None:
    with postfix_for(peer_dir, sealmail, "plain", "noanonymous") as postfix:
        data = deliver_through(postfix, sealmail)
    assert b"with LMTPA id" in data
    assert PASSWORD not in sealmail.log_text()


def test_noanonymous_noplaintext_picks_a_hashed_mechanism(
    peer_dir: Path, sealmail: SealmailInstance
) -> None:
    with postfix_for(peer_dir, sealmail, "noplain", "noanonymous,noplaintext") as postfix:
        deliver_through(postfix, sealmail)
    assert last_mechanism(sealmail) in ("SCRAM-SHA-256", "SCRAM-SHA-1", "CRAM-MD5")


def test_tls_encrypt(peer_dir: Path, sealmail: SealmailInstance) -> None:
    with postfix_for(peer_dir, sealmail, "tls", "noanonymous") as postfix:
        data = deliver_through(postfix, sealmail)
    assert b"with LMTPSA id" in data  # RFC 3848: under TLS and authenticated
    assert re.search(r": TLS TLSv1\.[23] ", sealmail.log_text())
