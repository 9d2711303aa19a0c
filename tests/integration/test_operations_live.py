"""Operating a running system: the store under `sealmail master` (two imapd workers, pop3d,
lmtpd) and the MTA under `sealmail postfix start-fg` (two smtpd processes) delivering to it over
LMTP, both serving metrics_listen. /metrics, summed over the preforked processes, is scraped with
prometheus-client's parser after real SMTP, LMTP, IMAP and POP3 traffic; `sealmail admin who` and
`kick` run over real imaplib and poplib sessions. One store and one MTA for the module, started
side by side (their start-up is most of the time these tests take)."""

from __future__ import annotations

import base64
import imaplib
import os
import poplib
import signal
import smtplib
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.server.test_master import MasterRun, wait_for
from tests.support.mta import mail_owner_opt_in
from tests.support.peers import free_tcp_port, wait_until_accepting

from sealmail.auth.sasldb import SaslDB
from sealmail.cli.admin_sessions import HEADINGS, kick_user, who
from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.proto.sasl import split_identity
from sealmail.sessions import registry_directory
from sealmail.store.disk import DiskStore

prometheus_parser = pytest.importorskip("prometheus_client.parser")

PASSWORD = "secret-pw"
MESSAGE = b"From: a@example.org\r\nSubject: counted\r\n\r\nhello\r\n"


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in prometheus_parser.text_string_to_metric_families(text)
            for s in family.samples}


class Store:
    def __init__(self, run: MasterRun, imap: int, pop3: int, metrics: int) -> None:
        self.run, self.imap, self.pop3, self.metrics = run, imap, pop3, metrics

    def scrape(self) -> Samples:
        return scrape(self.metrics)

    def imap_login(self, user: str = "alice") -> imaplib.IMAP4:
        client = imaplib.IMAP4("127.0.0.1", self.imap, timeout=30)
        client.login(user, PASSWORD)
        return client

    def admin(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "sealmail", "admin", "-C", str(self.run.imapd_conf), *args],
            capture_output=True, text=True, timeout=60, check=False)


class Mta:
    def __init__(self, root: Path, socket: Path, imapd_conf: Path) -> None:
        self.config = root / "mta"
        self.config.mkdir()
        self.smtp, self.metrics = free_tcp_port(), free_tcp_port()
        self.maillog = root / "maillog"
        (self.config / "main.cf").write_text(
            f"queue_directory = {root}/spool\ndata_directory = {root}/data\n"
            "myhostname = mx.example.com\nmydestination = example.com\n"
            "inet_interfaces = loopback-only\nmynetworks = 10.0.0.0/8\n"
            f"local_transport = lmtp:unix:{socket}\nmaillog_file = {self.maillog}\n"
            "maillog_file_prefixes = /\n"
            f"smtpd_sasl_auth_enable = yes\nsmtpd_sasl_imapd_conf = {imapd_conf}\n"
            f"metrics_listen = 127.0.0.1:{self.metrics}\n" + mail_owner_opt_in())
        # maxproc 2: two smtpd processes whose counters the master sums.
        (self.config / "master.cf").write_text(
            f"127.0.0.1:{self.smtp} inet n - n - 2 smtpd\nlmtp unix - - n - - lmtp\n")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sealmail", "postfix", "-c", str(self.config), "start-fg"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def scrape(self) -> Samples:
        return scrape(self.metrics)

    def connect(self) -> smtplib.SMTP:
        """The metrics port may answer before smtpd's is bound; a refused connection counts
        nothing (a probe that connects would: postfix_smtpd_connects_total)."""
        deadline = time.monotonic() + 30
        while True:
            try:
                return smtplib.SMTP("127.0.0.1", self.smtp, local_hostname="client.example.org",
                                    timeout=30)
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def add_users(imapd_conf: Path, users: tuple[str, ...]) -> None:
    """Mailboxes and passwords in this process (a cheap scrypt cost: logins stay fast)."""
    config = load_imapd_conf(imapd_conf)
    (config.configdirectory).mkdir(parents=True, exist_ok=True)
    sasldb = SaslDB(config.configdirectory / "sasldb2", scrypt_n=2**10)
    with DiskStore.from_config(config) as disk:
        for user in users:
            disk.create_mailbox(f"user.{user}")
            sasldb.set_password(split_identity(user, config.servername), PASSWORD)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Store, Mta]]:
    root = tmp_path_factory.mktemp("ops-live")
    imap, pop3, metrics_port = free_tcp_port(), free_tcp_port(), free_tcp_port()
    run = MasterRun(
        root,
        "SERVICES {\n"
        f'  imap     cmd="imapd" listen="127.0.0.1:{imap}" prefork=2\n'
        f'  pop3     cmd="pop3d" listen="127.0.0.1:{pop3}" prefork=1\n'
        f'  lmtpunix cmd="lmtpd" listen="{root}/config/socket/lmtp" prefork=1\n'
        "}\n",
        users=(),
    )
    with run.imapd_conf.open("a") as conf:
        conf.write(f"allowplaintext: yes\nauth_failure_delay: 0\n"
                   f"metrics_listen: 127.0.0.1:{metrics_port}\n")
    add_users(run.imapd_conf, ("alice", "bob"))
    mta = Mta(root, run.socket, run.imapd_conf)  # starts while the store starts
    try:
        run.start()  # "master ready": every socket is bound (no probe: it would count)
        wait_until_accepting(("127.0.0.1", metrics_port), 30.0)
        wait_until_accepting(("127.0.0.1", mta.metrics), 30.0)
        yield Store(run, imap, pop3, metrics_port), mta
    finally:
        mta.stop()
        run.stop()


@pytest.fixture(scope="module")
def store(system: tuple[Store, Mta]) -> Store:
    return system[0]


def deltas(scraper: Callable[[], Samples]) -> Callable[..., float]:
    """value(name, **labels): how much a sample grew since now."""
    before = scraper()

    def value(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return scraper().get(key, 0.0) - before.get(key, 0.0)

    return value


def test_mta_metrics_after_smtp_and_lmtp(system: tuple[Store, Mta]) -> None:
    store, mta = system
    value = deltas(mta.scrape)
    wrong = base64.b64encode(b"\0alice\0guess").decode()
    with mta.connect() as client:
        for _ in range(2):
            assert client.sendmail("bob@example.org", ["alice@example.com"], MESSAGE) == {}
        client.mail("bob@example.org")
        code = client.rcpt("far@elsewhere.test")[0]
        assert code in (454, 554)  # not ours to relay
        client.rset()
        assert client.docmd("AUTH", f"PLAIN {wrong}")[0] == 535
    wait_for(lambda: value("postfix_qmgr_messages_removed_total") == 2, what="two deliveries")
    wait_for(lambda: value("postfix_smtpd_disconnects_total") == 1, what="the disconnect")
    assert value("postfix_smtpd_connects_total") == 1
    assert value("postfix_smtpd_messages_processed_total", sasl_method="") == 2
    assert value("postfix_smtpd_messages_rejected_total", code=str(code)) == 1
    assert value("postfix_smtpd_sasl_authentication_failures_total") == 1
    assert value("sealmail_auth_failures_total", service="smtpd", mechanism="PLAIN") == 1
    assert value("postfix_qmgr_messages_inserted_recipients_count") == 2
    assert value("sealmail_end_of_data_seconds_count", service="smtpd") == 2
    assert value("postfix_lmtp_delivery_delay_seconds_count", stage="transmission") == 2
    assert value("sealmail_mta_deliveries_total", transport="lmtp", status="sent") == 2
    samples = mta.scrape()
    assert samples[("sealmail_mta_queue_messages", (("queue", "deferred"),))] == 0
    assert ("postfix_showq_message_age_seconds_count", (("queue", "hold"),)) in samples
    wait_for(lambda: store.run.count("alice") >= 2, what="the messages in the store")


def test_store_metrics_after_lmtp_imap_and_pop3(store: Store) -> None:
    value = deltas(store.scrape)
    start = store.run.count("alice")

    with smtplib.LMTP(str(store.run.socket), local_hostname="client.test") as lmtp:
        for _ in range(2):
            assert lmtp.sendmail("a@example.org", ["alice"], MESSAGE) == {}
    client = store.imap_login()
    client.select("INBOX")
    client.fetch("1:*", "(FLAGS)")
    bad = imaplib.IMAP4("127.0.0.1", store.imap, timeout=30)
    with pytest.raises(imaplib.IMAP4.error):
        bad.login("bob", "wrong")
    bad.logout()
    pop = poplib.POP3("127.0.0.1", store.pop3, timeout=30)
    pop.user("alice")
    pop.pass_(PASSWORD)
    assert pop.stat()[0] == start + 2
    pop.quit()

    wait_for(lambda: value("cyrus_pop3_connections_total", service="pop3") == 1,
             what="the POP3 session counted")
    samples = store.scrape()
    assert value("cyrus_imap_connections_total", service="imap") == 2  # two workers, summed
    assert store.scrape()[("cyrus_imap_active_connections", (("service", "imap"),))] == 1
    assert value("cyrus_lmtp_connections_total", service="lmtpunix") == 1
    assert value("sealmail_end_of_data_seconds_count", service="lmtpd") == 2
    assert value("sealmail_imap_command_seconds_count", command="SELECT") == 1
    assert value("sealmail_imap_command_seconds_count", command="LOGIN") == 2
    assert value("sealmail_auth_failures_total", service="imap", mechanism="PLAINTEXT") == 1
    assert ("sealmail_imap_command_seconds_bucket",
            (("command", "FETCH"), ("le", "+Inf"))) in samples
    client.logout()
    wait_for(lambda: store.scrape()[("cyrus_imap_active_connections", (("service", "imap"),))]
             == 0,
             what="the IMAP session ended")


def who_lines(store: Store, user: str | None = None) -> list[list[str]]:
    lines: list[str] = []
    who(registry_directory(store.run.root / "config"), user, lines.append)
    assert lines[0].split() == list(HEADINGS)
    return [line.split() for line in lines[1:]]


def test_who_and_kick_over_real_sessions(store: Store) -> None:
    alice = store.imap_login("alice")
    alice.select("INBOX")
    bob = store.imap_login("bob")
    pop = poplib.POP3("127.0.0.1", store.pop3, timeout=30)
    pop.user("alice")
    pop.pass_(PASSWORD)
    wait_for(lambda: len(who_lines(store)) == 3, what="three sessions filed")
    # username service proto remote pid session login(date time) mailbox
    mine = {(row[0], row[2], row[8]) for row in who_lines(store, "alice")}
    assert mine == {("alice", "imap", "INBOX"), ("alice", "pop3", "INBOX")}  # the user's names
    [bob_row] = who_lines(store, "bob")
    assert bob_row[1:4] == ["imap", "imap", "127.0.0.1"] and bob_row[8] == "-"
    listed = store.admin("who", "-u", "bob")  # the command itself, as an operator runs it
    assert listed.returncode == 0 and listed.stdout.splitlines()[1].split() == bob_row

    out: list[str] = []
    assert kick_user(registry_directory(store.run.root / "config"), "alice", out.append,
                     out.append) == 0
    assert out == ["kicked connections from the following users:", "alice (2)"]
    assert alice.readline() == b"* BYE Kicked by admin\r\n"
    assert pop.file.readline() == b"-ERR Kicked by admin\r\n"
    assert [row[0] for row in who_lines(store)] == ["bob"]
    assert bob.noop()[0] == "OK"  # the other user's session goes on
    assert store.admin("kick", "-u", "alice").returncode == 1  # nobody left to kick

    # A worker that dies leaves a file naming a dead pid: nobody lists it.
    os.kill(int(bob_row[4]), signal.SIGKILL)
    wait_for(lambda: who_lines(store, "bob") == [], what="the dead worker's session swept")
