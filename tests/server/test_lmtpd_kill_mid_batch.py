"""kill -9 of lmtpd while sessions deliver at once (group commits through one writer connection,
checkpoints in their own thread): every message acknowledged with 250 is stored and indexed, and
every file left in a mailbox is either an indexed message or debris above uidnext that no client
sees and reconstruct clears."""

from __future__ import annotations

import os
import signal
import smtplib
import threading
import time
from pathlib import Path

from tests.support.instance import SealmailInstance

USERS = ["kim", "lee"]
SESSIONS = 4


def _session(inst: SealmailInstance, number: int, acked: list[str], stop: threading.Event) -> None:
    try:
        client = smtplib.LMTP(inst.socket_path, timeout=30)
        client.ehlo_or_helo_if_needed()
        sent = 0
        while not stop.is_set():
            subject = f"s{number}-{sent}"
            user = USERS[sent % len(USERS)]
            message = f"Subject: {subject}\r\nMessage-ID: <{subject}@x>\r\n\r\n" + "b" * 2000
            client.sendmail("s@example.org", [f"{user}@example.com"], message)
            acked.append(subject)  # sendmail raised unless the 250 came
            sent += 1
    except (OSError, smtplib.SMTPException):
        return  # the server died under us


def test_kill_9_mid_batch_leaves_acknowledged_mail_indexed_and_nothing_half_visible(
    tmp_path: Path,
) -> None:
    inst = SealmailInstance(tmp_path, users=USERS)
    inst.start()
    acked: list[str] = []
    stop = threading.Event()
    sessions = [
        threading.Thread(target=_session, args=(inst, n, acked, stop)) for n in range(SESSIONS)
    ]
    try:
        for thread in sessions:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < 20:
            assert time.monotonic() < deadline, "no deliveries"
            time.sleep(0.01)
        assert inst.pid is not None
        os.kill(inst.pid, signal.SIGKILL)  # the sessions are mid-transaction or mid-batch
        done = list(acked)
    finally:
        stop.set()
        for thread in sessions:
            thread.join(30)
        inst.stop()
    with inst.store() as store:
        stored: set[str] = set()
        for user in USERS:
            name = f"user.{user}"
            info = store.mailbox(name)
            assert info is not None
            records = store.messages(name)
            for record in records:
                content = store.message_bytes(name, record.uid)
                stored.add(content.split(b"Subject: ", 1)[1].split(b"\r\n", 1)[0].decode())
            indexed = {record.uid for record in records}
            for path in store.mailbox_path(name).iterdir():
                if path.name.endswith(".") and path.name[:-1].isdigit():
                    uid = int(path.name[:-1])
                    assert uid in indexed or uid >= info.uidnext, path
        assert set(done) <= stored
    assert "error" not in inst.sealmail("reconstruct", "-C", str(inst.conf_path)).lower()
    with inst.store() as store:
        for user in USERS:
            assert len(store.messages(f"user.{user}")) == len(
                [s for s in stored if int(s.split("-")[1]) % len(USERS) == USERS.index(user)]
            )
