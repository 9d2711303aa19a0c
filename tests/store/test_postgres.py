"""What only the PostgreSQL store has to prove (the contract tests run on it too): several
processes, each with its own pool, delivering into one mailbox get exactly UIDs 1..N and no
reader ever sees a UID above a missing one; the quota holds under a race; blobs are written
once and in chunks; imapd.conf chooses the backend."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from tests.store.conftest import make_config
from tests.support.peers import PeerUnavailable

from sealmail.config.imapd_conf import ConfigError
from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.backends import open_store
from sealmail.store.disk import DiskStore
from sealmail.store.errors import OverQuota, StoreUnavailable
from sealmail.store.postgres import PostgresStore
from sealmail.store.postgres.blobs import CHUNK_SIZE
from sealmail.store.settings import StoreSettings

INBOX = "user.alice"

# One node: its own PostgresStore (its own pool), THREADS threads delivering EACH messages;
# prints the UIDs it was given.
NODE = """
import json, sys, threading
from pathlib import Path
from sealmail.store.api import DeliveryTarget
from sealmail.store.postgres import PostgresStore
from sealmail.store.settings import StoreSettings

dsn, node, threads, each = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
settings = StoreSettings(configdirectory=Path("."), partitions={"default": Path(".")},
                         default_partition="default", backend="postgresql", dsn=dsn,
                         pool_size=threads)
store = PostgresStore(settings)
uids, lock, start = [], threading.Lock(), threading.Barrier(threads)

def run(thread):
    start.wait()
    for n in range(each):
        # every third message the same bytes on every node: one blob, written concurrently
        body = b"same" if n % 3 == 0 else f"{node}-{thread}-{n}".encode()
        [result] = store.deliver(b"Subject: x\\r\\n\\r\\n" + body + b"\\r\\n",
                                 [DeliveryTarget("user.alice")])
        assert hasattr(result, "uid"), result
        with lock:
            uids.append(result.uid)

workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
store.close()
print(json.dumps(uids))
"""


@pytest.fixture
def dsn(tmp_path: Path) -> str:
    from tests.support.postgres import shared_cluster

    try:
        return shared_cluster().schema_dsn(str(tmp_path))
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def settings_for(dsn: str, tmp_path: Path, pool_size: int = 4) -> StoreSettings:
    return StoreSettings(configdirectory=tmp_path, partitions={"default": tmp_path},
                         default_partition="default", backend="postgresql", dsn=dsn,
                         pool_size=pool_size)


def appended(result: object) -> AppendedMessage:
    assert isinstance(result, AppendedMessage), result
    return result


def test_two_nodes_deliver_uids_1_to_n_and_readers_never_see_a_gap(
    dsn: str, tmp_path: Path
) -> None:
    nodes, threads, each = 2, 4, 30
    total = nodes * threads * each
    with PostgresStore(settings_for(dsn, tmp_path)) as reader:
        reader.create_mailbox(INBOX)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        processes = [
            subprocess.Popen([sys.executable, "-c", NODE, dsn, str(node), str(threads),
                              str(each)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env)
            for node in range(nodes)
        ]
        polls, last = 0, 0
        while True:
            running = any(p.poll() is None for p in processes)
            # `UID FETCH 1:*` and a SELECT's snapshot: every UID up to the highest is there.
            uids = [r.uid for r in reader.messages(INBOX)]
            assert uids == list(range(1, len(uids) + 1)), "a gap below a visible UID"
            snapshot = reader.flag_snapshot(INBOX)
            assert snapshot.uids == list(range(1, len(snapshot.uids) + 1))
            assert snapshot.mailbox.uidnext == len(snapshot.uids) + 1
            # `UID FETCH last+1:*`: what a syncing client asks next.
            newer = [r.uid for r in reader.message_records(INBOX, range(last + 1, last + 10_000))]
            assert newer == list(range(last + 1, last + 1 + len(newer)))
            last += len(newer)
            polls += 1
            if not running:
                break
        given: list[int] = []
        for process in processes:
            out, err = process.communicate(timeout=300)
            assert process.returncode == 0, err.decode()
            given += json.loads(out)
        assert sorted(given) == list(range(1, total + 1))
        info = reader.mailbox(INBOX)
        assert info is not None and info.uidnext == total + 1 and info.exists == total
        assert info.highestmodseq == total + 1
        assert [r.uid for r in reader.messages(INBOX)] == list(range(1, total + 1))
        assert polls > 1


def test_a_quota_race_admits_exactly_what_fits(dsn: str, tmp_path: Path) -> None:
    limit, threads, each = 10, 6, 5
    first = PostgresStore(settings_for(dsn, tmp_path))
    second = PostgresStore(settings_for(dsn, tmp_path))
    try:
        first.create_mailbox(INBOX)
        first.create_mailbox(INBOX + ".Lists")
        first.set_quota(INBOX, None, limit)
        start = threading.Barrier(threads)
        outcomes: list[object] = []
        lock = threading.Lock()

        def run(store: PostgresStore, target: str) -> None:
            start.wait()
            for _ in range(each):
                [result] = store.deliver(b"Subject: q\r\n\r\nq\r\n", [DeliveryTarget(target)])
                with lock:
                    outcomes.append(result)

        workers = [threading.Thread(target=run, args=((first, second)[i % 2],
                                                      INBOX if i % 3 else INBOX + ".Lists"))
                   for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        admitted = [o for o in outcomes if isinstance(o, AppendedMessage)]
        refused = [o for o in outcomes if isinstance(o, OverQuota)]
        assert len(admitted) == limit and len(refused) == threads * each - limit
        usage = first.quota_for(INBOX)
        assert usage is not None and usage.messages_used == limit
    finally:
        first.close()
        second.close()


def test_one_blob_for_many_mailboxes_and_large_ones_in_chunks(dsn: str, tmp_path: Path) -> None:
    import psycopg

    with PostgresStore(settings_for(dsn, tmp_path)) as store:
        for name in (INBOX, INBOX + ".A", "user.bob"):
            store.create_mailbox(name)
        small = b"Subject: one\r\n\r\nbody\r\n"
        results = store.deliver(small, [DeliveryTarget(n) for n in (INBOX, INBOX + ".A",
                                                                       "user.bob")])
        assert [appended(r).uid for r in results] == [1, 1, 1]
        big = b"Subject: big\r\n\r\n" + b"x" * (2 * CHUNK_SIZE + 10) + b"\r\n"
        uid = appended(store.deliver(big, [DeliveryTarget(INBOX)])[0]).uid
        assert store.message_bytes(INBOX, uid) == big
        assert list(store.message_contents(INBOX, [uid, 1, 99], limit=20)) == [
            big[:20], small[:20], None]
        copied = store.copy_messages(INBOX, [1, uid], "user.bob")
        assert copied.pairs == [(1, 2), (uid, 3)]
        assert store.message_bytes("user.bob", 3) == big
    with psycopg.connect(dsn) as conn:
        blobs = conn.execute("SELECT count(*) FROM blobs").fetchone()
        chunks = conn.execute("SELECT count(*) FROM blob_chunks").fetchone()
    assert blobs == (2,) and chunks == (1 + 3,)


def test_imapd_conf_chooses_the_backend(dsn: str, tmp_path: Path) -> None:
    assert isinstance(open_store(make_config(tmp_path / "d")), DiskStore)
    store = open_store(make_config(tmp_path / "p", store_backend="postgresql", store_dsn=dsn))
    try:
        assert isinstance(store, PostgresStore)
    finally:
        store.close()
    with pytest.raises(ConfigError, match="store_dsn"):
        open_store(make_config(tmp_path / "n", store_backend="postgresql"))


def test_a_database_out_of_reach_is_a_temporary_store_error(tmp_path: Path) -> None:
    settings = settings_for(f"host={tmp_path} port=1 user=nobody dbname=none", tmp_path)
    with pytest.raises(StoreUnavailable) as caught:
        PostgresStore(settings)
    assert caught.value.temporary


def test_migrations_are_versioned_and_refuse_a_newer_database(dsn: str, tmp_path: Path) -> None:
    import psycopg

    from sealmail.store.postgres.schema import VERSION, migrate

    PostgresStore(settings_for(dsn, tmp_path)).close()
    PostgresStore(settings_for(dsn, tmp_path)).close()  # a second node: nothing to apply
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT array_agg(version ORDER BY version) FROM schema_version"
                            ).fetchone() == (list(range(1, VERSION + 1)),)
        assert migrate(conn) == VERSION
        conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (VERSION + 1,))
        conn.commit()
    with pytest.raises(StoreUnavailable, match="schema version"):
        PostgresStore(settings_for(dsn, tmp_path))


def test_the_mailbox_command_works_on_postgresql(
    dsn: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sealmail.cli.main import main

    conf = tmp_path / "imapd.conf"
    conf.write_text(f"configdirectory: {tmp_path / 'c'}\npartition-default: {tmp_path / 'p'}\n"
                    f"store_backend: postgresql\nstore_dsn: {dsn}\n")
    assert main(["mailbox", "-C", str(conf), "create", "user.carol"]) == 0
    assert main(["mailbox", "-C", str(conf), "setquota", "user.carol", "100", "5"]) == 0
    with PostgresStore(settings_for(dsn, tmp_path)) as store:
        info = store.mailbox("user.carol")
        assert info is not None and info.acl == {"carol": "lrswipkxtecda"}
    capsys.readouterr()
    assert main(["mailbox", "-C", str(conf), "getquota", "user.carol"]) == 0
    assert capsys.readouterr().out == "user.carol STORAGE 0/100 MESSAGE 0/5\n"
    assert main(["mbpath", "-C", str(conf), "user.carol"]) == 1
    assert "store_backend is postgresql" in capsys.readouterr().err


def test_delivery_slots_are_counted_over_every_node(dsn: str, tmp_path: Path) -> None:
    import psycopg

    from sealmail.store.errors import MailboxBusy

    limited = dataclasses.replace(settings_for(dsn, tmp_path), user_concurrency_limit=2)
    with PostgresStore(limited) as node_a, PostgresStore(limited) as node_b:
        with node_a.delivery_slot("alice"), node_b.delivery_slot("alice"):
            with pytest.raises(MailboxBusy), node_b.delivery_slot("alice"):
                pass
            with node_a.delivery_slot("bob"):  # another user's slots are their own
                pass
        with node_b.delivery_slot("alice"):  # released: free again
            pass
        # A node that died holding a slot: its lease runs out.
        with psycopg.connect(dsn) as conn:
            conn.execute("INSERT INTO leases (name, holder, expires) VALUES"
                         " ('deliver/alice/0', 'dead', now() - interval '1 second'),"
                         " ('deliver/alice/1', 'dead', now() + interval '1 hour')")
        with node_a.delivery_slot("alice"), pytest.raises(MailboxBusy), \
                node_b.delivery_slot("alice"):
            pass


def test_a_restart_of_postgresql_loses_nothing_and_the_pool_reconnects(tmp_path: Path) -> None:
    from tests.support.peers import traversable_tmpdir
    from tests.support.postgres import PrivateCluster

    with traversable_tmpdir("smpg-") as root:
        try:
            cluster = PrivateCluster(root)
        except PeerUnavailable as exc:
            pytest.skip(str(exc))
        cluster.start()
        try:
            with PostgresStore(settings_for(cluster.dsn(), tmp_path, pool_size=2)) as store:
                store.create_mailbox(INBOX)
                first = appended(store.deliver(b"Subject: 1\r\n\r\none\r\n",
                                               [DeliveryTarget(INBOX)])[0])
                cluster.restart()
                # Every pooled connection died with the server: the next calls get new ones.
                assert [r.uid for r in store.messages(INBOX)] == [first.uid]
                second = appended(store.deliver(b"Subject: 2\r\n\r\ntwo\r\n",
                                                [DeliveryTarget(INBOX)])[0])
                assert second.uid == first.uid + 1
                assert store.message_bytes(INBOX, 1) == b"Subject: 1\r\n\r\none\r\n"
        finally:
            cluster.stop()


def test_flag_changes_and_expunges_from_another_node_keep_modseqs_exact(
    dsn: str, tmp_path: Path
) -> None:
    rounds = 40
    with PostgresStore(settings_for(dsn, tmp_path)) as node_a, \
            PostgresStore(settings_for(dsn, tmp_path)) as node_b:
        node_a.create_mailbox(INBOX)

        def deliver() -> None:
            for n in range(rounds):
                appended(node_a.deliver(f"Subject: {n}\r\n\r\n{n}\r\n".encode(),
                                        [DeliveryTarget(INBOX)])[0])

        def change() -> None:
            for n in range(rounds):
                uids = [r.uid for r in node_b.messages(INBOX)]
                if uids:
                    node_b.update_flags(INBOX, uids[-3:], ["\\Flagged"], "add")
                    if n % 4 == 0:
                        node_b.expunge(INBOX, uids[:1])

        workers = [threading.Thread(target=deliver), threading.Thread(target=change)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        info = node_a.mailbox(INBOX)
        assert info is not None
        records = node_a.messages(INBOX)
        expunged = node_a.expunged_since(INBOX, 0)
        assert sorted([r.uid for r in records] + expunged) == list(range(1, rounds + 1))
        modseqs = [r.modseq for r in records]
        assert len(set(modseqs)) == len(modseqs) and max(modseqs) <= info.highestmodseq
        for since in (0, info.highestmodseq // 2, info.highestmodseq):
            assert [r.uid for r in node_b.messages_since(INBOX, since)] == [
                r.uid for r in records if r.modseq > since]


def test_one_delivery_of_a_message_id_at_a_time_over_every_node(
    dsn: str, tmp_path: Path
) -> None:
    """Two nodes (their own configdirectory, so no shared flock) taking the same Message-ID:
    the second waits for the first's lease, and gives up with MailboxBusy (451 4.4.5) only
    after its patience; another Message-ID is not held up."""
    import time

    from sealmail.store.errors import MailboxBusy
    from sealmail.store.postgres.duplicates import SharedDuplicates

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    with PostgresStore(settings_for(dsn, tmp_path / "a")) as node_a, \
            PostgresStore(settings_for(dsn, tmp_path / "b")) as node_b:
        dup_a, dup_b = node_a.duplicates(), node_b.duplicates()
        assert dup_a is not None and dup_b is not None
        events: list[str] = []
        held = threading.Event()

        def second() -> None:
            held.wait(30)
            with dup_b.exclusive("<same@example.org>"):
                events.append("b took it")

        other = threading.Thread(target=second)
        other.start()
        with dup_a.exclusive("<same@example.org>"):
            held.set()
            with dup_b.exclusive("<other@example.org>"):
                events.append("b took another")
            time.sleep(0.3)  # b is waiting meanwhile (no timing is asserted)
            events.append("a let go")
        other.join(30)
        assert events == ["b took another", "a let go", "b took it"]

        impatient = SharedDuplicates(node_b._db, time.time, patience=0.2)
        with dup_a.exclusive("<same@example.org>"), pytest.raises(MailboxBusy), \
                impatient.exclusive("<same@example.org>"):
            pass
        with impatient.exclusive("<same@example.org>"):  # released: free again
            pass
