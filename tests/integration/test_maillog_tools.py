"""The MTA's maillog read by the tools Postfix operators run on theirs: Debian's pflogsumm counts
what sealmail's MTA received, delivered and rejected, and fail2ban's stock `postfix` filter finds
the relay rejects (mode more) and the failed SASL logins (mode auth), each with the client."""

from __future__ import annotations

import base64
import re
import shutil
import smtplib
import subprocess
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.mta import RunningMta, mail_owner_opt_in, wait_for
from tests.support.peers import free_tcp_port

PFLOGSUMM = shutil.which("pflogsumm")
FAIL2BAN_REGEX = shutil.which("fail2ban-regex")
POSTFIX_FILTER = Path("/etc/fail2ban/filter.d/postfix.conf")

pytestmark = [
    pytest.mark.peer,
    pytest.mark.skipif(
        PFLOGSUMM is None or FAIL2BAN_REGEX is None or not POSTFIX_FILTER.exists(),
        reason="needs Debian's pflogsumm and fail2ban",
    ),
]
PASSWORD = "alice-pw"
MESSAGE = b"From: alice@example.org\r\nSubject: counted\r\n\r\nhello\r\n"


def fail2ban_matches(log: Path, mode: str) -> tuple[int, set[str]]:
    result = subprocess.run(
        [str(FAIL2BAN_REGEX), "-v", str(log), f"{POSTFIX_FILTER}[mode={mode}]"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    matched = re.search(r"^Lines: \d+ lines, \d+ ignored, (\d+) matched", result.stdout, re.M)
    assert matched, result.stdout
    hosts = set(re.findall(r"^\|\s+(\S+)\s+\w{3} \w{3} [ \d]\d ", result.stdout, re.M))
    return int(matched.group(1)), hosts


def pflogsumm_counts(log: Path) -> dict[str, int]:
    report = subprocess.run(
        [str(PFLOGSUMM), "--problems-first", str(log)],
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout
    counts = {}
    for name in ("received", "delivered", "rejected"):
        found = re.search(rf"^\s*(\d+)\s+{name}\b", report, re.M)
        assert found, report
        counts[name] = int(found.group(1))
    return counts


def test_pflogsumm_and_fail2ban_read_the_maillog(tmp_path: Path) -> None:
    with SealmailInstance(tmp_path / "store", ["alice"]) as store:
        subprocess.run(
            [*SEALMAIL, "saslpasswd2", "-C", str(store.conf_path), "-p", "-c", "-u",
             "mx.example.com", "alice"],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )
        with store.conf_path.open("a") as conf:
            conf.write("allowplaintext: yes\nauth_failure_delay: 0\nservername: mx.example.com\n")
        config, port, maillog = tmp_path / "mta", free_tcp_port(), tmp_path / "maillog"
        config.mkdir()
        (config / "main.cf").write_text(
            f"queue_directory = {tmp_path}/spool\ndata_directory = {tmp_path}/data\n"
            "myhostname = mx.example.com\nmydestination = example.com\n"
            "inet_interfaces = loopback-only\nmynetworks = 10.0.0.0/8\n"
            f"local_transport = lmtp:unix:{store.socket_path}\nmaillog_file = {maillog}\n"
            "maillog_file_prefixes = /\n"
            f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_imapd_conf = {store.conf_path}\n"
            + mail_owner_opt_in()
        )
        (config / "master.cf").write_text(
            f"127.0.0.1:{port} inet n - n - - smtpd\nlmtp unix - - n - - lmtp\n"
        )
        with RunningMta(config):
            with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                client.ehlo("client.example.org")
                for _ in range(3):
                    assert client.sendmail("bob@example.org", ["alice@example.com"], MESSAGE) == {}
                client.mail("bob@example.org")
                assert client.rcpt("far@elsewhere.test")[0] in (454, 554)  # not ours to relay
                client.rset()
                wrong = base64.b64encode(b"\0alice\0guess").decode()
                for _ in range(2):
                    assert client.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
            wait_for(lambda: store.message_count("alice") == 3, what="three deliveries")
            wait_for(lambda: maillog.read_text().count("status=sent") == 3, what="the log")
    text = maillog.read_text()
    assert "guess" not in text and PASSWORD not in text
    assert pflogsumm_counts(maillog) == {"received": 3, "delivered": 3, "rejected": 1}
    assert fail2ban_matches(maillog, "more") == (1, {"127.0.0.1"})
    assert fail2ban_matches(maillog, "auth") == (2, {"127.0.0.1"})
