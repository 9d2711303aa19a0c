"""procmail (Debian's package) handing mail to `sealmail deliver`, as the seed's section 4 has it:
a .procmailrc whose recipes pipe the message into deliver, one to a folder and one to the INBOX.

procmail passes the message with an mbox `From ` line first; deliver must drop it. A failed pipe
(lmtpd down: deliver exits 75) makes procmail give up with EX_TEMPFAIL too, so the MTA that ran
procmail keeps the message.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import traversable_tmpdir

pytestmark = pytest.mark.peer

PROCMAIL = shutil.which("procmail") or "/usr/bin/procmail"
EX_TEMPFAIL = 75


@pytest.fixture(scope="module")
def instance() -> Iterator[SealmailInstance]:
    if not Path(PROCMAIL).exists():
        pytest.skip("procmail is missing (install Debian's procmail package)")
    with (
        traversable_tmpdir("smprc-") as root,
        SealmailInstance(root / "sealmail", ("alice",)) as inst,
    ):
        conf = str(inst.conf_path)
        inst.sealmail("mailbox", "-C", conf, "create", "user.alice.Lists")
        inst.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Lists", "anyone", "p")
        yield inst


def _procmailrc(instance: SealmailInstance) -> Path:
    deliver = " ".join([*SEALMAIL, "deliver", "-C", str(instance.conf_path), "-e"])
    rc = instance.root / "procmailrc"
    rc.write_text(
        "SHELL=/bin/sh\n"
        f"LOGFILE={instance.root / 'procmail.log'}\n"
        "VERBOSE=on\n"
        "# Mailing list traffic to a folder, the rest to the INBOX (the seed's section 4).\n"
        ":0 w\n"
        "* ^List-Id:\n"
        f"| {deliver} -m Lists alice\n"
        "\n"
        ":0 w\n"
        f"| {deliver} alice\n"
        "\n"
        "# Reached only when deliver failed: pass its status on, so 75 stays a temporary failure\n"
        "# (without this procmail -m exits 73, EX_CANTCREAT, which an MTA bounces).\n"
        "EXITCODE=$?\n"
    )
    return rc


def _procmail(instance: SealmailInstance, message: bytes) -> subprocess.CompletedProcess[bytes]:
    # -m: procmail as a general mail filter with this rcfile, as an MTA's mailbox_command or a
    # user's .forward would start it; -f sets the envelope sender of its From_ line.
    return subprocess.run(
        [PROCMAIL, "-f", "sender@remote.example", "-m", str(_procmailrc(instance))],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
        cwd=instance.root,
    )


def _message(extra: str = "") -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4().hex}@remote.example>"
    text = (
        f"From: Sender <sender@remote.example>\nTo: alice@test.example\n{extra}"
        f"Subject: via procmail\nMessage-ID: {message_id}\n\nbody line\n.dot line\n"
    )
    return message_id, text.encode()


def _stored(instance: SealmailInstance, mailbox: str, message_id: str) -> list[bytes]:
    with instance.store() as store:
        return [
            data
            for record in store.messages(mailbox)
            if message_id.encode() in (data := store.message_bytes(mailbox, record.uid))
        ]


def test_procmail_pipes_into_deliver(instance: SealmailInstance) -> None:
    message_id, message = _message()
    done = _procmail(instance, message)
    assert done.returncode == 0, (done.stderr, instance.root.joinpath("procmail.log").read_text())
    [data] = _stored(instance, "user.alice", message_id)
    # procmail's From_ line is gone; the sender came from nowhere else: the null sender.
    assert data.startswith(b"Return-Path: <>\r\nReceived: ")
    assert b"\nFrom sender@remote.example " not in data
    # procmail ends what it pipes with one blank line (mbox framing); deliver keeps the bytes it
    # is given apart from the From_ line, as Cyrus's deliver does.
    assert data.endswith(b"\r\n\r\nbody line\r\n.dot line\r\n\r\n")


def test_procmail_recipe_to_a_folder(instance: SealmailInstance) -> None:
    message_id, message = _message("List-Id: <news.lists.example>\n")
    done = _procmail(instance, message)
    assert done.returncode == 0, done.stderr
    assert len(_stored(instance, "user.alice.Lists", message_id)) == 1
    assert _stored(instance, "user.alice", message_id) == []


def test_procmail_keeps_the_message_when_lmtpd_is_down(instance: SealmailInstance) -> None:
    message_id, message = _message()
    instance.stop()
    try:
        done = _procmail(instance, message)
    finally:
        users, instance.users = instance.users, []  # they exist: start lmtpd only
        try:
            instance.start()
        finally:
            instance.users = users
    assert done.returncode == EX_TEMPFAIL, done.stderr
    assert "cannot connect to lmtpd" in instance.root.joinpath("procmail.log").read_text()
    assert _stored(instance, "user.alice", message_id) == []
