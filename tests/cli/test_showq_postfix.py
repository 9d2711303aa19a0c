"""postqueue -j, -p and qshape beside a real Postfix's (Debian's postfix package).

One private Postfix relays to a fake server that answers RCPT with 450 (a long reason for one
recipient, a short one for the others), so its queue holds deferred mail with delay reasons; one
message goes on hold. sealmail's table and qshape, fed Postfix's own `postqueue -j` objects, must
print what Postfix's `postqueue -p` and `qshape` print, byte for byte; and the same queue written
as sealmail's queue files gives Postfix's objects back, keys in Postfix's order.
"""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.peers import POSTQUEUE, PeerUnavailable, PostfixInstance, traversable_tmpdir

from sealmail.mta.qshape import QshapeOptions, render_qshape
from sealmail.mta.queue import AttemptResult, Envelope, Queue, QueueName, RecipientRecord
from sealmail.mta.showq import queue_entries, render_listing

pytestmark = pytest.mark.peer
QSHAPE = "/usr/sbin/qshape"
POSTSUPER = "/usr/sbin/postsuper"
LONG = (b"450 4.2.0 <bob@remote.example>: Recipient address rejected: a reason long enough to "
        b"run past the eightieth column of the terminal")
RECIPIENTS = ["bob@remote.example", "carol@remote.example", "eve@x.example"]


class DeferringServer:
    """Answers every RCPT with a 450: bob's long, the others' short; so mail stays deferred."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rwb") as f:
            f.write(b"220 sink ESMTP\r\n")
            f.flush()
            for line in f:
                verb = line[:4].upper()
                if verb == b"RCPT":
                    f.write((LONG if b"bob@" in line else b"451 4.3.0 try later") + b"\r\n")
                elif verb == b"QUIT":
                    f.write(b"221 bye\r\n")
                    f.flush()
                    return
                else:
                    f.write(b"250 ok\r\n")
                f.flush()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def server() -> Iterator[DeferringServer]:
    sink = DeferringServer()
    yield sink
    sink.close()


def run(*argv: str | Path) -> str:
    return subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=True,
                          timeout=60).stdout


@pytest.fixture(scope="module")
def postfix_outputs(server: DeferringServer) -> Iterator[dict[str, Any]]:
    try:
        with traversable_tmpdir() as tmp, PostfixInstance(tmp, {
            "default_transport": "smtp", "relay_transport": "smtp",
            "relayhost": f"[127.0.0.1]:{server.port}", "queue_run_delay": "300s",
            "minimal_backoff_time": "300s", "maximal_backoff_time": "600s",
        }) as postfix:
            first = postfix.send("alice@client.example", RECIPIENTS, "Subject: x\r\n\r\nhi\r\n")
            second = postfix.send("", ["dave@other.example"],
                                  "Subject: y\r\n\r\n" + "z" * 3000 + "\r\n")
            for queue_id in (first, second):
                postfix.wait_for_log(rf"{queue_id}: .*status=deferred")
            deadline = time.monotonic() + 30
            while any(e["queue_name"] != "deferred" for e in postfix.queue()):
                assert time.monotonic() < deadline
                time.sleep(0.1)
            run(POSTSUPER, "-c", postfix.config_dir, "-h", second)
            yield {
                "p": run(POSTQUEUE, "-c", postfix.config_dir, "-p"),
                "j": run(POSTQUEUE, "-c", postfix.config_dir, "-j"),
                "qshape": run(QSHAPE, "-c", postfix.config_dir, "deferred", "hold"),
                "qshape -s": run(QSHAPE, "-c", postfix.config_dir, "-s", "deferred", "hold"),
                "time": time.time(),
            }
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def objects(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_the_table_from_postfix_json_is_postfix_table(postfix_outputs: dict[str, Any]) -> None:
    entries = objects(postfix_outputs["j"])
    assert {e["queue_name"] for e in entries} == {"deferred", "hold"}
    assert render_listing(entries) == postfix_outputs["p"]


def test_qshape_from_postfix_json_is_postfix_qshape(postfix_outputs: dict[str, Any]) -> None:
    entries = objects(postfix_outputs["j"])
    now = postfix_outputs["time"]
    assert render_qshape(entries, now) == postfix_outputs["qshape"]
    assert render_qshape(entries, now, QshapeOptions(senders=True)) == postfix_outputs["qshape -s"]


def test_sealmail_json_has_postfix_keys(postfix_outputs: dict[str, Any], tmp_path: Path) -> None:
    """The same queue in sealmail's queue files: the same objects, keys in the same order."""
    theirs = sorted(objects(postfix_outputs["j"]), key=lambda e: e["message_size"])
    queue = Queue(tmp_path / "spool")
    queue.create_directories()
    for item in theirs:
        sender = "" if item["sender"] == "MAILER-DAEMON" else item["sender"]
        envelope = Envelope(sender, tuple(RecipientRecord(r["address"])
                                          for r in item["recipients"]),
                            arrival=item["arrival_time"], size=item["message_size"])
        queue_id = queue.enqueue(envelope, b"x" * item["message_size"])
        entry = queue.load(queue_id, QueueName.INCOMING)
        queue.record(entry, [AttemptResult(i, "deferred", "4.0.0", r["delay_reason"], "x", 1.0)
                             for i, r in enumerate(item["recipients"])])
        queue.move(queue_id, QueueName.INCOMING, QueueName(item["queue_name"]))
        item["queue_id"] = queue_id
    ours = sorted(queue_entries(queue), key=lambda e: e["message_size"])
    assert [list(e) for e in ours] == [list(e) for e in theirs]
    assert ours == theirs
    assert render_listing(ours) == render_listing(theirs)
