"""The PostgreSQL store's change feed (issue 24): a node hears of another node's change through
LISTEN/NOTIFY, sent after the commit; when a notification is lost (its listening connection
killed, a sender that never sent), the poll backstop still tells it within the poll interval;
asking holds no database connection."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from tests.store.test_postgres import INBOX, appended, settings_for
from tests.support.peers import PeerUnavailable

from sealmail.store.api import DeliveryTarget
from sealmail.store.postgres import PostgresStore
from sealmail.store.postgres.notify import APPLICATION_NAME, parse_payload, payloads

POLL = 1.0  # seconds: the backstop these tests wait on
TIMEOUT = 15.0  # generous: eight helpers share the machine


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    from tests.support.postgres import shared_cluster

    try:
        return shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def eventually(check: Callable[[], bool], timeout: float = TIMEOUT) -> float:
    """Seconds until `check()` held; fails after `timeout`."""
    start = time.monotonic()
    while not check():
        assert time.monotonic() - start < timeout, "never happened"
        time.sleep(0.02)
    return time.monotonic() - start


def deliver(store: PostgresStore, subject: str) -> int:
    content = f"Subject: {subject}\r\n\r\n{subject}\r\n".encode()
    return appended(store.deliver(content, [DeliveryTarget(INBOX)])[0]).modseq


def test_payloads_round_trip_and_stay_under_the_limit() -> None:
    changes = {f"user.u{i}.{'x' * 50}": i for i in range(500)}
    sent = payloads(changes)
    assert len(sent) > 1 and all(len(p.encode()) < 8000 for p in sent)
    heard: dict[str, int] = {}
    for payload in sent:
        heard.update(parse_payload(payload))
    assert heard == changes
    assert parse_payload("not json") == {} and parse_payload('[["a"]]') == {}


def test_another_node_hears_of_changes_and_the_poll_backstops_lost_notifications(
    dsn: str, tmp_path: Path
) -> None:
    settings = dataclasses.replace(settings_for(dsn, tmp_path), poll_interval=POLL)
    with PostgresStore(settings) as node_a, PostgresStore(settings) as node_b:
        node_a.create_mailbox(INBOX)
        seen = node_b.mailbox(INBOX)
        assert seen is not None
        modseq = seen.highestmodseq
        assert not node_b.mailbox_changed(INBOX, modseq)
        feed = node_b._db.feed
        assert feed.listening.wait(TIMEOUT)
        time.sleep(0.2)  # the first poll after LISTEN is done (it would hide a lost NOTIFY)

        # 1. Through NOTIFY: within a fraction of the poll interval, as a rule.
        modseq = deliver(node_a, "one")
        eventually(lambda: node_b.mailbox_changed(INBOX, modseq - 1))
        assert not node_b.mailbox_changed(INBOX, modseq)

        # Asking holds no connection: only the pool's idle ones and the listener are open.
        with psycopg.connect(dsn, autocommit=True) as admin:
            listeners = admin.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (APPLICATION_NAME,)).fetchall()
            assert listeners
            # 2. The listening connection is killed; a delivery meanwhile is heard of anyway
            # (a reconnect polls at once, and the poll runs every POLL seconds).
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                          " WHERE application_name = %s", (APPLICATION_NAME,))
        modseq = deliver(node_a, "two")
        eventually(lambda: node_b.mailbox_changed(INBOX, modseq - 1))
        assert feed.listening.wait(TIMEOUT)

        # 3. A notification never sent (a sender that died after the commit): the poll.
        quiet = threading.Event()
        node_a._db.feed._send = lambda _payloads: quiet.set()  # type: ignore[method-assign]
        polls = feed.polls
        modseq = deliver(node_a, "three")
        assert quiet.wait(TIMEOUT)
        eventually(lambda: node_b.mailbox_changed(INBOX, modseq - 1))
        assert feed.polls > polls

        # A deleted mailbox counts as changed.
        node_a.delete_mailbox(INBOX)
        eventually(lambda: node_b.mailbox_changed(INBOX, modseq))


def test_a_node_knows_its_own_changes_at_once(dsn: str, tmp_path: Path) -> None:
    with PostgresStore(settings_for(dsn, tmp_path)) as store:
        store.create_mailbox(INBOX)
        modseq = deliver(store, "one")
        assert store.mailbox_changed(INBOX, modseq - 1)  # no round trip needed
        store.set_flags(INBOX, [1], ["\\Seen"])
        assert store.mailbox_changed(INBOX, modseq)
