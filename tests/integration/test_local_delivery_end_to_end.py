"""Local delivery end to end (issue 9's proof): mail submitted to sealmail's smtpd, routed by the
queue manager through local(8), pipe(8) or straight to LMTP, and found in sealmail's store.

The store is a running `sealmail lmtpd`; the MTA is sealmail's own master.cf with the seed's
section 9.1 entries (paths adapted): `cyrus` (LMTP over the UNIX socket, with the old
`lmtp_cache_connection` name), `cyrus-inet` (LMTP over TCP with SASL) and `cyrus-deliver` (pipe
to `sealmail deliver`).
"""

from __future__ import annotations

import os
import pwd
import shutil
import smtplib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.instance import SealmailInstance
from tests.support.mta import RunningMta, wait_for
from tests.support.peers import free_tcp_port, traversable_tmpdir
from tests.support.pipe_user import ensure_pipe_user, sealmail_command_for

pytestmark = pytest.mark.peer

DOMAIN = "local.example"
SERVERNAME = "sealmail.test.example"
PASSWORD = "lmtp-pw-3"
USERS = ("alice", "bob", "carol")
MAIL_USER = "sealmail-mbox"  # a UNIX account: its mail goes to the mail spool


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    with traversable_tmpdir("smlocal-") as path:
        yield path


@pytest.fixture(scope="module")
def store(root: Path) -> Iterator[SealmailInstance]:
    directory = root / "store"
    directory.mkdir()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "sealmail",
            "saslpasswd2",
            "-p",
            "-c",
            "-u",
            SERVERNAME,
            "-f",
            str(directory / "sasldb2"),
            "lmtpuser",
        ],
        input=PASSWORD + "\n",
        text=True,
        check=True,
        capture_output=True,
    )
    users = [*USERS, *(f"many{n}" for n in range(300))]
    extra = {
        "servername": SERVERNAME,
        "lmtp_admins": "lmtpuser",
        "lmtp_allowplaintext": "yes",
        "sasl_sasldb_path": str(directory / "sasldb2"),
        "auth_failure_delay": "0",
        "hosts_allow": str(directory / "hosts.allow"),
        "hosts_deny": str(directory / "hosts.deny"),
    }
    with SealmailInstance(
        directory, users, tcp=True, socket_mode="0666", imapd_conf_extra=extra
    ) as instance:
        with instance.store() as disk:
            disk.create_mailbox("user.alice.Lists")
            disk.set_acl("user.alice.Lists", "anyone", "+p")
        yield instance


@pytest.fixture(scope="module")
def mail_account(root: Path) -> str:
    try:
        pwd.getpwnam(MAIL_USER)
    except KeyError:
        if shutil.which("useradd") is None:
            pytest.skip("no useradd for a UNIX mail account")
        subprocess.run(
            ["useradd", "-r", "-M", "-d", str(root / "home"), "-s", "/usr/sbin/nologin", MAIL_USER],
            check=True,
            capture_output=True,
        )
    else:  # made by an earlier run: its home is this run's directory now
        subprocess.run(
            ["usermod", "-d", str(root / "home"), MAIL_USER], check=True, capture_output=True
        )
    return MAIL_USER


def write_mta(
    root: Path, name: str, store: SealmailInstance, main_extra: str, master_extra: str = ""
) -> tuple[Path, int]:
    config = root / name
    config.mkdir()
    port = free_tcp_port()
    (config / "main.cf").write_text(
        f"queue_directory = {config}/spool\ndata_directory = {config}/data\n"
        f"myhostname = mx.{DOMAIN}\nmydomain = {DOMAIN}\nmyorigin = $mydomain\n"
        f"mydestination = {DOMAIN}, tcp.example\ninet_interfaces = loopback-only\n"
        "mynetworks = 127.0.0.0/8\n"
        + ("" if "alias_maps" in main_extra else "alias_maps =\n")
        + f"mail_spool_directory = {root}/mail\n"
        + main_extra
    )
    (config / "master.cf").write_text(
        f"127.0.0.1:{port} inet n - n - - smtpd\n"
        "local unix - n n - - local\n"
        "error unix - - n - - error\n"
        "# the seed's section 9.1, paths adapted\n"
        "cyrus unix - n n - - lmtp\n"
        "  -o lmtp_cache_connection=yes\n" + master_extra
    )
    return config, port


def send(port: int, recipients: list[str], subject: str) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.sendmail(
            f"sender@{DOMAIN}",
            recipients,
            f"From: sender@{DOMAIN}\r\nSubject: {subject}\r\n\r\nbody\r\n".encode(),
        )


def stored(store: SealmailInstance, mailbox: str, subject: str) -> int:
    with store.store() as disk:
        return sum(
            subject.encode() in disk.message_bytes(mailbox, m.uid) for m in disk.messages(mailbox)
        )


def test_alias_to_two_users_and_a_pipe_with_mailbox_transport_lmtp(
    root: Path, store: SealmailInstance
) -> None:
    out = root / "pipe-out"  # alias commands run as default_privs (nobody): it may write here
    out.mkdir(mode=0o777)
    out.chmod(0o777)
    (root / "aliases").write_text(f"team: alice, bob, \"|/bin/sh -c 'cat > {out}/piped.txt'\"\n")
    (root / "aliases").chmod(0o644)
    subprocess.run(
        [sys.executable, "-m", "sealmail", "postalias", str(root / "aliases")], check=True
    )
    config, port = write_mta(
        root,
        "mta-alias",
        store,
        f"alias_maps = hash:{root}/aliases\nallow_mail_to_commands = alias\n"
        f"mailbox_transport = cyrus:unix:{store.socket_path}\nrecipient_delimiter = +\n",
    )
    with RunningMta(config):
        send(port, [f"team@{DOMAIN}", f"alice+Lists@{DOMAIN}"], "to the team")
        wait_for(lambda: stored(store, "user.bob", "to the team") == 1, what="bob's copy")
        wait_for(lambda: (out / "piped.txt").exists(), what="the pipe's output")
        wait_for(lambda: stored(store, "user.alice.Lists", "to the team") == 1, what="+Lists")
    assert stored(store, "user.alice", "to the team") == 1
    wait_for(lambda: "Subject: to the team" in (out / "piped.txt").read_text(), what="all")


def test_mailbox_transport_cyrus_deliver_pipe(root: Path, store: SealmailInstance) -> None:
    user = ensure_pipe_user()
    command = sealmail_command_for(user, root)
    config, port = write_mta(
        root,
        "mta-deliver",
        store,
        "mailbox_transport = cyrus-deliver\n",
        "cyrus-deliver unix - n n - - pipe\n"
        f"  user={user} argv={command} deliver -C {store.conf_path} -e -r ${{sender}}"
        " -m ${extension} ${user}\n",
    )
    with RunningMta(config):
        send(port, [f"carol@{DOMAIN}"], "through deliver")
        wait_for(lambda: stored(store, "user.carol", "through deliver") == 1, what="delivery")


def test_fallback_transport_and_the_mail_spool(
    root: Path, store: SealmailInstance, mail_account: str
) -> None:
    (root / "mail").mkdir(exist_ok=True)
    config, port = write_mta(
        root, "mta-fallback", store, f"fallback_transport = cyrus:unix:{store.socket_path}\n"
    )
    with RunningMta(config):
        send(port, [f"alice@{DOMAIN}", f"{mail_account}@{DOMAIN}"], "fallback or spool")
        wait_for(lambda: stored(store, "user.alice", "fallback or spool") == 1, what="store")
        mbox = root / "mail" / mail_account
        wait_for(mbox.exists, what="the mbox")
    text = mbox.read_text()
    assert text.startswith(f"From sender@{DOMAIN} ") and "Subject: fallback or spool" in text
    assert os.stat(mbox).st_uid == pwd.getpwnam(mail_account).pw_uid


def test_local_transport_300_recipients_one_delivery_one_file(
    root: Path, store: SealmailInstance
) -> None:
    config, port = write_mta(
        root,
        "mta-300",
        store,
        f"local_transport = cyrus:unix:{store.socket_path}\n"
        "cyrus_destination_recipient_limit = 300\nsmtpd_recipient_limit = 1000\n",
    )
    before = store.log_text().count("status=sent")
    rcpts = [f"many{n}@{DOMAIN}" for n in range(300)]
    with RunningMta(config):
        send(port, rcpts, "three hundred")
        wait_for(lambda: store.log_text().count("status=sent") - before == 300, 60, "300")
    sessions = {
        line.split("]: ", 1)[1].split(":", 1)[0]
        for line in store.log_text().splitlines()[-400:]
        if "status=sent" in line and "many" in line
    }
    assert len(sessions) == 1  # one LMTP transaction for all 300
    with store.store() as disk:
        [record] = [m for m in disk.messages("user.many0")]
        path = disk.mailbox_path("user.many0") / f"{record.uid}."
    # 300 names of one file; the stage file's own name goes with the deferred directory
    # fsyncs, a moment after the replies (sealmail.store.disk.deferred).
    wait_for(lambda: os.stat(path).st_nlink == 300, 10, "one file, 300 names")


def test_transport_maps_route_a_domain_to_tcp_lmtp_with_sasl(
    root: Path, store: SealmailInstance
) -> None:
    host, lmtp_port = store.tcp_address
    (root / "transport").write_text(f"tcp.example cyrus-inet:inet:{host}:{lmtp_port}\n")
    (root / "sasl_pass").write_text(f"{host} lmtpuser:{PASSWORD}\n")
    (root / "sasl_pass").chmod(0o600)
    for table in ("transport", "sasl_pass"):
        subprocess.run([sys.executable, "-m", "sealmail", "postmap", str(root / table)], check=True)
    config, port = write_mta(
        root,
        "mta-tcp",
        store,
        f"transport_maps = hash:{root}/transport\n",
        "cyrus-inet unix - - n - - lmtp\n"
        "  -o lmtp_cache_connection=yes\n  -o lmtp_sasl_auth_enable=yes\n"
        f"  -o lmtp_sasl_password_maps=hash:{root}/sasl_pass\n"
        "  -o lmtp_sasl_security_options=noanonymous,noplaintext\n",
    )
    with RunningMta(config):
        send(port, ["bob@tcp.example"], "over tcp")
        wait_for(lambda: stored(store, "user.bob", "over tcp") == 1, what="TCP delivery")
    assert "authenticated as lmtpuser from [127.0.0.1]" in store.log_text()


def test_forward_file_of_a_unix_user(
    root: Path, store: SealmailInstance, mail_account: str
) -> None:
    home = root / "home"
    home.mkdir(exist_ok=True)
    shutil.chown(home, mail_account)
    forward = home / ".forward"
    forward.write_text(f"carol@{DOMAIN}\n")
    shutil.chown(forward, mail_account)
    config, port = write_mta(
        root, "mta-forward", store, f"fallback_transport = cyrus:unix:{store.socket_path}\n"
    )
    with RunningMta(config):
        send(port, [f"{mail_account}@{DOMAIN}"], "forwarded on")
        wait_for(lambda: stored(store, "user.carol", "forwarded on") == 1, what="forwarding")


def test_local_recipient_maps_asks_the_store_at_rcpt_time(
    root: Path, store: SealmailInstance
) -> None:
    config, port = write_mta(
        root,
        "mta-rcptmaps",
        store,
        f"local_transport = cyrus:unix:{store.socket_path}\n"
        f"local_recipient_maps = sealmail:{store.conf_path}\nrecipient_delimiter = +\n",
    )
    with RunningMta(config), smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        client.ehlo()
        client.mail(f"sender@{DOMAIN}")
        assert client.rcpt(f"alice+Lists@{DOMAIN}")[0] == 250
        code, text = client.rcpt(f"nobody@{DOMAIN}")
        assert (code, text[:5]) == (550, b"5.1.1")
        assert b"User unknown in local recipient table" in text
