"""The queue as an operator lives it: sealmail's MTA started with `sealmail postfix`, mail in over
SMTP (smtplib), Postfix's smtp-sink as the receiving side, and the operator's commands
(postqueue -p, postfix reload, postsuper -r) run as commands.

One message to a destination that refuses connections: the sender gets a delay notice once it
has waited delay_warning_time (1s here), the file sits in deferred/ two hash levels down, the
operator points the recipient elsewhere in virtual_alias_maps, reloads and requeues, and the
message arrives at the sink under a new queue id.
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
from tests.support.mta import mail_owner_opt_in
from tests.support.peers import (
    closed_tcp_port,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

pytestmark = pytest.mark.peer

SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SEALMAIL = [sys.executable, "-m", "sealmail"]
MESSAGE = (b"From: sender@example.org\r\nTo: bob@alias.example\r\nSubject: stuck\r\n"
           b"Message-ID: <stuck.1@example.org>\r\n\r\nplease arrive\r\n")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def sealmail(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SEALMAIL, *args], capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.fixture
def root() -> Iterator[Path]:
    if not Path(SMTP_SINK).exists():
        pytest.skip("smtp-sink (Debian's postfix package) is missing")
    with traversable_tmpdir("smqueue-") as path:
        yield path


@pytest.fixture
def dead_port() -> Iterator[int]:
    """The dead destination: a port that refuses connections for the whole test."""
    with closed_tcp_port() as port:
        yield port


def test_delay_warning_then_requeue_after_a_virtual_alias_change(root: Path,
                                                                 dead_port: int) -> None:
    sink_dir = root / "sink"
    sink_dir.mkdir()
    shutil.chown(sink_dir, "postfix")
    sink_port, smtpd_port = free_tcp_port(), free_tcp_port()
    config = root / "etc"
    config.mkdir()
    (config / "transport").write_text(f"example.org smtp:[127.0.0.1]:{sink_port}\n"
                                      f"dead.example smtp:[127.0.0.1]:{dead_port}\n")
    virtual = config / "virtual"
    virtual.write_text("bob@alias.example bob@dead.example\n")
    (config / "main.cf").write_text(
        f"queue_directory = {root}/spool\ndata_directory = {root}/data\n"
        f"maillog_file = {root}/maillog\n"
        "myhostname = mx.test.example\nmydestination =\ninet_interfaces = loopback-only\n"
        "mynetworks = 127.0.0.0/8\n"
        f"transport_maps = texthash:{config}/transport\n"
        f"virtual_alias_maps = texthash:{virtual}\n"
        "delay_warning_time = 1s\nminimal_backoff_time = 1s\nmaximal_backoff_time = 2s\n"
        "queue_run_delay = 1s\nhash_queue_depth = 2\n" + mail_owner_opt_in())
    (config / "master.cf").write_text(
        f"127.0.0.1:{smtpd_port} inet n - n - - smtpd\n"
        "smtp unix - - n - - smtp\nerror unix - - n - - error\n")
    maillog = root / "maillog"
    sink = subprocess.Popen(
        [SMTP_SINK, "-u", "postfix", "-d", f"{sink_dir}/%M.", f"127.0.0.1:{sink_port}", "10"])
    with (root / "master.out").open("wb") as out:
        mta = subprocess.Popen([*SEALMAIL, "postfix", "-c", str(config), "start-fg"],
                               stdout=out, stderr=out)
    try:
        wait_until_accepting(("127.0.0.1", smtpd_port), 30.0, mta)
        with smtplib.SMTP("127.0.0.1", smtpd_port, timeout=10) as client:
            client.sendmail("sender@example.org", ["bob@alias.example"], MESSAGE)

        def sunk() -> list[str]:
            return [p.read_text(errors="replace") for p in sink_dir.iterdir()]

        wait_for(lambda: any("Delayed Mail" in m for m in sunk()), "the delay notice")
        [warning] = sunk()
        assert "X-Mail-Args: <>" in warning
        assert "X-Rcpt-Args: <sender@example.org>" in warning
        assert "Subject: Delayed Mail (still being retried)" in warning
        assert "Action: delayed" in warning and "Will-Retry-Until:" in warning
        assert "Final-Recipient: rfc822; bob@dead.example" in warning
        assert "please arrive" not in warning  # the headers only

        listing = sealmail("postqueue", "-c", str(config), "-p").stdout
        queue_id = listing.splitlines()[1].split()[0].rstrip("*!")
        assert f"connect to 127.0.0.1[127.0.0.1]:{dead_port}: Connection refused" in listing
        assert " " * 41 + "bob@dead.example" in listing
        [stored] = [p for p in (root / "spool").rglob(queue_id) if p.is_file()]
        assert stored.relative_to(root / "spool").parts in (
            ("deferred", queue_id[6], queue_id[5], queue_id),
            ("active", queue_id))  # or being tried again right now

        virtual.write_text("bob@dead.example bob@example.org\n")
        assert sealmail("postfix", "-c", str(config), "reload").returncode == 0
        wait_for(lambda: "reload" in maillog.read_text(), "the reload")
        requeue = sealmail("postsuper", "-c", str(config), "-r", "ALL")
        assert requeue.returncode == 0, requeue.stderr
        assert "Requeued: 1 message" in requeue.stderr

        wait_for(lambda: any("please arrive" in m for m in sunk()), "the requeued message")
        [arrived] = [m for m in sunk() if "please arrive" in m]
        assert "X-Rcpt-Args: <bob@example.org>" in arrived
        assert "(sealmail, from userid" in arrived  # pickup's Received: line
        log = maillog.read_text()
        assert f"orig_id={queue_id}" in log
        wait_for(lambda: sealmail("postqueue", "-c", str(config), "-p").stdout
                 == "Mail queue is empty\n", "an empty queue")
    finally:
        mta.send_signal(signal.SIGTERM)
        mta.wait(30)
        sink.kill()
        sink.wait()
