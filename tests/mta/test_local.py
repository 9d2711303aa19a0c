"""local(8): aliases, .forward, the three mailbox routes and mbox files, with fake accounts,
a fake pass_to (the queue manager's hand-off) and a fake resubmit."""

from __future__ import annotations

import asyncio
import grp
import os
import pwd
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.support.loops import LoopRunner
from tests.support.peers import traversable_tmpdir

from sealmail.mta.agents import DeliveryRequest, QueuedRecipient, RecipientResult, Status
from sealmail.mta.agents.local import (
    Account,
    LocalAgent,
    MailboxError,
    append_mbox,
    expand_local_macros,
    passwd_account,
)
from sealmail.mta.agents.pipe import PipeAgent
from sealmail.mta.aliases import build_alias_database
from sealmail.mta.config import MainConfig
from sealmail.mta.config.main_cf import parse_main_cf
from sealmail.mta.config.master_cf import parse_master_cf
from sealmail.mta.queue import MessageContent

MESSAGE = b"Subject: hi\r\n\r\nFrom the start\r\nbody\r\n"
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="commands run as nobody need root")


class Harness:
    """A LocalAgent over a temporary spool, with recorded hand-offs."""

    def __init__(self, root: Path, main_cf: str, users: Sequence[str] = ("alice", "bob"), *,
                 aliases: str | None = None, run: LoopRunner = asyncio.run) -> None:
        self.root = root
        self.run = run  # the run_on_loop fixture where commands really run
        if aliases is not None:
            (root / "aliases").write_text(aliases)
            build_alias_database(root / "aliases")
            main_cf = f"alias_maps = hash:{root}/aliases\n" + main_cf
        self.spool = root / "spool"
        self.spool.mkdir(exist_ok=True)
        self.users = {}
        for name in users:
            home = root / "home" / name
            home.mkdir(parents=True, exist_ok=True)
            self.users[name] = Account(name, os.geteuid(), os.getegid(), str(home))
        self.passed: list[tuple[str, str, list[QueuedRecipient]]] = []
        self.resubmitted: list[tuple[str, list[str], bytes]] = []
        text = (f"mydestination = example.com\nmyorigin = example.com\n"
                f"mail_spool_directory = {self.spool}\ndeliver_lock_attempts = 2\n"
                "alias_maps =\n" + main_cf)
        self.settings = MainConfig.from_document(parse_main_cf(text), hostname="mx.example.com")
        self.agent = LocalAgent(self.settings, pass_to=self.pass_to, resubmit=self.resubmit,
                                accounts=self.account, clock=lambda: 0.0, lock_delay=0.0)
        self.message = root / "message"
        self.message.write_bytes(MESSAGE)

    def account(self, name: str) -> Account | None:
        return self.users.get(name) or (passwd_account(name) if name == "nobody" else None)

    async def pass_to(self, request: DeliveryRequest) -> list[RecipientResult]:
        assert request.message == MessageContent(self.message) and request.queue_id == "QID"
        self.passed.append((request.transport, request.nexthop, list(request.recipients)))
        return [RecipientResult(r.index, Status.SENT, "2.1.5", "250 2.1.5 Ok", "lmtp")
                for r in request.recipients]

    async def resubmit(self, sender: str, recipients: Sequence[str], content: bytes) -> str:
        self.resubmitted.append((sender, list(recipients), content))
        return f"RESUB{len(self.resubmitted)}"

    def deliver(self, *addresses: str, sender: str = "s@remote.example",
                content: bytes | None = None) -> list[tuple[Status, str, str]]:
        if content is not None:
            self.message.write_bytes(content)
        request = DeliveryRequest(
            "QID", sender, tuple(QueuedRecipient(a, a, i) for i, a in enumerate(addresses)),
            "local", "mx.example.com", MessageContent(self.message),
            self.message.stat().st_size, 0.0, self.settings)
        results = self.run(self.agent.deliver(request))
        assert [r.index for r in results] == list(range(len(addresses)))
        return [(r.status, r.dsn, r.text) for r in results]

    def mbox(self, user: str) -> bytes:
        return (self.spool / user).read_bytes()


@pytest.fixture
def root() -> Iterator[Path]:
    with traversable_tmpdir("smlocal-") as path:
        out = path / "out"
        out.mkdir()
        out.chmod(0o777)
        yield path


def test_unix_users_get_mbox_with_envelope_lines(root: Path) -> None:
    h = Harness(root, "")
    assert h.deliver("Alice@example.com") == [(Status.SENT, "2.0.0", "delivered to mailbox")]
    h.deliver("alice@example.com", sender="")
    data = h.mbox("alice")
    first, second = data.split(b"\n\nFrom ", 1)
    assert first.split(b"\n")[:4] == [
        b"From s@remote.example  " + first.split(b"  ", 1)[1].split(b"\n")[0],
        b"Return-Path: <s@remote.example>", b"Delivered-To: Alice@example.com", b"Subject: hi"]
    assert b"\n>From the start\nbody" in first
    assert second.startswith(b"MAILER-DAEMON  ") and b"Return-Path: <>" in second
    assert data.endswith(b"body\n\n")


def test_unknown_user_bounces_and_fallback_transport_takes_it(root: Path) -> None:
    h = Harness(root, "")
    assert h.deliver("zed@example.com") == [(Status.BOUNCED, "5.1.1", 'unknown user: "zed"')]
    h = Harness(root, "fallback_transport = cyrus:unix:/var/imap/socket/lmtp\n")
    assert h.deliver("zed@example.com", "bob@example.com") == [
        (Status.SENT, "2.1.5", "250 2.1.5 Ok"), (Status.SENT, "2.0.0", "delivered to mailbox")]
    assert [(t, n, [r.address for r in rs]) for t, n, rs in h.passed] == [
        ("cyrus", "unix:/var/imap/socket/lmtp", ["zed@example.com"])]
    assert (h.spool / "bob").exists() and not (h.spool / "zed").exists()


def test_mailbox_transport_takes_every_mailbox_delivery(root: Path) -> None:
    h = Harness(root, "mailbox_transport = cyrus-deliver\nrecipient_delimiter = +\n",
                aliases="staff: alice, bob\n")
    results = h.deliver("alice+Lists@example.com", "staff@example.com", "nouser@example.com")
    assert [r[0] for r in results] == [Status.SENT] * 3
    assert [(t, n, r[0].address, r[0].original, r[0].index) for t, n, r in h.passed] == [
        ("cyrus-deliver", "mx.example.com", "alice+Lists@example.com",
         "alice+Lists@example.com", 0),
        ("cyrus-deliver", "mx.example.com", "alice@example.com", "staff@example.com", 1),
        ("cyrus-deliver", "mx.example.com", "bob@example.com", "staff@example.com", 1),
        ("cyrus-deliver", "mx.example.com", "nouser@example.com", "nouser@example.com", 2)]
    assert not list(h.spool.iterdir())


def test_recipient_delimiter_alias_lookup_tries_full_then_user(root: Path) -> None:
    h = Harness(root, "recipient_delimiter = +\n", aliases="carol+work: bob\ncarol: alice\n")
    h.deliver("carol+work@example.com", "carol+home@example.com")
    assert h.mbox("bob").count(b"Delivered-To: carol+work@example.com") == 1
    assert h.mbox("alice").count(b"Delivered-To: carol+home@example.com") == 1


@needs_root
def test_alias_to_two_users_and_a_pipe(root: Path, run_on_loop: LoopRunner) -> None:
    out = root / "out" / "piped"
    h = Harness(root, "", aliases=f"staff: alice, Bob, alice@example.com,\n"
                                  f'  "|cat > {out}; id -u >> {out}.uid"\n', run=run_on_loop)
    assert [r[0] for r in h.deliver("staff@example.com")] == [Status.SENT]
    # alice appears twice in the expansion: one copy (duplicate elimination).
    assert h.mbox("alice").count(b"Subject: hi") == 1
    assert h.mbox("bob").count(b"Subject: hi") == 1
    assert out.read_bytes().startswith(b"From s@remote.example  ")
    assert b"Delivered-To: staff@example.com\n" in out.read_bytes()
    # alias commands of a table with no owner run as default_privs, never root
    nobody = passwd_account("nobody")
    assert nobody is not None
    assert out.with_suffix(".uid").read_text().strip() == str(nobody.uid)


def test_commands_and_files_follow_allow_mail_to(root: Path) -> None:
    h = Harness(root, "allow_mail_to_commands = forward\nallow_mail_to_files = forward\n",
                aliases="x: |/bin/true, /tmp/never\n")
    status, dsn, text = h.deliver("x@example.com")[0]
    assert (status, dsn) == (Status.BOUNCED, "5.7.1") and "allow_mail_to_" in text


def test_forward_resubmits_remote_and_keeps_a_copy(root: Path) -> None:
    h = Harness(root, "recipient_delimiter = +\n")
    home = Path(h.users["alice"].home)
    (home / ".forward").write_text("# forward\nfriend@remote.example, \\alice\nbob\n")
    assert h.deliver("alice@example.com")[0][0] is Status.SENT
    assert h.resubmitted == [("s@remote.example", ["friend@remote.example"],
                              b"Delivered-To: alice@example.com\r\n" + MESSAGE)]
    assert h.mbox("alice").count(b"Subject: hi") == 1
    assert h.mbox("bob").count(b"Subject: hi") == 1
    # .forward+ext is tried first when the address has an extension
    (home / ".forward+lists").write_text("bob\n")
    h.deliver("alice+lists@example.com")
    assert h.mbox("bob").count(b"Subject: hi") == 2
    assert h.mbox("alice").count(b"Subject: hi") == 1


def test_forward_to_self_delivers_to_the_mailbox(root: Path) -> None:
    h = Harness(root, "")
    (Path(h.users["alice"].home) / ".forward").write_text("alice@example.com\n")
    assert h.deliver("alice@example.com")[0][0] is Status.SENT
    assert h.mbox("alice").count(b"Subject: hi") == 1


def test_delivered_to_loop_bounces(root: Path) -> None:
    h = Harness(root, "alias_maps = inline:{ list=bob }\n")
    looped = b"Delivered-To: LIST@example.com\r\n" + MESSAGE
    assert h.deliver("list@example.com", content=looped) == [
        (Status.BOUNCED, "5.4.6", "mail forwarding loop for list@example.com")]
    assert not (h.spool / "bob").exists()


def test_alias_loop_between_entries_is_stopped(root: Path) -> None:
    h = Harness(root, "alias_maps = inline:{ a=b, b=a }\n")
    status, dsn, _ = h.deliver("a@example.com")[0]
    assert status is Status.BOUNCED and dsn == "5.4.6"


def test_owner_alias_becomes_the_envelope_sender(root: Path) -> None:
    h = Harness(root, "", aliases="staff: far@remote.example\nowner-staff: alice\n")
    h.deliver("staff@example.com")
    assert [(s, r) for s, r, _ in h.resubmitted] == [
        ("owner-staff@example.com", ["far@remote.example"])]


def test_include_file(root: Path) -> None:
    members = root / "members"
    members.write_text("alice\n# c\nbob, far@remote.example\n")
    h = Harness(root, f"alias_maps = inline:{{ list=:include:{members} }}\n")
    assert h.deliver("list@example.com")[0][0] is Status.SENT
    assert (h.spool / "alice").exists() and (h.spool / "bob").exists()
    assert h.resubmitted[0][1] == ["far@remote.example"]


def test_forward_path_macros() -> None:
    values = {"home": "/h", "recipient_delimiter": "+", "extension": ""}
    assert expand_local_macros("$home/.forward${recipient_delimiter}${extension}", values) is None
    assert expand_local_macros("$home/.forward", values) == "/h/.forward"
    assert expand_local_macros("${home}/x${extension?y}", values) == "/h/x"


def test_mbox_lock_busy_defers_and_symlinks_are_refused(root: Path) -> None:
    h = Harness(root, "")
    (h.spool / "alice.lock").write_text("")
    assert h.deliver("alice@example.com")[0][:2] == (Status.DEFERRED, "4.2.0")
    (h.spool / "alice.lock").unlink()
    (h.spool / "bob").symlink_to(root / "elsewhere")
    assert h.deliver("bob@example.com")[0][:2] == (Status.BOUNCED, "5.2.0")
    assert not (root / "elsewhere").exists()


def test_mbox_size_limit_keeps_the_mailbox_whole(tmp_path: Path) -> None:
    box = tmp_path / "box"
    append_mbox(box, b"x" * 10, owner=None, size_limit=15)
    with pytest.raises(MailboxError, match="mailbox_size_limit"):
        append_mbox(box, b"y" * 10, owner=None, size_limit=15)
    assert box.read_bytes() == b"x" * 10
    assert not (tmp_path / "box.lock").exists()


@needs_root
def test_alias_file_destinations_run_with_default_privs(root: Path) -> None:
    private = root / "private"
    private.mkdir(mode=0o755)
    shared = root / "out" / "archive"
    h = Harness(root, "", aliases=f"arch: {shared}\nsneaky: {private}/file\n")
    assert h.deliver("arch@example.com")[0][0] is Status.SENT
    nobody = passwd_account("nobody")
    assert nobody is not None and shared.stat().st_uid == nobody.uid
    assert shared.read_bytes().startswith(b"From s@remote.example  ")
    assert h.deliver("sneaky@example.com")[0][:2] == (Status.BOUNCED, "5.2.0")
    assert not (private / "file").exists()


@needs_root
def test_command_exit_status_follows_pipe_rules(root: Path, run_on_loop: LoopRunner) -> None:
    h = Harness(root, "", aliases='soft: "|exit 75"\nhard: "|echo 5.2.2 mailbox full; exit 1"\n',
                run=run_on_loop)
    assert h.deliver("soft@example.com")[0] == (Status.DEFERRED, "4.3.0", "temporary failure")
    assert h.deliver("hard@example.com")[0] == (Status.BOUNCED, "5.2.2", "mailbox full")


def test_luser_relay_takes_unknown_users_with_local_macros(root: Path) -> None:
    h = Harness(root, "luser_relay = catch+$local@remote.example\nrecipient_delimiter = +\n")
    assert h.deliver("zed+x@example.com")[0][0] is Status.SENT
    assert [r for _, r, _ in h.resubmitted] == [["catch+zed+x@remote.example"]]


def test_delivered_to_follows_expansion_unless_frozen(root: Path) -> None:
    aliases = "staff: alice, far@remote.example\n"
    frozen = Harness(root, "", aliases=aliases)
    frozen.deliver("staff@example.com")
    assert b"Delivered-To: staff@example.com\n" in frozen.mbox("alice")
    (frozen.spool / "alice").unlink()
    moving = Harness(root, "frozen_delivered_to = no\n", aliases=aliases)
    moving.deliver("staff@example.com")
    assert b"Delivered-To: alice@example.com\n" in moving.mbox("alice")
    assert moving.resubmitted[0][2].startswith(b"Delivered-To: staff@example.com\r\n")


@pytest.fixture(scope="module")
def store_and_command() -> Iterator[tuple[Any, str, str]]:
    """A running store with alice (and alice.Lists) and frank, and a `sealmail` the pipe user
    can run (the helpers of tests/integration/test_postfix_deliver.py)."""
    if os.geteuid() != 0:
        pytest.skip("the pipe user needs root to run commands as another account")
    from tests.support.instance import SealmailInstance
    from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for

    user = ensure_pipe_user()
    group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
    with traversable_tmpdir("smlocal9-") as path:
        command_path = sealmail_command_for(user, path)
        with SealmailInstance(path / "store", ("alice", "frank"), socket_group=group) as store:
            conf = str(store.conf_path)
            store.sealmail("mailbox", "-C", conf, "create", "user.alice.Lists")
            store.sealmail("mailbox", "-C", conf, "setacl", "user.alice.Lists", "anyone", "p")
            yield store, command_path, user


def test_alias_then_mailbox_transport_cyrus_deliver_into_the_store(
        root: Path, store_and_command: tuple[Any, str, str]) -> None:
    """Seed 2.1/3: local(8) expands the alias and hands each mailbox delivery to cyrus-deliver
    (pipe + `sealmail deliver`), which stores it; an owner-NAME alias changes the sender."""
    store, sealmail_command, user = store_and_command
    conf = store.conf_path
    master = parse_master_cf(
        f"cyrus-deliver unix - n n - - pipe user={user} argv={sealmail_command} deliver "
        f"-C {conf} -e -r ${{sender}} -m ${{extension}} ${{user}}\n")
    h = Harness(root, "mailbox_transport = cyrus-deliver\nrecipient_delimiter = +\n",
                users=(), aliases="team: alice+Lists, frank\nowner-team: alice\n")
    service = master.get("cyrus-deliver")
    assert service is not None
    pipe = PipeAgent(service, service.effective(h.settings))
    senders: list[str] = []

    async def pass_to(handed: DeliveryRequest) -> list[RecipientResult]:
        senders.append(handed.sender)
        assert handed.transport == "cyrus-deliver"
        return await pipe.deliver(handed)

    h.agent.pass_to = pass_to
    marker = f"<{root.name}-team@test>".encode()
    results = h.deliver("team@example.com", "ghost@example.com",
                        content=b"Message-ID: " + marker + b"\r\n" + MESSAGE)
    assert results[0][0] is Status.SENT
    assert results[1][:2] == (Status.BOUNCED, "5.1.1")  # deliver exits EX_NOUSER
    assert senders == ["owner-team@example.com", "owner-team@example.com", "s@remote.example"]
    with store.store() as opened:
        for mailbox in ("user.alice.Lists", "user.frank"):
            found = [d for r in opened.messages(mailbox)
                     if marker in (d := opened.message_bytes(mailbox, r.uid))]
            assert len(found) == 1, mailbox
            assert b"Return-Path: <owner-team@example.com>" in found[0]
