"""`sealmail migrate` (issue 24): a disk store filled over LMTP and IMAP, copied into PostgreSQL,
looks the same to IMAP clients before and after (UIDVALIDITY, UIDs, UIDNEXT, modseqs, flags and
keywords, internal dates, bodies, subscriptions, ACLs, another reader's \\Seen, quota limits);
a second run skips what is there; the next delivery gets the next UID."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from tests.support.peers import PeerUnavailable
from tests.support.pg_nodes import Node, add_user, start_nodes

MESSAGE = "Subject: {n}\r\nMessage-ID: <{n}@example.org>\r\n\r\nbody {n}\r\n"


def ok(result: tuple[str, Any]) -> Any:
    typ, data = result
    assert typ == "OK", data
    return data


def snapshot(node: Node, user: str) -> dict[str, Any]:
    """What `user`'s IMAP client sees of every mailbox it can list."""
    imap = node.imap(user)
    try:
        seen: dict[str, Any] = {"lsub": sorted(ok(imap.lsub()))}
        names = [re.sub(rb'^\(.*?\) "." ', b"", line).decode().strip('"')
                 for line in ok(imap.list())]
        seen["names"] = sorted(names)
        for name in sorted(names):
            status = ok(imap.status(name, "(MESSAGES UIDNEXT UIDVALIDITY HIGHESTMODSEQ)"))
            ok(imap.select(name, readonly=True))
            fetched = ok(imap.uid("FETCH", "1:*",
                                  "(FLAGS INTERNALDATE RFC822.SIZE MODSEQ BODY.PEEK[])"))
            seen[name] = (status, [item for item in fetched if item != b")"])
            if name == "INBOX":
                seen["acl"] = ok(imap.getacl(name))
                seen["quota"] = ok(imap.getquotaroot(name))
        return seen
    finally:
        imap.logout()


def fill(node: Node) -> None:
    for n in range(1, 6):
        assert node.lmtp(["alice@example.com"], MESSAGE.format(n=n).encode()) == {}
    alice = node.imap("alice")
    ok(alice.create("INBOX.Work"))
    ok(alice.subscribe("INBOX.Work"))
    ok(alice.append("INBOX.Work", r"(\Answered $Label)", '"01-Jan-2020 10:00:00 +0000"',
                    MESSAGE.format(n="w1").encode()))
    ok(alice.append("INBOX.Work", None, None, MESSAGE.format(n="w2").encode()))
    ok(alice.select("INBOX"))
    ok(alice.uid("STORE", "1,2", "+FLAGS", r"(\Flagged $Important)"))
    ok(alice.uid("STORE", "3", "+FLAGS", r"(\Deleted)"))
    ok(alice.expunge())
    ok(alice.setacl("INBOX", "bob", "lrs"))
    alice.logout()
    bob = node.imap("bob")
    ok(bob.select("user.alice"))
    ok(bob.uid("STORE", "4", "+FLAGS", r"(\Seen)"))  # bob's own seen state
    bob.logout()
    node.sealmail("mailbox", "-C", node.conf, "setquota", "user.alice", "10000", "100")


def test_migrate_keeps_what_clients_see(tmp_path: Path) -> None:
    from tests.support.postgres import shared_cluster

    try:
        dsn = shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    node = Node(tmp_path / "node", None, tmp_path / "sasldb2", services=("lmtpd", "imapd"))
    node.instance.write_config()
    for user in ("alice", "bob"):
        add_user(node, user)
    start_nodes([node])
    try:
        fill(node)
        before = {user: snapshot(node, user) for user in ("alice", "bob")}
    finally:
        node.stop()

    out = node.sealmail("migrate", "-C", node.conf, "--dsn", dsn)
    assert "copied 3 mailboxes (6 messages), 0 already there" in out
    again = node.sealmail("migrate", "-C", node.conf, "--dsn", dsn, "-q")
    assert "copied 0 mailboxes (0 messages), 3 already there" in again

    node.set_conf(store_backend="postgresql", store_dsn=dsn)
    start_nodes([node])
    try:
        after = {user: snapshot(node, user) for user in ("alice", "bob")}
        for user in before:  # one mailbox at a time: a readable difference
            for key in before[user]:
                assert (user, key, after[user].get(key)) == (user, key, before[user][key])
        assert after == before
        assert before["alice"]["INBOX"][1]  # the comparison compared something
        found = re.search(rb"UIDNEXT (\d+)", before["alice"]["INBOX"][0][0])
        assert found is not None
        uidnext = int(found[1])
        assert node.lmtp(["alice@example.com"], MESSAGE.format(n=6).encode()) == {}
        alice = node.imap("alice")
        ok(alice.select("INBOX", readonly=True))
        assert ok(alice.uid("SEARCH", "ALL"))[0].split()[-1] == str(uidnext).encode()
        alice.logout()
    finally:
        node.stop()


def test_migrate_refuses_another_mailbox_of_the_same_name(tmp_path: Path) -> None:
    from tests.support.postgres import shared_cluster

    try:
        dsn = shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    node = Node(tmp_path / "node", None, tmp_path / "sasldb2", services=())
    node.instance.write_config()
    add_user(node, "alice")
    node.set_conf(store_backend="postgresql", store_dsn=dsn)
    node.sealmail("mailbox", "-C", node.conf, "create", "user.alice")  # another, in the target
    node.set_conf(store_backend="disk")
    with pytest.raises(Exception, match="already in the target store"):
        node.sealmail("migrate", "-C", node.conf, "--dsn", dsn)
