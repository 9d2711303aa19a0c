"""The seed's scenario with sealmail as the MTA and the real stores it replaces behind it:
swaks submits to sealmail's smtpd, the queue manager hands the mail over LMTP to Debian's Dovecot
and Cyrus (private instances), with `local_transport` as in the seed's section 6."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import (
    CyrusInstance,
    DovecotInstance,
    PeerUnavailable,
    free_tcp_port,
    traversable_tmpdir,
)

pytestmark = pytest.mark.peer

USERS = ("alice", "bob", "carol")
DOMAIN = "peer.example"


@pytest.mark.parametrize("server", ["dovecot", "cyrus"])
def test_swaks_to_sealmail_mta_into_a_peer_store(server: str) -> None:
    swaks = shutil.which("swaks")
    if swaks is None:
        pytest.skip("swaks is not installed")
    with traversable_tmpdir("smmta-") as root:
        peer: CyrusInstance | DovecotInstance
        try:
            peer = CyrusInstance(root, USERS) if server == "cyrus" else DovecotInstance(root, USERS)
            peer.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            before = {u: peer.message_count(u) for u in USERS}
            config = root / "mta"
            config.mkdir()
            port = free_tcp_port()
            (config / "main.cf").write_text(
                f"queue_directory = {root}/spool\ndata_directory = {root}/data\n"
                f"myhostname = mx.{DOMAIN}\nmydestination = {DOMAIN}\n"
                "inet_interfaces = loopback-only\nmynetworks = 127.0.0.0/8\n"
                f"local_transport = lmtp:unix:{peer.socket_path}\n"
            )
            (config / "master.cf").write_text(
                f"127.0.0.1:{port} inet n - n - - smtpd\nlmtp unix - - n - - lmtp\n"
                "error unix - - n - - error\n"
            )
            with RunningMta(config):
                done = subprocess.run(
                    [
                        swaks,
                        "--server",
                        f"127.0.0.1:{port}",
                        "--from",
                        f"sender@{DOMAIN}",
                        "--to",
                        ",".join(f"{u}@{DOMAIN}" for u in USERS),
                        "--header",
                        "Subject: through sealmail's MTA",
                        "--silent",
                        "2",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=60,
                    check=False,
                )
                assert done.returncode == 0, done.stdout + done.stderr
                wait_for(
                    lambda: all(peer.message_count(u) == before[u] + 1 for u in USERS),
                    what=f"delivery into {server}",
                )
        finally:
            peer.stop()
