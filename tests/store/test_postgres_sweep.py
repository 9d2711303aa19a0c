"""Blob sweeping on the PostgreSQL store (issue 24): message rows and blobs nothing names go
after the grace period and not before; a delivery caught between writing its blob and naming
it either finds it kept (young) or fails temporarily and is delivered again, never loses bytes;
one node sweeps at a time."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import psycopg
import pytest
from tests.store.test_postgres import INBOX, appended, settings_for
from tests.support.peers import PeerUnavailable

from sealmail.store.api import DeliveryTarget
from sealmail.store.errors import StoreError
from sealmail.store.postgres import PostgresStore
from sealmail.store.postgres.delivery import Delivery
from sealmail.store.postgres.sweep import LEADER, SweepResult


@pytest.fixture
def store(tmp_path: Path) -> PostgresStore:
    from tests.support.postgres import shared_cluster

    try:
        dsn = shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    opened = PostgresStore(settings_for(dsn, tmp_path))
    opened.create_mailbox(INBOX)
    return opened


def counts(store: PostgresStore) -> tuple[int, int, int]:
    def work(conn: psycopg.Connection[tuple[object, ...]]) -> tuple[int, int, int]:
        row = conn.execute("SELECT (SELECT count(*) FROM messages), (SELECT count(*) FROM blobs),"
                           " (SELECT count(*) FROM blob_chunks)").fetchone()
        assert row is not None
        return int(str(row[0])), int(str(row[1])), int(str(row[2]))

    return store._db.read(work)


def test_unnamed_messages_and_blobs_go_after_the_grace_period(store: PostgresStore) -> None:
    with store:
        kept = appended(store.deliver(b"Subject: kept\r\n\r\nkept\r\n", [DeliveryTarget(INBOX)])[0])
        gone = appended(store.deliver(b"Subject: gone\r\n\r\ngone\r\n", [DeliveryTarget(INBOX)])[0])
        store.expunge(INBOX, [gone.uid])
        assert counts(store) == (2, 2, 2)
        assert store.sweep(grace=3600) == SweepResult(0, 0, 0)  # too young
        result = store.sweep(grace=0)
        assert result is not None and (result.messages, result.blobs) == (1, 1)
        assert counts(store) == (1, 1, 1)
        assert store.message_bytes(INBOX, kept.uid) == b"Subject: kept\r\n\r\nkept\r\n"


def test_a_delivery_between_blob_and_name_never_loses_its_bytes(store: PostgresStore) -> None:
    delivery = store.deliver.__self__  # type: ignore[attr-defined]
    assert isinstance(delivery, Delivery)
    db = store._db
    content = b"Subject: slow\r\n\r\nslow\r\n"

    def stage(body: bytes) -> int:
        """A delivery's first transaction: the blob and the message row, named by nothing."""
        return db.write(partial(delivery._store_message, content=body, when=1.0, guid="g"))

    def name(message_id: int, body: bytes) -> object:
        return db.write(partial(delivery._append, message_id=message_id, size=len(body),
                                guid="g", target=DeliveryTarget(INBOX)))

    with store:
        # Within the grace period: the sweep leaves it, the delivery goes on.
        message_id = stage(content)
        assert store.sweep(grace=3600) == SweepResult(0, 0, 0)
        first = appended(name(message_id, content))
        assert store.message_bytes(INBOX, first.uid) == content
        # A delivery slower than the grace period: its row went, so naming it fails with a
        # temporary error (LMTP 4xx: the client tries again), and the retry stores it anew.
        other = b"Subject: slower\r\n\r\nslower\r\n"
        message_id = stage(other)
        result = store.sweep(grace=0)
        assert result is not None and result.messages == 1
        with pytest.raises(StoreError) as refused:
            name(message_id, other)
        assert refused.value.temporary
        again = appended(store.deliver(other, [DeliveryTarget(INBOX)])[0])
        assert store.message_bytes(INBOX, again.uid) == other
        # Bytes unnamed for long, delivered again: the blob is young again and stays.
        store.expunge(INBOX, [again.uid])
        db.write(lambda conn: conn.execute(
            "UPDATE blobs SET created = now() - interval '2 days';"
            " UPDATE messages SET created = now() - interval '2 days'"))
        third = appended(store.deliver(other, [DeliveryTarget(INBOX)])[0])
        result = store.sweep(grace=86400)
        assert result is not None and result.messages == 1 and result.blobs == 0
        assert store.message_bytes(INBOX, third.uid) == other
        assert store.message_bytes(INBOX, first.uid) == content


def test_one_node_sweeps_at_a_time(store: PostgresStore) -> None:
    with store:
        holder = store._leases.take(LEADER, 60)
        assert holder is not None
        assert store.sweep(grace=0) is None  # another node is sweeping
        store._leases.release(LEADER, holder)
        assert store.sweep(grace=0) is not None


def test_sweep_and_expire_commands_on_postgresql(
    store: PostgresStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.support.instance import store_root_opt_in

    from sealmail.cli.main import main

    conf = tmp_path / "imapd.conf"
    conf.write_text(f"configdirectory: {tmp_path / 'config'}\npartition-default: {tmp_path}\n"
                    f"store_backend: postgresql\nstore_dsn: {store.settings.dsn}\n"
                    + store_root_opt_in())
    with store:
        gone = appended(store.deliver(b"Subject: g\r\n\r\ng\r\n", [DeliveryTarget(INBOX)])[0])
        store.expunge(INBOX, [gone.uid])
        duplicates = store.duplicates()
        assert duplicates is not None
        duplicates.mark("<old@x>", INBOX, when=0.0)
        assert main(["sweep", "-C", str(conf)]) == 0  # store_blob_grace: a day
        assert "removed 0 messages and 0 blobs" in capsys.readouterr().out
        assert main(["sweep", "-C", str(conf), "--grace", "0"]) == 0
        assert "removed 1 messages and 1 blobs" in capsys.readouterr().out
        assert main(["expire", "-C", str(conf), "-E", "3"]) == 0
        assert capsys.readouterr().out == "expired 1 duplicate delivery entries\n"
        assert not duplicates.seen("<old@x>", INBOX)
