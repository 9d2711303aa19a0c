"""Desktop clients' session shapes against `sealmail master` preforking imapd (issue 17).

Thunderbird keeps several connections per account: one IDLEs on INBOX while another works in
other folders, and after being offline it resyncs each folder with CONDSTORE/QRESYNC (RFC 7162)
instead of fetching every flag again. These tests drive those shapes with imapclient against the
deployed shape (master, imapd preforked on two workers, lmtpd beside it), and hold many IDLE
sessions while another client works, checking that each one hears the delivery.

`SEALMAIL_LONG=1` holds 200 IDLE sessions instead of 50 and prints the workers' RSS per idle
session (the figure in docs/benchmarks.md); run with `-s` to see it.
"""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import signal
import smtplib
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient
from tests.support.instance import SEALMAIL, create_inboxes, store_root_opt_in
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

PASSWORD = "shape secret"
SERVERNAME = "shapes.test.example"
USERS = ("alice", "bob", "carol")
IDLERS = 200 if os.environ.get("SEALMAIL_LONG") else 50
RECENT = {b"\\Recent"}
TIMEOUT = 60.0  # generous: the machine is shared; nothing here asserts a timing


def message(subject: str) -> bytes:
    return (
        f"From: sender@example.org\r\nTo: someone@example.com\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\nbody of {subject}\r\n"
    ).encode()


@dataclass
class Master:
    port: int
    lmtp_socket: Path
    log: Path

    def client(self, user: str) -> IMAPClient:
        client = IMAPClient("127.0.0.1", port=self.port, ssl=False, timeout=TIMEOUT)
        client.login(user, PASSWORD)
        return client

    def deliver(self, user: str, content: bytes) -> None:
        with smtplib.LMTP(str(self.lmtp_socket)) as lmtp:
            lmtp.ehlo()
            lmtp.sendmail("sender@example.org", [f"{user}@example.com"], content)

    def imap_workers(self) -> list[int]:
        text = self.log.read_text(errors="replace")
        return [int(pid) for pid in re.findall(r"service imap: started worker (\d+)", text)]


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Master]:
    root = tmp_path_factory.mktemp("shapes")
    port = free_tcp_port()
    conf = root / "imapd.conf"
    lmtp_socket = root / "config" / "socket" / "lmtp"
    conf.write_text(
        f"configdirectory: {root / 'config'}\npartition-default: {root / 'partition'}\n"
        f"lmtpsocket: {lmtp_socket}\nservername: {SERVERNAME}\nallowplaintext: yes\n"
        "altnamespace: yes\nauth_failure_delay: 0\nauth_cache_size: 100\n"
        "lmtp_user_concurrency_limit: 0\n" + store_root_opt_in()
    )
    (root / "cyrus.conf").write_text(
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{lmtp_socket}" prefork=1\n'
        f'  imap     cmd="imapd" listen="127.0.0.1:{port}" prefork=2\n'
        "}\n"
    )
    create_inboxes(conf, USERS)
    sasldb = SaslDB(root / "config" / "sasldb2", scrypt_n=2**10)
    for user in USERS:
        sasldb.set_password(split_identity(user, SERVERNAME), PASSWORD)
    log = root / "master.log"
    argv = [*SEALMAIL, "master", "-C", str(conf), "-M", str(root / "cyrus.conf"),
            "-p", str(root / "master.pid"), "-D"]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_until_accepting(("127.0.0.1", port), 30, process, log)
        deadline = time.monotonic() + 30
        while not lmtp_socket.exists():
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(0.05)
        yield Master(port, lmtp_socket, log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert PASSWORD not in log.read_text(errors="replace")


def drop(client: IMAPClient) -> None:
    """Close a client's socket whatever state it is in (after LOGOUT it already is)."""
    with contextlib.suppress(OSError):
        client.shutdown()


def idle_until(client: IMAPClient, wanted: bytes) -> list[tuple[object, ...]]:
    """idle_check until a response of kind `wanted` arrives (or TIMEOUT): what came."""
    seen: list[tuple[object, ...]] = []
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        seen.extend(client.idle_check(timeout=1))
        if any(len(item) > 1 and item[1] == wanted for item in seen):
            return seen
    raise AssertionError(f"no {wanted!r} while idling; saw {seen}")


def test_one_connection_idles_on_inbox_while_another_works_in_folders(master: Master) -> None:
    watcher = master.client("alice")
    worker = master.client("alice")
    try:
        assert watcher.select_folder("INBOX")[b"EXISTS"] == 0
        watcher.idle()
        worker.create_folder("Archive")
        worker.create_folder("Work")
        for n in range(3):
            worker.append("Work", message(f"work {n}"), flags=["$Label1"] if n else [])
        worker.select_folder("Work")
        assert sorted(worker.search()) == [1, 2, 3]
        worker.add_flags([1, 2], [b"\\Seen"])
        flags = worker.get_flags([1, 2, 3])
        assert set(flags[1]) - RECENT == {b"\\Seen"}
        assert set(flags[2]) - RECENT == {b"\\Seen", b"$Label1"}
        worker.move([3], "Archive")
        assert worker.search() == [1, 2]
        master.deliver("alice", message("new in inbox"))
        seen = idle_until(watcher, b"EXISTS")
        assert (1, b"EXISTS") in seen
        watcher.idle_done()
        fetched = watcher.fetch([1], ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
        assert b"new in inbox" in fetched[1][b"BODY[HEADER.FIELDS (SUBJECT)]"]
        assert worker.folder_status("Archive", [b"MESSAGES"])[b"MESSAGES"] == 1
        watcher.logout()
        worker.logout()
    finally:
        drop(watcher)
        drop(worker)


def qresync_select(client: IMAPClient, folder: str, uidvalidity: int, modseq: int,
                   known: str) -> tuple[list[bytes], dict[int, set[bytes]], int]:  # fmt: skip
    """SELECT folder (QRESYNC (uidvalidity modseq known)): the VANISHED (EARLIER) sets, the
    FLAGS of each UID the server reports changed, and the new HIGHESTMODSEQ."""
    imap = client._imap
    typ, data = imap._simple_command(
        "SELECT", f'"{folder}" (QRESYNC ({uidvalidity} {modseq} {known}))'
    )
    assert typ == "OK", data
    imap.state = "SELECTED"  # imaplib's select() would have set it; it has no QRESYNC form
    vanished = [bytes(item) for item in imap.untagged_responses.pop("VANISHED", [])]
    changed: dict[int, set[bytes]] = {}
    for item in imap.untagged_responses.pop("FETCH", []):
        text = bytes(item)
        uid = int(re.search(rb"UID (\d+)", text).group(1))  # type: ignore[union-attr]
        flags = re.search(rb"FLAGS \(([^)]*)\)", text).group(1)  # type: ignore[union-attr]
        changed[uid] = set(flags.split()) - RECENT  # whose it is depends on who selected first
    highest = 0
    for item in imap.untagged_responses.pop("OK", []):
        found = re.search(rb"\[HIGHESTMODSEQ (\d+)\]", bytes(item))
        if found:
            highest = int(found.group(1))
    return vanished, changed, highest


def test_qresync_after_offline_changes_sees_vanished_and_flags_exactly(master: Master) -> None:
    client = master.client("bob")
    client.create_folder("Sync")
    for n in range(6):
        client.append("Sync", message(f"sync {n}"))
    client.enable("QRESYNC")
    selected = client.select_folder("Sync")
    uidvalidity, modseq = selected[b"UIDVALIDITY"], selected[b"HIGHESTMODSEQ"]
    assert selected[b"EXISTS"] == 6
    client.logout()  # offline

    other = master.client("bob")
    other.select_folder("Sync")
    other.add_flags([2], [b"\\Flagged"])
    other.add_flags([3], [b"\\Seen", b"$Work"])
    other.add_flags([4, 5], [b"\\Deleted"])
    other.expunge()  # UIDs 4 and 5 vanish
    other.append("Sync", message("sync while offline"), flags=[b"\\Answered"])  # UID 7
    other.remove_flags([3], [b"$Work"])  # changed twice: only the last state counts
    other.logout()

    client = master.client("bob")
    try:
        assert client.enable("QRESYNC") == [b"QRESYNC"]
        vanished, changed, highest = qresync_select(client, "Sync", uidvalidity, modseq, "1:6")
        assert vanished == [b"(EARLIER) 4:5"]
        # RFC 7162 3.2.5: with known UIDs the server reports changes of those only; the new
        # message is found as Thunderbird finds it, by UID FETCH past the last UID it knew.
        assert changed == {2: {b"\\Flagged"}, 3: {b"\\Seen"}}
        assert highest > modseq
        new = client.fetch(client.search(["UID", "7:*"]), ["FLAGS", "MODSEQ"])
        assert list(new) == [7]
        assert set(new[7][b"FLAGS"]) - RECENT == {b"\\Answered"}
        assert 0 < new[7][b"MODSEQ"][0] <= highest
        # Nothing changed since: a second resync from the new modseq is empty.
        client.unselect_folder()
        vanished, changed, again = qresync_select(client, "Sync", uidvalidity, highest, "1:7")
        assert (vanished, changed, again) == ([], {}, highest)
        assert client.search() == [1, 2, 3, 6, 7]  # UIDs: 4 and 5 expunged offline
        client.logout()
    finally:
        drop(client)


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        status = Path(f"/proc/{pid}/status").read_text()
        total += int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]
    return total


def open_idler(port: int, user: str) -> socket.socket:
    """A raw session: LOGIN, SELECT INBOX, IDLE; returns once the server said `+`."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT)
    reader = sock.makefile("rb")
    assert reader.readline().startswith(b"* OK")
    for tag, command in ((b"a", f'LOGIN {user} "{PASSWORD}"'), (b"b", "SELECT INBOX")):
        sock.sendall(tag + b" " + command.encode() + b"\r\n")
        while not (line := reader.readline()).startswith(tag + b" "):
            assert line, "connection closed"
        assert line.startswith(tag + b" OK"), line
    sock.sendall(b"c IDLE\r\n")
    assert reader.readline().startswith(b"+ ")
    reader.close()  # the socket stays open; nothing is buffered past the continuation
    return sock


def test_many_idle_sessions_each_hear_a_delivery_while_another_client_works(
    master: Master,
) -> None:
    workers = master.imap_workers()
    assert len(workers) == 2
    before = rss_kib(workers)
    idlers = [open_idler(master.port, "carol") for _ in range(IDLERS)]
    try:
        held = rss_kib(workers)
        print(f"\n{IDLERS} IDLE sessions: imap workers' RSS {before} -> {held} KiB, "
              f"{(held - before) / IDLERS:.1f} KiB per idle session")  # fmt: skip
        busy = master.client("carol")
        busy.create_folder("Busy")
        for n in range(5):
            busy.append("Busy", message(f"busy {n}"))
        busy.select_folder("Busy")
        busy.add_flags([1, 2, 3], [b"\\Seen"])
        assert len(busy.fetch(busy.search(), ["FLAGS", "RFC822.SIZE"])) == 5
        master.deliver("carol", message("to every idler"))
        selector = selectors.DefaultSelector()
        pending: dict[socket.socket, bytes] = {}
        for sock in idlers:
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ)
            pending[sock] = b""
        deadline = time.monotonic() + TIMEOUT
        while pending and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=1):
                ready = key.fileobj
                assert isinstance(ready, socket.socket)
                pending[ready] += ready.recv(4096)
                if b"* 1 EXISTS\r\n" in pending[ready]:
                    del pending[ready]
                    selector.unregister(ready)
        assert not pending, f"{len(pending)} of {IDLERS} idle sessions heard no EXISTS"
        busy.logout()
    finally:
        for sock in idlers:
            sock.close()
