"""What a tagged OK promises survives kill -9 of a real imapd (issue 17): several sessions STORE,
EXPUNGE, COPY and APPEND concurrently in one `sealmail imapd` process, whose index changes are
group-committed (sealmail.store.disk.changes); once every OK is in, the process is killed with
SIGKILL and the store, reopened, holds every change, with unique modseqs."""

from __future__ import annotations

import imaplib
import signal
import subprocess
import threading
from pathlib import Path

from tests.support.instance import SEALMAIL, create_inboxes, store_root_opt_in
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.proto.sasl import split_identity
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

SERVERNAME = "commit.test.example"
PASSWORD = "group commit pw"
MESSAGE = b"From: a@example.org\r\nSubject: kept\r\n\r\nbody\r\n"
SESSIONS = 4
PER_SESSION = 5  # messages each session owns in the INBOX


def _session(port: int, n: int, failures: list[str]) -> None:
    try:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=30)
        client.login("alice", PASSWORD)
        assert client.select("INBOX")[0] == "OK"
        first = 1 + n * PER_SESSION
        own = f"{first}:{first + PER_SESSION - 1}"
        for _ in range(3):  # a few rounds, so sessions' commits meet
            assert client.uid("STORE", own, "+FLAGS.SILENT", f"($s{n})")[0] == "OK"
            assert client.uid("STORE", own, "-FLAGS.SILENT", f"($s{n})")[0] == "OK"
        assert client.uid("STORE", own, "+FLAGS.SILENT", f"($s{n} \\Flagged)")[0] == "OK"
        assert client.uid("COPY", str(first), f"INBOX.c{n}")[0] == "OK"
        assert client.uid("STORE", str(first), "+FLAGS.SILENT", "(\\Deleted)")[0] == "OK"
        assert client.uid("EXPUNGE", str(first))[0] == "OK"
        assert client.append("INBOX", f"($a{n})", None, MESSAGE)[0] == "OK"
        # No LOGOUT: the process dies with the session open.
    except Exception as exc:
        failures.append(f"session {n}: {exc!r}")


def test_every_change_answered_ok_survives_kill_9(tmp_path: Path) -> None:
    conf = tmp_path / "imapd.conf"
    conf.write_text(
        f"configdirectory: {tmp_path / 'config'}\npartition-default: {tmp_path / 'spool'}\n"
        f"servername: {SERVERNAME}\nallowplaintext: yes\nauth_failure_delay: 0\n"
        + store_root_opt_in()
    )
    create_inboxes(conf, ["alice"])
    SaslDB(tmp_path / "config" / "sasldb2", scrypt_n=2**10).set_password(
        split_identity("alice", SERVERNAME), PASSWORD
    )
    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        for n in range(SESSIONS):
            store.create_mailbox(f"user.alice.c{n}")
        for _ in range(SESSIONS * PER_SESSION):
            store.deliver(MESSAGE, [DeliveryTarget("user.alice")])
        before = store.mailbox("user.alice")
        assert before is not None

    port = free_tcp_port()
    log = tmp_path / "imapd.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*SEALMAIL, "imapd", "-C", str(conf), "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        wait_until_accepting(("127.0.0.1", port), 30, process, log)
        failures: list[str] = []
        threads = [
            threading.Thread(target=_session, args=(port, n, failures)) for n in range(SESSIONS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert failures == [], log.read_text(errors="replace")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)

    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        records = {r.uid: r for r in store.messages("user.alice")}
        after = store.mailbox("user.alice")
        assert after is not None
        for n in range(SESSIONS):
            first = 1 + n * PER_SESSION
            assert first not in records  # expunged
            for uid in range(first + 1, first + PER_SESSION):
                assert {f"$s{n}", "\\Flagged"} <= set(records[uid].flags)
            copies = store.messages(f"user.alice.c{n}")
            assert len(copies) == 1 and "\\Deleted" not in copies[0].flags
        appended = [r for r in records.values() if r.uid > SESSIONS * PER_SESSION]
        assert sorted(f for r in appended for f in r.flags) == [f"$a{n}" for n in range(SESSIONS)]
        # The parse each APPEND kept came in its message's own commit (docs/imapd.md).
        kept = store.message_structures("user.alice", [r.uid for r in appended])
        assert sorted(kept) == sorted(r.uid for r in appended)
        # Modseqs: one per message state, never two the same, none above HIGHESTMODSEQ.
        modseqs = [r.modseq for r in records.values()]
        assert len(set(modseqs)) == len(modseqs)
        assert max(modseqs) <= after.highestmodseq
        # Each session: 7 changing STOREs of its 5 messages, then one message each for the
        # \Deleted STORE, the expunge and the append (a COPY changes the target only).
        assert after.highestmodseq == before.highestmodseq + SESSIONS * (7 * PER_SESSION + 3)
