"""Sieve at delivery: a user's active script decides where the copies go, on a real store."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from sealmail.config.imapd_conf import parse_imapd_conf
from sealmail.delivery.engine import DeliveryEngine, Envelope
from sealmail.delivery.outbound import OutboundError
from sealmail.delivery.sieve import SieveFilter
from sealmail.store.memory import MemoryStore
from sealmail.store.sieve_scripts import SieveScriptStore
from sealmail.store.sieve_tracking import SieveTracking

MESSAGE = (
    b"From: Bob <bob@example.org>\r\n"
    b"To: alice@example.com\r\n"
    b"Subject: [list] hello\r\n"
    b"Message-ID: <s1@example.org>\r\n"
    b"\r\n"
    b"body\r\n"
)


@dataclass
class FakeOutbound:
    sent: list[tuple[str, tuple[str, ...], bytes]] = field(default_factory=list)
    broken: bool = False

    def send(self, sender: str, recipients: Sequence[str], message: bytes) -> None:
        if self.broken:
            raise OutboundError("the MTA is down")
        self.sent.append((sender, tuple(recipients), message))


@dataclass
class Setup:
    engine: DeliveryEngine
    store: MemoryStore
    scripts: SieveScriptStore
    outbound: FakeOutbound

    def script(self, text: str, user: str = "alice") -> None:
        self.scripts.put(user, "main", text.encode())
        self.scripts.set_active(user, "main")

    def deliver(
        self, content: bytes = MESSAGE, *users: str, sender: str = "bob@example.org"
    ) -> list[tuple[int, str]]:
        recipients = tuple(
            self.engine.check_recipient(u, "example.com", ignore_quota=False)
            for u in users or ("alice",)
        )
        envelope = Envelope(sender=sender, recipients=recipients, session_id="S")
        return [(r.code, r.enhanced or "") for r in self.engine.deliver(envelope, content)]

    def count(self, mailbox: str) -> int:
        return len(self.store.messages(mailbox))


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[Setup]:
    config = parse_imapd_conf(
        f"configdirectory: {tmp_path}/c\npartition-default: {tmp_path}/p\n"
        "sieve_vacation_min_response: 0\n"
    )
    with MemoryStore.from_config(config) as store:
        for name in ("user.alice", "user.alice.Lists", "user.bob"):
            store.create_mailbox(name)
        scripts = SieveScriptStore.from_config(config)
        outbound = FakeOutbound()
        tracking = SieveTracking(tmp_path / "c" / "sieve.db")
        sieve = SieveFilter(config, store, scripts, tracking, outbound)
        yield Setup(
            DeliveryEngine(config, store, store.duplicates(), sieve), store, scripts, outbound
        )


def test_without_a_script_mail_goes_to_inbox(setup: Setup) -> None:
    assert setup.deliver() == [(250, "2.1.5")]
    assert setup.count("user.alice") == 1


def test_fileinto_with_flags(setup: Setup) -> None:
    setup.script(
        'require ["fileinto", "imap4flags"];\n'
        'if header :contains "subject" "[list]" {\n'
        '  fileinto :flags "\\\\Flagged" "INBOX.Lists"; stop;\n}\n'
    )
    assert setup.deliver() == [(250, "2.1.5")]
    [record] = setup.store.messages("user.alice.Lists")
    assert setup.count("user.alice") == 0
    assert record.flags == ("\\Flagged",)  # imap4flags lower-cases; the index spells it right


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The log lines that say mail went to the INBOX instead of the folder asked for."""
    return [r.getMessage() for r in caplog.records if "could not deliver to" in r.getMessage()]


def test_fileinto_missing_folder_keeps_and_create_creates(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setup.script('require ["fileinto"];\nfileinto "Nowhere";\n')
    setup.deliver()
    assert setup.count("user.alice") == 1
    assert fallbacks(caplog) == [
        "alice: to=<alice@example.com>: sieve fileinto 'Nowhere': could not deliver to "
        "user.alice.Nowhere (no such mailbox), delivering to user.alice"
    ]
    caplog.clear()
    setup.script('require ["fileinto", "mailbox"];\nfileinto :create "New";\n')
    setup.deliver(MESSAGE.replace(b"<s1@", b"<s2@"))
    assert setup.count("user.alice.New") == 1
    assert fallbacks(caplog) == []


def test_fileinto_someone_elses_folder_needs_the_post_right(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    setup.script('require ["fileinto"];\nfileinto "user.bob";\n')
    setup.deliver()
    assert setup.count("user.bob") == 0 and setup.count("user.alice") == 1
    [line] = fallbacks(caplog)
    assert "could not deliver to user.bob (no p right for alice), delivering to user.alice" in line


def test_plus_address_fallback_is_logged_only_when_the_inbox_gets_the_copy(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    """alice+Nope lands in the INBOX and says why; if Sieve files it elsewhere, the missing
    +detail folder changed nothing and is not reported."""
    caplog.set_level(logging.INFO)
    assert setup.deliver(MESSAGE, "alice+Nope") == [(250, "2.1.5")]
    assert fallbacks(caplog) == [
        "S: to=<alice+Nope@example.com>: could not deliver to user.alice.Nope "
        "(no such mailbox), delivering to user.alice"
    ]
    caplog.clear()
    setup.script('require ["fileinto"];\nfileinto "INBOX.Lists";\n')
    assert setup.deliver(MESSAGE.replace(b"<s1@", b"<s3@"), "alice+Nope") == [(250, "2.1.5")]
    assert setup.count("user.alice.Lists") == 1
    assert fallbacks(caplog) == []


def test_fileinto_a_shared_folder_sets_the_recipients_own_seen(setup: Setup) -> None:
    """Cyrus files with the recipient's identity: a \\Seen the script sets on a folder the
    recipient does not own is their own seen state, not everyone's (sealmail.store.seen)."""
    setup.store.create_mailbox("shared")
    setup.store.set_acl("shared", "alice", "lrsp")
    setup.script('require ["fileinto", "imap4flags"];\nfileinto :flags "\\\\Seen" "shared";\n')
    assert setup.deliver() == [(250, "2.1.5")]
    [mailbox_state] = setup.store.messages("shared")
    [alices] = setup.store.messages("shared", "alice")
    [bobs] = setup.store.messages("shared", "bob")
    assert "\\Seen" in alices.flags
    assert "\\Seen" not in mailbox_state.flags and "\\Seen" not in bobs.flags


def test_discard_and_reject(setup: Setup) -> None:
    setup.script("discard;\n")
    assert setup.deliver() == [(250, "2.1.5")]
    assert setup.count("user.alice") == 0
    setup.script('require ["reject"];\nreject "not\\r\\nwanted";\n')
    assert setup.deliver(MESSAGE.replace(b"<s1@", b"<s3@"), "alice", "bob") == [
        (550, "5.7.1"),
        (250, "2.1.5"),
    ]
    assert setup.count("user.alice") == 0 and setup.count("user.bob") == 1


def test_redirect_keeps_the_sender_and_guards_loops(setup: Setup) -> None:
    setup.script('redirect "carol@example.net";\n')
    assert setup.deliver() == [(250, "2.1.5")]
    [(sender, to, body)] = setup.outbound.sent
    assert (sender, to) == ("bob@example.org", ("carol@example.net",))
    assert body.startswith(b"X-Sieve-Redirected-From: alice@example.com\r\n")
    assert setup.count("user.alice") == 0
    looped = b"X-Sieve-Redirected-From: alice@example.com\r\n" + MESSAGE.replace(b"<s1@", b"<s4@")
    setup.deliver(looped)
    assert len(setup.outbound.sent) == 1 and setup.count("user.alice") == 1


def test_a_redirect_the_mta_refuses_is_logged_and_not_lost(
    setup: Setup, caplog: pytest.LogCaptureFixture
) -> None:
    setup.script('redirect "carol@example.net";\n')
    setup.outbound.broken = True
    assert setup.deliver() == [(250, "2.1.5")]
    assert setup.count("user.alice") == 1  # kept instead, as Cyrus does
    assert "redirect to carol@example.net failed" in caplog.text


def test_vacation_once_per_sender_per_period(setup: Setup) -> None:
    setup.script('require ["vacation"];\nvacation :days 1 :subject "Away" "I am away.";\n')
    setup.deliver()
    setup.deliver(MESSAGE.replace(b"<s1@", b"<s5@"))
    [(sender, to, reply)] = setup.outbound.sent
    assert (sender, to) == ("", ("bob@example.org",))
    assert b"Auto-Submitted: auto-replied" in reply and b"I am away." in reply
    assert setup.count("user.alice") == 2  # vacation keeps the message too


def test_a_broken_script_keeps_the_message(setup: Setup) -> None:
    setup.script("if true {\n")  # does not compile
    assert setup.deliver() == [(250, "2.1.5")]
    assert setup.count("user.alice") == 1


def test_editheader_changes_the_stored_copy(setup: Setup) -> None:
    setup.script('require ["editheader"];\naddheader "X-Filtered" "yes";\n')
    setup.deliver()
    [record] = setup.store.messages("user.alice")
    assert b"X-Filtered: yes" in setup.store.message_bytes("user.alice", record.uid)


def test_a_retried_delivery_is_not_filed_twice(setup: Setup) -> None:
    setup.script('require ["fileinto"];\nfileinto "INBOX.Lists";\n')
    setup.deliver()
    setup.deliver()
    assert setup.count("user.alice.Lists") == 1


def test_auditlog_of_fileinto_create(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    """auditlog: the mailbox `fileinto :create` makes, then the copies filed (Cyrus's order)."""
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    setup.engine.auditlog = True
    setup.script('require ["fileinto", "mailbox"];\nfileinto :create "New";\nkeep;\n')
    assert setup.deliver() == [(250, "2.1.5")]
    lines = [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"]
    assert [" ".join(line.split()[1:4:2]) for line in lines] == [
        "create mailbox=<user.alice.New>", "acl: mailbox=<user.alice.New>",
        "append mailbox=<user.alice.New>", "append mailbox=<user.alice>",
    ]
    assert all("sessionid=<S>" in line for line in lines)


@pytest.mark.parametrize(("script", "line"), [
    ("discard;\n", "auditlog: discard sessionid=<S> message-id=<s1@example.org>"),
    ('redirect "carol@example.net";\n',
     "auditlog: redirect sessionid=<S> message-id=<s1@example.org> target=<carol@example.net>"
     " userid=<alice>"),
    ('require ["reject"];\nreject "no";\n',
     "auditlog: LMTP reject sessionid=<S> message-id=<s1@example.org> userid=<alice>"),
])
def test_auditlog_of_sieve_actions(
    setup: Setup, caplog: pytest.LogCaptureFixture, script: str, line: str
) -> None:
    """auditlog: Cyrus lmtpd's lines for what Sieve did instead of filing (lmtp_sieve.c)."""
    caplog.set_level(logging.INFO, "sealmail.auditlog")
    setup.engine.auditlog = True
    setup.script(script)
    setup.deliver()
    assert [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"] == [line]


def test_a_batch_looks_up_each_users_script_once_and_the_next_batch_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch's messages are stored at once: one lookup of a user's active script serves
    all of them; a script activated after the batch decides the next one."""
    looked_up: list[str] = []
    active_script = setup.scripts.active_script

    def counted(user: str) -> tuple[str, bytes] | None:
        looked_up.append(user)
        return active_script(user)

    monkeypatch.setattr(setup.scripts, "active_script", counted)

    def batch() -> None:
        recipients = tuple(
            setup.engine.check_recipient(u, "example.com", ignore_quota=False)
            for u in ("alice", "bob")
        )
        items = [(Envelope("bob@example.org", recipients, f"S{n}"), MESSAGE.replace(
            b"<s1@", f"<b{n}@".encode())) for n in range(3)]
        assert all(r.code == 250 for each in setup.engine.deliver_batch(items) for r in each)

    batch()
    assert sorted(looked_up) == ["alice", "bob"]
    assert (setup.count("user.alice"), setup.count("user.alice.Lists")) == (3, 0)
    setup.script('require ["fileinto"];\nfileinto "INBOX.Lists";\n')
    looked_up.clear()
    batch()
    assert sorted(looked_up) == ["alice", "bob"]
    assert (setup.count("user.alice"), setup.count("user.alice.Lists")) == (3, 3)
