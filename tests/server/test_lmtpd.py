"""lmtpd end to end: a real `sealmail lmtpd` process, Python's smtplib.LMTP, real sockets."""

from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance

from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.store.disk import DiskStore

MESSAGE = (
    b"From: sender@example.org\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: hello \xc3\xa9\r\n"
    b"Message-ID: <m1@example.org>\r\n"
    b"\r\n"
    b"line one\r\n"
    b".leading dot\r\n"
    b"8-bit \xe2\x82\xac\r\n"
)


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[SealmailInstance]:
    with SealmailInstance(
        tmp_path,
        users=["alice", "bob", "carol"],
        tcp=True,
        authless_tcp=True,
        imapd_conf_extra={"postuser": "bb", "lmtptimeout": "2", "maxmessagesize": "200000"},
    ) as running:
        yield running


def store_of(instance: SealmailInstance) -> DiskStore:
    return DiskStore.from_config(load_imapd_conf(instance.conf_path))


def lmtp(instance: SealmailInstance) -> smtplib.LMTP:
    client = smtplib.LMTP(instance.socket_path)
    code, _ = client.ehlo()  # smtplib.LMTP sends LHLO
    assert code == 250
    return client


def send_data(client: smtplib.LMTP, n_recipients: int, content: bytes) -> list[tuple[int, bytes]]:
    """DATA and one reply per accepted recipient (smtplib reads only the first by itself)."""
    replies = [client.data(content)]
    replies += [client.getreply() for _ in range(n_recipients - 1)]
    return replies


def bodies(store: DiskStore, mailbox: str) -> list[bytes]:
    return [store.message_bytes(mailbox, m.uid) for m in store.messages(mailbox)]


def test_single_delivery_on_the_unix_socket(instance: SealmailInstance) -> None:
    with lmtp(instance) as client:
        assert b"IGNOREQUOTA" in client.ehlo_resp  # type: ignore[operator]
        client.mail("sender@example.org")
        assert client.rcpt("alice@example.com")[0] == 250
        [(code, text)] = send_data(client, 1, MESSAGE)
        # Cyrus's shape: the session named in each 250, which the MTA logs (sealmail trace).
        assert code == 250 and re.fullmatch(rb"2\.1\.5 Ok SESSIONID=<[0-9A-F]{6,24}>", text)
    store = store_of(instance)
    [stored] = bodies(store, "user.alice")
    assert stored.startswith(b"Return-Path: <sender@example.org>\r\nReceived: from ")
    assert b"with LMTP id " in stored
    assert stored.endswith(MESSAGE)  # byte-exact, dot-unstuffed, 8-bit kept


def test_multi_recipient_replies_in_order_and_one_file(instance: SealmailInstance) -> None:
    with lmtp(instance) as client:
        client.mail("sender@example.org")
        for rcpt in ("alice@example.com", "bob@example.com", "carol@example.com"):
            assert client.rcpt(rcpt)[0] == 250
        assert client.rcpt("nobody@example.com")[:1] == (550,)
        replies = send_data(client, 3, MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b""))
    assert [code for code, _ in replies] == [250, 250, 250]
    store = store_of(instance)
    inodes = set()
    for user in ("alice", "bob", "carol"):
        [record] = store.messages(f"user.{user}")
        inodes.add(os.stat(store.mailbox_path(f"user.{user}") / f"{record.uid}.").st_ino)
    assert len(inodes) == 1  # single-instance store: one file, three links


def test_each_copy_has_its_log_lines_before_its_reply(instance: SealmailInstance) -> None:
    """The delivery thread holds a batch's lines and writes them in one go (sealmail.maillog),
    before the replies: by the last 250, every copy's two lines are in the log, whole."""
    with lmtp(instance) as client:
        client.mail("sender@example.org")
        for rcpt in ("alice@example.com", "bob@example.com", "carol@example.com"):
            assert client.rcpt(rcpt)[0] == 250
        replies = send_data(client, 3, MESSAGE.replace(b"<m1@", b"<logged@"))
        assert [code for code, _ in replies] == [250, 250, 250]
        lines = instance.log_text().splitlines()
    session = replies[0][1].decode().rsplit("SESSIONID=", 1)[1]
    for user in ("alice", "bob", "carol"):
        assert [line for line in lines if f"to=<{user}@example.com>" in line
                and line.endswith(f"status=sent (250 Ok SESSIONID={session})")], user
        assert [line for line in lines
                if line.endswith(f"Delivered: <logged@example.org> to mailbox: user.{user}")], user


def test_the_same_address_twice_gets_two_replies(instance: SealmailInstance) -> None:
    without_id = MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b"")
    with lmtp(instance) as client:
        client.mail("")
        client.rcpt("bob@example.com")
        client.rcpt("bob@example.com")
        assert [c for c, _ in send_data(client, 2, without_id)] == [250, 250]
    assert len(store_of(instance).messages("user.bob")) == 2
    with lmtp(instance) as client:  # with a Message-ID, the second copy is a duplicate
        client.mail("")
        client.rcpt("carol@example.com")
        client.rcpt("carol@example.com")
        assert [c for c, _ in send_data(client, 2, MESSAGE)] == [250, 250]
    assert len(store_of(instance).messages("user.carol")) == 1


def test_duplicate_suppression_across_sessions(instance: SealmailInstance) -> None:
    for _ in range(2):
        with lmtp(instance) as client:
            client.sendmail("sender@example.org", ["alice@example.com"], MESSAGE)
    assert len(store_of(instance).messages("user.alice")) == 1
    assert "eliminated duplicate" in instance.log.read_text()


def test_mailboxes_made_or_removed_meanwhile_count_from_the_next_transaction(
    instance: SealmailInstance,
) -> None:
    """RCPT lookups are kept while the namespace stamp holds, read once per transaction
    (sealmail.delivery.recipient.StableLookups): another process's CREATE or DELETE is seen by
    the session's next transaction."""
    with lmtp(instance) as client:
        client.mail("sender@example.org")
        assert client.rcpt("dave@example.com")[0] == 550
        assert client.rcpt("alice@example.com")[0] == 250
        assert send_data(client, 1, MESSAGE)[0][0] == 250
        instance.create_user("dave")
        with store_of(instance) as store:
            store.delete_mailbox("user.carol")
        client.mail("sender@example.org")
        assert client.rcpt("dave@example.com")[0] == 250
        assert client.rcpt("carol@example.com")[0] == 550
        assert send_data(client, 1, MESSAGE.replace(b"<m1@", b"<m2@"))[0][0] == 250
    with store_of(instance) as store:
        assert len(store.messages("user.dave")) == 1


def test_tcp_with_dash_a(instance: SealmailInstance) -> None:
    with smtplib.LMTP(*instance.tcp_address) as client:
        client.sendmail("sender@example.org", ["bob@example.com"], MESSAGE)
    [stored] = bodies(store_of(instance), "user.bob")
    assert b"Received: from " in stored and b"[127.0.0.1]" in stored


def test_recipient_normalisation_and_plus_addressing(instance: SealmailInstance) -> None:
    store = store_of(instance)
    store.create_mailbox("user.alice.Lists")
    store.set_acl("user.alice.Lists", "anyone", "p")
    store.create_mailbox("user.alice.Private")  # no post right: falls back to the INBOX
    store.create_mailbox("user.alice.My Folder")
    store.set_acl("user.alice.My Folder", "anyone", "+p")
    store.create_mailbox("user.alice.Caf&AOk-")
    store.set_acl("user.alice.Caf&AOk-", "anyone", "+p")
    store.create_mailbox("Projects")
    store.set_acl("Projects", "anyone", "+p")
    store.create_mailbox("Closed")
    with lmtp(instance) as client:
        client.mail("s@example.org")
        for rcpt in (
            "ALICE+Lists@Example.COM",
            "alice+Private@example.com",
            '"alice+My Folder"@example.com',
            "alice+Caf&AOk-@example.com",
            "bb+Projects@example.com",
            "+Projects@example.com",
        ):
            assert client.rcpt(rcpt)[0] == 250, rcpt
        assert client.rcpt("alice+lists@example.com")[0] == 250  # detail is case-sensitive
        assert client.rcpt("bb+Closed@example.com")[:1] == (550,)
        assert client.rcpt("bb+Nowhere@example.com")[:1] == (550,)
        replies = send_data(client, 7, MESSAGE.replace(b"Message-ID: <m1@example.org>\r\n", b""))
    assert all(code == 250 for code, _ in replies)
    counts = {
        name: len(store.messages(name))
        for name in (
            "user.alice",
            "user.alice.Lists",
            "user.alice.Private",
            "user.alice.My Folder",
            "user.alice.Caf&AOk-",
            "Projects",
        )
    }
    assert counts == {
        "user.alice": 2,
        "user.alice.Lists": 1,
        "user.alice.Private": 0,
        "user.alice.My Folder": 1,
        "user.alice.Caf&AOk-": 1,
        "Projects": 2,
    }
    # Each +detail that fell back to the INBOX says why in lmtpd's log, as Cyrus does.
    log = instance.log_text()
    assert (
        "to=<alice+Private@example.com>: could not deliver to user.alice.Private "
        "(no p right for anyone), delivering to user.alice"
    ) in log
    assert (
        "to=<alice+lists@example.com>: could not deliver to user.alice.lists "
        "(no such mailbox), delivering to user.alice"
    ) in log
    assert log.count("could not deliver to") == 2


def test_error_codes(instance: SealmailInstance) -> None:
    store = store_of(instance)
    store.set_quota("user.carol", 1, None)  # 1 KiB
    with lmtp(instance) as client:
        client.mail("s@example.org")
        assert client.rcpt("nobody@example.com")[:2] == (550, b"5.1.1 Mailbox unknown")
        assert client.rcpt("carol@example.com")[0] == 250  # under quota so far
        [(code, text)] = send_data(client, 1, MESSAGE + b"x" * 2000 + b"\r\n")
        assert code == 250  # this one fills the quota
        client.mail("s@example.org")
        assert client.rcpt("carol@example.com")[:2] == (452, b"4.2.2 Over quota")
        client.rset()
        client.mail("s@example.org")
        client.rcpt("bob@example.com")
        client.rcpt("alice@example.com")
        assert (
            send_data(client, 2, b"Subject: x\r\n\r\nnul \x00\r\n")
            == [(554, b"5.6.0 Message contains NUL characters")] * 2
        )
        client.mail("s@example.org")
        client.rcpt("bob@example.com")
        assert send_data(client, 1, b"not a header line\r\n\r\nbody\r\n")[0][0] == 554
        client.mail("s@example.org")
        client.rcpt("bob@example.com")
        assert send_data(client, 1, b"Subject: big\r\n\r\n" + b"y" * 300_000)[0][:1] == (552,)
        code, text = client.docmd("EHLO", "client.example")
        assert code == 500 and b"LHLO" in text
        assert client.noop()[0] == 250
    assert store.messages("user.bob") == []


def test_over_quota_can_be_ignored_and_be_permanent(tmp_path: Path) -> None:
    with SealmailInstance(
        tmp_path, users=["dan"], imapd_conf_extra={"lmtp_over_quota_perm_failure": "yes"}
    ) as inst:
        store = store_of(inst)
        store.set_quota("user.dan", None, 0)
        with lmtp(inst) as client:
            client.mail("s@example.org")
            assert client.rcpt("dan@example.com")[:2] == (552, b"5.2.2 Over quota")
            assert client.rcpt("dan@example.com", ["IGNOREQUOTA"])[0] == 250
            assert send_data(client, 1, MESSAGE)[0][0] == 250
        assert len(store.messages("user.dan")) == 1


def test_per_user_concurrency_limit_answers_busy(tmp_path: Path) -> None:
    with SealmailInstance(
        tmp_path, users=["erin"], imapd_conf_extra={"lmtp_user_concurrency_limit": "1"}
    ) as inst:
        store = store_of(inst)
        with store.delivery_slot("erin"), lmtp(inst) as client:  # another delivery holds it
            client.mail("s@example.org")
            client.rcpt("erin@example.com")
            assert send_data(client, 1, MESSAGE)[0][:2] == (
                451,
                b"4.4.5 Mailbox busy, try again later",
            )
        assert store.messages("user.erin") == []


def raw_session(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.settimeout(10)
    return sock


def read_reply(sock: socket.socket) -> bytes:
    data = b""
    while not data.endswith(b"\r\n") or data.splitlines()[-1][3:4] == b"-":
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_client_vanishing_mid_data_stores_nothing(instance: SealmailInstance) -> None:
    sock = raw_session(instance.socket_path)
    read_reply(sock)
    sock.sendall(b"LHLO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
    replies = b""
    while replies.count(b"\r\n") < 2 or b"354" not in replies:
        replies += sock.recv(4096)
    sock.sendall(b"Subject: half\r\n\r\nhalf a message")
    sock.close()
    with lmtp(instance) as client:  # the server goes on
        assert client.noop()[0] == 250
    assert store_of(instance).messages("user.alice") == []


def test_slow_client_is_timed_out(instance: SealmailInstance) -> None:
    sock = raw_session(instance.socket_path)
    assert read_reply(sock).startswith(b"220 ")
    assert read_reply(sock).startswith(b"421 4.4.2")  # lmtptimeout: 2
    assert sock.recv(10) == b""


def test_bad_input_gets_errors_and_the_session_goes_on(instance: SealmailInstance) -> None:
    sock = raw_session(instance.socket_path)
    read_reply(sock)
    for line, code in (
        (b"FROB\r\n", b"500"),
        (b"MAIL FROM:<s@example.org>\r\n", b"503"),
        (b"LHLO x\r\n", b"250"),
        (b"RCPT TO:<alice@example.com>\r\n", b"503"),
        (b"MAIL FROM:<s@example.org> SIZE=999999999\r\n", b"552"),
        (b"DATA\r\n", b"503"),
        (b"A" * 10000 + b"\r\n", b"500"),
        (b"NOOP\r\n", b"250"),
    ):
        sock.sendall(line)
        assert read_reply(sock)[:3] == code, line
    sock.close()


def test_kill_9_during_data_leaves_nothing_half_written(tmp_path: Path) -> None:
    inst = SealmailInstance(tmp_path, users=["frank"])
    inst.start()
    try:
        sock = raw_session(inst.socket_path)
        read_reply(sock)
        sock.sendall(
            b"LHLO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<frank@example.com>\r\nDATA\r\n"
        )
        replies = b""
        while b"354" not in replies:
            replies += sock.recv(4096)
        sock.sendall(b"Subject: big\r\n\r\n" + b"z" * 78 + b"\r\n")
        for _ in range(2000):
            sock.sendall(b"z" * 78 + b"\r\n")
        assert inst.pid is not None
        os.kill(inst.pid, signal.SIGKILL)
        got = b""
        sock.settimeout(5)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
        assert b"250 2.1.5" not in got
    finally:
        inst.stop()
    store = store_of(inst)
    assert store.messages("user.frank") == []
    assert store.reconstruct("user.frank") == []
    assert inst.sealmail("reconstruct", "-C", str(inst.conf_path)) == ""


def test_bdat_chunks_on_a_real_socket(instance: SealmailInstance) -> None:
    sock = raw_session(instance.socket_path)
    read_reply(sock)
    body = b"Subject: chunked\r\n\r\nbinary-safe \x00? no: text only\r\n".replace(b"\x00", b"0")
    first, second = body[:10], body[10:]
    sock.sendall(
        b"LHLO x\r\nMAIL FROM:<s@example.org>\r\nRCPT TO:<alice@example.com>\r\n"
        + b"BDAT %d\r\n" % len(first)
        + first
        + b"BDAT %d LAST\r\n" % len(second)
        + second
    )
    replies = b""
    while not re.search(rb"250 2.0.0 10 octets received\r\n250 2.1.5 Ok SESSIONID=<\w+>\r\n$",
                        replies):
        chunk = sock.recv(4096)
        assert chunk, replies  # the server closed before the final reply
        replies += chunk
    sock.close()
    [stored] = bodies(store_of(instance), "user.alice")
    assert stored.endswith(body)


def test_a_stale_socket_file_is_replaced(tmp_path: Path) -> None:
    stale = tmp_path / "socket" / "lmtp"
    stale.parent.mkdir(parents=True)
    leftover = socket.socket(socket.AF_UNIX)
    leftover.bind(str(stale))  # a crashed server leaves its socket file behind
    leftover.close()
    with SealmailInstance(tmp_path, users=["gina"]) as inst, lmtp(inst) as client:
        assert client.noop()[0] == 250
