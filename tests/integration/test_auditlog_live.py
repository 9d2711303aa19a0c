"""imapd.conf `auditlog: yes` end to end: Cyrus's auditlog lines in the logs of a running lmtpd,
imapd and pop3d, for an LMTP delivery, IMAP commands from imaplib and a POP3 session from
poplib, each with the SESSIONID that daemon logged for the session; off (the default), none.

One set of daemons per parameter (about 3 s each)."""

from __future__ import annotations

import imaplib
import poplib
import re
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import free_tcp_port, wait_until_accepting

PASSWORD = "right horse"
MESSAGE = (b"From: carol@example.org\r\nTo: alice@example.com\r\nSubject: audit\r\n"
           b"Message-ID: <audit.1@example.org>\r\n\r\nbody\r\n")


def sessions_of(text: str) -> set[str]:
    """The SESSIONIDs of the logins a log shows."""
    return set(re.findall(r"User logged in.* SESSIONID=<([^>]+)>", text))


def audit(text: str) -> list[str]:
    return [line[line.index("auditlog: "):] for line in text.splitlines() if "auditlog: " in line]


@pytest.fixture(params=["yes", "no"])
def logs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dict[str, str]]:
    """Run the scenario against lmtpd, imapd and pop3d with `auditlog: PARAM`; their logs."""
    extra = {"allowplaintext": "yes", "auditlog": request.param}
    with SealmailInstance(tmp_path / "store", ["alice"], imapd_conf_extra=extra) as instance:
        subprocess.run(
            [*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c", "alice"],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True,
        )
        ports = {"imapd": free_tcp_port(), "pop3d": free_tcp_port()}
        daemons = {}
        for name, port in ports.items():
            with (tmp_path / f"{name}.log").open("wb") as out:
                daemons[name] = subprocess.Popen(
                    [*SEALMAIL, name, "-C", str(instance.conf_path),
                     "--listen", f"127.0.0.1:{port}"],
                    stderr=out,
                )
        try:
            for name, port in ports.items():
                wait_until_accepting(("127.0.0.1", port), 30.0, daemons[name])
            scenario(instance.socket_path, ports["imapd"], ports["pop3d"])
        finally:
            for daemon in daemons.values():
                daemon.terminate()
                daemon.wait(30)
        lmtpd_log = instance.log
    yield {
        "auditlog": request.param,
        "lmtpd": lmtpd_log.read_text(),
        **{name: (tmp_path / f"{name}.log").read_text() for name in ports},
    }


def scenario(lmtp_socket: str, imap_port: int, pop_port: int) -> None:
    with smtplib.LMTP(lmtp_socket) as lmtp:
        lmtp.sendmail("carol@example.org", ["alice@example.com"], MESSAGE)
    imap = imaplib.IMAP4("127.0.0.1", imap_port, timeout=30)
    imap.login("alice", PASSWORD)
    for command in (
        lambda: imap.create("INBOX.Work"),
        lambda: imap.append("INBOX.Work", r"(\Flagged)", None, MESSAGE),
        lambda: imap.select("INBOX"),
        lambda: imap.copy("1", "INBOX.Work"),
        lambda: imap.select("INBOX.Work"),
        lambda: imap.store("1", "+FLAGS", r"(\Deleted)"),
        lambda: imap.expunge(),
        lambda: imap.close(),
        lambda: imap.rename("INBOX.Work", "INBOX.Done"),
        lambda: imap.setacl("INBOX.Done", "bob", "lrs"),
        lambda: imap.delete("INBOX.Done"),
    ):
        typ, data = command()
        assert typ == "OK", data
    imap.logout()
    pop = poplib.POP3("127.0.0.1", pop_port, timeout=30)
    pop.user("alice")
    pop.pass_(PASSWORD)
    pop.dele(1)
    pop.quit()


def test_auditlog_lines_of_each_daemon(logs: dict[str, str]) -> None:
    if logs["auditlog"] == "no":
        assert all("auditlog:" not in logs[name] for name in ("lmtpd", "imapd", "pop3d"))
        return
    [delivered] = audit(logs["lmtpd"])
    session = re.search(r"sessionid=<([^>]+)>", delivered)
    assert session is not None  # the id of lmtpd's own lines about this delivery
    assert f"{session.group(1)}: from=<carol@example.org>, to=<alice@example.com>" in logs["lmtpd"]
    assert re.fullmatch(
        r"auditlog: append sessionid=<[^>]+> mailbox=<user\.alice> uniqueid=<[0-9a-f]+> uid=<1>"
        r" modseq=<\d+> sysflags=<> guid=<[0-9a-f]{40}> messageid=<audit\.1@example\.org>"
        r" size=<\d+>", delivered)

    imap_lines = audit(logs["imapd"])
    [imap_session] = sessions_of(logs["imapd"])
    assert all(f"sessionid=<{imap_session}>" in line for line in imap_lines)
    assert [line.split()[1] for line in imap_lines] == [
        "create", "acl:", "append", "append", "expunge", "rename", "acl:", "delete"]
    create, _, append, copy, expunge, rename, acl, delete = imap_lines
    assert "mailbox=<user.alice.Work>" in create
    assert "sysflags=<FL>" in append and "messageid=<audit.1@example.org>" in append
    assert "mailbox=<user.alice.Work>" in copy and "uid=<2>" in copy
    assert "uid=<1>" in expunge and "sysflags=<FL|DE|EX>" in expunge
    assert "oldmailbox=<user.alice.Work> newmailbox=<user.alice.Done>" in rename
    assert "\tbob\tlrs\t>" in acl
    assert "mailbox=<user.alice.Done>" in delete

    [pop_session] = sessions_of(logs["pop3d"])
    [pop_expunge] = audit(logs["pop3d"])
    assert pop_expunge.startswith(
        f"auditlog: expunge sessionid=<{pop_session}> mailbox=<user.alice> ")
    assert " uid=<1> " in pop_expunge and "sysflags=<EX>" in pop_expunge
