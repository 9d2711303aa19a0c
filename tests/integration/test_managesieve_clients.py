"""`sealmail sieved` as its own process, driven by real ManageSieve clients over real sockets:
sieve-connect (Debian's package; Perl, IO::Socket::SSL, Authen::SASL) and sievelib (PyPI),
each with STARTTLS verified against a trustme CA, PLAIN and CRAM-MD5.

SCRAM-SHA-256 (neither client speaks it) is proven in tests/server/test_sieved.py with scramp.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import trustme
from tests.support.instance import SEALMAIL, store_root_opt_in
from tests.support.peers import free_tcp_port, require_binaries, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

PASSWORD = "sieve pass"
SERVERNAME = "sealmail.test.example"
SCRIPT = (
    'require ["fileinto", "vacation", "imap4flags"];\n'
    'if address :is "from" "boss@example.org" { addflag "\\\\Flagged"; }\n'
    'elsif header :contains "list-id" "devel" { fileinto "Lists/devel"; stop; }\n'
    'vacation :days 3 :subject "Away" "Back on Monday.";\n'
)
BROKEN = 'require "fileinto";\nfileinto "a" "b";\n'


@dataclass
class Sieved:
    port: int
    ca_file: Path
    sievedir: Path
    log: Path
    tmp: Path


@pytest.fixture
def sieved(tmp_path: Path) -> Iterator[Sieved]:
    ca = trustme.CA()
    leaf = ca.issue_cert("localhost", "127.0.0.1")
    cert, key, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert.write_bytes(b"".join(blob.bytes() for blob in leaf.cert_chain_pems))
    leaf.private_key_pem.write_to_path(str(key))
    ca.cert_pem.write_to_path(str(ca_file))
    configdirectory = tmp_path / "config"
    configdirectory.mkdir()
    conf = tmp_path / "imapd.conf"
    conf.write_text(
        f"configdirectory: {configdirectory}\n"
        f"partition-default: {tmp_path / 'spool'}\n"
        f"servername: {SERVERNAME}\n"
        f"tls_server_cert: {cert}\n"
        f"tls_server_key: {key}\n"
        "auth_failure_delay: 0\n"
        f"hosts_allow: {tmp_path / 'hosts.allow'}\n"
        f"hosts_deny: {tmp_path / 'hosts.deny'}\n" + store_root_opt_in()
    )
    sasldb = SaslDB(configdirectory / "sasldb2", scrypt_n=2**10)
    for user in ("alice", "bob"):
        sasldb.set_password(split_identity(user, SERVERNAME), PASSWORD)
    port = free_tcp_port()
    log = tmp_path / "sieved.log"
    argv = [*SEALMAIL, "sieved", "-C", str(conf), "-v", "--listen", f"127.0.0.1:{port}"]
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_accepting(("127.0.0.1", port), 30, process, log)
        yield Sieved(port, ca_file, configdirectory / "sieve", log, tmp_path)
    finally:
        process.terminate()
        assert process.wait(15) == 0  # graceful on SIGTERM
    text = log.read_text(errors="replace")
    assert PASSWORD not in text  # never a password in the log
    assert "Back on Monday" not in text  # nor a script's text


def sieve_connect(
    sieved: Sieved, *args: str, mech: str = "PLAIN"
) -> subprocess.CompletedProcess[str]:
    require_binaries("sieve-connect", "/usr/bin/sieve-connect")
    read, write = os.pipe()
    os.write(write, PASSWORD.encode() + b"\n")
    os.close(write)
    try:
        return subprocess.run(
            [
                "sieve-connect",
                "--server",
                "127.0.0.1",
                "--port",
                str(sieved.port),
                "--user",
                "alice",
                "--authmech",
                mech,
                "--passwordfd",
                str(read),
                "--tlscafile",
                str(sieved.ca_file),
                "--tlshostname",
                "localhost",
                "--noclearauth",  # PLAIN only inside TLS: STARTTLS must have worked
                *args,
            ],
            pass_fds=(read,),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=sieved.tmp,
            check=False,
        )
    finally:
        os.close(read)


def test_sieve_connect_upload_list_activate_download_delete(sieved: Sieved) -> None:
    local = sieved.tmp / "filter.sieve"
    local.write_text(SCRIPT)
    result = sieve_connect(sieved, "--upload", "--localsieve", str(local), "--remotesieve", "main")
    assert result.returncode == 0, result.stderr
    assert sieve_connect(sieved, "--activate", "--remotesieve", "main").returncode == 0
    result = sieve_connect(sieved, "--list")
    assert result.returncode == 0, result.stderr
    assert result.stdout == '"main" ACTIVE\n'  # sieve-connect prints the raw listing
    active = sieved.sievedir / "a" / "alice" / "defaultbc"
    assert active.readlink() == Path("main.script")
    assert active.read_text() == SCRIPT
    fetched = sieved.tmp / "fetched.sieve"
    result = sieve_connect(
        sieved, "--download", "--remotesieve", "main", "--localsieve", str(fetched)
    )
    assert result.returncode == 0, result.stderr
    assert fetched.read_text() == SCRIPT
    # The active script cannot be deleted; after deactivating it can.
    assert sieve_connect(sieved, "--delete", "--remotesieve", "main").returncode != 0
    assert sieve_connect(sieved, "--deactivate").returncode == 0
    assert sieve_connect(sieved, "--delete", "--remotesieve", "main").returncode == 0
    assert not (sieved.sievedir / "a" / "alice" / "main.script").exists()


def test_sieve_connect_refused_script_shows_the_line(sieved: Sieved) -> None:
    local = sieved.tmp / "broken.sieve"
    local.write_text(BROKEN)
    result = sieve_connect(
        sieved, "--upload", "--localsieve", str(local), "--remotesieve", "broken", mech="CRAM-MD5"
    )
    assert result.returncode != 0
    assert "line 2" in result.stderr + result.stdout
    assert not (sieved.sievedir / "a" / "alice" / "broken.script").exists()
    # CRAM-MD5 logged in: the refusal came from PUTSCRIPT, not from AUTHENTICATE.
    assert "alice CRAM-MD5+TLS User logged in SESSIONID=<" in sieved.log.read_text()


def test_sievelib_over_starttls(sieved: Sieved, monkeypatch: pytest.MonkeyPatch) -> None:
    sievelib = pytest.importorskip("sievelib.managesieve")
    monkeypatch.setenv("SSL_CERT_FILE", str(sieved.ca_file))  # sievelib trusts the default store
    client = sievelib.Client("127.0.0.1", sieved.port)
    assert client.connect("bob", PASSWORD, starttls=True, authmech="PLAIN")
    assert "vacation" in client.get_sieve_capabilities()
    assert client.putscript("rules", SCRIPT)
    assert client.setactive("rules")
    assert client.listscripts() == ("rules", [])
    assert not client.putscript("rules", BROKEN)  # refused: the old script stays
    assert client.getscript("rules").splitlines() == SCRIPT.splitlines()
    assert client.renamescript("rules", "main")
    assert client.listscripts() == ("main", [])
    client.logout()
    assert (sieved.sievedir / "b" / "bob" / "main.script").read_text() == SCRIPT
