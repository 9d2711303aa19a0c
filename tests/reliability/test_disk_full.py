"""Disk full: the MTA's queue and the store's spool each on a small tmpfs that a filler file
fills. A full queue answers 452 4.3.1 at MAIL (and at the end of DATA when the message does not
fit); a full spool makes lmtpd answer 452 4.3.1 (RFC 3463 X.3.1, "mail system full"), so the MTA
defers; nothing accepted before is lost, and once the filler is deleted everything deferred is
delivered without anyone's help.

Needs root (mount -t tmpfs); skipped otherwise. Each mount is undone in a finally.
"""

from __future__ import annotations

import contextlib
import errno
import os
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL
from tests.support.mail_system import DOMAIN, mail_system, message, message_ids
from tests.support.mta import wait_for

SENDER = f"sender@{DOMAIN}"
RCPT = f"alice@{DOMAIN}"


@contextlib.contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path, leave: int = 0) -> Path:
    """A file that takes every free byte of `directory`'s file system but `leave`."""
    filler = directory / "filler"
    stat = os.statvfs(directory)
    target = max(0, stat.f_bavail * stat.f_frsize - leave)
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        chunk = b"\0" * 65536
        written = 0
        while written < target or not leave:
            try:
                written += os.write(fd, chunk[: max(1, min(len(chunk), target - written))]
                                    if leave else chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    finally:
        os.close(fd)
    return filler


def send(port: int, message_id: str, size: int = 0) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.sendmail(SENDER, [RCPT], message(message_id, [RCPT], SENDER, size))


def refused(port: int, message_id: str, size: int = 0) -> tuple[int, bytes]:
    try:
        send(port, message_id, size)
    except smtplib.SMTPSenderRefused as exc:
        return exc.smtp_code, exc.smtp_error
    except smtplib.SMTPDataError as exc:
        return exc.smtp_code, exc.smtp_error
    raise AssertionError(f"{message_id} was accepted")


def test_a_full_queue_answers_452_4_3_1_keeps_what_it_took_and_recovers(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "queue", "6m") as queue, mail_system(
        tmp_path, ["alice"], queue_directory=queue, main_extra="defer_transports = cyrus\n"
    ) as (store, mta):
        send(mta.port, f"before@{DOMAIN}")  # accepted, held by defer_transports
        filler = fill(queue)
        assert refused(mta.port, f"full@{DOMAIN}") == (452, b"4.3.1 Insufficient system storage")
        filler.unlink()
        filler = fill(queue, leave=256 * 1024)
        # MAIL finds room for a message of unknown size; its data does not fit.
        code, text = refused(mta.port, f"big@{DOMAIN}", size=1024 * 1024)
        assert (code, text) == (452, b"4.3.1 Insufficient system storage")
        filler.unlink()
        send(mta.port, f"after@{DOMAIN}")
        subprocess.run([*SEALMAIL, "postqueue", "-c", str(mta.config), "-f"], check=True)
        wait_for(lambda: {("alice", f"before@{DOMAIN}"), ("alice", f"after@{DOMAIN}")}
                 <= set(message_ids(store, ["alice"])), timeout=60, what="the held mail")
        assert ("alice", f"big@{DOMAIN}") not in message_ids(store, ["alice"])
        assert "not enough free space in mail queue" in mta.maillog()


def test_a_full_spool_defers_with_452_4_3_1_and_delivers_when_space_returns(
    tmp_path: Path,
) -> None:
    with tmpfs(tmp_path / "store" / "partition", "6m") as partition, mail_system(
        tmp_path, ["alice"]
    ) as (store, mta):
        send(mta.port, f"first@{DOMAIN}")
        wait_for(lambda: ("alice", f"first@{DOMAIN}") in message_ids(store, ["alice"]),
                 what="the first message")
        filler = fill(partition)
        send(mta.port, f"deferred@{DOMAIN}", size=64 * 1024)  # the queue has room
        wait_for(lambda: "452 4.3.1" in mta.maillog(), what="the store's 452 4.3.1")
        assert "status=deferred" in mta.maillog()
        assert ("alice", f"first@{DOMAIN}") in message_ids(store, ["alice"])  # still readable
        filler.unlink()
        wait_for(lambda: ("alice", f"deferred@{DOMAIN}") in message_ids(store, ["alice"]),
                 timeout=60, what="the deferred message, once space returned")
        assert message_ids(store, ["alice"]) == {
            ("alice", f"first@{DOMAIN}"): 1, ("alice", f"deferred@{DOMAIN}"): 1}
