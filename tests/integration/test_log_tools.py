"""The store's log lines read by the tools operators already run on Cyrus's: Debian's fail2ban
with its stock `cyrus-imap` filter (fail2ban-regex) counts sealmail imapd's and pop3d's failed
logins, with the client's address, and nothing else."""

from __future__ import annotations

import imaplib
import poplib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import free_tcp_port, wait_until_accepting

FAIL2BAN_REGEX = shutil.which("fail2ban-regex")
CYRUS_FILTER = Path("/etc/fail2ban/filter.d/cyrus-imap.conf")

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        FAIL2BAN_REGEX is None or not CYRUS_FILTER.exists(), reason="needs Debian's fail2ban"
    ),
]
PASSWORD = "right horse"


def failed_logins_fail2ban_sees(log: Path) -> tuple[int, set[str]]:
    result = subprocess.run(
        [str(FAIL2BAN_REGEX), "-v", str(log), str(CYRUS_FILTER)],
        capture_output=True, text=True, check=True, timeout=120,
    )
    matched = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", result.stdout, re.M)
    assert matched, result.stdout
    hosts = set(re.findall(r"^\|\s+(\S+)\s+\w{3} \w{3} [ \d]\d ", result.stdout, re.M))
    return int(matched.group(1)), hosts


def test_fail2ban_counts_failed_imap_and_pop3_logins(tmp_path: Path) -> None:
    extra = {"allowplaintext": "yes", "auth_failure_delay": "0", "auth_max_failures": "10"}
    with SealmailInstance(tmp_path / "store", ["alice"], imapd_conf_extra=extra) as instance:
        subprocess.run(
            [*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c", "alice"],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )
        imap_port, pop_port = free_tcp_port(), free_tcp_port()
        log = tmp_path / "store.log"
        with log.open("wb") as out:
            daemons = [
                subprocess.Popen(
                    [*SEALMAIL, name, "-C", str(instance.conf_path),
                     "--listen", f"127.0.0.1:{port}"],
                    stderr=out,
                )
                for name, port in (("imapd", imap_port), ("pop3d", pop_port))
            ]
        try:
            for daemon, port in zip(daemons, (imap_port, pop_port), strict=True):
                wait_until_accepting(("127.0.0.1", port), 30.0, daemon)
            imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
            for user in ("alice", "mallory", "alice"):
                with pytest.raises(imaplib.IMAP4.error):
                    imap.login(user, "guess")
            imap.login("alice", PASSWORD)  # a success is not a failure
            imap.logout()
            pop = poplib.POP3("127.0.0.1", pop_port, timeout=30)
            pop.user("alice")
            with pytest.raises(poplib.error_proto):
                pop.pass_("guess")
            pop.quit()
        finally:
            for daemon in daemons:
                daemon.terminate()
                daemon.wait(30)
    text = log.read_text()
    assert "badlogin: " in text and "guess" not in text and PASSWORD not in text
    assert "login: [127.0.0.1] alice plaintext User logged in SESSIONID=<" in text  # Cyrus's
    matched, hosts = failed_logins_fail2ban_sees(log)
    assert matched == 4, text
    assert hosts == {"127.0.0.1"}
