"""mutt (Debian's package), driven in a detached tmux session, on `sealmail imapd` (issue 6).

Mail arrives over LMTP at a running `sealmail lmtpd`; mutt then lists it, shows a body, flags one
message, saves another to a folder it creates through its own "Create ...?" prompt (COPY answered
`NO [TRYCREATE]`), deletes a third, sees a message delivered while it sits in the index (IDLE), and
browses the folders. Every change mutt makes is checked on the server with a separate imaplib
session, so a test passes only when the store really holds what mutt's screen claims. A second test
logs in with each SASL mechanism mutt (GNU SASL) can be told to use.

Transport: STARTTLS with a trustme CA (mutt's `ssl_force_tls`, `ssl_ca_certificates_file`) and
`allowplaintext: no`, the production default, so nothing here depends on plaintext logins.

Keys go in with `tmux send-keys`; the screen is read with `tmux capture-pane -p`, and every step
waits (polling, with a deadline) for the text or the server state it expects, never for a fixed
time. mutt runs with `-d 5`, so a failure message carries the tail of its IMAP exchange
(~/.muttdebug0 in a private HOME). tmux runs on a private server (`-S`), killed afterwards.
"""

from __future__ import annotations

import imaplib
import os
import re
import shutil
import smtplib
import ssl
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance, tls_test_settings
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.proto.sasl import split_identity

pytestmark = pytest.mark.peer

MUTT = shutil.which("mutt")
TMUX = shutil.which("tmux")
PASSWORD = "mutt secret"
SERVERNAME = "sealmail.test.example"
ARCHIVE = "INBOX.Archive"  # Cyrus's standard namespace: personal folders live under "INBOX."
WAIT = 20.0  # the deadline of one step; a healthy run takes a fraction of it

T = TypeVar("T")


def message(number: int) -> bytes:
    return (
        f"From: sender{number}@example.org\r\nTo: alice@example.com\r\n"
        f"Subject: subject number {number}\r\nMessage-ID: <mutt{number}@example.org>\r\n"
        f"\r\nbody text {number}\r\n"
    ).encode()


@dataclass
class ImapDaemon:
    instance: SealmailInstance
    port: int
    ca_file: Path

    def deliver(self, content: bytes) -> None:
        with smtplib.LMTP(self.instance.socket_path) as client:
            client.ehlo()
            client.sendmail("sender@example.org", ["alice@example.com"], content)

    def mailbox(self, name: str) -> dict[int, tuple[set[bytes], bytes]] | None:
        """UID -> (flags, Subject header line) of `name` as a fresh IMAP session sees it; None
        when the mailbox does not exist."""
        client = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            client.starttls(ssl.create_default_context(cafile=str(self.ca_file)))
            client.login("alice", PASSWORD)
            typ, exists = client.select(name, readonly=True)
            if typ != "OK":
                return None
            if exists == [b"0"]:
                return {}
            typ, data = client.uid(
                "FETCH", "1:*", "(UID FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
            )
            assert typ == "OK", (name, data)
            found: dict[int, tuple[set[bytes], bytes]] = {}
            for item in data:
                if not isinstance(item, tuple):
                    continue
                head, subject = item
                uid = re.search(rb"UID (\d+)", head)
                flags = re.search(rb"FLAGS \(([^)]*)\)", head)
                assert uid is not None and flags is not None, head
                found[int(uid.group(1))] = (set(flags.group(1).split()), subject.strip())
            return found
        finally:
            client.logout()


@pytest.fixture
def imapd(tmp_path: Path) -> Iterator[ImapDaemon]:
    extra, ca_file = tls_test_settings(tmp_path, allowplaintext=False)
    with SealmailInstance(tmp_path, users=["alice"], imapd_conf_extra=extra) as instance:
        SaslDB(instance.configdirectory / "sasldb2", scrypt_n=2**10).set_password(
            split_identity("alice", SERVERNAME), PASSWORD
        )
        port = free_tcp_port()
        log = tmp_path / "imapd.log"
        argv = [*SEALMAIL, "imapd", "-C", str(instance.conf_path), "-v"]
        with log.open("ab") as out:
            process = subprocess.Popen(
                [*argv, "--listen", f"127.0.0.1:{port}"],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        try:
            wait_until_accepting(("127.0.0.1", port), 30, process, log)
            yield ImapDaemon(instance, port, ca_file)
        finally:
            process.terminate()
            assert process.wait(15) == 0
        assert PASSWORD not in log.read_text(errors="replace")


@dataclass(frozen=True)
class IndexRow:
    """One line of mutt's index, as `index_format` below lays it out."""

    number: int
    flags: str
    subject: str
    current: bool


INDEX_ROW = re.compile(r"^(->)?\s*(\d+)\|([^|]*)\|(.*?)\s*$", re.MULTILINE)


class MuttScreen:
    """mutt in a detached tmux session on a private tmux server: keys in, screen text out."""

    def __init__(self, home: Path, muttrc: Path) -> None:
        assert MUTT is not None and TMUX is not None
        self.home = home
        # A private tmux server whose socket lives in a short directory of its own (UNIX socket
        # paths are limited to 107 bytes; a pytest tmp_path can be longer), removed by close().
        self.socket_dir = Path(tempfile.mkdtemp(prefix="smtmux-", dir="/tmp"))
        self.socket = self.socket_dir / "tmux"
        self.env = {
            "HOME": str(home),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LANG": "C.UTF-8",
            "TERM": "xterm-256color",
        }
        try:
            self.tmux(
                "new-session", "-d", "-s", "mutt", "-x", "200", "-y", "50",
                MUTT, "-n", "-F", str(muttrc), "-d", "5",
            )  # fmt: skip
        except BaseException:
            self.close()
            raise

    def tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        assert TMUX is not None
        return subprocess.run(
            [TMUX, "-S", str(self.socket), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=check,
        )

    def keys(self, *names: str) -> None:
        """tmux key names: Enter, C-u, ..."""
        self.tmux("send-keys", "-t", "mutt", *names)

    def type(self, text: str) -> None:
        """Literal text, never read as key names."""
        self.tmux("send-keys", "-t", "mutt", "-l", text)

    def text(self) -> str:
        done = self.tmux("capture-pane", "-p", "-t", "mutt", check=False)
        if done.returncode != 0:
            raise AssertionError(f"mutt's pane is gone: {done.stderr}{self.exchange()}")
        return done.stdout

    @property
    def running(self) -> bool:
        return self.tmux("has-session", "-t", "mutt", check=False).returncode == 0

    def exchange(self, lines: int = 60) -> str:
        """The tail of mutt's debug log (its IMAP exchange), for failure messages."""
        debug = self.home / ".muttdebug0"
        if not debug.exists():
            return ""
        tail = debug.read_text(errors="replace").splitlines()[-lines:]
        return "\n--- mutt's ~/.muttdebug0 (tail) ---\n" + "\n".join(tail)

    def idling(self) -> bool:
        """mutt's last command is IDLE and the server has answered it with a continuation."""
        lines = self.exchange(lines=10_000).splitlines()
        sent = [n for n, line in enumerate(lines) if re.search(r"\d> (a\d+ \S+|DONE)$", line)]
        if not sent or not lines[sent[-1]].endswith(" IDLE"):
            return False
        return any(re.search(r"\d< \+ ", line) for line in lines[sent[-1] + 1 :])

    def wait_for(self, pattern: str) -> re.Match[str]:
        """Poll the screen until `pattern` (a regex, MULTILINE) shows; fail with the screen."""
        expression = re.compile(pattern, re.MULTILINE)
        deadline = time.monotonic() + WAIT
        while True:
            screen = self.text()
            found = expression.search(screen)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{pattern!r} never showed; the screen:\n{screen}{self.exchange()}"
                )
            time.sleep(0.05)

    def index(self) -> list[IndexRow]:
        return [
            IndexRow(int(m.group(2)), m.group(3), m.group(4), m.group(1) is not None)
            for m in INDEX_ROW.finditer(self.text())
        ]

    def select(self, number: int) -> IndexRow:
        """Jump to message `number` (mutt's "Jump to message:" prompt) and return its row."""
        self.type(str(number))
        self.wait_for(r"^Jump to message: ")
        self.keys("Enter")
        self.wait_for(rf"^->\s*{number}\|")
        (row,) = [row for row in self.index() if row.current]
        return row

    def close(self) -> None:
        self.tmux("kill-server", check=False)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


def muttrc(path: Path, imapd: ImapDaemon, **overrides: str) -> Path:
    url = f"imap://alice@127.0.0.1:{imapd.port}"
    settings = {
        "folder": f"{url}/INBOX",  # so `=Archive` is INBOX.Archive, a personal folder
        "spoolfile": f"{url}/INBOX",
        "imap_user": "alice",
        "imap_pass": PASSWORD,
        "ssl_starttls": "yes",
        "ssl_force_tls": "yes",
        "ssl_ca_certificates_file": str(imapd.ca_file),
        "certificate_file": str(path.parent / "certificates"),
        "header_cache": "",
        "message_cachedir": "",
        "imap_idle": "yes",
        "timeout": "1",  # idle this long in the index before checking for new mail
        "mail_check": "1",
        "sort": "mailbox-order",  # index numbers are the server's sequence numbers
        "index_format": "%4C|%Z|%s",
        "arrow_cursor": "yes",  # the current row starts with "->" in plain captured text
        "resolve": "no",  # the cursor stays on the message just flagged, saved or deleted
        "move": "no",
        "confirmappend": "no",
        "confirmcreate": "yes",
        "delete": "yes",
        "mark_old": "no",
        "wait_key": "no",
        "beep": "no",
        "quit": "yes",
        "record": "",
        "mbox": "",
        "charset": "utf-8",
        **overrides,
    }
    path.write_text("".join(f'set {name}="{value}"\n' for name, value in settings.items()))
    return path


def eventually(check: Callable[[], T | None], what: str, screen: MuttScreen) -> T:
    """Poll the server through `check` until it returns something; fail with mutt's exchange."""
    deadline = time.monotonic() + WAIT
    while True:
        result = check()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"the server never showed {what}{screen.exchange()}")
        time.sleep(0.1)


needs_mutt = pytest.mark.skipif(
    MUTT is None or TMUX is None,
    reason="mutt and tmux are needed (install Debian's mutt and tmux packages)",
)


def quit_mutt(screen: MuttScreen) -> None:
    """q in the index: mutt closes the mailbox and logs out, and its tmux session ends."""
    screen.keys("q")
    deadline = time.monotonic() + WAIT
    while screen.running:
        assert time.monotonic() < deadline, f"mutt did not quit{screen.exchange()}"
        time.sleep(0.05)
    assert re.search(r"> a\d+ LOGOUT", screen.exchange())


# Found while writing this test (not by mutt itself, by the imaplib checker polling while mutt
# expunged): when another session has expunged UID 1, a session that still shows it gets, for
#   C: t1 UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (SUBJECT)])
#   S: * 1 EXPUNGE
#   S: t1 NO [NONEXISTENT] no message with UID 1 in 'user.alice'
# and nothing for the messages that still exist (`FETCH 1:2 (BODY.PEEK[...])` likewise). RFC 9051
# 6.4.9 ignores UIDs that no longer exist; RFC 2180 4.1 / RFC 5530 allow NO [EXPUNGEISSUED] but
# with the other messages' data. The steps below read the server only once mutt's EXPUNGE is done.


@needs_mutt
def test_mutt_lists_reads_flags_saves_deletes_and_browses(
    imapd: ImapDaemon, tmp_path: Path
) -> None:
    for number in (1, 2, 3):
        imapd.deliver(message(number))
    home = tmp_path / "home"
    home.mkdir()
    screen = MuttScreen(home, muttrc(home / "muttrc", imapd))
    try:
        # Listing: the three subjects, in delivery order, all new.
        screen.wait_for(r"^\s*3\|.*subject number 3$")
        rows = screen.index()
        assert [(row.number, row.subject) for row in rows] == [
            (n, f"subject number {n}") for n in (1, 2, 3)
        ]
        assert all(row.flags.startswith("N") for row in rows)

        # Reading: the pager shows message 1's header and body (fetched with BODY.PEEK[]).
        screen.select(1)
        screen.keys("Enter")
        screen.wait_for(r"^body text 1$")
        assert re.search(r"^Subject: subject number 1$", screen.text(), re.MULTILINE)
        screen.keys("q")  # back to the index
        screen.wait_for(r"^->\s*1\|")

        # Flagging: F, then $ to sync; the server must hold \Flagged (and \Seen from reading).
        screen.keys("F")
        screen.wait_for(r"^->\s*1\|[^|]*!")
        screen.type("$")
        # mutt stores \\Flagged and \\Seen with two UID STOREs: wait for both.
        read_and_flagged = {b"\\Flagged", b"\\Seen"}
        inbox = eventually(
            lambda: (
                view
                if (view := imapd.mailbox("INBOX")) and read_and_flagged <= view[1][0]
                else None
            ),
            "\\Flagged and \\Seen on UID 1",
            screen,
        )
        assert inbox[1][0] == read_and_flagged
        assert inbox[2][0] == inbox[3][0] == set()

        # Saving to a folder that does not exist yet: COPY gets NO [TRYCREATE], mutt asks,
        # creates it, copies, and marks the original deleted; $ expunges it from the INBOX.
        screen.select(3)
        screen.keys("s")
        screen.wait_for(r"^Save to mailbox")
        screen.keys("C-u")
        screen.type("=Archive")
        screen.keys("Enter")
        screen.wait_for(r"^Create INBOX\.Archive\?")
        screen.type("y")
        archive = eventually(lambda: imapd.mailbox(ARCHIVE) or None, ARCHIVE, screen)
        assert [subject for _, subject in archive.values()] == [b"Subject: subject number 3"]
        screen.wait_for(r"^->\s*3\|[^|]*D")
        screen.type("$")
        # The status line changes once mutt has its EXPUNGE's tagged OK; only then is the server
        # read (see the note above this test: a FETCH racing another session's EXPUNGE fails).
        screen.wait_for(r"Mutt: \S+/INBOX \[Msgs:2 ")
        assert set(imapd.mailbox("INBOX") or {}) == {1, 2}

        # Deleting: d, then $; the server must have expunged message 2 and kept message 1.
        screen.select(2)
        screen.keys("d")
        screen.wait_for(r"^->\s*2\|[^|]*D")
        screen.type("$")
        screen.wait_for(r"Mutt: \S+/INBOX \[Msgs:1 ")
        assert [(row.number, row.subject) for row in screen.index()] == [(1, "subject number 1")]
        inbox = imapd.mailbox("INBOX") or {}
        assert set(inbox) == {1} and inbox[1][1] == b"Subject: subject number 1"
        assert set(imapd.mailbox(ARCHIVE) or {}) == set(archive)  # the deletion moved nothing

        # New mail while mutt IDLEs in the index: the delivery's EXISTS wakes it and it shows up.
        eventually(lambda: True if screen.idling() else None, "mutt in IDLE", screen)
        imapd.deliver(message(4))
        screen.wait_for(r"^(->)?\s*2\|.*subject number 4$")
        exchange = screen.exchange(lines=10_000)
        before_exists = exchange.split("< * 2 EXISTS", 1)[0]
        assert re.findall(r"> (a\d+ \S+|DONE)$", before_exists, re.MULTILINE)[-1].endswith(
            " IDLE"
        ), exchange

        # The folder browser: Archive under the INBOX, then the top level with the INBOX.
        screen.keys("c")
        screen.wait_for(r"^Open mailbox")
        screen.type("?")
        screen.wait_for(rf"Directory \[imap://alice@127\.0\.0\.1:{imapd.port}/INBOX\]")
        screen.wait_for(r"\sArchive\s*$")
        screen.keys("c")  # chdir, within the browser
        screen.wait_for(r"^Chdir to: ")
        screen.keys("C-u")
        screen.type(f"imap://alice@127.0.0.1:{imapd.port}/")
        screen.keys("Enter")
        screen.wait_for(rf"Directory \[imap://alice@127\.0\.0\.1:{imapd.port}/\]")
        screen.wait_for(r"\sINBOX\.?\s*$")
        screen.keys("q")  # leave the browser
        screen.wait_for(r"^(->)?\s*1\|")

        quit_mutt(screen)
    finally:
        screen.close()


# With SASL-IR advertised, mutt 2.2 (GNU SASL) sends a server-first mechanism as
# `a0002 AUTHENTICATE CRAM-MD5 ` -- a space and then nothing. RFC 4959's grammar has no such
# form; Dovecot and sealmail take it as "no initial response" and send the challenge.


@needs_mutt
@pytest.mark.parametrize(
    "mechanism",
    [
        "SCRAM-SHA-256",
        "CRAM-MD5",
        "PLAIN",
        "LOGIN",
    ],
)
def test_mutt_sasl_mechanisms_after_starttls(
    imapd: ImapDaemon, tmp_path: Path, mechanism: str
) -> None:
    """Each SASL mechanism mutt (GNU SASL) is told to use logs in and opens the INBOX. PLAIN and
    LOGIN carry the password itself, so imapd offers them only once TLS is up (LOGINDISABLED and
    no AUTH=PLAIN before STARTTLS, since allowplaintext is no)."""
    imapd.deliver(message(1))
    home = tmp_path / "home"
    home.mkdir()
    rc = muttrc(home / "muttrc", imapd, imap_authenticators=mechanism.lower())
    screen = MuttScreen(home, rc)
    try:
        shown = screen.wait_for(
            r"(?P<index>^->\s*1\|.*subject number 1$)"
            r"|(?P<failed>authentication failed|Login failed)"
        )
        exchange = screen.exchange(lines=10_000)
        assert shown.group("index"), f"mutt could not log in:{screen.exchange()}"
        commands = re.findall(r"> a\d+ (STARTTLS|AUTHENTICATE \S+|LOGIN)\b", exchange)
        assert commands[:2] == ["STARTTLS", f"AUTHENTICATE {mechanism}"], exchange
        quit_mutt(screen)
    finally:
        screen.close()
