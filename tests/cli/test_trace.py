"""`sealmail trace`: one message through the MTA's maillog and the store's log, joined."""

from __future__ import annotations

from pathlib import Path

import pytest

from sealmail.cli.main import main

MAILLOG = """\
Dec  6 20:03:42 mx sealmail/smtpd[1]: connect from unknown[127.0.0.1]
Dec  6 20:03:42 mx sealmail/cleanup[1]: AAAAAA1: message-id=<one@example.com>
Dec  6 20:03:42 mx sealmail/smtpd[1]: AAAAAA1: client=unknown[127.0.0.1]
Dec  6 20:03:42 mx sealmail/qmgr[2]: AAAAAA1: from=<s@example.com>, size=396, nrcpt=3 (queue active)
Dec  6 20:03:42 mx sealmail/local[2]: AAAAAA1: to=<alice+Lists@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=2.1.5, status=sent (250 2.1.5 Ok)
Dec  6 20:03:42 mx sealmail/local[2]: AAAAAA1: to=<postmaster@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=2.1.5, status=sent (250 2.1.5 Ok)
Dec  6 20:03:42 mx sealmail/local[2]: AAAAAA1: to=<nobody@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=5.1.1, status=bounced (host mx[/s/lmtp] said: 550 5.1.1 unknown)
Dec  6 20:03:42 mx sealmail/qmgr[2]: AAAAAA1: removed
Dec  6 20:03:43 mx sealmail/cleanup[1]: BBBBBB2: message-id=<two@example.com>
Dec  6 20:03:43 mx sealmail/qmgr[2]: BBBBBB2: from=<s@example.com>, size=300, nrcpt=1 (queue active)
Dec  6 20:03:43 mx sealmail/local[2]: BBBBBB2: to=<Alice+Lists@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=2.1.5, status=sent (250 2.1.5 Ok)
"""

STORE_LOG = """\
2026-12-06T20:03:41 sealmail.lmtpd/lmtpunix[9]: S1SESSION: connect from unix socket as postman
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S1SESSION: from=<s@example.com>, \
to=<alice+Lists@example.com>, mailbox=user.alice.Lists uid=7, size=552, dsn=2.1.5, \
status=sent (250 Ok)
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S1SESSION: from=<s@example.com>, \
to=<demo@example.com>, mailbox=user.demo uid=3, size=552, dsn=2.1.5, status=sent (250 Ok)
2026-12-06T20:03:43 sealmail.delivery/lmtpunix[9]: S1SESSION: from=<s@example.com>, \
to=<alice+Lists@example.com>, mailbox=user.alice.Lists uid=8, size=500, dsn=2.1.5, \
status=sent (250 Ok)
2026-12-06T20:03:45 sealmail.lmtpd/lmtpunix[9]: S1SESSION: disconnect from unix socket
"""


@pytest.fixture
def logs(tmp_path: Path) -> list[str]:
    maillog, store = tmp_path / "maillog", tmp_path / "store.log"
    maillog.write_text(MAILLOG.replace("\\\n", ""))
    store.write_text(STORE_LOG.replace("\\\n", ""))
    return ["trace", "--maillog", str(maillog), "-C", str(tmp_path / "none.conf"), "-L", str(store)]


def run(logs: list[str], wanted: str, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main([*logs, wanted])
    return code, capsys.readouterr().out


def test_by_queue_id_each_recipient_with_its_mailbox_and_uid(
    logs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(logs, "AAAAAA1", capsys)
    assert code == 0
    summary = out.split("\n\n")[1].splitlines()
    assert summary == [
        "AAAAAA1: alice+Lists@example.com: sent via mx[/s/lmtp] -> user.alice.Lists uid 7"
        " (lmtpd session S1SESSION)",
        # local(8) expanded the alias: joined by sender and time.
        "AAAAAA1: postmaster@example.com: sent via mx[/s/lmtp] -> user.demo uid 3"
        " (lmtpd session S1SESSION)",
        "AAAAAA1: nobody@example.com: bounced via mx[/s/lmtp]: host mx[/s/lmtp] said: 550 5.1.1"
        " unknown",
    ]
    trail = out.split("\n\n")[0].splitlines()
    assert trail[0].startswith(
        "2026-12-06 20:03:41 store sealmail.lmtpd/lmtpunix: S1SESSION: connect"
    )
    assert "uid=8" not in out  # the next message's delivery in the same session
    assert trail[-1].endswith("disconnect from unix socket")


def test_by_message_id_and_the_same_session_reused(
    logs: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run(logs, "<two@example.com>", capsys)
    assert code == 0
    assert out.split("\n\n")[1].strip() == (
        "BBBBBB2: Alice+Lists@example.com: sent via mx[/s/lmtp] -> user.alice.Lists uid 8"
        " (lmtpd session S1SESSION)"
    )


def test_unknown_id_and_missing_maillog(
    logs: list[str], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main([*logs, "ZZZZZZ9"]) == 1
    assert "ZZZZZZ9: not in" in capsys.readouterr().err
    assert main(["trace", "--maillog", str(tmp_path / "absent"), "X"]) == 66


# lmtpd logs the MTA's queue ID and names its session in each 250: an exact join, even when one
# cached LMTP session carries two messages to the same recipient within the same second.
EXACT_MAILLOG = """\
Dec  6 20:03:42 mx postfix/qmgr[2]: CCCCCC3: from=<s@example.com>, size=396, nrcpt=1 (queue active)
Dec  6 20:03:42 mx postfix/qmgr[2]: DDDDDD4: from=<s@example.com>, size=396, nrcpt=2 (queue active)
Dec  6 20:03:42 mx postfix/lmtp[2]: CCCCCC3: to=<bob@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=2.1.5, status=sent (250 2.1.5 Ok SESSIONID=<S2SESSION>)
Dec  6 20:03:42 mx postfix/lmtp[2]: DDDDDD4: to=<bob@example.com>, relay=mx[/s/lmtp], \
delay=0.01, delays=0/0/0/0, dsn=2.1.5, status=sent (250 2.1.5 Ok SESSIONID=<S2SESSION>)
Dec  6 20:03:42 mx postfix/lmtp[2]: DDDDDD4: to=<carol@example.com>, \
orig_to=<staff@example.com>, relay=mx[/s/lmtp], delay=0.01, delays=0/0/0/0, dsn=2.1.5, \
status=sent (250 2.1.5 Ok SESSIONID=<S2SESSION>)
"""

EXACT_STORE_LOG = """\
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S2SESSION: queue_id=CCCCCC3, message-id=<c@x>
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S2SESSION: from=<s@example.com>, \
to=<bob@example.com>, mailbox=user.bob uid=1, size=552, dsn=2.1.5, status=sent (250 Ok)
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S2SESSION: queue_id=DDDDDD4, message-id=<d@x>
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S2SESSION: from=<s@example.com>, \
to=<bob@example.com>, mailbox=user.bob uid=2, size=552, dsn=2.1.5, status=sent (250 Ok)
2026-12-06T20:03:42 sealmail.delivery/lmtpunix[9]: S2SESSION: from=<s@example.com>, \
to=<carol@example.com>, mailbox=user.carol uid=5, size=552, dsn=2.1.5, status=sent (250 Ok)
"""


def test_joined_by_sessionid_and_queue_id(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    maillog, store = tmp_path / "maillog", tmp_path / "store.log"
    maillog.write_text(EXACT_MAILLOG.replace("\\\n", ""))
    store.write_text(EXACT_STORE_LOG.replace("\\\n", ""))
    logs = ["trace", "--maillog", str(maillog), "-C", str(tmp_path / "none"), "-L", str(store)]
    code, out = run(logs, "DDDDDD4", capsys)
    assert code == 0
    assert out.split("\n\n")[1].splitlines() == [
        "DDDDDD4: bob@example.com: sent via mx[/s/lmtp] -> user.bob uid 2"
        " (lmtpd session S2SESSION)",
        "DDDDDD4: carol@example.com: sent via mx[/s/lmtp] -> user.carol uid 5"
        " (lmtpd session S2SESSION)",
    ]
    assert "queue_id=CCCCCC3" not in out and "uid=1," not in out
    code, out = run(logs, "CCCCCC3", capsys)
    assert out.split("\n\n")[1].strip().endswith("-> user.bob uid 1 (lmtpd session S2SESSION)")
