"""A private PostgreSQL cluster for the tests: Debian's binaries, our own data directory.

Never the system service: `initdb` into a fresh directory under /tmp and `pg_ctl start` on a
UNIX socket in that directory (no TCP listener), both run as the `postgres` account when we are
root (PostgreSQL refuses to run as root). fsync is off (unless `durable`, for benchmarks): the
tests check what the store does, not the disk under PostgreSQL, and a crash of the test machine
loses only a throw-away cluster.

One cluster per test process, started the first time a test asks (`shared_cluster()`), stopped
at exit. Each test gets its own schema (`PrivateCluster.schema_dsn`): the store's tables are
created in it by the store's own migrations, and a test that reopens its store on the same
imapd.conf finds the same schema again.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from tests.support.peers import PeerUnavailable

ACCOUNT = "postgres"
DATABASE = "sealmail"
SUPERUSER = "sealmail"


def postgres_bin() -> Path:
    """The newest Debian PostgreSQL's bin directory (not on PATH: /usr/lib/postgresql/N/bin)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise PeerUnavailable("PostgreSQL is not installed (Debian's postgresql package)")
    return Path(initdb).resolve().parent


class PrivateCluster:
    """initdb + pg_ctl in `root`; `dsn()` reaches it over its UNIX socket."""

    def __init__(self, root: Path, port: int = 5432, *, durable: bool = False) -> None:
        """`durable`: keep PostgreSQL's fsync (benchmarks); tests run without it."""
        self.root = root
        self.data = root / "data"
        self.socket_directory = root / "socket"
        self.log = root / "postgres.log"
        self.port = port
        self.durable = durable
        self.bin = postgres_bin()
        try:
            if os.geteuid() == 0:
                pwd.getpwnam(ACCOUNT)
        except KeyError as exc:
            raise PeerUnavailable(f"no {ACCOUNT} account (Debian's postgresql package)") from exc
        self._schemas: set[str] = set()
        self._lock = threading.Lock()

    @property
    def _account(self) -> str | None:
        """Who runs PostgreSQL: `postgres` when we are root (it refuses root), else ourselves."""
        return ACCOUNT if os.geteuid() == 0 else None

    def _run(self, *argv: str) -> None:
        subprocess.run(argv, check=True, user=self._account, cwd=self.root, capture_output=True,
                       timeout=120)

    def start(self) -> None:
        self.socket_directory.mkdir(mode=0o755)
        if self._account is not None:
            shutil.chown(self.root, self._account)
            shutil.chown(self.socket_directory, self._account)
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
                  "--auth=trust", "-E", "UTF8", "--locale=C", "--no-sync")
        self._options = options = (
            f"-k {self.socket_directory} -p {self.port} -c listen_addresses=''"
            " -c max_connections=400 -c unix_socket_permissions=0777"
            + ("" if self.durable else " -c fsync=off -c full_page_writes=off")
        )
        try:
            self._run(str(self.bin / "pg_ctl"), "start", "-w", "-t", "120", "-D",
                      str(self.data), "-l", str(self.log), "-o", options)
        except subprocess.CalledProcessError as exc:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {exc.stderr!r}\n{log}") from exc
        import psycopg

        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {DATABASE}")  # type: ignore[arg-type]

    def restart(self) -> None:
        """Stop at once (as a crash would: `-m immediate`) and start again on the same data."""
        self._run(str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D", str(self.data))
        self._run(str(self.bin / "pg_ctl"), "start", "-w", "-t", "120", "-D", str(self.data),
                  "-l", str(self.log), "-o", self._options)

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run([str(self.bin / "pg_ctl"), "stop", "-m", "immediate", "-D",
                            str(self.data)], user=self._account, cwd=self.root,
                           capture_output=True, timeout=120, check=False)

    def dsn(self, database: str = DATABASE) -> str:
        return f"host={self.socket_directory} port={self.port} user={SUPERUSER} dbname={database}"

    def schema_dsn(self, key: str) -> str:
        """A DSN whose tables live in a schema of their own, the same for the same `key`."""
        schema = "t_" + hashlib.sha1(key.encode()).hexdigest()[:24]
        with self._lock:
            if schema not in self._schemas:
                import psycopg

                with psycopg.connect(self.dsn(), autocommit=True) as conn:
                    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")  # type: ignore[arg-type]
                self._schemas.add(schema)
        return f"{self.dsn()} options='-csearch_path={schema}'"


_shared: PrivateCluster | None = None
_shared_lock = threading.Lock()


def shared_cluster() -> PrivateCluster:
    """This process's cluster, started on first use and stopped (and removed) at exit."""
    global _shared
    with _shared_lock:
        if _shared is None:
            root = Path(tempfile.mkdtemp(prefix="smpg-", dir="/tmp"))
            root.chmod(0o755)
            cluster = PrivateCluster(root)

            def remove() -> None:
                cluster.stop()
                shutil.rmtree(root, ignore_errors=True)

            atexit.register(remove)
            cluster.start()
            _shared = cluster
        return _shared
