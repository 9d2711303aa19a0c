"""Real Postfix delivering to sealmail over LMTP, as Postfix's CYRUS_README (the seed) sets it up.

The proof of the issue: a private Postfix 3.7 with `local_transport = lmtp:unix:<sealmail's
socket>` (seed section 6, "Single Instance Message Store", via section 5.3), fed over SMTP by
smtplib. Mail for one and for three users lands in sealmail's store with its body intact and a
Return-Path; the three copies of one message share one inode; an unknown user is a 550 5.1.1
that Postfix turns into a bounce. The same Postfix setup is also run against Cyrus and Dovecot,
which shows the harness itself is sound whatever sealmail does.

The sealmail socket is made group `postfix`, mode 0660: Postfix's lmtp client runs as the
`postfix` user, and the seed (2.1) warns that both user ids must be able to reach the socket.
"""

from __future__ import annotations

import email
import email.policy
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.peers import (
    POSTFIX,
    POSTQUEUE,
    CyrusInstance,
    DovecotInstance,
    LmtpClient,
    PeerUnavailable,
    PostfixInstance,
    require_binaries,
    traversable_tmpdir,
)

pytestmark = pytest.mark.peer

USERS = ("alice", "carol", "dave", "erin", "frank")
DOMAIN = "test.example"
BODY = (
    b"Hello,\r\n"
    b".a line that starts with a dot, stuffed twice on its way (SMTP, then LMTP)\r\n"
    b"..and one with two dots\r\n"
    b"\r\n"
    b"  indented line, trailing spaces kept   \r\n"
    b"last line\r\n"
)


def _message(subject: str, recipients: list[str], body: bytes = BODY) -> tuple[str, bytes]:
    message_id = f"<{uuid.uuid4().hex}@client.test.example>"
    head = (
        f"From: Sender <sender@remote.example>\r\n"
        f"To: {', '.join(recipients)}\r\n"
        f"Subject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
        "\r\n"
    )
    return message_id, head.encode() + body


def _require_postfix() -> None:
    try:
        require_binaries("postfix", POSTFIX, POSTQUEUE)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def peer_dir() -> Iterator[Path]:
    with traversable_tmpdir("smpfx-") as path:
        yield path


@pytest.fixture(scope="module")
def sealmail(peer_dir: Path) -> Iterator[SealmailInstance]:
    with SealmailInstance(peer_dir / "sealmail", USERS, socket_group="postfix") as instance:
        yield instance


@pytest.fixture(scope="module")
def postfix(peer_dir: Path, sealmail: SealmailInstance) -> Iterator[PostfixInstance]:
    _require_postfix()
    instance = PostfixInstance(
        peer_dir, {"local_transport": f"lmtp:unix:{sealmail.socket_path}"}, domain=DOMAIN
    )
    with instance:
        yield instance


def _find(instance: SealmailInstance, user: str, message_id: str) -> tuple[int, bytes]:
    """UID and bytes of the message with `message_id` in `user`'s INBOX (exactly one)."""
    found = []
    with instance.store() as store:
        for record in store.messages(f"user.{user}"):
            data = store.message_bytes(f"user.{user}", record.uid)
            if message_id.encode() in data:
                found.append((record.uid, data))
    assert len(found) == 1, f"{user}: {len(found)} copies of {message_id}"
    return found[0]


def _assert_delivered_intact(data: bytes, sender: str) -> None:
    parsed = email.message_from_bytes(data, policy=email.policy.compat32)
    # RFC 5321 4.4: the final delivery adds Return-Path with the envelope sender.
    assert parsed["Return-Path"] == f"<{sender}>", parsed["Return-Path"]
    _head, separator, body = data.partition(b"\r\n\r\n")
    assert separator, "stored message has no CRLF header/body separator"
    assert body == BODY


def test_single_recipient_lands_in_store(
    postfix: PostfixInstance, sealmail: SealmailInstance
) -> None:
    rcpt = f"alice@{DOMAIN}"
    message_id, message = _message("one recipient", [rcpt])
    queue_id = postfix.send("sender@remote.example", [rcpt], message)

    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]

    assert outcome.status == "sent" and outcome.dsn.startswith("2."), outcome
    assert sealmail.socket_path in outcome.relay
    _uid, data = _find(sealmail, "alice", message_id)
    _assert_delivered_intact(data, "sender@remote.example")
    assert f"Message-ID: {message_id}".encode() in data


def test_three_recipients_share_one_inode(
    postfix: PostfixInstance, sealmail: SealmailInstance
) -> None:
    users = ["carol", "dave", "erin"]
    rcpts = [f"{u}@{DOMAIN}" for u in users]
    message_id, message = _message("three recipients", rcpts)
    queue_id = postfix.send("sender@remote.example", rcpts, message)

    outcomes = postfix.wait_for_outcomes(queue_id, rcpts)

    assert all(o.status == "sent" and o.dsn.startswith("2.") for o in outcomes.values()), outcomes
    stats = []
    for user in users:
        uid, data = _find(sealmail, user, message_id)
        _assert_delivered_intact(data, "sender@remote.example")
        stats.append(sealmail.message_files(user)[uid])
    # Seed section 6: one message to many mailboxes of one partition is written once and
    # hard-linked, which needs all recipients in one LMTP transaction (local_transport).
    assert len({(st.st_dev, st.st_ino) for st in stats}) == 1, stats
    assert stats[0].st_nlink >= len(users)


def test_unknown_user_bounces_with_5_1_1(
    postfix: PostfixInstance, sealmail: SealmailInstance
) -> None:
    rcpt = f"nosuchuser@{DOMAIN}"
    sender = f"frank@{DOMAIN}"  # a sealmail user, so the bounce comes back through lmtpd
    message_id, message = _message("to nobody", [rcpt])
    queue_id = postfix.send(sender, [rcpt], message)

    outcome = postfix.wait_for_outcomes(queue_id, [rcpt])[rcpt]

    assert (outcome.status, outcome.dsn) == ("bounced", "5.1.1"), outcome
    assert "550" in outcome.text
    postfix.wait_for_log(rf"{queue_id}: to=<{rcpt}>.*dsn=5\.1\.1, status=bounced")
    # The non-delivery report (RFC 3464) reaches the sender's INBOX in sealmail.
    postfix.wait_for_log(rf"to=<{sender}>.*status=sent")
    _uid, report = _find(sealmail, "frank", message_id)
    assert b"report-type=delivery-status" in report
    assert f"Final-Recipient: rfc822; {rcpt}".encode() in report
    postfix.wait_for_empty_queue()


def test_lmtpd_logs_each_recipient_delivery(
    postfix: PostfixInstance, sealmail: SealmailInstance
) -> None:
    """The contract: lmtpd logs one line per recipient delivery, to stderr."""
    rcpts = [f"alice@{DOMAIN}", f"carol@{DOMAIN}"]

    def mentions() -> dict[str, int]:
        lines = sealmail.log_text().splitlines()
        return {r: sum(f"<{r}>" in line for line in lines) for r in rcpts}

    before = mentions()
    _message_id, message = _message("logged", rcpts)
    queue_id = postfix.send("sender@remote.example", rcpts, message)
    postfix.wait_for_outcomes(queue_id, rcpts)

    after = mentions()
    assert {r: after[r] - before[r] for r in rcpts} == dict.fromkeys(rcpts, 1), after


# ------------------------------------------------------------------------------------------
# The same Postfix setup against the peers sealmail replaces: proves the harness.


@pytest.mark.parametrize("server", ["cyrus", "dovecot"])
def test_postfix_delivers_to_peer(server: str) -> None:
    _require_postfix()
    users = ("alice", "bob", "carol")
    with traversable_tmpdir("smpeer-") as tmp:
        peer: CyrusInstance | DovecotInstance
        try:
            peer = CyrusInstance(tmp, users) if server == "cyrus" else DovecotInstance(tmp, users)
            peer.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            before = {u: peer.message_count(u) for u in users}
            overrides = {"local_transport": f"lmtp:unix:{peer.socket_path}"}
            with PostfixInstance(tmp, overrides, domain=DOMAIN) as postfix:
                rcpts = [f"{u}@{DOMAIN}" for u in users]
                _id, message = _message("to a peer", rcpts)
                queue_id = postfix.send("sender@remote.example", rcpts, message)
                outcomes = postfix.wait_for_outcomes(queue_id, rcpts)
                assert {o.status for o in outcomes.values()} == {"sent"}, outcomes

                unknown = f"nosuchuser@{DOMAIN}"
                _id, message = _message("to nobody", [unknown])
                queue_id = postfix.send("sender@remote.example", [unknown], message)
                outcome = postfix.wait_for_outcomes(queue_id, [unknown])[unknown]
                assert (outcome.status, outcome.dsn) == ("bounced", "5.1.1"), outcome
            assert {u: peer.message_count(u) - before[u] for u in users} == dict.fromkeys(users, 1)
        finally:
            peer.stop()


@pytest.mark.parametrize("server", ["sealmail", "cyrus", "dovecot"])
def test_refused_transactions_keep_the_session(server: str) -> None:
    """A pipelining client whose recipients are all refused keeps its session.

    Postfix's lmtp client pipelines DATA behind its RCPTs (RFC 2920 3.1) and sends RSET after a
    transaction that failed, reusing a cached connection for the next message; a server that
    counts the expected "503/554 no valid recipients" as a bad command would cut such a session
    and defer mail. Cyrus and Dovecot keep it open; so must sealmail.
    """
    with traversable_tmpdir("smpeer-") as tmp:
        peer: SealmailInstance | CyrusInstance | DovecotInstance
        if server == "sealmail":
            peer = SealmailInstance(tmp / "sealmail", ["alice"])
        elif server == "cyrus":
            peer = CyrusInstance(tmp, ["alice"])
        else:
            peer = DovecotInstance(tmp, ["alice"])
        try:
            peer.start()
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        try:
            with LmtpClient(peer.socket_path) as client:
                for number in range(30):
                    _id, message = _message(f"refused {number}", ["nosuchuser"])
                    refused = client.deliver("sender@remote.example", ["nosuchuser"], message)
                    assert refused.rcpt[0][1].code == 550, refused
                _id, message = _message("after the refusals", ["alice"])
                accepted = client.deliver("sender@remote.example", ["alice"], message)
                assert accepted.delivered == ["alice"], accepted
        finally:
            peer.stop()
