"""The store's backends side by side: deliveries/s and SELECT-like reads/s on the disk store
and on PostgreSQL (issue 24), through the store API in one process (no LMTP, no IMAP parsing).

    python bench/store_backends.py [-n MESSAGES] [-t THREADS] [-r RECIPIENTS] [-z SIZE]
    python bench/store_backends.py --nodes [-n MESSAGES] [-t CLIENTS] [-z SIZE]

PostgreSQL is a private cluster started for the run (Debian's `postgresql`, fsync ON, a UNIX
socket), on the same disk as the disk store's partition. Each thread delivers N/T messages to R
mailboxes (one transaction per recipient on PostgreSQL; group commit on the disk store), then
each thread reads the mailboxes back (flag_snapshot + message_records of the last 20 UIDs, what
an IMAP SELECT and a sync do). Prints per backend the rates and the ratio PostgreSQL / disk.
Run as root from the checkout (it imports tests.support). See bench/README.md.

`--nodes`: the daemons instead, as clients see them: deliveries/s over LMTP and IMAP operations/s
(SELECT, UID FETCH of the last 20 messages' FLAGS, NOOP: one operation each) of T client
threads, against one node on the embedded (disk) store, one node on PostgreSQL and two nodes on
the same PostgreSQL (the clients spread over both). Each node is lmtpd + imapd
(tests.support.pg_nodes), every process on this machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.peers import PeerUnavailable, traversable_tmpdir
from tests.support.postgres import PrivateCluster

from sealmail.store.api import AppendedMessage, DeliveryTarget
from sealmail.store.disk import DiskStore
from sealmail.store.postgres import PostgresStore
from sealmail.store.settings import StoreSettings


def settings(root: Path, **more: Any) -> StoreSettings:
    (root / "config").mkdir(parents=True, exist_ok=True)
    return StoreSettings(configdirectory=root / "config", partitions={"default": root / "spool"},
                         default_partition="default", **more)


def in_threads(threads: int, work: Callable[[int], None]) -> float:
    """Seconds for `threads` threads running work(i) from one start line."""
    start = threading.Barrier(threads + 1)

    def run(i: int) -> None:
        start.wait()
        work(i)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    start.wait()
    began = time.perf_counter()
    for worker in workers:
        worker.join()
    return time.perf_counter() - began


def measure(
    store: Any, messages: int, threads: int, recipients: int, size: int
) -> dict[str, float]:
    names = [f"user.u{i}" for i in range(recipients)]
    for name in names:
        store.create_mailbox(name)
    body = b"x" * size
    per_thread = messages // threads

    def deliver(thread: int) -> None:
        for n in range(per_thread):
            content = f"Subject: {thread}-{n}\r\n\r\n".encode() + body + b"\r\n"
            for result in store.deliver(content, [DeliveryTarget(name) for name in names]):
                assert isinstance(result, AppendedMessage), result

    delivered = per_thread * threads
    seconds = in_threads(threads, deliver)
    reads_each = 50

    def read(thread: int) -> None:
        for _ in range(reads_each):
            name = names[thread % len(names)]
            snapshot = store.flag_snapshot(name)
            store.message_records(name, snapshot.uids[-20:])

    read_seconds = in_threads(threads, read)
    for name in names:
        assert len(store.messages(name)) == delivered
    return {"msg/s": delivered / seconds, "rcpt/s": delivered * recipients / seconds,
            "reads/s": reads_each * threads / read_seconds}


def measure_nodes(nodes: list[Any], messages: int, clients: int, size: int,
                  users: int = 8) -> dict[str, float]:
    """LMTP deliveries/s and IMAP operations/s of `clients` threads spread over `nodes`."""
    body = b"x" * size
    per_client = messages // clients

    def deliver(i: int) -> None:
        node = nodes[i % len(nodes)]
        for n in range(per_client):
            content = f"Subject: {i}-{n}\r\n\r\n".encode() + body + b"\r\n"
            assert node.lmtp([f"b{(i + n) % users}@example.com"], content) == {}

    seconds = in_threads(clients, deliver)
    rounds = 30

    def read(i: int) -> None:
        imap = nodes[i % len(nodes)].imap(f"b{i % users}")
        try:
            for _ in range(rounds):
                typ, data = imap.select("INBOX", readonly=True)
                assert typ == "OK", data
                last = int(data[0])
                imap.fetch(f"{max(1, last - 19)}:{last}", "(UID FLAGS)")
                imap.noop()
        finally:
            imap.logout()

    read_seconds = in_threads(clients, read)
    return {"deliveries/s": per_client * clients / seconds,
            "imap ops/s": 3 * rounds * clients / read_seconds}


def node_figures(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    from tests.support.pg_nodes import Node, add_users_fast, start_nodes

    users = [f"b{i}" for i in range(8)]
    results: dict[str, dict[str, float]] = {}
    with traversable_tmpdir("smbench-") as root:
        disk = Node(root / "disk", None, root / "disk-sasldb", services=("lmtpd", "imapd"))
        add_users_fast(disk, users)
        start_nodes([disk])
        try:
            results["disk, 1 node"] = measure_nodes([disk], args.n, args.t, args.z)
        finally:
            disk.stop()
        cluster = PrivateCluster(root / "pg", durable=True)
        (root / "pg").mkdir()
        (root / "pg").chmod(0o755)
        cluster.start()
        try:
            for count in (1, 2):
                dsn = cluster.schema_dsn(f"nodes{count}")
                nodes = [Node(root / f"n{count}-{i}", dsn, root / f"sasldb{count}",
                              services=("lmtpd", "imapd")) for i in range(count)]
                add_users_fast(nodes[0], users)
                start_nodes(nodes)
                try:
                    results[f"postgresql, {count} node{'s' if count > 1 else ''}"] = \
                        measure_nodes(nodes, args.n, args.t, args.z)
                finally:
                    for node in nodes:
                        node.stop()
        finally:
            cluster.stop()
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", action="store_true",
                        help="the daemons over LMTP and IMAP, 1 and 2 nodes (see above)")
    parser.add_argument("-n", type=int, default=400, help="messages (default 400)")
    parser.add_argument("-t", type=int, default=4, help="threads (default 4)")
    parser.add_argument("-r", type=int, default=1, help="recipients per message (default 1)")
    parser.add_argument("-z", type=int, default=4096, help="message size (default 4096)")
    args = parser.parse_args()
    if args.nodes:
        figures_by = node_figures(args)
        print(f"{args.n} messages, {args.z} bytes, {args.t} clients")
        for setup, figures in figures_by.items():
            print(f"{setup:>20}: " + "  ".join(f"{v:8.1f} {k}" for k, v in figures.items()))
        return 0
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="smbench-") as tmp, \
            DiskStore(settings(Path(tmp) / "disk")) as disk:
        results["disk"] = measure(disk, args.n, args.t, args.r, args.z)
    with traversable_tmpdir("smpg-") as root:
        try:
            cluster = PrivateCluster(root, durable=True)
        except PeerUnavailable as exc:
            print(f"postgresql: skipped ({exc})")
            cluster = None
        if cluster is not None:
            cluster.start()
            try:
                pg_settings = settings(root / "store", backend="postgresql", dsn=cluster.dsn(),
                                       pool_size=args.t + 1)
                with PostgresStore(pg_settings) as pg:
                    results["postgresql"] = measure(pg, args.n, args.t, args.r, args.z)
            finally:
                cluster.stop()
    print(f"{args.n} messages x {args.r} recipients, {args.z} bytes, {args.t} threads")
    for backend, figures in results.items():
        print(f"{backend:>10}: " + "  ".join(f"{v:8.1f} {k}" for k, v in figures.items()))
    if len(results) == 2:
        print("postgresql/disk: " + "  ".join(
            f"{results['postgresql'][k] / results['disk'][k]:.2f} {k}" for k in results["disk"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
