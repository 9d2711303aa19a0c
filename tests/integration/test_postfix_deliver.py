"""Real Postfix delivering through `sealmail deliver` from pipe(8), as the seed's sections 3 and 9.1
set it up:

    cyrus-deliver unix - n n - - pipe user=USER argv=SEALMAIL deliver -e -r ${sender}
        -m ${extension} ${user}

with `mailbox_transport` and `local_transport` = cyrus-deliver, and the seed's `flags=R` variant
(Postfix adds Return-Path, deliver gets no -r). Proof of issue 5: delivered mail (INBOX and
user+folder), an unknown user bounced with 5.1.1, a message deferred with 4.3.0 while lmtpd is down
and delivered once it is back and the queue is flushed, and one Return-Path with flags=R.

pipe(8) refuses to run commands as root, so the command runs as a system account made here with
`useradd -r` when missing; lmtpd's socket is made group-accessible to it (unix_socket_group). This
machine's Python lives under /root (mode 0700), out of that account's reach: when the installed
`sealmail` console script cannot run as it, the test writes an equivalent script that runs
Debian's /usr/bin/python3 on this checkout's sources.
"""

from __future__ import annotations

import email
import email.policy
import grp
import pwd
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.peers import (
    POSTFIX,
    POSTQUEUE,
    PeerUnavailable,
    PostfixInstance,
    require_binaries,
    traversable_tmpdir,
)
from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for

pytestmark = pytest.mark.peer

USERS = ("alice", "bob", "carol", "frank")
DOMAIN = "test.example"
SENDER = "sender@remote.example"
BODY = b"Hello,\r\n.a line that starts with a dot\r\n\r\nlast line\r\n"


def _require_postfix() -> None:
    try:
        require_binaries("postfix", POSTFIX, POSTQUEUE)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    with traversable_tmpdir("smpdl-") as path:
        yield path


@pytest.fixture(scope="module")
def pipe_user() -> str:
    return ensure_pipe_user()


@pytest.fixture(scope="module")
def sealmail_store(peer_dir: Path, pipe_user: str) -> Iterator[SealmailInstance]:
    group = grp.getgrgid(pwd.getpwnam(pipe_user).pw_gid).gr_name
    with SealmailInstance(peer_dir / "sealmail", USERS, socket_group=group) as instance:
        conf = str(instance.conf_path)
        instance.sealmail("mailbox", "-C", conf, "create", "user.alice.Lists")
        instance.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Lists", "anyone", "p")
        yield instance


@pytest.fixture(scope="module")
def postfix(
    peer_dir: Path, pipe_user: str, sealmail_store: SealmailInstance
) -> Iterator[PostfixInstance]:
    _require_postfix()
    command = sealmail_command_for(pipe_user, peer_dir)
    conf = sealmail_store.conf_path
    master_cf = (
        # The seed's section 9.1 lines; -C names this instance's imapd.conf.
        f"cyrus-deliver unix - n n - - pipe user={pipe_user} argv={command} deliver -C {conf} "
        "-e -r ${sender} -m ${extension} ${user}\n"
        f"cyrus-old unix - n n - - pipe flags=R user={pipe_user} argv={command} deliver -C {conf} "
        "-e -m ${extension} ${user}\n"
    )
    instance = PostfixInstance(
        peer_dir,
        {
            "mailbox_transport": "cyrus-deliver",
            "local_transport": "cyrus-deliver",
            "recipient_delimiter": "+",
            # frank is served by the flags=R variant.
            "transport_maps": f"inline:{{ {{ frank@{DOMAIN} = cyrus-old: }} }}",
        },
        master_cf,
        domain=DOMAIN,
    )
    with instance:
        yield instance


def _message(subject: str, to: str) -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4().hex}@client.test.example>"
    head = (
        f"From: Sender <{SENDER}>\r\nTo: {to}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\nDate: Mon, 23 Nov 2026 10:00:00 +0000\r\n\r\n"
    )
    return message_id, head.encode() + BODY


def _stored(instance: SealmailInstance, mailbox: str, message_id: str) -> list[bytes]:
    with instance.store() as store:
        return [
            data
            for record in store.messages(mailbox)
            if message_id.encode() in (data := store.message_bytes(mailbox, record.uid))
        ]


def _assert_intact(data: bytes) -> None:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    assert parsed.get_all("Return-Path") == [f"<{SENDER}>"]
    assert data.partition(b"\r\n\r\n")[2] == BODY


def test_delivered_to_inbox(postfix: PostfixInstance, sealmail_store: SealmailInstance) -> None:
    rcpt = f"alice@{DOMAIN}"
    message_id, message = _message("to the inbox", rcpt)
    queue_id = postfix.send(SENDER, [rcpt], message)
    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]
    assert (outcome.status, outcome.dsn, outcome.relay) == ("sent", "2.0.0", "cyrus-deliver")
    [data] = _stored(sealmail_store, "user.alice", message_id)
    _assert_intact(data)


def test_extension_goes_to_the_folder(
    postfix: PostfixInstance, sealmail_store: SealmailInstance
) -> None:
    rcpt = f"alice+Lists@{DOMAIN}"
    message_id, message = _message("to a folder", rcpt)
    queue_id = postfix.send(SENDER, [rcpt], message)
    assert postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt].status == "sent"
    [data] = _stored(sealmail_store, "user.alice.Lists", message_id)
    _assert_intact(data)


def test_unknown_user_bounces_with_5_1_1(postfix: PostfixInstance) -> None:
    rcpt = f"nobody@{DOMAIN}"
    _, message = _message("to nobody", rcpt)
    queue_id = postfix.send(SENDER, [rcpt], message)
    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]
    assert (outcome.status, outcome.dsn) == ("bounced", "5.1.1"), outcome
    assert "nobody: 550 5.1.1 Mailbox unknown" in outcome.text


def test_flags_r_stores_one_return_path(
    postfix: PostfixInstance, sealmail_store: SealmailInstance
) -> None:
    rcpt = f"frank@{DOMAIN}"
    message_id, message = _message("flags=R", rcpt)
    queue_id = postfix.send(SENDER, [rcpt], message)
    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]
    assert (outcome.status, outcome.relay) == ("sent", "cyrus-old"), outcome
    [data] = _stored(sealmail_store, "user.frank", message_id)
    _assert_intact(data)  # exactly one Return-Path, the envelope sender's


def test_lmtpd_down_defers_then_flush_delivers(
    postfix: PostfixInstance, sealmail_store: SealmailInstance
) -> None:
    rcpt = f"bob@{DOMAIN}"
    message_id, message = _message("while lmtpd is down", rcpt)
    sealmail_store.stop()
    try:
        queue_id = postfix.send(SENDER, [rcpt], message)
        deferred = postfix.wait_for_log(
            rf" {queue_id}: to=<{rcpt}>,.*relay=cyrus-deliver,.*dsn=4\.3\.0, status=deferred"
            r" \((?P<text>.*)\)$"
        )
        assert "cannot connect to lmtpd" in deferred["text"]
        assert any(entry["queue_id"] == queue_id for entry in postfix.queue())
    finally:
        users, sealmail_store.users = sealmail_store.users, []  # they exist: start lmtpd only
        try:
            sealmail_store.start()
        finally:
            sealmail_store.users = users
    postfix.flush()
    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]
    assert outcome.status == "sent", outcome
    [data] = _stored(sealmail_store, "user.bob", message_id)
    _assert_intact(data)
