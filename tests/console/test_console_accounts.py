"""Started by root, `sealmail console` serves HTTP as main.cf's mail_owner and reads the store
through a helper running as imapd.conf's cyrus_user (sealmail.console.accounts); an account
that does not exist refuses the start.

Real accounts (Debian's `postfix` and `cyrus`), no opt-in, on a directory both can reach, with a
Python both can run (tests.support.pipe_user.python_for, plus a copy of h11). The queue is the
mail_owner's, as `sealmail postfix start` leaves it (sealmail.mta.privsep.own_instance); a fake
master on the control socket records what the console tells it.
"""

from __future__ import annotations

import os
import pwd
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.console.test_console_http import Client
from tests.server.test_accounts import CYRUS, Store, children_of, cyrus_ids, ids_of, stop, wait_for
from tests.support.console import ADMIN, ADMIN_PASSWORD, ConsoleServer
from tests.support.mta import FakeMaster
from tests.support.peers import free_tcp_port, traversable_tmpdir, wait_until_accepting
from tests.support.pipe_user import copy_packages, python_for

from sealmail.config.imapd_conf import load_imapd_conf
from sealmail.mta.config import load_mta_config
from sealmail.mta.privsep import mail_owner_account, own_instance
from sealmail.mta.queue import Envelope, Queue, QueueName, RecipientRecord
from sealmail.privileges import make_store_directories, store_account

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")
pytest.importorskip("h11", reason="the console needs h11 (the [console] extra)")

MAIL_OWNER = "postfix"


@dataclass
class Instance:
    store: Store
    mta: Path
    queue: Queue
    log: Path

    def console(self, port: int) -> subprocess.Popen[bytes]:
        store = self.store
        with self.log.open("ab") as out:
            return subprocess.Popen(
                [store.python, "-m", "sealmail", "console", "-c", str(self.mta),
                 "-C", str(store.conf), "--listen", f"127.0.0.1:{port}",
                 "-L", str(store.root / "secret.log")],
                env=store.env, cwd="/", stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def instance() -> Iterator[Instance]:
    try:
        for name in (CYRUS, MAIL_OWNER):
            pwd.getpwnam(name)
    except KeyError:
        pytest.skip("needs the cyrus and postfix accounts (Debian's cyrus-common, postfix)")
    with traversable_tmpdir("smconsole-") as root:
        python, env = python_for(MAIL_OWNER, root)
        if python != python_for(CYRUS, root)[0]:
            pytest.skip("no one Python that both postfix and cyrus can run")
        if env["PYTHONPATH"] == str(root / "lib"):
            copy_packages(root / "lib", ("h11",))
        store = Store(root, python, env)
        with store.conf.open("a") as conf:
            conf.write(f"admins: {ADMIN}\n")
        config = load_imapd_conf(store.conf)
        make_store_directories(config, store_account(config))  # as master does, for cyrus
        for args, data in ((("mailbox", "-C", str(store.conf), "create", "user.alice"), b""),
                           (("saslpasswd2", "-C", str(store.conf), "-p", "-c", ADMIN),
                            ADMIN_PASSWORD.encode() + b"\n")):
            done = store.sealmail(*args, data=data)  # as root: they go on as cyrus
            assert done.returncode == 0, done.stderr
        (root / "secret.log").write_text("root's only\n")
        (root / "secret.log").chmod(0o600)
        mta = root / "mta"
        mta.mkdir()
        (mta / "main.cf").write_text(
            f"myhostname = mx.example.com\nqueue_directory = {root / 'queue'}\n"
            f"data_directory = {root / 'data'}\nmaillog_file = {root / 'maillog'}\n")
        (mta / "master.cf").write_text("")
        main = load_mta_config(mta).main
        queue = Queue.from_config(main)
        queue.create_directories()
        own_instance(main, mail_owner_account(main))  # as `sealmail postfix start` does
        yield Instance(store, mta, queue, root / "console.log")


def enqueue(queue: Queue, recipient: str, where: QueueName) -> str:
    envelope = Envelope("bob@example.org", (RecipientRecord(recipient, recipient),),
                        arrival=1_700_000_000.0, size=12, message_id="m1@example.org")
    queue_id = queue.enqueue(envelope, b"Subject: x\r\n\r\nhi\r\n")
    if where is not QueueName.INCOMING:
        queue.move(queue_id, QueueName.INCOMING, where)
    owner = pwd.getpwnam(MAIL_OWNER)
    for found in queue.directory.rglob(f"{queue_id}*"):
        os.chown(found, owner.pw_uid, owner.pw_gid)
    return queue_id


def test_root_binds_then_http_is_served_as_mail_owner_and_the_store_read_as_cyrus(
    instance: Instance,
) -> None:
    queue = instance.queue
    deferred = enqueue(queue, "carol@example.com", QueueName.DEFERRED)
    held = enqueue(queue, "dave@example.com", QueueName.INCOMING)
    master = FakeMaster(queue.control_socket)
    port = free_tcp_port()
    console = instance.console(port)
    try:
        wait_until_accepting(("127.0.0.1", port), 60.0, console)
        log = instance.log.read_text
        wait_for(lambda: "console runs as postfix" in log(), "the switch")
        owner = pwd.getpwnam(MAIL_OWNER)
        ids = ids_of(console.pid)
        assert ids.uids == (owner.pw_uid,) * 4 and ids.gids == (owner.pw_gid,) * 4, log()
        assert ids.groups == frozenset(os.getgrouplist(MAIL_OWNER, owner.pw_gid))
        (helper,) = children_of(console.pid)
        assert ids_of(helper) == cyrus_ids()
        assert f"cannot read {instance.store.root / 'secret.log'} as postfix" in log()

        client = Client(ConsoleServer(port, queue, instance.store.root, instance.mta,
                                      instance.store.conf))
        assert client.login(ADMIN, "wrong") == 401  # checked by the helper, as cyrus
        assert client.login() == 303, log()
        _, _, page = client.request("GET", "/queue")
        assert deferred in page and held in page

        def act(action: str, queue_id: str) -> str:
            status, _, _ = client.request("POST", "/queue/action", {
                "csrf": client.csrf, "action": action, "id": queue_id})
            assert status == 303
            return client.request("GET", "/queue")[2]

        assert "scheduled for immediate delivery" in act("retry", deferred)
        assert queue.find(deferred) is QueueName.INCOMING
        assert master.lines == [f"retry {deferred}"]
        assert "placed on hold" in act("hold", held)
        assert queue.find(held) is QueueName.HOLD
        assert "removed" in act("delete", held)
        assert queue.find(held) is None

        _, _, users = client.request("GET", "/users")
        assert "alice" in users and f"{ADMIN}@" in users, users  # the INBOX and the sasldb
        config = instance.store.root / "config"
        cyrus = pwd.getpwnam(CYRUS).pw_uid
        assert all(p.lstat().st_uid == cyrus for p in [config, *config.rglob("*")])
    finally:
        master.close()
        assert stop(console) == 0, instance.log.read_text()
    wait_for(lambda: not Path(f"/proc/{helper}").exists(), "the helper to end with the console")


@pytest.mark.parametrize(("option", "file", "expected"), [
    ("mail_owner = sealmail-nobody-here\n", "main.cf",
     "mail_owner = sealmail-nobody-here: no such account"),
    ("cyrus_user: sealmail-nobody-here\n", "imapd.conf", "unknown account 'sealmail-nobody-here'"),
])
def test_a_missing_account_refuses_the_start(
    instance: Instance, tmp_path: Path, option: str, file: str, expected: str,
) -> None:
    store = instance.store
    mta = tmp_path / "mta"
    mta.mkdir()
    (mta / "master.cf").write_text("")
    main_cf = (instance.mta / "main.cf").read_text()
    conf = tmp_path / "imapd.conf"
    conf.write_text(store.conf.read_text() + (option if file == "imapd.conf" else ""))
    (mta / "main.cf").write_text(main_cf + (option if file == "main.cf" else ""))
    done = subprocess.run(
        [store.python, "-m", "sealmail", "console", "-c", str(mta), "-C", str(conf),
         "--listen", f"127.0.0.1:{free_tcp_port()}"],
        env=store.env, cwd="/", capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 78, done.stderr
    assert expected in done.stderr and file in done.stderr, done.stderr
