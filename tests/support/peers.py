"""Private, throw-away instances of the real mail systems sealmail replaces and talks to.

Each instance lives in a directory of its own, listens only on 127.0.0.1 and UNIX sockets, and is
started and stopped by the test or benchmark that uses it; nothing here touches the system's own
/etc/postfix, /etc/imapd.conf or /etc/dovecot setups or their spools.

Why the directories must be "traversable": Postfix's delivery agents, Cyrus's lmtpd and Dovecot's
mail processes drop root and run as `postfix`, `cyrus` and `mail`. A UNIX socket or spool below a
0700 directory (pytest's /tmp/pytest-of-root is one) is then out of their reach, which shows up
only as a deferred delivery. `traversable_tmpdir()` makes a short 0755 directory under /tmp (UNIX
socket paths are limited to 107 bytes) and every instance checks its ancestors before starting.

Binaries come from Debian's packages (postfix, cyrus-common, dovecot-core, dovecot-lmtpd). When one
is missing the instance raises `PeerUnavailable`, which tests turn into `pytest.skip`.

`LmtpClient` is a real-socket LMTP client (RFC 2033) used to feed the peers and sealmail alike.
Python's `smtplib.LMTP` reads a single reply after DATA, so it cannot drive a multi-recipient
transaction: RFC 2033 section 4.2 gives one reply per accepted recipient.
"""

from __future__ import annotations

import contextlib
import grp
import imaplib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import smtplib
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

POSTFIX = "/usr/sbin/postfix"
POSTQUEUE = "/usr/sbin/postqueue"
POSTCONF = "/usr/sbin/postconf"
POSTMAP = "/usr/sbin/postmap"
POSTALIAS = "/usr/sbin/postalias"
CYRUS_BIN = Path("/usr/lib/cyrus/bin")
CYRUS_MASTER = CYRUS_BIN / "master"
CYRUS_LMTPD = CYRUS_BIN / "lmtpd"
# Debian's cyrus-imapd conflicts with dovecot-imapd: its imapd is unpacked here (cyrus_imapd()).
CYRUS_IMAPD_CACHE = Path(
    os.environ.get("SEALMAIL_CYRUS_IMAPD_DIR", "/var/tmp/sealmail-cyrus-imapd")
)
DOVECOT = "/usr/sbin/dovecot"
DOVECOT_LMTP = "/usr/lib/dovecot/lmtp"

LmtpAddress = str | tuple[str, int]  # a UNIX socket path, or (host, port)


class PeerUnavailable(Exception):
    """A peer's binary is not installed here; the caller skips rather than fails."""


class PeerFailed(RuntimeError):
    """A peer did not start, stop or answer as expected; the message carries its log tail."""


def require_binaries(package: str, *paths: str | os.PathLike[str]) -> None:
    """Raise PeerUnavailable naming the Debian package when one of `paths` is missing."""
    for path in paths:
        if not os.access(path, os.X_OK):
            raise PeerUnavailable(f"{path} is missing (install Debian's {package} package)")


@contextlib.contextmanager
def traversable_tmpdir(prefix: str = "smpeer-") -> Iterator[Path]:
    """A short, mode 0755 directory under /tmp, removed afterwards (see the module docstring)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def check_reachable(path: Path, user: str) -> None:
    """Fail early and clearly when `user` could not walk down to `path`."""
    account = pwd.getpwnam(user)
    groups = {g.gr_gid for g in grp.getgrall() if user in g.gr_mem} | {account.pw_gid}
    for directory in [*reversed(path.resolve().parents), path.resolve()]:
        if not directory.exists():
            continue
        st = directory.stat()
        if st.st_uid == account.pw_uid:
            allowed = bool(st.st_mode & 0o100)
        elif st.st_gid in groups:
            allowed = bool(st.st_mode & 0o010)
        else:
            allowed = bool(st.st_mode & 0o001)
        if not allowed:
            raise PeerFailed(
                f"user {user!r} cannot enter {directory} (mode {st.st_mode & 0o777:o}); "
                "use tests.support.peers.traversable_tmpdir() for peer instances"
            )


def postfix_config_dir(directory: Path) -> Path:
    """`directory`, made a Postfix config directory with a minimal main.cf, for Postfix's tools
    run outside an instance: `postmap -c DIR`, `postalias -c DIR`, `postconf -c DIR`.

    Debian's tools read $config_directory/main.cf before anything else and stop with
    `fatal: open /etc/postfix/main.cf` where the package was installed but never configured (a
    fresh machine); with -c they read this one, and nothing of the host's /etc/postfix.
    """
    directory.mkdir(parents=True, exist_ok=True)
    main_cf = directory / "main.cf"
    if not main_cf.exists():
        main_cf.write_text("compatibility_level = 3.6\n")
    return directory


# Ports for free_tcp_port: below the kernel's ephemeral range, so that no client connection (nor
# a bind to port 0) takes one between the probe and the test's own bind, and a block of its own for
# each pytest-xdist worker (scripts/test.sh runs two), so that two workers never pick the same
# port. Within a process the ports are handed out in turn, so one test's ports differ too.
PORT_FLOOR = 10000


def _port_block() -> range:
    """This process's ports: its xdist worker's share of [PORT_FLOOR, ephemeral range start)."""
    try:
        ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        ephemeral = 32768  # Linux's default
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker) if worker.isdigit() else 0
    size = (ephemeral - PORT_FLOOR) // max(count, 1)
    if size < 100 or index >= count:
        return range(0)  # an unusual port range: let the kernel pick (free_tcp_port)
    return range(PORT_FLOOR + index * size, PORT_FLOOR + (index + 1) * size)


_PORTS = _port_block()
_port_turn = secrets.randbelow(len(_PORTS)) if _PORTS else 0  # two runs at once: apart


def free_tcp_port() -> int:
    """A port on 127.0.0.1 that is free now, from this worker's block (see PORT_FLOOR; a later bind
    may still race with another program, not with another test worker)."""
    global _port_turn
    for _ in range(min(len(_PORTS), 1000)):
        port = _PORTS[_port_turn % len(_PORTS)]
        _port_turn += 1
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            try:
                probe.bind(("127.0.0.1", port))  # no SO_REUSEADDR: a TIME_WAIT port is skipped
            except OSError:
                continue
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        chosen: int = probe.getsockname()[1]
        return chosen


@contextlib.contextmanager
def closed_tcp_port() -> Iterator[int]:
    """A port on 127.0.0.1 that refuses connections for as long as the block runs: a socket is
    bound to it but does not listen, so a connect gets RST, and no one (another test, another
    xdist worker: it is not SO_REUSEADDR, which asyncio's servers set) can listen on it. A port
    only bound and closed again may be taken by the next bind(0) anywhere."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


def _connect(address: LmtpAddress, timeout: float) -> socket.socket:
    if isinstance(address, str):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
        except OSError:
            sock.close()
            raise
        return sock
    return socket.create_connection(address, timeout=timeout)


def wait_until_accepting(
    address: LmtpAddress,
    timeout: float,
    process: subprocess.Popen[bytes] | None = None,
    log: Path | None = None,
) -> None:
    """Poll until `address` accepts a connection; fail at once if `process` has exited."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _connect(address, 1.0).close()
            return
        except OSError as exc:
            last = exc
        if process is not None and process.poll() is not None:
            raise PeerFailed(
                f"process exited with {process.returncode} before {address} accepted"
                + _log_tail(log)
            )
        if time.monotonic() > deadline:
            raise PeerFailed(f"{address} did not accept within {timeout}s: {last}" + _log_tail(log))
        time.sleep(0.05)


def _log_tail(log: Path | None, lines: int = 30) -> str:
    if log is None or not log.exists():
        return ""
    tail = log.read_text(errors="replace").splitlines()[-lines:]
    return f"\n--- {log} (last {len(tail)} lines) ---\n" + "\n".join(tail)


def _run(argv: Sequence[str | os.PathLike[str]], timeout: float = 60.0) -> str:
    done = subprocess.run(
        [str(a) for a in argv], capture_output=True, text=True, timeout=timeout, check=False
    )
    if done.returncode != 0:
        raise PeerFailed(
            f"{' '.join(map(str, argv))} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
        )
    return done.stdout


def _stop_process(process: subprocess.Popen[bytes], grace: float = 15.0) -> None:
    """SIGTERM, then SIGKILL after `grace` seconds."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def process_identity(pid: int) -> tuple[str, int] | None:
    """A running process's name and start time (/proc/PID/stat: comm, field 22), None once it
    is gone (or a zombie). With its pid it names one process: a later one that reuses the pid
    has another start time, so a signal sent by pid goes to the process we meant or to none."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    head, _, tail = stat.rpartition(")")
    fields = tail.split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return head.partition("(")[2], int(fields[19])


def _chown_tree(root: Path, user: str, group: str) -> None:
    uid, gid = pwd.getpwnam(user).pw_uid, grp.getgrnam(group).gr_gid
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


# --------------------------------------------------------------------------------------------
# An LMTP client on a real socket (RFC 2033)


class LmtpProtocolError(Exception):
    """The server broke the protocol (bad greeting, malformed reply, early close)."""


@dataclass(frozen=True, slots=True)
class Reply:
    code: int
    text: str  # the lines' texts joined with "\n", without the codes

    @property
    def positive(self) -> bool:
        return 200 <= self.code < 300

    @property
    def enhanced_status(self) -> str | None:
        """The RFC 3463 code that opens the last line, e.g. "5.1.1"."""
        found = re.match(
            r"([245]\.\d{1,3}\.\d{1,3})\b", self.text.splitlines()[-1] if self.text else ""
        )
        return found.group(1) if found else None


@dataclass(frozen=True, slots=True)
class Transaction:
    """The outcome of one MAIL/RCPT.../DATA transaction."""

    mail: Reply
    rcpt: tuple[tuple[str, Reply], ...]
    # RFC 2033 section 4.2: one reply per recipient that RCPT accepted, in RCPT order.
    data: tuple[tuple[str, Reply], ...]
    end_of_data_seconds: float  # from sending the final "." to the last recipient's reply

    @property
    def delivered(self) -> list[str]:
        return [rcpt for rcpt, reply in self.data if reply.positive]


def dot_stuff(message: bytes) -> bytes:
    """The message as DATA lines: CRLF line ends, leading dots doubled (RFC 5321 4.5.2)."""
    lines = message.replace(b"\r\n", b"\n").split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    return b"".join((b"." + line if line.startswith(b".") else line) + b"\r\n" for line in lines)


class LmtpClient:
    """One LMTP session; pipelines MAIL, RCPT and DATA when the server offers PIPELINING."""

    def __init__(
        self, address: LmtpAddress, timeout: float = 60.0, lhlo: str = "client.test.example"
    ) -> None:
        self.address = address
        self._sock = _connect(address, timeout)
        self._reader = self._sock.makefile("rb")
        greeting = self.read_reply()
        if greeting.code != 220:
            self.close()
            raise LmtpProtocolError(f"greeting from {address}: {greeting}")
        self._send(f"LHLO {lhlo}\r\n".encode())
        reply = self.read_reply()
        if reply.code != 250:
            self.close()
            raise LmtpProtocolError(f"LHLO refused by {address}: {reply}")
        self.extensions = {line.split()[0].upper() for line in reply.text.splitlines()[1:] if line}

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.quit()

    def _send(self, data: bytes) -> None:
        self._sock.sendall(data)

    def read_reply(self) -> Reply:
        """One possibly multi-line reply (RFC 5321 4.2: "250-..." lines, then "250 ...")."""
        texts: list[str] = []
        while True:
            line = self._reader.readline(8192)
            if not line:
                raise LmtpProtocolError(f"{self.address} closed the connection")
            if len(line) < 4 or not line[:3].isdigit() or line[3:4] not in (b" ", b"-", b"\r"):
                raise LmtpProtocolError(f"malformed reply line from {self.address}: {line!r}")
            texts.append(line[4:].rstrip(b"\r\n").decode("utf-8", "replace"))
            if line[3:4] != b"-":
                return Reply(int(line[:3]), "\n".join(texts))

    def deliver(self, sender: str, recipients: Sequence[str], message: bytes) -> Transaction:
        """Run one transaction; replies are returned, never raised, so callers can check them."""
        commands = [f"MAIL FROM:<{sender}>\r\n".encode()]
        commands += [f"RCPT TO:<{rcpt}>\r\n".encode() for rcpt in recipients]
        if "PIPELINING" in self.extensions:
            self._send(b"".join([*commands, b"DATA\r\n"]))
            mail = self.read_reply()
            rcpt = tuple((r, self.read_reply()) for r in recipients)
        else:
            self._send(commands[0])
            mail = self.read_reply()
            answers = []
            for r, command in zip(recipients, commands[1:], strict=True):
                self._send(command)
                answers.append((r, self.read_reply()))
            rcpt = tuple(answers)
            self._send(b"DATA\r\n")
        go_ahead = self.read_reply()
        accepted = [r for r, reply in rcpt if reply.positive]
        if go_ahead.code != 354:
            # No valid recipient (or MAIL failed): the DATA reply answers for the transaction.
            # The MAIL may still stand on the server's side (Cyrus and Dovecot answer a new MAIL
            # with 503), so reset as Postfix's client does before reusing the connection.
            self._send(b"RSET\r\n")
            self.read_reply()
            return Transaction(mail, rcpt, tuple((r, go_ahead) for r in accepted), 0.0)
        self._send(dot_stuff(message))
        started = time.perf_counter()
        self._send(b".\r\n")
        data = tuple((r, self.read_reply()) for r in accepted)
        return Transaction(mail, rcpt, data, time.perf_counter() - started)

    def quit(self) -> None:
        with contextlib.suppress(OSError, LmtpProtocolError):
            self._send(b"QUIT\r\n")
            self.read_reply()
        self.close()

    def close(self) -> None:
        self._reader.close()
        self._sock.close()


# --------------------------------------------------------------------------------------------
# Postfix 3.7


@dataclass(frozen=True, slots=True)
class DeliveryOutcome:
    """One recipient's final line in Postfix's log."""

    status: str  # sent, bounced or expired
    dsn: str  # e.g. 2.0.0, 5.1.1
    relay: str
    text: str  # what the server said, as Postfix logs it


class PostfixInstance:
    """A private Postfix: own main.cf/master.cf, queue and log under `tmpdir/postfix`.

    What Postfix needs when root starts it from a private directory:
    - `postfix -c DIR` selects the config directory; as root no `alternate_config_directories`
      entry in /etc/postfix/main.cf is needed (that is only for the set-gid postqueue/postdrop
      run by other users).
    - queue_directory must exist and be owned by root; `postfix -c DIR check` then creates its
      sub-directories with the ownerships Postfix wants (postfix:root 0700, maildrop and public
      postfix:postdrop), from $meta_directory/postfix-files.
    - data_directory must be owned by `mail_owner` (postfix), or `check` warns and `start` fails
      to take master.lock.
    - maillog_file is written by postlogd (the `postlog` service in master.cf, unix-dgram), and
      only under a directory named in maillog_file_prefixes (default /var, /dev/stdout).
    - mail_owner=postfix and setgid_group=postdrop are Debian's accounts; compatibility_level=3.6
      silences the backwards-compatibility warnings and turns on the 3.x safe defaults.
    - The lmtp client runs as `postfix`: the target UNIX socket, and every directory above it,
      must be reachable by that user (the seed's "both user ids can access the socket").
    """

    def __init__(
        self,
        tmpdir: Path,
        main_cf_overrides: Mapping[str, str] | None = None,
        master_cf_extra: str = "",
        *,
        hostname: str = "mx.test.example",
        domain: str = "test.example",
    ) -> None:
        self.root = tmpdir / "postfix"
        self.config_dir = self.root / "etc"
        self.queue_dir = self.root / "spool"
        self.data_dir = self.root / "data"
        self.maillog = self.root / "maillog"
        self.hostname = hostname
        self.domain = domain
        self.smtp_port = free_tcp_port()
        self.main_cf_overrides = dict(main_cf_overrides or {})
        self.master_cf_extra = master_cf_extra
        self._master: tuple[int, tuple[str, int]] | None = None  # pid, process_identity

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def main_cf(self) -> dict[str, str]:
        settings = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "maillog_file": str(self.maillog),
            "maillog_file_prefixes": str(self.root),
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": self.hostname,
            "mydomain": self.domain,
            "myorigin": "$mydomain",
            "mydestination": "$myhostname, $mydomain, localhost",
            "mynetworks": "127.0.0.0/8",
            # Accept any local part; the LMTP server's 550 5.1.1 decides (and becomes a bounce).
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "smtpd_peername_lookup": "no",
            # Nothing may leave the machine: non-local mail fails at once instead of using DNS.
            "default_transport": "error:this test instance delivers only locally",
            "relay_transport": "error:this test instance delivers only locally",
            "notify_classes": "",
            # Retry soon, so a delivery deferred while a server starts is not stuck for minutes.
            "queue_run_delay": "2s",
            "minimal_backoff_time": "2s",
            "maximal_backoff_time": "10s",
        }
        settings.update(self.main_cf_overrides)
        return settings

    def master_cf(self) -> str:
        services = [
            f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd",
            "pickup unix n - n 60 1 pickup",
            "cleanup unix n - n - 0 cleanup",
            "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite",
            "bounce unix - - n - 0 bounce",
            "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce",
            "verify unix - - n - 1 verify",
            "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap",
            "smtp unix - - n - - smtp",
            "relay unix - - n - - smtp",
            "showq unix n - n - - showq",
            "error unix - - n - - error",
            "retry unix - - n - - error",
            "discard unix - - n - - discard",
            "local unix - n n - - local",
            "lmtp unix - - n - - lmtp",
            "anvil unix - - n - 1 anvil",
            "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        return "\n".join(services) + "\n" + self.master_cf_extra.strip() + "\n"

    def start(self) -> None:
        require_binaries("postfix", POSTFIX, POSTQUEUE)
        check_reachable(self.root.parent, "postfix")
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.queue_dir.mkdir(mode=0o755, exist_ok=True)
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        _chown_tree(self.data_dir, "postfix", "root")
        (self.config_dir / "main.cf").write_text(
            "".join(f"{key} = {value}\n" for key, value in self.main_cf().items())
        )
        (self.config_dir / "master.cf").write_text(self.master_cf())
        _run([POSTFIX, "-c", self.config_dir, "check"])
        _run([POSTFIX, "-c", self.config_dir, "start"])
        pidfile = self.queue_dir / "pid" / "master.pid"
        wait_until_accepting(("127.0.0.1", self.smtp_port), 30.0, log=self.maillog)
        with contextlib.suppress(OSError, ValueError):
            pid = int(pidfile.read_text().split()[0])
            identity = process_identity(pid)
            if identity is not None and identity[0] == "master":
                self._master = pid, identity

    def stop(self, grace: float = 15.0) -> None:
        """`postfix stop` (master is not our child: it only signals it), then wait until that
        master is gone so the directory can go. SIGKILL only as a last resort, and only while
        the pid still is that master (same name and start time), never a process that took
        its pid since."""
        if not (self.config_dir / "main.cf").exists():
            return
        with contextlib.suppress(PeerFailed):
            _run([POSTFIX, "-c", self.config_dir, "stop"])
        if self._master is None:
            return
        pid, identity = self._master
        self._master = None
        deadline = time.monotonic() + grace
        while process_identity(pid) == identity and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_identity(pid) == identity:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def send(self, sender: str, recipients: Sequence[str], message: bytes | str) -> str:
        """Submit over SMTP to this instance's smtpd; returns the queue ID Postfix assigned.

        A refused recipient or message raises smtplib's error, as it would for any client.
        """
        with smtplib.SMTP(
            "127.0.0.1", self.smtp_port, local_hostname="client.test.example"
        ) as smtp:
            smtp.ehlo()
            smtp.mail(sender)
            for rcpt in recipients:
                code, text = smtp.rcpt(rcpt)
                if code >= 400:
                    raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
            code, text = smtp.data(message)
            if code != 250:
                raise smtplib.SMTPDataError(code, text)
        found = re.search(rb"queued as ([0-9A-Za-z]+)", text)
        if not found:
            raise PeerFailed(f"no queue ID in Postfix's reply to DATA: {text!r}")
        return found.group(1).decode()

    def wait_for_outcomes(
        self, queue_id: str, recipients: Sequence[str], timeout: float = 30.0
    ) -> dict[str, DeliveryOutcome]:
        """Each recipient's final delivery log entry (status sent or bounced) for `queue_id`.

        A deferred attempt is not final: Postfix retries (queue_run_delay is 2s here).
        """
        deadline = time.monotonic() + timeout
        pattern = re.compile(
            rf"^.* {re.escape(queue_id)}: to=<(?P<rcpt>[^>]*)>,.*relay=(?P<relay>[^,]*),.*"
            rf"dsn=(?P<dsn>[0-9.]+), status=(?P<status>sent|bounced|expired) \((?P<text>.*)\)$",
            re.MULTILINE,
        )
        while True:
            outcomes = {
                m["rcpt"]: DeliveryOutcome(m["status"], m["dsn"], m["relay"], m["text"])
                for m in pattern.finditer(self.log_text())
            }
            if all(r in outcomes for r in recipients):
                return {r: outcomes[r] for r in recipients}
            if time.monotonic() > deadline:
                raise PeerFailed(
                    f"{queue_id}: no final status in {timeout}s for "
                    f"{sorted(set(recipients) - set(outcomes))}" + _log_tail(self.maillog)
                )
            time.sleep(0.1)

    def log_text(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def wait_for_log(self, pattern: str, timeout: float = 30.0) -> re.Match[str]:
        """The first match of `pattern` (re.MULTILINE) in the mail log, waiting for it to appear."""
        compiled = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + timeout
        while True:
            found = compiled.search(self.log_text())
            if found:
                return found
            if time.monotonic() > deadline:
                raise PeerFailed(
                    f"no log line matched {pattern!r} in {timeout}s" + _log_tail(self.maillog)
                )
            time.sleep(0.1)

    def queue(self) -> list[dict[str, object]]:
        """The queue as `postqueue -j` reports it: one JSON object per message."""
        out = _run([POSTQUEUE, "-c", self.config_dir, "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def queue_is_empty(self) -> bool:
        return not self.queue()

    def wait_for_empty_queue(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.queue_is_empty():
            if time.monotonic() > deadline:
                raise PeerFailed(
                    f"queue not empty after {timeout}s: {self.queue()}" + _log_tail(self.maillog)
                )
            time.sleep(0.1)

    def flush(self) -> None:
        """Attempt delivery of all queued mail now (`postqueue -f`)."""
        _run([POSTQUEUE, "-c", self.config_dir, "-f"])


# --------------------------------------------------------------------------------------------
# Cyrus 3.6 (cyrus-common: master, lmtpd, tools)


class CyrusInstance:
    """A private Cyrus master running lmtpd on a UNIX socket and on 127.0.0.1 with `lmtpd -a`.

    Every service command carries `-C imapd.conf`: Cyrus's master does not pass its own -C on to
    the processes it spawns, and without it they silently use /etc/imapd.conf and /var/lib/cyrus.

    Mailboxes: cyrus-common has no imapd to CREATE over, and no command-line creator. By default
    lmtpd's autocreate (`autocreate_post: yes`, `autocreate_quota: 0` = no quota) makes a user's
    INBOX on the first delivery, and `autocreate_users` limits that to the listed users so others
    still get 550 5.1.1; `start()` delivers one setup message to each user, so mailbox creation is
    never part of what a caller measures; `message_count()` includes it. With
    `create_over_imap=True` the INBOXes are made as a Cyrus operator makes them, by an admin's
    CREATE over IMAP (Cyrus's imapd unpacked from Debian's cyrus-imapd, see cyrus_imapd()), and
    there is no autocreate: autocreate gives each user a quota root, which slows Cyrus's lmtpd
    down, so benchmarks use this.
    """

    def __init__(
        self,
        tmpdir: Path,
        users: Sequence[str] = ("alice", "bob", "carol"),
        *,
        prefork: int = 1,
        imapd_conf_extra: Mapping[str, str] | None = None,
        create_over_imap: bool = False,
    ) -> None:
        self.root = tmpdir / "cyrus"
        self.create_over_imap = create_over_imap
        self.imap_port = free_tcp_port()
        self.admin_password = secrets.token_hex(12)
        self.conf_path = self.root / "imapd.conf"
        self.cyrus_conf_path = self.root / "cyrus.conf"
        self.configdirectory = self.root / "conf"
        self.partition = self.root / "spool"
        self.socket_path = str(self.root / "socket" / "lmtp")
        self.tcp_port = free_tcp_port()
        self.users = tuple(users)
        self.prefork = prefork
        self.imapd_conf_extra = dict(imapd_conf_extra or {})
        self.output = self.root / "master.out"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def tcp_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.tcp_port)

    def imapd_conf(self) -> dict[str, str]:
        settings = {
            "configdirectory": str(self.configdirectory),
            "partition-default": str(self.partition),
            "lmtpsocket": self.socket_path,
            "idlesocket": str(self.root / "socket" / "idle"),
            "notifysocket": str(self.root / "socket" / "notify"),
            "servername": "cyrus.test.example",
            "admins": "cyrus",
            "sasl_pwcheck_method": "auxprop",
            "sasl_sasldb_path": str(self.configdirectory / "sasldb2"),
            "delete_mode": "immediate",
            "expunge_mode": "immediate",
            "syslog_prefix": f"cyrus-{self.root.parent.name}",
        }
        if self.create_over_imap:
            settings["allowplaintext"] = "yes"  # the admin's LOGIN, on 127.0.0.1
        else:
            settings["autocreate_post"] = "yes"
            settings["autocreate_quota"] = "0"
            settings["autocreate_users"] = " ".join(self.users) or "nobody-at-all"
        settings.update(self.imapd_conf_extra)
        return settings

    def cyrus_conf(self) -> str:
        conf = self.conf_path
        return (
            "START {\n"
            f'  recover cmd="ctl_cyrusdb -C {conf} -r"\n'
            "}\n"
            "SERVICES {\n"
            f'  lmtpunix cmd="lmtpd -C {conf}" listen="{self.socket_path}" prefork={self.prefork}\n'
            f'  lmtp cmd="lmtpd -C {conf} -a" listen="127.0.0.1:{self.tcp_port}" prefork=0\n'
            + (f'  imap cmd="{cyrus_imapd()} -C {conf}" listen="127.0.0.1:{self.imap_port}"'
               " prefork=0\n" if self.create_over_imap else "")
            + "}\n"
            "EVENTS {\n}\n"
            "DAEMON {\n}\n"
        )

    def start(self) -> None:
        require_binaries("cyrus-common", CYRUS_MASTER, CYRUS_LMTPD, CYRUS_BIN / "ctl_cyrusdb")
        check_reachable(self.root.parent, "cyrus")
        for directory in (self.configdirectory, self.partition, self.root / "socket"):
            directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            "".join(f"{key}: {value}\n" for key, value in self.imapd_conf().items())
        )
        self.cyrus_conf_path.write_text(self.cyrus_conf())
        if self.create_over_imap:
            subprocess.run(
                ["saslpasswd2", "-p", "-c", "-f", str(self.configdirectory / "sasldb2"),
                 "-u", "cyrus.test.example", "cyrus"],
                input=self.admin_password, text=True, check=True, capture_output=True,
            )
        _chown_tree(self.root, "cyrus", "mail")
        with self.output.open("wb") as out:
            # In the foreground (no -d), so stopping is a signal to a child we own; in a session
            # of its own, because Cyrus's master stops with kill(0, SIGTERM) (begin_shutdown):
            # in ours it would also end every process running as cyrus in the test run's process
            # group, such as another pytest-xdist worker's tests of `sealmail` as cyrus.
            self._process = subprocess.Popen(
                [
                    str(CYRUS_MASTER),
                    "-C",
                    str(self.conf_path),
                    "-M",
                    str(self.cyrus_conf_path),
                    "-p",
                    str(self.root / "master.pid"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until_accepting(self.socket_path, 30.0, self._process, self.output)
            wait_until_accepting(self.tcp_address, 30.0, self._process, self.output)
            self._create_mailboxes()
        except BaseException:
            self.stop()
            raise

    def _create_mailboxes(self) -> None:
        if self.create_over_imap:
            wait_until_accepting(("127.0.0.1", self.imap_port), 30.0, self._process, self.output)
            with imaplib.IMAP4("127.0.0.1", self.imap_port) as imap:
                imap.login("cyrus", self.admin_password)
                # Cyrus 3's default unixhierarchysep: yes names the INBOX user/alice.
                separator = "/" if self.imapd_conf().get("unixhierarchysep", "yes") in (
                    "yes", "on", "1", "true") else "."
                for user in self.users:
                    kind, data = imap.create(f"user{separator}{user}")
                    if kind != "OK":
                        raise PeerFailed(f"Cyrus did not CREATE user.{user}: {data!r}")
            return
        with LmtpClient(self.socket_path) as client:
            for user in self.users:
                message = (
                    f"From: setup@test.example\r\nTo: {user}@test.example\r\n"
                    f"Message-ID: <setup-{user}@test.example>\r\nSubject: mailbox setup\r\n\r\n"
                    "Creates the INBOX through autocreate_post.\r\n"
                ).encode()
                result = client.deliver("setup@test.example", [user], message)
                if result.delivered != [user]:
                    raise PeerFailed(f"Cyrus did not create {user}'s INBOX: {result}")

    def stop(self) -> None:
        if self._process is not None:
            _stop_process(self._process)
            self._process = None

    def mailbox_dir(self, user: str) -> Path:
        """The spool directory of `user`'s INBOX, from Cyrus's own `mbpath`."""
        out = _run([CYRUS_BIN / "mbpath", "-C", self.conf_path, "-u", user])
        return Path(out.strip())

    def message_count(self, user: str) -> int:
        """Message files ("UID.") in the INBOX, the autocreate setup message included."""
        return sum(1 for p in self.mailbox_dir(user).iterdir() if re.fullmatch(r"\d+\.", p.name))


def cyrus_imapd() -> Path:
    """Cyrus's imapd: the installed one, else Debian's cyrus-imapd unpacked (apt-get download,
    dpkg -x) under CYRUS_IMAPD_CACHE, since installing it would remove dovecot-imapd."""
    installed = CYRUS_BIN / "imapd"
    if installed.exists():
        return installed
    unpacked = CYRUS_IMAPD_CACHE / "root" / "usr/lib/cyrus/bin/imapd"
    if unpacked.exists():
        return unpacked
    CYRUS_IMAPD_CACHE.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(["apt-get", "download", "cyrus-imapd"], cwd=CYRUS_IMAPD_CACHE,
                              capture_output=True, text=True, check=False, timeout=300)
    packages = sorted(CYRUS_IMAPD_CACHE.glob("cyrus-imapd_*.deb"))
    if download.returncode != 0 or not packages:
        raise PeerUnavailable(f"cyrus-imapd: apt-get download failed: {download.stderr.strip()}")
    _run(["dpkg", "-x", packages[-1], CYRUS_IMAPD_CACHE / "root"])
    return unpacked


# --------------------------------------------------------------------------------------------
# Dovecot 2.3


class DovecotInstance:
    """A private Dovecot with only LMTP: a unix_listener and an inet_listener on 127.0.0.1.

    Users come from a passwd-file; mail goes to maildir:ROOT/mail/USER/Maildir, written as the
    `mail` account (Dovecot refuses to deliver as root). Dovecot LMTP has no AUTH and no SIZE.
    """

    def __init__(
        self,
        tmpdir: Path,
        users: Sequence[str] = ("alice", "bob", "carol"),
        *,
        mail_user: str = "mail",
        conf_extra: str = "",
    ) -> None:
        self.root = tmpdir / "dovecot"
        self.conf_path = self.root / "dovecot.conf"
        self.base_dir = self.root / "run"
        self.mail_dir = self.root / "mail"
        self.socket_path = str(self.base_dir / "lmtp")
        self.tcp_port = free_tcp_port()
        self.users = tuple(users)
        self.mail_user = mail_user
        self.conf_extra = conf_extra
        self.log = self.root / "dovecot.log"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def tcp_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.tcp_port)

    def dovecot_conf(self) -> str:
        account = pwd.getpwnam(self.mail_user)
        return f"""\
base_dir = {self.base_dir}
state_dir = {self.root / "state"}
instance_name = dovecot-{self.root.parent.name}
protocols = lmtp
listen = 127.0.0.1
ssl = no
log_path = {self.log}
default_login_user = dovenull
default_internal_user = dovecot
mail_location = maildir:{self.mail_dir}/%n/Maildir
mail_uid = {account.pw_uid}
mail_gid = {account.pw_gid}
first_valid_uid = {min(account.pw_uid, 500)}
first_valid_gid = {min(account.pw_gid, 500)}
# Postfix sends user@domain; the passwd-file holds bare user names.
auth_username_format = %Ln
passdb {{
  driver = passwd-file
  args = scheme=PLAIN {self.root / "users"}
}}
userdb {{
  driver = passwd-file
  args = {self.root / "users"}
}}
service lmtp {{
  unix_listener lmtp {{
    mode = 0666
  }}
  inet_listener lmtp {{
    address = 127.0.0.1
    port = {self.tcp_port}
  }}
}}
{self.conf_extra}
"""

    def start(self) -> None:
        require_binaries("dovecot-core and dovecot-lmtpd", DOVECOT, DOVECOT_LMTP)
        check_reachable(self.root.parent, self.mail_user)
        for directory in (self.base_dir, self.mail_dir):
            directory.mkdir(parents=True, exist_ok=True)
        _chown_tree(
            self.mail_dir, self.mail_user, grp.getgrgid(pwd.getpwnam(self.mail_user).pw_gid).gr_name
        )
        (self.root / "users").write_text("".join(f"{u}:{{PLAIN}}secret::::\n" for u in self.users))
        self.conf_path.write_text(self.dovecot_conf())
        out = (self.root / "dovecot.out").open("wb")
        with out:
            # -F: in the foreground, so stopping is a signal to a child we own.
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.conf_path)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until_accepting(self.socket_path, 30.0, self._process, self.log)
            wait_until_accepting(self.tcp_address, 30.0, self._process, self.log)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self._process is not None:
            _stop_process(self._process)
            self._process = None

    def maildir(self, user: str) -> Path:
        return self.mail_dir / user / "Maildir"

    def message_count(self, user: str) -> int:
        """Messages in the user's INBOX (files in Maildir new/ and cur/)."""
        return sum(
            1
            for sub in ("new", "cur")
            if (self.maildir(user) / sub).is_dir()
            for _ in (self.maildir(user) / sub).iterdir()
        )


# --------------------------------------------------------------------------------------------
# DNS (nsd) and receiving MTAs (smtp-sink) on loopback addresses of their own
#
# A resolv.conf has no port syntax, so the test DNS server listens on port 53 and the receiving
# MTAs on port 25 (what an MX lookup leads to), each on an address of 127.0.0.0/8 other than
# 127.0.0.1 (Linux answers on the whole range). Addresses are drawn at random and probed, so
# parallel runs do not collide. Binding those ports needs root: as another user the tests skip.

NSD = "/usr/sbin/nsd"
SMTP_SINK = "/usr/sbin/smtp-sink"


def free_loopback_address(port: int, kind: int = socket.SOCK_STREAM, *,
                          avoid: Sequence[str] = ()) -> str:
    """A 127.a.b.c address (not 127.0.0.1) on which `port` can be bound now."""
    import random

    rng = random.Random()
    for _ in range(200):
        address = f"127.{rng.randint(1, 254)}.{rng.randint(0, 255)}.{rng.randint(2, 254)}"
        if address in avoid:
            continue
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address, port))
            except OSError:
                continue
        return address
    raise PeerFailed(f"no loopback address with port {port} free")


def require_privileged_ports() -> None:
    """Port 25 and 53: root only (unless the kernel lowered ip_unprivileged_port_start)."""
    try:
        start = int(Path("/proc/sys/net/ipv4/ip_unprivileged_port_start").read_text())
    except (OSError, ValueError):
        start = 1024
    if os.geteuid() != 0 and start > 25:
        raise PeerUnavailable("binding ports 25 and 53 needs root")


class NsdInstance:
    """A private authoritative nsd for test zones, on `address`:53, with a resolv.conf for it.

    Zones are name -> zone file text (without $ORIGIN; an SOA and NS are added). A zone whose
    text is None is configured with a broken file: nsd answers SERVFAIL for it until
    `set_zone` writes a good one (nsd rereads changed zone files on SIGHUP).
    """

    def __init__(self, root: Path, zones: Mapping[str, str | None]) -> None:
        self.root = root / "nsd"
        self.address = ""
        self.zones = dict(zones)
        self.log = self.root / "nsd.log"
        self.resolv_conf = self.root / "resolv.conf"
        self._process: subprocess.Popen[bytes] | None = None
        self._serial = 1

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def zone_text(self, name: str, body: str | None) -> str:
        if body is None:
            return "this is not a zone file !!!\n"
        return (f"$ORIGIN {name}.\n$TTL 300\n"
                f"@ IN SOA ns.{name}. hostmaster.{name}. {self._serial} 3600 600 86400 60\n"
                f"@ IN NS ns.{name}.\nns IN A {self.address}\n{body}\n")

    def start(self) -> None:
        if os.geteuid() == 0 and not os.access(NSD, os.X_OK):
            # Root is CI, and scripts/test.sh installs nsd there: missing is a failure.
            raise PeerFailed(f"{NSD} is missing: scripts/test.sh installs Debian's nsd")
        require_binaries("nsd", NSD)
        require_privileged_ports()
        self.root.mkdir(parents=True, exist_ok=True)
        self.address = free_loopback_address(53, socket.SOCK_DGRAM)
        zones = "".join(f'zone:\n    name: "{name}"\n    zonefile: "{name}.zone"\n'
                        for name in self.zones)
        (self.root / "nsd.conf").write_text(
            "server:\n"
            f"    ip-address: {self.address}\n    port: 53\n    do-ip6: no\n"
            f'    zonesdir: "{self.root}"\n    database: ""\n'
            f'    zonelistfile: "{self.root}/zone.list"\n    xfrdfile: "{self.root}/xfrd.state"\n'
            f'    xfrdir: "{self.root}"\n    pidfile: "{self.root}/nsd.pid"\n'
            f'    username: ""\n    logfile: "{self.log}"\n    server-count: 1\n'
            "    verbosity: 1\n"
            "remote-control:\n    control-enable: no\n" + zones
        )
        for name, body in self.zones.items():
            (self.root / f"{name}.zone").write_text(self.zone_text(name, body))
        self.resolv_conf.write_text(f"nameserver {self.address}\noptions timeout:2\n")
        self._process = subprocess.Popen(
            [NSD, "-d", "-c", str(self.root / "nsd.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until_accepting((self.address, 53), 30.0, self._process, self.log)
        except BaseException:
            self.stop()
            raise

    def set_zone(self, name: str, body: str | None) -> None:
        """Rewrite a zone and have nsd load it (SIGHUP), waiting until it answers from it."""
        assert self._process is not None
        self._serial += 1
        self.zones[name] = body
        path = self.root / f"{name}.zone"
        path.write_text(self.zone_text(name, body))
        later = time.time() + 2  # nsd compares modification times: make the change visible
        os.utime(path, (later, later))
        marker = f"zone {name} read with success"
        seen = self.log_text().count(marker)
        self._process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 30
        while body is not None and not (self.log_text().count(marker) > seen
                                        and self.serves(name, self._serial)):
            if time.monotonic() > deadline:
                raise PeerFailed(f"nsd did not reload {name}" + _log_tail(self.log))
            time.sleep(0.05)

    def serves(self, name: str, serial: int) -> bool:
        """Whether nsd answers for the zone with this serial (a reload's new server processes
        take over a moment after the log says the zone was read)."""
        import dns.exception
        import dns.message
        import dns.query
        import dns.rcode

        try:
            reply = dns.query.udp(dns.message.make_query(name, "SOA"), self.address, timeout=1)
        except (dns.exception.DNSException, OSError):
            return False
        return reply.rcode() == dns.rcode.NOERROR and any(
            getattr(rdata, "serial", None) == serial for rrset in reply.answer for rdata in rrset)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self._process is not None:
            _stop_process(self._process)
            self._process = None


class SmtpSink:
    """Postfix's smtp-sink on `address`:`port` (`[::1]` for IPv6): accepts everything, writes
    each transaction to a file in `dump_dir` (the envelope as X-Mail-Args/X-Rcpt-Args headers,
    then the message)."""

    def __init__(self, root: Path, address: str, port: int = 25, *,
                 hostname: str = "sink.test.example", options: Sequence[str] = ()) -> None:
        self.address = address
        self.port = port
        self.hostname = hostname
        self.options = tuple(options)
        self.dump_dir = root / f"sink-{address}"
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        require_binaries("postfix", SMTP_SINK)
        check_reachable(self.dump_dir.parent, "postfix")
        self.dump_dir.mkdir(parents=True, exist_ok=True)
        _chown_tree(self.dump_dir, "postfix", "postfix")
        # As root smtp-sink must be told whom to run as once it has its socket (-u).
        user = ["-u", "postfix"] if os.geteuid() == 0 else []
        self._process = subprocess.Popen(
            [SMTP_SINK, *user, "-h", self.hostname, "-d", f"{self.dump_dir}/%H%M%S.",
             *self.options, f"{self.address}:{self.port}", "64"],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            wait_until_accepting((self.address.strip("[]"), self.port), 30.0, self._process)
        except BaseException:
            self.stop()
            raise

    def messages(self) -> list[str]:
        return [p.read_text(errors="replace") for p in sorted(self.dump_dir.iterdir())]

    def stop(self) -> None:
        if self._process is not None:
            _stop_process(self._process)
            self._process = None
