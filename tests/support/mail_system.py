"""sealmail's MTA in front of sealmail's store, both as child processes, for the reliability
tests (tests/reliability/): the store is `sealmail lmtpd` (tests.support.instance), the MTA is
`sealmail postfix -c DIR start-fg` delivering local mail to it over its UNIX socket, as the
seed's section 2.1 sets it up (mailbox_transport = cyrus:unix:SOCKET).

The MTA's processes: the master runs the queue manager, pickup and the LMTP client (asyncio
tasks); smtpd (with cleanup inside it) runs in `smtpd_processes` child processes. So "kill the
queue manager / the LMTP client" is a SIGKILL of the master, and `restart()` starts it again
as an init system would.
"""

from __future__ import annotations

import contextlib
import os
import signal
import smtplib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.mta import mail_owner_opt_in
from tests.support.peers import free_tcp_port

DOMAIN = "example.com"


class Mta:
    """`sealmail postfix start-fg` on a private config directory; killable and restartable."""

    def __init__(self, root: Path, lmtp_socket: str, main_extra: str = "",
                 queue_directory: Path | None = None) -> None:
        self.config = root / "mta"
        self.config.mkdir(parents=True, exist_ok=True)
        self.queue_directory = queue_directory or self.config / "spool"
        self.port = free_tcp_port()
        self.out = self.config / "postfix.out"
        self.process: subprocess.Popen[bytes] | None = None
        (self.config / "main.cf").write_text(
            f"queue_directory = {self.queue_directory}\ndata_directory = {self.config}/data\n"
            f"myhostname = mail.{DOMAIN}\nmydomain = {DOMAIN}\nmyorigin = $mydomain\n"
            f"mydestination = {DOMAIN}, localhost\ninet_interfaces = loopback-only\n"
            f"mynetworks = 127.0.0.0/8\nmaillog_file = {self.config}/maillog\n"
            f"mailbox_transport = cyrus:unix:{lmtp_socket}\nalias_maps =\n"
            # Retries come quickly: a test waits for deferred mail, not for five minutes.
            "minimal_backoff_time = 1s\nmaximal_backoff_time = 2s\nqueue_run_delay = 1s\n"
            + mail_owner_opt_in() + main_extra
        )
        (self.config / "master.cf").write_text(
            f"127.0.0.1:{self.port} inet n - n - - smtpd\n"
            "local unix - n n - - local\n"
            "error unix - - n - - error\n"
            "cyrus unix - n n - - lmtp\n"
        )

    def start(self, timeout: float = 60.0) -> None:
        with self.out.open("ab") as out:
            self.process = subprocess.Popen(
                [*SEALMAIL, "postfix", "-c", str(self.config), "start-fg"],
                stdout=out, stderr=out, stdin=subprocess.DEVNULL,
            )
        self.wait_greeting(timeout)

    def wait_greeting(self, timeout: float = 60.0) -> None:
        """Until an smtpd answers (a listening port alone proves nothing: the kernel accepts
        connections that no process may ever take)."""
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None and self.process.poll() is None, self.log_tail()
            try:
                with smtplib.SMTP("127.0.0.1", self.port, timeout=5) as client:
                    client.noop()
                return
            except (OSError, smtplib.SMTPException):
                assert time.monotonic() < deadline, "no smtpd answered\n" + self.log_tail()
                time.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def smtpd_pids(self) -> list[int]:
        """The master's smtpd child processes."""
        pids = []
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                text = Path(f"/proc/{self.pid}/task/{task}/children").read_text()
                pids += [int(p) for p in text.split()]
        found = []
        for pid in pids:
            with contextlib.suppress(OSError):
                if b"sealmail.mta.smtpd" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
        return found

    def kill_master(self) -> None:
        """SIGKILL the master (queue manager, pickup, LMTP client); its smtpd processes see
        their pipe close and end."""
        assert self.process is not None
        children = self.smtpd_pids()
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        deadline = time.monotonic() + 20
        while any(Path(f"/proc/{pid}").exists() for pid in children):
            assert time.monotonic() < deadline, "smtpd outlived its master"
            time.sleep(0.05)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(40)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def queue_files(self) -> dict[str, list[str]]:
        """Files left in each queue directory (incoming, active, deferred, ...)."""
        found: dict[str, list[str]] = {}
        for name in ("maildrop", "incoming", "active", "deferred", "hold", "corrupt"):
            directory = self.queue_directory / name
            if directory.is_dir():
                files = [str(p.relative_to(directory)) for p in directory.rglob("*")
                         if p.is_file()]
                if files:
                    found[name] = files
        return found

    def maillog(self) -> str:
        path = self.config / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def log_tail(self, lines: int = 40) -> str:
        text = self.out.read_text(errors="replace") if self.out.exists() else ""
        return "\n".join((text + self.maillog()).splitlines()[-lines:])


def message(message_id: str, recipients: list[str], sender: str, size: int = 0) -> bytes:
    return (
        f"From: {sender}\r\nTo: {', '.join(recipients)}\r\nSubject: {message_id}\r\n"
        f"Message-ID: <{message_id}>\r\n\r\nbody of {message_id}\r\n"
        + "x" * size + "\r\n"
    ).encode()


def message_ids(store: SealmailInstance, users: list[str]) -> dict[tuple[str, str], int]:
    """(user, Message-ID) -> copies in that user's INBOX."""
    from sealmail.delivery.message import message_id

    counts: dict[tuple[str, str], int] = {}
    with store.store() as disk:
        for user in users:
            mailbox = f"user.{user}"
            for record in disk.messages(mailbox):
                found = message_id(disk.message_bytes(mailbox, record.uid)) or "?"
                key = (user, found.strip("<>"))
                counts[key] = counts.get(key, 0) + 1
    return counts


@contextlib.contextmanager
def mail_system(root: Path, users: list[str], imapd_extra: dict[str, str] | None = None,
                main_extra: str = "", queue_directory: Path | None = None,
                ) -> Iterator[tuple[SealmailInstance, Mta]]:
    """A store with `users` and an MTA in front of it, both running until the block ends."""
    with SealmailInstance(root / "store", users, imapd_conf_extra=imapd_extra) as store:
        mta = Mta(root, store.socket_path, main_extra, queue_directory)
        mta.start()
        try:
            yield store, mta
        finally:
            mta.stop()
