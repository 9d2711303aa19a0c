"""THREAD (RFC 5256) answered by sealmail's imapd and by Debian's Dovecot on the same mailboxes:
conversations with missing parents, duplicate and looping references, replies whose original
came later, and subjects that only match after Re:/Fwd:/[list] are stripped."""

from __future__ import annotations

import imaplib
import random
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.support.instance import SEALMAIL, SealmailInstance
from tests.support.peers import (
    DovecotInstance,
    LmtpClient,
    PeerUnavailable,
    free_tcp_port,
    traversable_tmpdir,
    wait_until_accepting,
)

pytestmark = pytest.mark.peer

USER, PASSWORD = "threads", "secret"
SUBJECTS = ["Lunch", "Re: Lunch", "RE: re: lunch", "Fwd: Lunch", "[team] Lunch", "Plans",
            "Re: Plans", "Plans (fwd)", "Budget"]


def mailbox(seed: int, count: int = 40) -> list[bytes]:
    rng = random.Random(seed)
    messages = []
    for n in range(count):
        known = [f"<m{k}@x>" for k in range(count + 5)]  # some ids never arrive: missing parents
        own = f"<m{n}@x>" if rng.random() > 0.05 else f"<m{rng.randrange(n + 1)}@x>"
        refs = rng.sample(known, rng.randrange(4)) if rng.random() > 0.3 else []
        reply = rng.choice(known) if rng.random() > 0.6 else ""
        day = rng.randrange(1, 28)
        headers = [f"From: s{n}@example.org", f"Subject: {rng.choice(SUBJECTS)}",
                   f"Message-ID: {own}", f"Date: {day:02d} Mar 2026 10:{n:02d}:00 +0000"]
        if refs:
            headers.append("References: " + " ".join(refs))
        if reply:
            headers.append(f"In-Reply-To: {reply}")
        messages.append(("\r\n".join(headers) + f"\r\n\r\nmessage {n}\r\n").encode())
    return messages


def fill(lmtp_address: str, messages: list[bytes]) -> None:
    with LmtpClient(lmtp_address) as client:
        for content in messages:
            client.deliver("sender@example.org", [f"{USER}@example.com"], content)


@contextmanager
def sealmail_imap(root: Path, messages: list[bytes]) -> Iterator[int]:
    with SealmailInstance(root / "sealmail", [USER],
                          imapd_conf_extra={"allowplaintext": "yes",
                                            "duplicatesuppression": "no"}) as instance:
        subprocess.run([*SEALMAIL, "saslpasswd2", "-C", str(instance.conf_path), "-p", "-c",
                        USER], input=PASSWORD + "\n", text=True, check=True)
        fill(instance.socket_path, messages)
        port = free_tcp_port()
        process = subprocess.Popen([*SEALMAIL, "imapd", "-C", str(instance.conf_path),
                                    "--listen", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        try:
            wait_until_accepting(("127.0.0.1", port), 30.0, process)
            yield port
        finally:
            process.terminate()
            process.wait(30)


@contextmanager
def dovecot_imap(root: Path, messages: list[bytes]) -> Iterator[int]:
    port = free_tcp_port()
    extra = ("protocols = lmtp imap\ndisable_plaintext_auth = no\n"
             "service imap-login {\n  inet_listener imap {\n    address = 127.0.0.1\n"
             f"    port = {port}\n  }}\n}}\n")
    try:
        with DovecotInstance(root / "dovecot", (USER,), conf_extra=extra) as dovecot:
            fill(dovecot.socket_path, messages)
            yield port
    except PeerUnavailable as exc:
        pytest.skip(str(exc))


def threads(port: int) -> dict[str, bytes]:
    client = imaplib.IMAP4("127.0.0.1", port)
    try:
        client.login(USER, PASSWORD)
        client.select("INBOX", readonly=True)
        found = {}
        for algorithm in ("ORDEREDSUBJECT", "REFERENCES"):
            typ, data = client.thread(algorithm, "UTF-8", "ALL")
            assert typ == "OK"
            found[algorithm] = data[0] or b""
        return found
    finally:
        client.logout()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_thread_matches_dovecot(seed: int) -> None:
    messages = mailbox(seed)
    with traversable_tmpdir("smthread-") as root:
        (root / "sealmail").mkdir()
        (root / "dovecot").mkdir()
        with sealmail_imap(root, messages) as port:
            ours = threads(port)
        with dovecot_imap(root, messages) as port:
            theirs = threads(port)
    assert ours == theirs
