"""`sealmail admin` (doveadm's mail commands): search, fetch, expunge and quota for -u / -A, and
the search query language it keeps."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from tests.support.instance import store_root_opt_in

from sealmail.cli.admin_query import QueryError, cutoff, parse_query, size_of, uid_ranges
from sealmail.cli.main import main
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.store.api import DeliveryTarget
from sealmail.store.disk import DiskStore

DAY = 86400.0


@pytest.fixture
def conf(tmp_path: Path) -> str:
    path = tmp_path / "imapd.conf"
    path.write_text(
        f"configdirectory: {tmp_path / 'config'}\n"
        f"partition-default: {tmp_path / 'spool'}\n" + store_root_opt_in()
    )
    now = time.time()
    with DiskStore.from_config(load_imapd_conf(str(path))) as store:
        for name in ("user.alice", "user.alice.Archive", "user.bob", "Shared"):
            store.create_mailbox(name)
        store.set_quota("user.alice", 100, None)
        store.deliver(b"Subject: Invoice 42\r\nFrom: shop@example.org\r\n\r\npay\r\n",
                      [DeliveryTarget("user.alice")], internaldate=now - 40 * DAY)
        store.deliver(b"Subject: hello\r\n\r\nhi\r\n",
                      [DeliveryTarget("user.alice", flags=("\\Seen",))], internaldate=now)
        store.deliver(b"Subject: old invoice\r\n\r\n" + b"x" * 5000,
                      [DeliveryTarget("user.alice.Archive")], internaldate=now - 400 * DAY)
        store.deliver(b"Subject: invoice for bob\r\n\r\nb\r\n", [DeliveryTarget("user.bob")])
    return str(path)


def admin(capsys: pytest.CaptureFixture[str], conf: str, *argv: str) -> tuple[int, str, str]:
    code = main(["admin", "-C", conf, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def uids(out: str) -> list[str]:
    return [line.split()[-1] for line in out.splitlines()]


def test_search_by_header_flags_dates_and_mailbox(
    conf: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = admin(capsys, conf, "-u", "alice", "search", "subject", "invoice")
    assert (code, err) == (0, "")
    assert len(out.splitlines()) == 2  # INBOX uid 1 and Archive uid 1, not bob's
    alice = ("-u", "alice", "search")
    assert uids(admin(capsys, conf, *alice, "mailbox", "INBOX", "unseen")[1]) == ["1"]
    assert uids(admin(capsys, conf, *alice, "mailbox", "inbox", "seen")[1]) == ["2"]
    _, out, _ = admin(capsys, conf, "-u", "alice", "search", "savedbefore", "30d")
    assert len(out.splitlines()) == 2
    _, out, _ = admin(capsys, conf, "-u", "alice", "search", "mailbox", "INBOX.*", "larger", "4k")
    assert len(out.splitlines()) == 1
    _, out, _ = admin(capsys, conf, "-u", "alice", "search", "from", "SHOP@", "uid", "1:*")
    assert len(out.splitlines()) == 1
    code, out, _ = admin(capsys, conf, "-A", "search", "subject", "invoice")
    assert code == 0 and sorted(line.split()[0] for line in out.splitlines()) == [
        "alice", "alice", "bob"]


def test_fetch_in_doveadms_pager_form(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = admin(capsys, conf, "-u", "alice", "fetch", "uid mailbox flags hdr",
                           "mailbox", "INBOX", "seen")
    assert (code, err) == (0, "")
    assert out == "uid: 2\nmailbox: INBOX\nflags: \\Seen\nhdr:\nSubject: hello\r\n\n\f\n"
    code, _, err = admin(capsys, conf, "-u", "alice", "fetch", "uid bogus", "all")
    assert code == 2 and "bogus" in err


def test_expunge_needs_a_mailbox_and_removes_what_matches(
    conf: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = admin(capsys, conf, "-u", "alice", "expunge", "all")
    assert code == 2 and "mailbox" in err
    code, _, err = admin(capsys, conf, "-u", "alice", "expunge", "mailbox", "INBOX.Archive",
                         "savedbefore", "365d")
    assert (code, err) == (0, "")
    _, out, _ = admin(capsys, conf, "-u", "alice", "search", "all")
    assert len(out.splitlines()) == 2  # the Archive message is gone, INBOX kept
    with DiskStore.from_config(load_imapd_conf(conf)) as store:
        assert store.messages("user.alice.Archive") == []


def test_quota_get_and_recalc(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = admin(capsys, conf, "-u", "alice", "quota", "get")
    assert code == 0
    assert out.splitlines() == [
        "Quota name Type    Value Limit %",
        "User quota STORAGE 4     100   4",  # 5113 bytes: 4 KiB, as doveadm rounds
        "User quota MESSAGE 3     -     0",
    ]
    _, out, _ = admin(capsys, conf, "-A", "quota", "get")
    assert out.splitlines()[0].startswith("Username Quota name")
    assert len(out.splitlines()) == 3  # bob has no quota root
    assert admin(capsys, conf, "-A", "quota", "recalc")[0] == 0
    assert admin(capsys, conf, "-A", "quota", "bogus")[0] == 2


def test_bad_queries_are_refused_by_name(conf: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = admin(capsys, conf, "-u", "alice", "search", "subjekt", "x")
    assert code == 2 and "'subjekt'" in err
    for words in (["subject"], ["larger", "big"], ["before", "yesterday"], ["uid", "1:x"]):
        with pytest.raises(QueryError):
            parse_query(words)
    assert size_of("2k") == 2048 and size_of("1M") == 1024**2
    assert uid_ranges("1:5,7,9:*") == [(1, 5), (7, 7), (9, None)]
    now = datetime(2026, 12, 6, tzinfo=UTC)
    assert cutoff("2d", now) == (datetime(2026, 12, 4, tzinfo=UTC), False)
    assert cutoff("06-Dec-2026", now) == (now, True)


def test_expunge_writes_auditlog_lines(
    conf: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """auditlog: an expunge line per message removed, with the run's own session id."""
    caplog.set_level("INFO", "sealmail.auditlog")
    Path(conf).write_text(Path(conf).read_text() + "auditlog: yes\n")
    code, _, _ = admin(capsys, conf, "-u", "alice", "expunge", "mailbox", "INBOX", "all")
    assert code == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "sealmail.auditlog"]
    assert [line.split()[1] for line in lines] == ["expunge", "expunge"]
    assert all(" mailbox=<user.alice> " in line for line in lines)
    assert len({line.split()[2] for line in lines}) == 1  # one sessionid for the run
