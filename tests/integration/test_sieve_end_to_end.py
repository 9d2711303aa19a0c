"""Sieve end to end, as a user lives it: a script uploaded over ManageSieve (sievelib), mail
arriving over LMTP lands where the script says, the vacation reply goes out once per sender, and a
redirect leaves through sealmail's MTA (smtp_backend: host), which relays it to Postfix's
smtp-sink, where each message lands in a file.

The store runs under `sealmail master` from a cyrus.conf and the MTA under `sealmail postfix`,
as an operator would run them.
"""

from __future__ import annotations

import shutil
import signal
import smtplib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.instance import store_root_opt_in
from tests.support.mta import mail_owner_opt_in
from tests.support.peers import free_tcp_port, traversable_tmpdir, wait_until_accepting

pytestmark = pytest.mark.peer

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"

SCRIPT = """require ["fileinto", "vacation", "imap4flags"];
if header :contains "subject" "[list]" {
  fileinto :flags "\\\\Seen" "INBOX.Lists";
  stop;
}
if header :contains "subject" "forward me" {
  redirect "carol@elsewhere.example";
  stop;
}
vacation :days 1 :subject "Away" "I am away until Monday.";
"""


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def root() -> Iterator[Path]:
    if not Path(SMTP_SINK).exists():
        pytest.skip("smtp-sink (Debian's postfix package) is missing")
    pytest.importorskip("sievelib")
    with traversable_tmpdir("smsieve-") as path:
        yield path


def message(subject: str, msgid: str, sender: str = "bob@example.org") -> bytes:
    return (
        f"From: {sender}\r\nTo: alice@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{msgid}@example.org>\r\n\r\nbody\r\n"
    ).encode()


def test_upload_deliver_vacation_and_redirect(root: Path) -> None:
    from sievelib.managesieve import Client

    sink_dir = root / "sink"
    sink_dir.mkdir()
    shutil.chown(sink_dir, "postfix")
    sink_port, sieve_port, mta_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    mta_dir = root / "mta"
    mta_dir.mkdir()
    (mta_dir / "main.cf").write_text(
        f"queue_directory = {root}/mta-spool\ndata_directory = {root}/mta-data\n"
        "myhostname = mx.test.example\nmydestination =\ninet_interfaces = loopback-only\n"
        f"mynetworks = 127.0.0.0/8\nrelayhost = [127.0.0.1]:{sink_port}\n" + mail_owner_opt_in()
    )
    (mta_dir / "master.cf").write_text(
        f"127.0.0.1:{mta_port} inet n - n - - smtpd\n"
        "smtp unix - - n - - smtp\nerror unix - - n - - error\n"
    )
    conf = root / "imapd.conf"
    conf.write_text(
        f"configdirectory: {root}/config\npartition-default: {root}/spool\n"
        f"lmtpsocket: {root}/config/socket/lmtp\nservername: sealmail.test\n"
        "allowplaintext: yes\nsmtp_backend: host\n"
        f"smtp_host: 127.0.0.1:{mta_port}\n" + store_root_opt_in()
    )
    (root / "cyrus.conf").write_text(
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{root}/config/socket/lmtp"\n'
        f'  sieve    cmd="sieved" listen="127.0.0.1:{sieve_port}"\n'
        "}\n"
    )
    sealmail = [sys.executable, "-m", "sealmail"]
    for name in ("user.alice", "user.alice.Lists"):
        subprocess.run([*sealmail, "mailbox", "-C", str(conf), "create", name], check=True)
    subprocess.run(
        [*sealmail, "saslpasswd2", "-C", str(conf), "-p", "-c", "alice"],
        input="alice-pw\n",
        text=True,
        check=True,
    )
    # Processes start last, right before the try whose finally stops them.
    sink = subprocess.Popen(
        [SMTP_SINK, "-u", "postfix", "-d", f"{sink_dir}/%M.", f"127.0.0.1:{sink_port}", "10"]
    )
    log = root / "master.log"
    with log.open("wb") as out:
        master = subprocess.Popen(
            [*sealmail, "master", "-C", str(conf), "-M", str(root / "cyrus.conf"), "-D"],
            stdout=out,
            stderr=out,
        )
        mta = subprocess.Popen(
            [*sealmail, "postfix", "-c", str(mta_dir), "start-fg"], stdout=out, stderr=out
        )
    try:
        # Generous waits: each process starts an interpreter (seconds on a loaded machine).
        wait_for(lambda: "master ready" in log.read_text() or master.poll() is not None, "master")
        assert master.poll() is None, log.read_text()
        wait_until_accepting(("127.0.0.1", mta_port), 60.0, mta)
        wait_until_accepting(("127.0.0.1", sink_port), 60.0, sink)
        client = Client("127.0.0.1", sieve_port)
        assert client.connect("alice", "alice-pw", authmech="PLAIN")
        assert client.putscript("rules", SCRIPT)
        assert client.setactive("rules")
        client.logout()

        with smtplib.LMTP(str(root / "config" / "socket" / "lmtp")) as lmtp:
            for subject, msgid in (
                ("[list] news", "m1"),
                ("hello", "m2"),
                ("again", "m3"),
                ("forward me", "m4"),
            ):
                lmtp.sendmail("bob@example.org", ["alice@example.com"], message(subject, msgid))

        def sunk() -> list[str]:
            return [p.read_text(errors="replace") for p in sink_dir.iterdir()]

        wait_for(lambda: len(sunk()) == 2, "the vacation reply and the redirect")
        time.sleep(0.5)  # nothing more may arrive (a second vacation reply would be a bug)
        received = sunk()
        assert len(received) == 2, received
        vacation = next(m for m in received if "Subject: Auto: hello" in m or "Away" in m)
        assert "X-Mail-Args: <>" in vacation and "X-Rcpt-Args: <bob@example.org>" in vacation
        assert "Auto-Submitted: auto-replied" in vacation
        redirect = next(m for m in received if "forward me" in m)
        assert "X-Mail-Args: <bob@example.org>" in redirect
        assert "X-Rcpt-Args: <carol@elsewhere.example>" in redirect
        assert "by mx.test.example" in redirect  # it went through sealmail's MTA

        from sealmail.config.imapd_conf import load_imapd_conf
        from sealmail.store.disk import DiskStore

        with DiskStore.from_config(load_imapd_conf(conf)) as store:
            [listed] = store.messages("user.alice.Lists")
            assert [f.lower() for f in listed.flags] == ["\\seen"]
            inbox = [store.message_bytes("user.alice", m.uid) for m in store.messages("user.alice")]
        assert len(inbox) == 2 and all(b"vacation" not in m for m in inbox)
    finally:
        for process in (master, mta):
            process.send_signal(signal.SIGTERM)
            process.wait(30)
        sink.kill()
        sink.wait()
