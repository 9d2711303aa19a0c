"""The MTA's crash test: SIGKILL smtpd (with cleanup inside it) and the master (the queue
manager, pickup and the LMTP client) at random while clients send mail, sealmail's store behind
it. Every message a client got 250 for ends in its recipients' mailboxes or in a bounce to its
sender; none arrives twice: what was in flight when a process died is retried (by the client,
which never saw its 250, or by the queue manager, which never saw the store's) and the store's
duplicate suppression (duplicatesuppression, by Message-ID per mailbox) absorbs the repeat.

Short in CI (a few kills); SEALMAIL_LONG=1 runs 250 kills (docs/reliability.md has the figures).
Clients retry a message until it is accepted, as an MTA would; the figures printed are what
docs/reliability.md quotes.
"""

from __future__ import annotations

import os
import random
import smtplib
import threading
import time
from pathlib import Path

import pytest
from tests.support.mail_system import DOMAIN, Mta, mail_system, message, message_ids

LONG = bool(os.environ.get("SEALMAIL_LONG"))
KILLS = 250 if LONG else 2
CLIENTS = 4
USERS = ["alice", "bob", "carol", "dave"]
SENDER = "postmaster-box"


class Load:
    """CLIENTS threads sending until told to stop; each message is retried until a 250."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.stop = threading.Event()
        self.accepted: dict[str, list[str]] = {}  # Message-ID -> recipients
        self.attempts = 0
        self.failures = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.client, args=(n,)) for n in range(CLIENTS)]

    def client(self, n: int) -> None:
        rnd = random.Random(n)
        count = 0
        while not self.stop.is_set():
            count += 1
            message_id = f"crash-{n}-{count}@{DOMAIN}"
            recipients = [f"{u}@{DOMAIN}" for u in rnd.sample(USERS, rnd.choice([1, 1, 2]))]
            data = message(message_id, recipients, f"{SENDER}@{DOMAIN}", rnd.randrange(3000))
            while True:  # a real client retries until it sees the 250
                with self.lock:
                    self.attempts += 1
                try:
                    with smtplib.SMTP("127.0.0.1", self.port, timeout=30) as client:
                        client.sendmail(f"{SENDER}@{DOMAIN}", recipients, data)
                    break
                except (OSError, smtplib.SMTPException):
                    with self.lock:
                        self.failures += 1
                    time.sleep(0.2)
            with self.lock:
                self.accepted[message_id] = recipients

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(120)


def kill_at_random(mta: Mta, rnd: random.Random, n: int) -> str:
    """The first kill is an smtpd's and the second the master's; then either, at random."""
    smtpds = mta.smtpd_pids()
    if smtpds and n != 1 and (n == 0 or rnd.random() < 0.6):
        os.kill(rnd.choice(smtpds), 9)
        return "smtpd"
    mta.kill_master()
    mta.start()
    return "master"


@pytest.mark.slow
def test_sigkill_smtpd_and_master_under_load_loses_and_doubles_nothing(tmp_path: Path) -> None:
    rnd = random.Random(23)
    with mail_system(tmp_path, [*USERS, SENDER]) as (store, mta):
        killed = {"smtpd": 0, "master": 0}
        with Load(mta.port) as load:
            for n in range(KILLS):
                time.sleep(rnd.uniform(0.05, 0.5))
                killed[kill_at_random(mta, rnd, n)] += 1
                # Each kill is followed by a live smtpd again before the next one.
                mta.wait_greeting()
            time.sleep(0.5)
        accepted = dict(load.accepted)
        expected = {(r.split("@")[0], m) for m, rs in accepted.items() for r in rs}

        # Dot files are smtpd's spare queue files (CommitThread.SPARES), gone when it stops.
        deadline = time.monotonic() + 120
        while not expected <= set(message_ids(store, USERS)) or any(
            not name.startswith(".") for names in mta.queue_files().values() for name in names
        ):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        mta.stop()
        counts = message_ids(store, USERS)
        bounces = message_ids(store, [SENDER])
        doubled = {key: n for key, n in counts.items() if n > 1}
        lost = expected - set(counts)
        print(f"\nMTA crash test: {killed['smtpd']} smtpd and {killed['master']} master kills, "
              f"{len(accepted)} messages accepted ({len(expected)} deliveries), "
              f"{load.attempts} attempts ({load.failures} cut off), {len(lost)} lost, "
              f"{len(doubled)} doubled, {len(bounces)} bounces, queue left: {mta.queue_files()}")
        assert not lost, f"{sorted(lost)[:10]}\n{mta.log_tail()}"
        assert not doubled, doubled
        assert not bounces, bounces
        assert not mta.queue_files()  # not a half-written file left: each dead smtpd's went
        assert killed["master"] >= 1 and killed["smtpd"] >= 1
