"""imaptest stress: `sealmail master` (imapd preforked, authentication cache on) beside a
private Dovecot, in one run, the profiles alternating between the two servers.

imaptest (Dovecot's IMAP tester, built outside the tree: docs/benchmarks.md) runs `clients`
sessions of its default stress profile (LOGIN, SELECT, FETCH, STORE, EXPUNGE, APPEND, LOGOUT in
its proportions) for `secs` seconds, then with `logout=0` (sessions stay logged in). Printed: its
total count of each command, per server, and the ratio sealmail/Dovecot.

    python bench/imap_stress.py --imaptest /work/imaptest-build/src/imaptest [-c 10] [-s 30]
        [--profile DIR]   # py-spy raw stacks of each imapd worker during sealmail's runs
        [--only logout=0]  # one profile
        [--idle 200]   # hold 200 IDLE sessions on INBOX on each server while imaptest runs
        [--memory-store]  # imapd on the in-memory store, one worker: the floor without the store

Also printed for each server: the CPU time (user + system, from /proc) of all its processes per
command, which other load on the machine does not change the way it changes commands per
second; and the RSS of its process tree while the sessions are open (each process's resident
pages, shared ones counted in each). With `--idle N`, N more sessions (LOGIN, SELECT INBOX,
IDLE: a mail client's INBOX connection) are held on the server during each imaptest run; the
line says the server tree's RSS before and after they opened (per idle session), and how many of
them heard imaptest's changes to INBOX (untagged EXISTS/EXPUNGE/FETCH) during the run.

With `--memory-store`, sealmail's one imapd worker keeps the mailbox in memory
(bench/memory_store/sitecustomize.py): no SQLite, no message files, no fsync, so its CPU per
command is what everything above the store costs, the floor that no work on the disk store can
go below (docs/benchmarks.md, "What the store costs under imaptest").

Run as root from the checkout (it imports tests.support; Dovecot drops to its own users).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support.instance import SEALMAIL, create_inboxes, store_root_opt_in
from tests.support.peers import DovecotInstance, free_tcp_port, traversable_tmpdir

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

USER, PASSWORD = "bench", "secret"
SERVERNAME = "stress.example"


@contextmanager
def sealmail_master(root: Path, prefork: int = 2, conf_extra: str = "",
                    memory_store: bool = False) -> Iterator[tuple[int, int, list[int]]]:
    """master with imapd preforked (`prefork` workers) and lmtpd, `conf_extra` appended to
    imapd.conf; yields the IMAP port, master's pid and the imapd workers' pids. With
    `memory_store`, imapd keeps the mailbox in memory (bench/memory_store)."""
    root.mkdir()
    port = free_tcp_port()
    conf = root / "imapd.conf"
    lmtp = root / "config" / "socket" / "lmtp"
    conf.write_text(
        f"configdirectory: {root / 'config'}\npartition-default: {root / 'partition'}\n"
        f"lmtpsocket: {lmtp}\nservername: {SERVERNAME}\nallowplaintext: yes\n"
        "auth_cache_size: 1000\n" + store_root_opt_in() + conf_extra
    )
    (root / "cyrus.conf").write_text(
        "SERVICES {\n"
        f'  lmtpunix cmd="lmtpd" listen="{lmtp}" prefork=1\n'
        f'  imap     cmd="imapd" listen="127.0.0.1:{port}" prefork={prefork}\n'
        "}\n"
    )
    create_inboxes(conf, [USER])
    SaslDB(root / "config" / "sasldb2").set_password(split_identity(USER, SERVERNAME), PASSWORD)
    log = root / "master.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*SEALMAIL, "master", "-C", str(conf), "-M", str(root / "cyrus.conf"), "-D"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=memory_store_env() if memory_store else None,
        )
    try:
        deadline = time.monotonic() + 60
        while (
            len(
                workers := re.findall(
                    r"service imap: started worker (\d+)", log.read_text(errors="replace")
                )
            )
            < prefork
        ):
            assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            time.sleep(0.1)
        pids = [int(pid) for pid in workers]
        every_worker_serves(port, pids, deadline)
        yield port, process.pid, pids
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def memory_store_env() -> dict[str, str]:
    """The environment that puts bench/memory_store's sitecustomize before everything else on
    the daemons' path, for the bench user."""
    here = str(Path(__file__).resolve().parent / "memory_store")
    path = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "SEALMAIL_BENCH_MEMORY_STORE": USER}


def every_worker_serves(port: int, pids: list[int], deadline: float) -> None:
    """Waits until each worker has taken a connection: "started worker" is master's line, and a
    worker still starting on a loaded machine (seconds) would leave all of imaptest's clients,
    which connect at once, to the other one for the whole run."""
    held: list[socket.socket] = []
    try:
        while True:
            sock = socket.create_connection(("127.0.0.1", port))
            held.append(sock)
            sock.recv(1024)  # the greeting: its worker has it
            listing = subprocess.run(
                ["ss", "-Htnp", "state", "established", f"( sport = :{port} )"],
                capture_output=True, text=True, check=True,
            ).stdout
            if all(f"pid={pid}," in listing for pid in pids):
                return
            assert time.monotonic() < deadline, "a worker never took a connection"
            time.sleep(0.05)
    finally:
        for sock in held:
            sock.close()


@contextmanager
def dovecot(root: Path) -> Iterator[tuple[int, int]]:
    """A private Dovecot; yields its IMAP port and its master's pid."""
    port = free_tcp_port()
    extra = (
        "protocols = lmtp imap\ndisable_plaintext_auth = no\n"
        # imaptest logs every client in as one user from one address: Dovecot's default of 10
        # such sessions would leave the other 40 of a 50-client run retrying their LOGIN.
        "mail_max_userip_connections = 1000\n"
        "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
        f"    port = {port}\n  }}\n}}\n"
    )
    with DovecotInstance(root, (USER,), conf_extra=extra) as instance:
        assert instance._process is not None
        yield port, instance._process.pid


def imaptest(binary: str, port: int, clients: int, secs: int, extra: list[str]) -> str:
    """One imaptest run; returns its output from its totals on (its last lines)."""
    mbox = Path(binary).parent / "tests" / "default.mbox"
    argv = [
        binary,
        "host=127.0.0.1",
        f"port={port}",
        f"user={USER}",
        f"pass={PASSWORD}",
        f"mbox={mbox}",
        f"clients={clients}",
        f"secs={secs}",
        "no_tracking",
        *extra,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=secs + 120).stdout
    lines = out.splitlines()
    totals = [i for i, line in enumerate(lines) if line.startswith("Totals")]
    return "\n".join(lines[totals[-1] :] if totals else lines[-12:])


def profile(pids: list[int], directory: Path, secs: int) -> list[subprocess.Popen[bytes]]:
    pyspy = Path(sys.executable).parent / "py-spy"
    directory.mkdir(parents=True, exist_ok=True)
    return [
        subprocess.Popen(
            [
                str(pyspy),
                "record",
                "-p",
                str(pid),
                "-f",
                "raw",
                "-d",
                str(secs),
                "-r",
                "50",
                "-o",
                str(directory / f"imapd-{pid}.txt"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for pid in pids
    ]


def _tree(root: int) -> dict[int, list[str]]:
    """Process `root` and its descendants: pid -> the fields of /proc/pid/stat after comm."""
    stats: dict[int, list[str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                text = Path(f"/proc/{entry}/stat").read_text()
                stats[int(entry)] = text.rsplit(")", 1)[1].split()
            except OSError:
                continue  # gone meanwhile
    tree, grown = {root}, True
    while grown:
        more = {pid for pid, fields in stats.items() if int(fields[1]) in tree} - tree
        grown = bool(more)
        tree |= more
    return {pid: stats[pid] for pid in tree if pid in stats}


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of process `root` and all its descendants, including those
    that exited and were reaped (their parent's cutime/cstime), from /proc: what the machine's
    other load does not inflate the way it inflates time per command."""
    ticks = sum(sum(int(f) for f in fields[11:15]) for fields in _tree(root).values())
    return ticks / os.sysconf("SC_CLK_TCK")


def tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and its descendants (pages shared between them counted in
    each, as `ps` would: an upper bound)."""
    return rss_kib(list(_tree(root)))


class Idlers:
    """`count` sessions idling on INBOX, held open by a thread with its own event loop, each
    counting the untagged responses it hears while it idles."""

    def __init__(self, port: int, count: int) -> None:
        self.port, self.count = port, count
        self.heard = [0] * count
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Idlers:
        self._thread.start()
        self._ready.wait(300)
        if self._error is not None or not self._ready.is_set():
            raise RuntimeError(f"idle sessions did not open: {self._error!r}")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(120)

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as error:  # reported by __enter__
            self._error = error
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        sessions = []
        for _ in range(self.count):  # one after another, as clients start over a morning
            sessions.append(await self._open())
        self._ready.set()
        readers = [asyncio.ensure_future(self._listen(i, r)) for i, (r, _) in enumerate(sessions)]
        await self._stop.wait()
        for reader in readers:
            reader.cancel()
        for _, writer in sessions:
            writer.write(b"DONE\r\nz LOGOUT\r\n")
            writer.close()

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
        await reader.readline()
        for tag, line in ((b"a", f"a LOGIN {USER} {PASSWORD}".encode()),
                          (b"b", b"b SELECT INBOX")):
            writer.write(line + b"\r\n")
            while not (reply := await reader.readline()).startswith(tag + b" "):
                if not reply:
                    raise ConnectionError("closed before its tagged reply")
            if not reply.startswith(tag + b" OK"):
                raise ConnectionError(reply.decode(errors="replace"))
        writer.write(b"c IDLE\r\n")
        while not (await reader.readline()).startswith(b"+"):
            pass
        return reader, writer

    async def _listen(self, index: int, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            if line.startswith(b"* ") and not line.startswith(b"* OK"):
                self.heard[index] += 1


def measured(
    binary: str, port: int, root: int, clients: int, secs: int, extra: list[str], idle: int = 0
) -> tuple[str, str]:
    """One imaptest run and a line on the server's CPU time per command."""
    if idle:
        unloaded = tree_rss_kib(root)
        with Idlers(port, idle) as idlers:
            held = tree_rss_kib(root)
            totals, line = measured(binary, port, root, clients, secs, extra)
        heard = sum(1 for count in idlers.heard if count)
        return totals, (
            f"{line}\n{idle} IDLE sessions held on INBOX during the run: server RSS"
            f" {unloaded // 1024} -> {held // 1024} MiB with them open,"
            f" {(held - unloaded) / idle:.0f} KiB per idle session;"
            f" {heard} of {idle} heard the run's changes"
        )
    before = tree_cpu(root)
    peak: list[int] = []
    stop = threading.Event()

    def sample() -> None:  # RSS while the sessions are open (they close at the end)
        while not stop.wait(secs / 3):
            peak.append(tree_rss_kib(root))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        totals = imaptest(binary, port, clients, secs, extra)
    finally:
        stop.set()
        sampler.join()
    cpu = tree_cpu(root) - before
    count = commands_in(totals)
    return totals, (
        f"server processes: {cpu:.1f} s CPU for {count} commands,"
        f" {1000 * cpu / max(count, 1):.2f} ms per command; RSS during the run"
        f" {max(peak, default=0) // 1024} MiB"
    )


def rss_kib(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
        except OSError:
            continue  # gone meanwhile
        for line in lines:
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def commands_in(totals: str) -> int:
    """The sum of imaptest's totals line (the last line of numbers)."""
    numbers = [line for line in totals.splitlines() if re.fullmatch(r"[\d\s]+", line.strip())]
    return sum(int(n) for n in numbers[-1].split()) if numbers else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imaptest", required=True)
    parser.add_argument("-c", "--clients", type=int, default=10)
    parser.add_argument("-s", "--secs", type=int, default=30)
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--only", choices=("default", "logout=0"), help="run one profile")
    parser.add_argument("--idle", type=int, default=0,
                        help="IDLE sessions on INBOX held on each server during each run")
    parser.add_argument("--prefork", type=int, default=2, help="imapd workers under master")
    parser.add_argument("--conf", action="append", default=[],
                        help="an imapd.conf line for sealmail (A/B of an option)")
    parser.add_argument("--sealmail-only", action="store_true",
                        help="no Dovecot run (A/B of two sealmail trees: CPU per command)")
    parser.add_argument("--memory-store", action="store_true",
                        help="imapd on the in-memory store, one worker: the floor without it")
    args = parser.parse_args()
    if args.memory_store:
        args.prefork = 1
    print("load average before:", os.getloadavg())
    with (
        traversable_tmpdir() as root,
        sealmail_master(root / "sealmail", args.prefork,
                        "".join(f"{line}\n" for line in args.conf),
                        args.memory_store) as (ours, master_pid, pids),
        contextlib.nullcontext((0, 0)) if args.sealmail_only else dovecot(root)
        as (theirs, dovecot_pid),
    ):
        for name, extra in (("default profile", []), ("logout=0", ["logout=0"])):
            if args.only and not name.startswith(args.only):
                continue
            print(f"== {name}, clients={args.clients}, secs={args.secs}")
            if not args.sealmail_only:
                print("-- dovecot")
                print(*measured(args.imaptest, theirs, dovecot_pid, args.clients, args.secs,
                                extra, args.idle),
                      sep="\n")
            spies = (
                profile(pids, args.profile / name.replace(" ", "-"), args.secs)
                if args.profile
                else []
            )
            store = ", in-memory store" if args.memory_store else ""
            print(f"-- sealmail (master, imapd prefork={args.prefork}{store}, auth_cache_size 1000"
                  f"{''.join(', ' + line for line in args.conf)})")
            print(*measured(args.imaptest, ours, master_pid, args.clients, args.secs, extra,
                           args.idle),
                  sep="\n")
            for spy in spies:
                spy.wait(60)
            print("load average:", os.getloadavg())


if __name__ == "__main__":
    main()
